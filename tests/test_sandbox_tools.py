"""The tool channel, end to end: programs in the real sandbox call host tools through
`Sandbox.run(code, tools=Dispatcher(...))`, and hostile ones get error replies and nothing
else. Every engine: the fork server, the per-run worker, and isolation="unsafe"."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.agent import ChannelLimits, Dispatcher, ToolBox, calculator
from pipelines.sandbox import Limits, Sandbox
from tests.conftest import NO_WALLS

pytestmark = pytest.mark.slow

ENGINES: dict[str, dict[str, Any]] = {
    "fork server": {"isolation": "linux", "fork_server": True},
    "per-run worker": {"isolation": "linux", "fork_server": False},
    "unsafe": {"isolation": "unsafe"},
}


class Spy:
    """A host tool that records every call it gets."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, text: str, times: int = 1) -> str:
        self.calls.append({"text": text, "times": times})
        return text * times


def toolbox(spy: Spy | None = None, *extra: Any) -> ToolBox:
    box = ToolBox([calculator, *extra])
    box.register(spy or Spy(), name="echo", description="repeat text")
    return box


class Final:
    def __init__(self) -> None:
        self.answers: list[str] = []

    def __call__(self, answer: str) -> None:
        self.answers.append(answer)


@pytest.fixture(scope="module", params=sorted(ENGINES))
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    options = ENGINES[request.param]
    if options["isolation"] == "linux" and NO_WALLS:
        pytest.skip(f"no sandbox walls here: {NO_WALLS}")
    with Sandbox(Limits(timeout=4), workers=1, **options) as sb:
        yield sb


def test_a_program_calls_host_tools_and_gives_its_final_answer(sandbox: Sandbox) -> None:
    spy, final = Spy(), Final()
    box = toolbox(spy)
    box.register(final, name="final", description="the answer")
    server = Dispatcher(box)
    code = (
        "x = tools.call('calculator', expression='6*7')\n"
        "y = tools.call('echo', text='처용', times=2)\n"
        "print(x, y)\n"
        "final(f'{x} {y}')\n"
    )
    result = sandbox.run(code, tools=server)
    assert result.ok, result
    assert result.stdout == "42 처용처용\n"
    assert final.answers == ["42 처용처용"]
    assert spy.calls == [{"text": "처용", "times": 2}]
    assert [(r.id, r.tool, r.ok) for r in server.trace] == [
        (1, "calculator", True),
        (2, "echo", True),
        (3, "final", True),
    ]


def test_refusals_reach_the_program_as_tool_errors(sandbox: Sandbox) -> None:
    spy = Spy()
    server = Dispatcher(toolbox(spy))
    code = (
        "def attempt(*a, **k):\n"
        "    try:\n"
        "        return tools.call(*a, **k)\n"
        "    except tools.ToolError as e:\n"
        "        return e.type\n"
        "def solution():\n"
        "    return [attempt('nope'), attempt('echo', text=3), attempt('echo', text='a', x=1),\n"
        "            attempt('calculator', expression='9**9**9'), attempt('echo', text='ok')]\n"
    )
    result = sandbox.run(code, tools=server)
    assert result.ok, result
    assert result.result == [
        "UnknownTool",
        "InvalidArguments",
        "InvalidArguments",
        "CalculatorError",
        "ok",
    ]
    assert spy.calls == [{"text": "ok", "times": 1}]  # never called on a refused frame


def test_without_a_server_the_program_has_no_tools_and_no_channel(sandbox: Sandbox) -> None:
    code = (
        "def solution():\n"
        "    held = []\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            open(fd, 'rb', buffering=0, closefd=False)\n"
        "            held.append(fd)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return ['tools' in globals(), held]\n"
    )
    plain = sandbox.run(code)
    served = sandbox.run(code, tools=Dispatcher(toolbox()))
    assert plain.ok and served.ok, (plain, served)
    assert plain.result[0] is False and served.result[0] is True
    # Served: exactly the two channel ends on top of what a plain run holds.
    assert len(served.result[1]) == len(plain.result[1]) + 2


