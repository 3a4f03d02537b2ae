"""The agent's tool channel, host side: tools and their registry, the calculator's whitelist,
search passages whose offsets hold, the strict framed wire format and the Dispatcher's
refusals (flood, forged frames, unknown tools, invalid arguments, oversized results), and the
program's client stub against the Dispatcher over real pipes."""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import struct
import threading
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from pipelines.agent import ChannelLimits, Dispatcher, Tool, ToolBox, calculator, search_tool
from pipelines.agent import client as client_module
from pipelines.agent.channel import client_source, encode, serve
from pipelines.agent.tools import CalculatorError, SearchTool, calculator_tool
from pipelines.rag import Index

KO = (
    "처용가는 신라 헌강왕 때 처용이 지었다고 전하는 향가이다.\n\n"
    "서동요는 백제 무왕이 지었다고 전한다.\n"
)
EN = "Hyangga are Silla-era poems. Ogura Shinpei published a reading of them in 1929.\n"


class Spy:
    """A tool function that records every call (to prove refused frames never reach it)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, text: str, times: int = 1) -> str:
        self.calls.append({"text": text, "times": times})
        return text * times


def make_box(spy: Spy | None = None) -> ToolBox:
    box = ToolBox()
    box.register(calculator_tool())
    if spy is not None:
        box.register(spy, name="echo", description="repeat text")
    return box


def frame(doc: Any) -> bytes:
    body = doc if isinstance(doc, bytes) else json.dumps(doc, ensure_ascii=False).encode()
    return struct.pack(">I", len(body)) + body


def replies(data: bytes) -> list[dict[str, Any]]:
    out = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        body, data = data[4 : 4 + n], data[4 + n :]
        assert len(body) == n
        out.append(json.loads(body))
    return out


def one(dispatcher: Dispatcher, doc: Any) -> dict[str, Any]:
    (reply,) = replies(dispatcher.feed(frame(doc)))
    return reply


def call(id_: int, tool: str, **args: Any) -> dict[str, Any]:
    return {"id": id_, "tool": tool, "args": args}


# -- the registry --------------------------------------------------------------------------


def test_a_plain_function_becomes_a_strict_model() -> None:
    def area(width: float, height: Annotated[float, Field(gt=0)] = 1.0) -> float:
        """Width times height."""
        return width * height

    tool = ToolBox().register(area)
    assert (tool.name, tool.description) == ("area", "Width times height.")
    assert tool.run(tool.args.model_validate({"width": 2, "height": 3})) == 6
    schema = tool.schema()["parameters"]
    assert schema["required"] == ["width"]
    for bad in ({"width": "2"}, {"width": 2, "extra": 1}, {}, {"width": 2, "height": 0}):
        with pytest.raises(ValueError):
            tool.args.model_validate(bad)


def test_registry_refuses_bad_names_duplicates_and_untyped_functions() -> None:
    box = ToolBox()
    box.register(calculator)
    with pytest.raises(ValueError, match="registered already"):
        box.register(calculator)
    for name in ("no spaces", "1abc", "class", "", "a" * 65, "os.system"):
        with pytest.raises(ValueError, match="identifier"):
            box.register(calculator, name=name)

    def untyped(x):
        return x

    def star(*args: int) -> int:
        return 0

    for func in (untyped, star):
        with pytest.raises(TypeError):
            ToolBox().register(func)
    assert box.names == ["calculator"] and "calculator" in box and len(box) == 1


def test_a_langchain_tool_registers_with_its_own_schema() -> None:
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    box = ToolBox([shout])
    d = Dispatcher(box)
    assert one(d, call(1, "shout", text="abc")) == {"id": 1, "ok": True, "result": "ABC"}
    assert one(d, call(2, "shout", text=3))["error"]["type"] == "InvalidArguments"


# -- the calculator ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 // 2 + 7 % 2", 4),
        ("2 ** 10", 1024),
        ("-3 ** 2", -9),
        ("sqrt(16) + abs(-2)", 6.0),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("round(pi, 2)", 3.14),
        ("round(12345, -2)", 12300),
        ("round(2.5)", 2),
        ("10 / 4", 2.5),
        ("2 ** 255", 2**255),
    ],
)
def test_calculator_does_arithmetic(expression: str, value: float) -> None:
    assert calculator(expression) == value


@pytest.mark.timeout(10)  # a refusal that slipped would compute for minutes: fail fast
@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "(1).__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "open('/etc/passwd')",
        "eval('1')",
        "x",
        "9**9**9",
        "10**100 * 10**100",
        "2 ** 257",
        "(2**200) * (2**200)",
        "factorial(100000)",
        "[1] * 10**9",
        "'a' * 10**9",
        "1e308 * 10",
        "exp(1000)",
        "1 / 0",
        "10 % 0",
        "sqrt(-1)",
        "lambda: 1",
        "[i for i in range(10**9)]",
        "1 if 1 else 2",
        "1 < 2",
        "1 << 100000",
        "True + 1",
        "(-8) ** (1/3)",
        "floor(1e300)",
        "max(*[1, 2])",
        "round(1.5, ndigits=1)",
        "round(10**70, -(10**7))",
        "round(2**255, -401)",
        "round(1.5, 0.5)",
        "round(1, 2, 3)",
        "1 +",
        "-" * 300 + "1",
        "1" * 1001,
    ],
)
def test_calculator_refuses(expression: str) -> None:
    with pytest.raises(CalculatorError):
        calculator(expression)


def test_calculator_through_the_channel_reports_the_refusal() -> None:
    d = Dispatcher(make_box())
    reply = one(d, call(1, "calculator", expression="__import__('os').system('id')"))
    assert reply["ok"] is False and reply["error"]["type"] == "CalculatorError"
    assert one(d, call(2, "calculator", expression="6*7")) == {"id": 2, "ok": True, "result": 42}


# -- search --------------------------------------------------------------------------------


@pytest.fixture
def index(tmp_path: Path) -> Index:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ko.txt").write_text(KO, encoding="utf-8")
    (docs / "en.md").write_text(EN, encoding="utf-8")
    idx = Index(tmp_path / "index")
    idx.ingest([docs])
    return idx


def test_search_passages_carry_offsets_that_verify(index: Index) -> None:
    tool = search_tool(index)
    d = Dispatcher(ToolBox([tool]))
    reply = one(d, call(1, "search", query="처용가는 누가 지었나", k=2))
    assert reply["ok"], reply
    passages = reply["result"]
    assert passages and any("처용" in p["text"] for p in passages)
    for p in passages:
        assert index.document_text(p["source"])[p["start"] : p["end"]] == p["text"]
    impl = tool.func
    assert isinstance(impl, SearchTool)
    assert [p.n for p in impl.seen] == [p["n"] for p in passages]
    assert one(d, call(2, "search", query="처용가", k=99))["error"]["type"] == "InvalidArguments"
    assert one(d, call(3, "search", query=""))["error"]["type"] == "InvalidArguments"


def test_search_drops_a_passage_whose_offsets_do_not_hold(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = search_tool(index)
    real = index.document_text
    monkeypatch.setattr(index, "document_text", lambda source: "X" + real(source))
    assert tool.func(query="처용가는 누가 지었나", k=2) == []
    assert isinstance(tool.func, SearchTool) and tool.func.unverified > 0


# -- the dispatcher: ordinary calls --------------------------------------------------------


def test_a_call_and_korean_text_round_trip() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy))
    reply = one(d, call(1, "echo", text="향가 ", times=2))
    assert reply == {"id": 1, "ok": True, "result": "향가 향가 "}
    assert spy.calls == [{"text": "향가 ", "times": 2}]
    assert d.trace[-1].ok and d.trace[-1].tool == "echo"


def test_frames_split_anywhere_and_batched_are_each_answered() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy))
    data = b"".join(frame(call(i, "echo", text=f"{i}번")) for i in range(1, 4))
    out = b""
    for i in range(len(data)):  # one byte at a time
        out += d.feed(data[i : i + 1])
    assert [r["result"] for r in replies(out)] == ["1번", "2번", "3번"]
    d2 = Dispatcher(make_box(Spy()))
    assert [r["id"] for r in replies(d2.feed(data))] == [1, 2, 3]


# -- the dispatcher: refusals, none of which reaches the tool -----------------------------

FORGED: list[tuple[str, bytes, str]] = [
    ("garbage", b"\x00\xff\xfe garbage", "BadFrame"),
    ("not utf-8", b'{"id": 1, "tool": "echo", "args": {"text": "\xff"}}', "BadFrame"),
    ("empty body", b"", "BadFrame"),
    ("a list", b"[1, 2]", "BadFrame"),
    ("duplicate key", b'{"id": 1, "tool": "echo", "args": {"text": "a", "text": "b"}}', "BadFrame"),
    (
        "duplicate top key",
        b'{"id": 1, "tool": "calculator", "tool": "echo", "args": {"text": "a"}}',
        "BadFrame",
    ),
    ("NaN", b'{"id": 1, "tool": "echo", "args": {"text": "a", "times": NaN}}', "BadFrame"),
    (
        "Infinity",
        b'{"id": 1, "tool": "echo", "args": {"text": "a", "times": Infinity}}',
        "BadFrame",
    ),
    ("1e999", b'{"id": 1, "tool": "echo", "args": {"text": "a", "times": 1e999}}', "BadFrame"),
    (
        "huge int",
        b'{"id": 1, "tool": "echo", "args": {"text": "a", "times": ' + b"9" * 5000 + b"}}",
        "BadFrame",
    ),
    ("huge id", b'{"id": ' + b"9" * 30 + b', "tool": "echo", "args": {"text": "a"}}', "BadFrame"),
    (
        "deep nesting",
        b'{"id": 1, "tool": "echo", "args": {"text": ' + b"[" * 20000 + b"]" * 20000 + b"}}",
        "BadFrame",
    ),
    (
        "moderate nesting",
        b'{"id": 1, "tool": "echo", "args": {"text": ' + b"[" * 40 + b"]" * 40 + b"}}",
        "BadFrame",
    ),
    ("lone surrogate", b'{"id": 1, "tool": "echo", "args": {"text": "\\ud800"}}', "BadFrame"),
    ("missing args", b'{"id": 1, "tool": "echo"}', "BadFrame"),
    ("extra key", b'{"id": 1, "tool": "echo", "args": {"text": "a"}, "sudo": true}', "BadFrame"),
    ("id as text", b'{"id": "1", "tool": "echo", "args": {"text": "a"}}', "BadFrame"),
    ("id as bool", b'{"id": true, "tool": "echo", "args": {"text": "a"}}', "BadFrame"),
    ("id as float", b'{"id": 1.0, "tool": "echo", "args": {"text": "a"}}', "BadFrame"),
    ("id zero", b'{"id": 0, "tool": "echo", "args": {"text": "a"}}', "BadFrame"),
    ("tool as list", b'{"id": 1, "tool": ["echo"], "args": {"text": "a"}}', "BadFrame"),
    ("args as list", b'{"id": 1, "tool": "echo", "args": ["a"]}', "BadFrame"),
    ("unknown tool", b'{"id": 1, "tool": "os_system", "args": {}}', "UnknownTool"),
    ("dunder tool", b'{"id": 1, "tool": "__import__", "args": {}}', "UnknownTool"),
    ("missing field", b'{"id": 1, "tool": "echo", "args": {}}', "InvalidArguments"),
    ("wrong type", b'{"id": 1, "tool": "echo", "args": {"text": 5}}', "InvalidArguments"),
    (
        "coercible text",
        b'{"id": 1, "tool": "echo", "args": {"text": "a", "times": "2"}}',
        "InvalidArguments",
    ),
    (
        "extra field",
        b'{"id": 1, "tool": "echo", "args": {"text": "a", "cmd": "id"}}',
        "InvalidArguments",
    ),
]


@pytest.mark.parametrize(("label", "body", "kind"), FORGED, ids=[f[0] for f in FORGED])
def test_a_forged_frame_gets_an_error_and_nothing_else(label: str, body: bytes, kind: str) -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy))
    reply = one(d, body)
    assert reply["ok"] is False and reply["error"]["type"] == kind, reply
    assert set(reply) == {"id", "ok", "error"} and set(reply["error"]) == {"type", "message"}
    assert "Traceback" not in reply["error"]["message"]
    assert spy.calls == []
    assert not d.closed  # the next, honest frame is still answered
    assert one(d, call(2**40, "echo", text="ok"))["result"] == "ok"


def test_invalid_arguments_are_summarised_without_their_values() -> None:
    d = Dispatcher(make_box(Spy()))
    secretish = "비밀" * 1000
    reply = one(d, {"id": 1, "tool": "echo", "args": {"text": 1, "times": secretish}})
    message = reply["error"]["message"]
    assert "text" in message and "times" in message
    assert secretish[:20] not in message and len(message) <= 500


def test_ids_must_increase() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy))
    assert one(d, call(5, "echo", text="a"))["ok"]
    for id_ in (5, 4):
        assert one(d, call(id_, "echo", text="b"))["error"]["type"] == "BadFrame"
    assert len(spy.calls) == 1


def test_a_length_prefix_beyond_the_cap_closes_before_the_body_is_read() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy), ChannelLimits(max_request_bytes=1024))
    (reply,) = replies(d.feed(struct.pack(">I", 1025)))  # no body sent at all
    assert reply["id"] is None and reply["error"]["type"] == "FrameTooLarge"
    assert d.closed and d.feed(frame(call(1, "echo", text="a"))) == b""
    assert spy.calls == []
    d2 = Dispatcher(make_box(spy))
    assert replies(d2.feed(b"\xff\xff\xff\xff"))[0]["error"]["type"] == "FrameTooLarge"


def test_a_length_prefix_shorter_than_the_body_desynchronises_into_errors() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy))
    body = json.dumps(call(1, "echo", text="a")).encode()
    out = replies(d.feed(struct.pack(">I", 10) + body))
    assert out and out[0]["error"]["type"] == "BadFrame"
    assert all(not r["ok"] for r in out)
    assert spy.calls == []


def test_a_frame_cut_short_is_never_dispatched() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy))
    whole = frame(call(1, "echo", text="a"))
    assert d.feed(whole[:-1]) == b""  # the length promises one byte more
    assert spy.calls == []
    assert replies(d.feed(whole[-1:]))[0]["ok"]


def test_a_flood_spends_the_budget_then_every_frame_gets_the_same_error() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy), ChannelLimits(max_calls=5))
    data = b"".join(frame(call(i, "echo", text="x")) for i in range(1, 101))
    out = replies(d.feed(data))
    assert len(out) == 100 and len(spy.calls) == 5
    assert all(r["ok"] for r in out[:5])
    assert {r["error"]["type"] for r in out[5:]} == {"BudgetExceeded"}
    assert len({r["error"]["message"] for r in out[5:]}) == 1


def test_refused_frames_count_against_the_budget() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy), ChannelLimits(max_calls=3))
    out = replies(d.feed(frame(b"junk") * 3 + frame(call(1, "echo", text="a"))))
    assert [r["error"]["type"] for r in out] == ["BadFrame"] * 3 + ["BudgetExceeded"]
    assert spy.calls == []


def test_the_total_bytes_budget_closes_the_channel() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy), ChannelLimits(max_calls=10_000, max_total_bytes=4096))
    big = frame(call(1, "echo", text="a" * 1000))
    out = replies(
        d.feed(big + b"".join(frame(call(i, "echo", text="a" * 1000)) for i in range(2, 50)))
    )
    assert d.closed and out[-1]["id"] is None and out[-1]["error"]["type"] == "BudgetExceeded"
    assert len(spy.calls) < 4
    assert d.feed(frame(call(99, "echo", text="a"))) == b""


def test_an_oversized_result_is_refused_not_sent() -> None:
    spy = Spy()
    box = ToolBox()
    box.register(spy, name="echo", result_bytes=1000)
    d = Dispatcher(box)
    reply = one(d, call(1, "echo", text="향", times=1000))
    assert reply["error"]["type"] == "ResultTooLarge" and len(spy.calls) == 1
    assert one(d, call(2, "echo", text="향", times=100))["ok"]
    d2 = Dispatcher(make_box(Spy()), ChannelLimits(max_reply_bytes=2000))
    assert one(d2, call(1, "echo", text="a", times=5000))["error"]["type"] == "ResultTooLarge"


def test_a_raising_tool_gives_its_type_and_message_never_a_traceback_or_path() -> None:
    def broken(path: str) -> str:
        if path == "os":
            raise FileNotFoundError(2, "No such file or directory", "/home/host/secret.txt")
        raise RuntimeError(f"cannot open {Path(__file__).resolve()} for {path}")

    def unjson() -> Any:
        return {1, 2}

    box = ToolBox([broken, unjson])
    d = Dispatcher(box)
    reply = one(d, call(1, "broken", path="x"))
    assert reply["error"]["type"] == "RuntimeError"
    message = reply["error"]["message"]
    assert "Traceback" not in message and str(Path(__file__).parent) not in message
    assert "<path>" in message
    reply = one(d, call(2, "broken", path="os"))
    assert reply["error"] == {"type": "FileNotFoundError", "message": "No such file or directory"}
    assert one(d, call(3, "unjson"))["error"]["type"] == "ResultError"


def test_a_tool_returning_a_model_is_sent_as_json() -> None:
    class Point(BaseModel):
        x: int
        label: str

    def point() -> Point:
        return Point(x=1, label="점")

    d = Dispatcher(ToolBox([point]))
    assert one(d, call(1, "point"))["result"] == {"x": 1, "label": "점"}


def test_handle_answers_one_body() -> None:
    d = Dispatcher(make_box())
    reply = replies(d.handle(json.dumps(call(1, "calculator", expression="2+2")).encode()))
    assert reply == [{"id": 1, "ok": True, "result": 4}]
    assert encode({"a": "향"})[4:].decode() == '{"a":"향"}'


# -- the program's client stub, over real pipes -------------------------------------------


def test_the_client_imports_only_json_and_struct() -> None:
    """Both in the sandbox's default allowlist: the client runs with the program's builtins."""
    tree = ast.parse(client_source())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported == {"json", "struct"}
    assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(tree))


def test_the_client_talks_to_the_dispatcher_over_pipes() -> None:
    spy = Spy()
    d = Dispatcher(make_box(spy), ChannelLimits(max_calls=3))
    to_host_r, to_host_w = os.pipe()
    to_prog_r, to_prog_w = os.pipe()
    host = threading.Thread(target=serve, args=(d, to_host_r, to_prog_w), daemon=True)
    host.start()
    namespace: dict[str, Any] = {"__name__": "tools"}
    exec(compile(client_source(), "tools.py", "exec"), namespace)  # as the sandbox will
    try:
        namespace["connect"](to_host_w, to_prog_r)
        assert namespace["call"]("echo", text="처용", times=2) == "처용처용"
        assert namespace["call"]("calculator", expression="2**10") == 1024
        with pytest.raises(namespace["ToolError"]) as info:
            namespace["call"]("nope")
        assert info.value.type == "UnknownTool"
        with pytest.raises(namespace["ToolError"]) as info:
            namespace["call"]("echo", text="again")
        assert info.value.type == "BudgetExceeded"
    finally:
        os.close(to_host_w)
        host.join(5)
        for fd in (to_host_r, to_prog_r, to_prog_w):
            os.close(fd)
    assert not host.is_alive()
    assert spy.calls == [{"text": "처용", "times": 2}]
    assert ChannelLimits().max_reply_bytes + 4 <= client_module.MAX_REPLY  # takes any reply


def test_arguments_validate_as_json_with_the_function_module_types() -> None:
    def weekday(when: dt.date) -> str:  # `dt`: a name only this module's globals hold
        return when.strftime("%A")

    d = Dispatcher(ToolBox([weekday]))
    assert one(d, call(1, "weekday", when="2026-12-03"))["result"] == "Thursday"
    assert one(d, call(2, "weekday", when="not a date"))["error"]["type"] == "InvalidArguments"


def test_a_tool_class_registers_as_is() -> None:
    class Args(BaseModel):
        n: int

    tool = Tool("double", "twice n", Args, lambda n: n * 2, result_bytes=100)
    d = Dispatcher(ToolBox([tool]))
    assert one(d, call(1, "double", n=21))["result"] == 42
