"""The one channel a sandboxed program's tool calls cross, and the host's side of it.

Wire format, both ways: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.

    request  {"id": 1, "tool": "search", "args": {"query": "처용가", "k": 2}}
    reply    {"id": 1, "ok": true, "result": [...]}
             {"id": 1, "ok": false, "error": {"type": "InvalidArguments", "message": "..."}}

The program is untrusted and writes these bytes itself, so nothing is taken on trust. A
request is strict JSON (no NaN or Infinity, no repeated key, integers of at most 64 bits,
nesting and item counts bounded) of exactly that shape; ids are positive and increasing; the
tool must be registered; its arguments must validate against its pydantic model. Only then
is the tool called. Every frame gets exactly one reply; a refusal is an error reply and
nothing else happens in the host.

Budgets, per run (one `Dispatcher`): every frame counts as a call, refused or not, so a
flood of garbage spends the same budget as a flood of calls. Past `max_calls` every further
frame gets the same `BudgetExceeded` reply (read, never parsed). Past `max_total_bytes`
(requests and replies together), or on a length prefix beyond `max_request_bytes` (the
stream cannot be trusted to resynchronise), the host sends one last error reply with id
null and closes the channel: `closed` is set and all further input is ignored.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pipelines import strict_json
from pipelines.agent.tools import Tool, ToolBox

HEADER = struct.Struct(">I")
KEYS = {"id", "tool", "args"}
ID_BITS = 53  # ids a JavaScript or float-based client can still represent exactly
INT_DIGITS = 20  # integers in arguments: at most 20 digits (64 bits) as text
MESSAGE_CHARS = 500


@dataclass(frozen=True)
class ChannelLimits:
    max_request_bytes: int = 64 << 10  # one request's JSON body
    max_reply_bytes: int = 256 << 10  # one reply's JSON body (and each tool's own cap)
    max_calls: int = 32  # frames per run, refused ones included
    max_total_bytes: int = 4 << 20  # requests plus replies per run
    max_depth: int = 32  # nesting of a request's arguments
    max_items: int = 10_000  # values in a request's arguments
    call_seconds: float = 30.0  # one tool call; past it the reply is ToolTimeout


class Refused(Exception):
    """A frame refused: becomes an error reply with this type and message."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.id: int | None = None
        self.tool: str | None = None


@dataclass(frozen=True)
class CallRecord:
    """One frame in the trace: what was asked and how it ended (no arguments or results,
    which the caller may log from its own side)."""

    id: int | None
    tool: str | None
    ok: bool
    error: str | None
    request_bytes: int
    reply_bytes: int
    ms: float


def _bounded(value: Any, limits: ChannelLimits) -> str | None:
    """Why `value` is outside the limits (nesting, item count, valid text), or None."""
    budget = limits.max_items
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0:
            return f"more than {limits.max_items} values"
        if depth > limits.max_depth:
            return f"nested deeper than {limits.max_depth}"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "text with a lone surrogate"
        elif isinstance(item, list):
            stack += [(x, depth + 1) for x in item]
        elif isinstance(item, dict):
            stack += [(k, depth + 1) for k in item]
            stack += [(x, depth + 1) for x in item.values()]
    return None