def test_import_tools_still_fails_and_the_client_holds_no_os(sandbox: Sandbox) -> None:
    code = (
        "def solution():\n"
        "    try:\n"
        "        import tools as again\n"
        "        imported = True\n"
        "    except ImportError:\n"
        "        imported = False\n"
        "    return [imported, sorted(k for k in vars(tools) if not k.startswith('__'))]\n"
    )
    result = sandbox.run(code, tools=Dispatcher(toolbox()))
    assert result.ok, result
    imported, names = result.result
    assert imported is False
    assert "os" not in names and {"call", "final", "json", "struct"} <= set(names)


# -- hostile programs on the channel ------------------------------------------------------


def test_a_flood_of_garbage_spends_the_budgets_and_nothing_else(sandbox: Sandbox) -> None:
    spy = Spy()
    server = Dispatcher(toolbox(spy), ChannelLimits(max_calls=8, max_total_bytes=1 << 20))
    code = (
        "import struct\n"
        "w = tools._files[0]\n"
        "junk = b'x' * 60000\n"
        "frame = struct.pack('>I', len(junk)) + junk\n"
        "def solution():\n"
        "    sent = 0\n"
        "    try:\n"
        "        while True:\n"
        "            w.write(frame)\n"
        "            sent += 1\n"
        "    except OSError as e:\n"
        "        return [sent, type(e).__name__]\n"
    )
    result = sandbox.run(code, tools=server)
    assert spy.calls == []
    # The host read until its byte budget, said so once, and closed: the program's next
    # write failed (or, never reading its replies, it was stopped at its time limit).
    assert server.closed
    assert server.trace[-1].error == "BudgetExceeded"
    assert result.ok or result.killed == "timeout", result
    if result.ok:
        assert result.result[1] == "BrokenPipeError"


def test_an_oversized_length_prefix_closes_the_channel(sandbox: Sandbox) -> None:
    spy = Spy()
    server = Dispatcher(toolbox(spy))
    code = (
        "import struct\n"
        "def solution():\n"
        "    tools._files[0].write(struct.pack('>I', 1 << 30) + b'{')\n"
        "    first = tools._files[1].read(4096)\n"
        "    try:\n"
        "        tools.call('echo', text='after')\n"
        "    except tools.ToolError as e:\n"
        "        return [first[4:].decode(), e.type]\n"
    )
    result = sandbox.run(code, tools=server)
    assert result.ok, result
    reply, after = result.result
    assert '"FrameTooLarge"' in reply and after == "ChannelClosed"
    assert spy.calls == [] and server.closed


def test_forged_frames_get_one_error_reply_each(sandbox: Sandbox) -> None:
    spy = Spy()
    server = Dispatcher(toolbox(spy))
    code = (
        "import json, struct\n"
        "def send(body):\n"
        "    tools._files[0].write(struct.pack('>I', len(body)) + body)\n"
        "    (n,) = struct.unpack('>I', tools._files[1].read(4))\n"
        "    return json.loads(tools._files[1].read(n))['error']['type']\n"
        "def solution():\n"
        '    return [send(b\'not json\'), send(b\'{"id": 1, "tool": "echo"}\'),\n'
        '            send(b\'{"id": 2, "tool": "echo", "args": {"text": NaN}}\'),\n'
        '            send(b\'{"id": 3, "id": 4, "tool": "echo", "args": {}}\'),\n'
        '            send(\'{"id": 5, "tool": "echo", "args": {"text": "\\\\ud800"}}\''
        ".encode()),\n"
        '            send(b\'\\xff\\xfe\'), send(b\'{"id": 0, "tool": "echo", "args": {}}\')]\n'
    )
    result = sandbox.run(code, tools=server)
    assert result.ok, result
    assert result.result == ["BadFrame"] * 7
    assert spy.calls == []


