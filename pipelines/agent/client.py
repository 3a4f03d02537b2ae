"""The program's side of the tool channel, run inside the sandbox from source text.

The sandbox executes this text with the program's own builtins (so its imports pass the
same allowlist: json and struct only, no os), calls `connect(write_fd, read_fd)`, and puts
the module in the program's globals as `tools`, and `final` beside it:

    passages = tools.call("search", query="처용가", k=2)
    final("처용가는 처용이 지었다 [1]")

`call` writes one frame (a 4-byte big-endian length, then UTF-8 JSON {"id", "tool",
"args"}) and reads the one reply; an error reply raises `ToolError` with the host's type
and message. Nothing here is trusted by the host: a program may write any bytes on the
channel instead of using this.
"""

import json
import struct

MAX_REPLY = 1 << 20
EXPORTS = ("final",)  # put beside `tools` in the program's globals

_files: list = [None, None]  # write, read: unbuffered file objects over the channel's pipes
_next = [0]


class ToolError(Exception):
    def __init__(self, type_, message):
        super().__init__(type_ + ": " + message)
        self.type = type_
        self.message = message


def connect(write_fd, read_fd):
    # open() on a descriptor number: no path, so no file access the walls would refuse.
    _files[0] = open(write_fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 - for the run
    _files[1] = open(read_fd, "rb", buffering=0, closefd=False)  # noqa: SIM115


def _read_exactly(n):
    data = b""
    while len(data) < n:
        part = _files[1].read(n - len(data))
        if not part:
            raise ToolError("ChannelClosed", "the host closed the tool channel")
        data += part
    return data


def call(tool, /, **args):
    """Call a host tool by name; its result, or ToolError."""
    if _files[0] is None:
        raise ToolError("ChannelClosed", "this run has no tool channel")
    _next[0] += 1
    ident = _next[0]
    body = json.dumps({"id": ident, "tool": tool, "args": args}, ensure_ascii=False)
    data = body.encode("utf-8")
    frame = memoryview(struct.pack(">I", len(data)) + data)
    try:
        while frame:
            frame = frame[_files[0].write(frame) :]
    except BrokenPipeError:
        raise ToolError("ChannelClosed", "the host closed the tool channel") from None
    (length,) = struct.unpack(">I", _read_exactly(4))
    if length > MAX_REPLY:
        raise ToolError("ChannelError", "the reply is too large")
    reply = json.loads(_read_exactly(length).decode("utf-8"))
    if reply.get("ok") is True and reply.get("id") == ident:
        return reply.get("result")
    error = reply.get("error") or {}
    raise ToolError(str(error.get("type", "ChannelError")), str(error.get("message", "")))


def final(answer):
    """Give the final answer (the host records it); returns None."""
    call("final", answer=str(answer))
