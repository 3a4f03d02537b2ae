"""The program's side of the tool channel, put into the sandbox as source text.

    import tools                      # (how the sandbox will expose it is not wired yet)
    tools.connect(write_fd, read_fd)
    passages = tools.call("search", query="처용가", k=2)

Pure Python, importing only json, os and struct. `call` writes one frame (a 4-byte
big-endian length, then UTF-8 JSON {"id", "tool", "args"}) and reads the one reply; an error
reply raises `ToolError` with the host's type and message. Nothing here is trusted by the
host: a program may write any bytes on the channel instead of using this.
"""

import json
import os
import struct

MAX_REPLY = 1 << 20

_fds = [-1, -1]  # write, read
_next = [0]


class ToolError(Exception):
    def __init__(self, type_, message):
        super().__init__(type_ + ": " + message)
        self.type = type_
        self.message = message


def connect(write_fd, read_fd):
    _fds[0], _fds[1] = write_fd, read_fd


def _read_exactly(fd, n):
    data = b""
    while len(data) < n:
        part = os.read(fd, n - len(data))
        if not part:
            raise ToolError("ChannelClosed", "the host closed the tool channel")
        data += part
    return data


def call(tool, /, **args):
    """Call a host tool by name; its result, or ToolError."""
    _next[0] += 1
    ident = _next[0]
    body = json.dumps({"id": ident, "tool": tool, "args": args}, ensure_ascii=False)
    data = body.encode("utf-8")
    frame = memoryview(struct.pack(">I", len(data)) + data)
    while frame:
        frame = frame[os.write(_fds[0], frame) :]
    (length,) = struct.unpack(">I", _read_exactly(_fds[1], 4))
    if length > MAX_REPLY:
        raise ToolError("ChannelError", "the reply is too large")
    reply = json.loads(_read_exactly(_fds[1], length).decode("utf-8"))
    if reply.get("ok") is True and reply.get("id") == ident:
        return reply.get("result")
    error = reply.get("error") or {}
    raise ToolError(str(error.get("type", "ChannelError")), str(error.get("message", "")))