def test_closing_mid_frame_ends_the_serving_thread(sandbox: Sandbox) -> None:
    spy = Spy()
    server = Dispatcher(toolbox(spy))
    before = threading.active_count()
    code = (
        "import struct\n"
        "tools._files[0].write(struct.pack('>I', 100) + b'{\"id\": 1')\n"
        "def solution():\n"
        "    return 'left'\n"
    )
    result = sandbox.run(code, tools=server)
    assert result.ok and result.result == "left", result
    assert server.trace == [] and spy.calls == []
    assert _settles(lambda: threading.active_count() <= before)


def test_a_program_that_never_reads_its_replies_is_stopped_at_its_time_limit(
    sandbox: Sandbox,
) -> None:
    server = Dispatcher(toolbox(), ChannelLimits(max_calls=10_000, max_total_bytes=64 << 20))
    code = (
        "import json, struct\n"
        "body = json.dumps({'id': 1, 'tool': 'nope', 'args': {'pad': 'x' * 60000}}).encode()\n"
        "frame = struct.pack('>I', len(body)) + body\n"
        "while True:\n"
        "    tools._files[0].write(frame)\n"
    )
    before = threading.active_count()
    started = time.monotonic()
    result = sandbox.run(code, tools=server)
    assert result.killed == "timeout", result
    assert time.monotonic() - started < sandbox.limits.timeout + 10  # it did come back
    assert _settles(lambda: threading.active_count() <= before)


def test_a_tool_that_overruns_its_deadline_is_abandoned(sandbox: Sandbox) -> None:
    release = threading.Event()

    def slow(seconds: float) -> str:
        release.wait(seconds)
        return "late"

    box = toolbox()
    box.register(slow)
    server = Dispatcher(box, ChannelLimits(call_seconds=0.3))
    code = (
        "def solution():\n"
        "    try:\n"
        "        tools.call('slow', seconds=30.0)\n"
        "    except tools.ToolError as e:\n"
        "        first = e.type\n"
        "    return [first, tools.call('calculator', expression='1+1')]\n"
    )
    try:
        result = sandbox.run(code, tools=server)
    finally:
        release.set()
    assert result.ok, result
    assert result.result == ["ToolTimeout", 2]


def test_a_tool_error_message_loses_host_paths(sandbox: Sandbox) -> None:
    def leaky(name: str) -> str:
        raise RuntimeError(f"cannot read /home/alice/private/{name}.txt")

    box = toolbox()
    box.register(leaky)
    code = (
        "def solution():\n"
        "    try:\n"
        "        tools.call('leaky', name='x')\n"
        "    except tools.ToolError as e:\n"
        "        return [e.type, e.message]\n"
    )
    result = sandbox.run(code, tools=Dispatcher(box))
    assert result.result == ["RuntimeError", "cannot read <path>"], result


def test_runs_in_parallel_keep_their_own_channels(sandbox: Sandbox) -> None:
    outcomes: dict[int, Any] = {}

    def one(n: int) -> None:
        spy = Spy()
        server = Dispatcher(toolbox(spy))
        code = f"def solution():\n    return tools.call('echo', text='{n}', times=3)\n"
        outcomes[n] = (sandbox.run(code, tools=server).result, spy.calls)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes == {n: (str(n) * 3, [{"text": str(n), "times": 3}]) for n in range(4)}


def test_no_host_descriptor_or_thread_outlives_the_runs(sandbox: Sandbox) -> None:
    def held() -> int:
        return len(os.listdir("/proc/self/fd"))

    code = "def solution():\n    return tools.call('calculator', expression='2+3')\n"
    sandbox.run(code, tools=Dispatcher(toolbox()))  # warm: the pool's own fds are made
    assert sandbox.warm()
    before_fds, before_threads = held(), threading.active_count()
    for _ in range(10):
        assert sandbox.run(code, tools=Dispatcher(toolbox())).result == 5
        assert sandbox.run("def solution():\n    return 1").result == 1
    assert sandbox.warm()
    assert _settles(lambda: held() <= before_fds and threading.active_count() <= before_threads)


def _settles(condition: Any, seconds: float = 5.0) -> bool:
    """True once `condition()` holds (threads and descriptors are released just after a
    run returns, by the reaper and the serving thread)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