def parse_request(body: bytes, limits: ChannelLimits) -> tuple[int, str, dict[str, Any]]:
    """(id, tool, args) of a request body, or `Refused` (type `BadFrame`)."""
    try:
        doc = strict_json.loads(body.decode("utf-8"), max_int_digits=INT_DIGITS)
    except UnicodeDecodeError:
        raise Refused("BadFrame", "the frame is not UTF-8") from None
    except RecursionError:
        raise Refused("BadFrame", "the frame is nested too deeply") from None
    except ValueError as exc:
        raise Refused("BadFrame", f"the frame is not strict JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict) or set(doc) != KEYS:
        raise Refused("BadFrame", 'a request is exactly {"id": int, "tool": str, "args": {}}')
    id_, tool, args = doc["id"], doc["tool"], doc["args"]
    if type(id_) is not int or not 0 < id_ < 1 << ID_BITS:
        raise Refused("BadFrame", "id must be a positive integer")
    if type(tool) is not str or not 0 < len(tool) <= 64:
        raise Refused("BadFrame", "tool must be a tool's name")
    if type(args) is not dict:
        raise Refused("BadFrame", "args must be an object")
    why = _bounded(args, limits)
    if why:
        raise Refused("BadFrame", f"args are out of bounds: {why}")
    return id_, tool, args


_PATH = re.compile(r"(?<![\w.])/[^\s'\"]+")


def _scrub(text: str) -> str:
    """A message without host paths, bounded in length."""
    return _PATH.sub("<path>", text)[:MESSAGE_CHARS]


def _validation_summary(exc: ValidationError) -> str:
    """Which fields failed and why; never the values given (they may be huge)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "(args)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return _scrub("; ".join(parts) + (f"; and {more} more" if more > 0 else ""))


def _json_result(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def encode(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    data = body.encode("utf-8")
    return HEADER.pack(len(data)) + data


@dataclass
class Dispatcher:
    """The host's end of one run's channel: `feed` bytes as they arrive, write back what it
    returns. `handle` answers one request body (unframed) and is what `feed` uses."""

    toolbox: ToolBox
    limits: ChannelLimits = field(default_factory=ChannelLimits)
    calls: int = 0
    total_bytes: int = 0
    last_id: int = 0
    closed: bool = False
    trace: list[CallRecord] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)

    def _error(self, id_: int | None, type_: str, message: str) -> dict[str, Any]:
        return {"id": id_, "ok": False, "error": {"type": type_, "message": message}}

    def handle(self, body: bytes) -> bytes:
        """The reply (framed) to one request body; counts against the budgets."""
        started = time.perf_counter()
        self.calls += 1
        id_: int | None = None
        tool_name: str | None = None
        if self.calls > self.limits.max_calls:
            reply = self._error(
                None, "BudgetExceeded", f"this run may make at most {self.limits.max_calls} calls"
            )
        else:
            try:
                id_, tool_name, result = self._dispatch(body)
                reply = {"id": id_, "ok": True, "result": result}
            except Refused as exc:
                id_, tool_name = exc.id, exc.tool
                reply = self._error(id_, exc.type, exc.message)
        data = encode(reply)
        if len(data) - HEADER.size > self.limits.max_reply_bytes:
            data = encode(self._error(id_, "ResultTooLarge", "the reply is too large"))
        self.total_bytes += len(body) + HEADER.size + len(data)
        error = None if reply["ok"] else reply["error"]["type"]
        self.trace.append(
            CallRecord(id_, tool_name, bool(reply["ok"]), error, len(body), len(data),
                       round((time.perf_counter() - started) * 1000, 3))
        )  # fmt: skip
        return data

    def _dispatch(self, body: bytes) -> tuple[int, str, Any]:
        id_, name, args = parse_request(body, self.limits)
        if id_ <= self.last_id:
            raise Refused("BadFrame", f"id {id_} does not follow {self.last_id}")
        self.last_id = id_
        try:
            tool = self.toolbox.get(name)
            if tool is None:
                known = ", ".join(self.toolbox.names) or "none"
                raise Refused("UnknownTool", f"no tool named {name!r}; there are: {known}")
            try:
                # As JSON: a date may come as text, a number never as "3".
                valid = tool.args.model_validate_json(json.dumps(args, ensure_ascii=False))
            except ValidationError as err:
                raise Refused("InvalidArguments", _validation_summary(err)) from None
            try:
                result = _json_result(self._run(tool, valid))
            except Refused:
                raise
            except Exception as err:  # the tool's failure is the program's answer
                text = (err.strerror or "") if isinstance(err, OSError) else str(err)
                raise Refused(type(err).__name__, _scrub(text)) from None
            try:
                size = len(json.dumps(result, ensure_ascii=False, allow_nan=False).encode())
            except (TypeError, ValueError, RecursionError):
                raise Refused("ResultError", "the tool's result is not JSON") from None
            cap = min(tool.result_bytes, self.limits.max_reply_bytes - 200)
            if size > cap:
                raise Refused("ResultTooLarge", f"the result is {size} bytes; at most {cap}")
        except Refused as exc:
            exc.id, exc.tool = id_, name
            raise
        return id_, name, result

    def _run(self, tool: Tool, args: BaseModel) -> Any:
        """The tool's result, within `call_seconds`. A tool that overruns is abandoned, not
        stopped (a thread cannot be): it finishes in the background and its result is
        dropped; the program gets ToolTimeout and may go on."""
        outcome: list[tuple[bool, Any]] = []

        def target() -> None:
            try:
                outcome.append((True, tool.run(args)))
            except BaseException as exc:  # handed to the serving thread, raised there
                outcome.append((False, exc))

        worker = threading.Thread(target=target, name=f"llamapipe-tool-{tool.name}", daemon=True)
        worker.start()
        worker.join(self.limits.call_seconds)
        if not outcome:
            raise Refused(
                "ToolTimeout",
                f"{tool.name} took longer than {self.limits.call_seconds:g} s; it was abandoned",
            )
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    # -- as a sandbox run's tool server ------------------------------------------------------

    def client_source(self) -> str:
        """What the sandbox runs inside the program's process before the program."""
        return client_source()

    def serve(self, read_fd: int, write_fd: int) -> None:
        """Answer the program until it closes its end, dies, or the channel closes."""
        serve(self, read_fd, write_fd)

    def feed(self, data: bytes) -> bytes:
        """Consume bytes from the program (any split, partial frames kept); the framed
        replies to every frame completed so far. Empty once `closed`."""
        if self.closed:
            return b""
        self._buffer += data
        out = bytearray()
        while len(self._buffer) >= HEADER.size and not self.closed:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.limits.max_request_bytes:
                out += self._close(
                    "FrameTooLarge",
                    f"a frame of {length} bytes announced; at most {self.limits.max_request_bytes}",
                )
                break
            if len(self._buffer) < HEADER.size + length:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            out += self.handle(body)
            if self.total_bytes > self.limits.max_total_bytes:
                out += self._close(
                    "BudgetExceeded",
                    f"this run may move at most {self.limits.max_total_bytes} bytes",
                )
        return bytes(out)

    def _close(self, type_: str, message: str) -> bytes:
        self.closed = True
        self._buffer.clear()
        self.trace.append(CallRecord(None, None, False, type_, 0, 0, 0.0))
        return encode(self._error(None, type_, message + "; the channel is closed"))


def serve(dispatcher: Dispatcher, read_fd: int, write_fd: int, chunk: int = 65536) -> None:
    """Answer frames from `read_fd` on `write_fd` until end of file or the channel closes.
    (For a run's pipes; the caller owns and closes both descriptors.)"""
    try:
        while not dispatcher.closed:
            data = os.read(read_fd, chunk)
            if not data:
                return
            view = memoryview(dispatcher.feed(data))
            while view:
                view = view[os.write(write_fd, view) :]
    except BrokenPipeError:  # the program stopped reading (it ended, or was stopped)
        return


def client_source() -> str:
    """The program side (`pipelines/agent/client.py`) as text, to be put in the sandbox."""
    return (Path(__file__).parent / "client.py").read_text(encoding="utf-8")
