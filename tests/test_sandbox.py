"""The sandbox is useful: ordinary PAL programs run and return the right value.

Also the result contract, limits, configuration, threads, refusal where walls are missing,
and the CLI. Hostile programs live in test_sandbox_redteam.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.errors import UsageError
from pipelines.sandbox import (
    Limits,
    Sandbox,
    SandboxUnavailableError,
    check_system,
)
from pipelines.sandbox import sandbox as sandbox_module
from pipelines.settings import load_settings
from tests.cli_helpers import run_cli
from tests.conftest import NO_WALLS, needs_walls

walls = needs_walls


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    if NO_WALLS:
        pytest.skip(NO_WALLS)
    with Sandbox(Limits(timeout=3)) as sandbox:
        yield sandbox


UTILITY = {
    "arithmetic": ("def solution():\n    apples = 23\n    used = 20\n    bought = 6\n"
                   "    return apples - used + bought", 9),
    "float-division": ("def solution():\n    return 7 / 2", 3.5),
    "math": ("import math\ndef solution():\n    return math.comb(10, 3) + math.isqrt(50)", 127),
    "fractions": ("from fractions import Fraction\ndef solution():\n"
                  "    return Fraction(1, 3) + Fraction(1, 6)", "1/2"),
    "decimal": ("from decimal import Decimal\ndef solution():\n"
                "    return Decimal('0.1') + Decimal('0.2')", "0.3"),
    "datetime": ("from datetime import date, timedelta\ndef solution():\n"
                 "    return (date(2024, 2, 27) + timedelta(days=3)).strftime('%m/%d/%Y')",
                 "03/01/2024"),
    "strptime": ("from datetime import datetime\ndef solution():\n"
                 "    return datetime.strptime('2021-03-04', '%Y-%m-%d').weekday()", 3),
    "calendar": ("import calendar\ndef solution():\n    return calendar.isleap(2024)", True),
    "itertools": ("import itertools\ndef solution():\n"
                  "    return len(list(itertools.permutations('abcd', 2)))", 12),
    "collections": ("from collections import Counter\ndef solution():\n"
                    "    return Counter('banana').most_common(1)[0]", ["a", 3]),
    "statistics": ("import statistics\ndef solution():\n    return statistics.median([3, 1, 2, 8])",
                   2.5),
    "regex": ("import re\ndef solution():\n    return re.findall(r'\\d+', 'a1b22c333')",
              ["1", "22", "333"]),
    "helpers-and-lambdas": ("def double(x):\n    return 2 * x\nsquare = lambda x: x * x\n"
                            "def solution():\n    return sum(map(square, map(double, [1, 2])))", 20),
    "classes": ("from dataclasses import dataclass\n@dataclass\nclass Box:\n    n: int\n"
                "    def more(self):\n        return Box(self.n + 1)\n"
                "def solution():\n    return Box(1).more().n", 2),
    "korean-identifiers": ("def solution():\n    사과 = 5\n    배 = 3\n    # 모두 몇 개?\n"
                           "    return 사과 + 배", 8),
    "korean-text": ("def solution():\n    return '철수는 사과를 ' + str(3) + '개 가졌다'",
                    "철수는 사과를 3개 가졌다"),
    "no-solution": ("x = 1 + 1", None),
    "nested-result": ("def solution():\n    return {'a': [1, (2, 3)], 'b': None}",
                      {"a": [1, [2, 3]], "b": None}),
    "set-result": ("def solution():\n    return sorted({3, 1, 2})", [1, 2, 3]),
    "big-int": ("def solution():\n    return 2 ** 100", 2**100),
    "nan": ("def solution():\n    return float('nan')", "nan"),
    "scratch-file": ("def solution():\n    open('notes.txt', 'w').write('hi')\n"
                     "    return open('notes.txt').read()", "hi"),
    "random-seeded": ("import random\ndef solution():\n    random.seed(1)\n"
                      "    return random.randint(1, 6) in range(1, 7)", True),
    "json": ("import json\ndef solution():\n    return json.loads('{\"k\": [1]}')", {"k": [1]}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(UTILITY))
def test_ordinary_programs_return_the_right_value(sb: Sandbox, name: str) -> None:
    code, expected = UTILITY[name]
    result = sb.run(code)
    assert result.ok, result.error
    assert result.result == expected
    assert result.killed is None and result.error is None


def test_print_then_return(sb: Sandbox) -> None:
    result = sb.run("print('step 1')\nprint('단계 2')\ndef solution():\n    return 42")
    assert result.stdout == "step 1\n단계 2\n"
    assert result.result == 42


def test_the_error_has_type_message_and_program_lines(sb: Sandbox) -> None:
    result = sb.run("def solution():\n    x = [1, 2]\n    return x[5]")
    assert not result.ok and result.killed is None
    assert result.error is not None
    assert result.error.type == "IndexError"
    assert "list index out of range" in result.error.message
    assert 'File "<program>", line 3' in result.error.traceback
    assert "_worker.py" not in result.error.traceback, "only the program's own frames"


def test_a_syntax_error_is_reported_like_any_error(sb: Sandbox) -> None:
    result = sb.run("def solution(:\n    return 1")
    assert result.error is not None and result.error.type == "SyntaxError"


def test_a_disallowed_import_names_the_module_and_the_setting(sb: Sandbox) -> None:
    result = sb.run("import socket")
    assert result.error is not None and result.error.type == "ImportError"
    assert "'socket'" in result.error.message
    assert "--allow-module" in result.error.message
    assert "LLAMAPIPE_SANDBOX_MODULES" in result.error.message


@walls
def test_extra_modules_make_more_imports_possible() -> None:
    with Sandbox(Limits(extra_modules=("html",)), workers=0) as sandbox:
        result = sandbox.run("import html\ndef solution():\n    return html.escape('<b>')")
    assert result.result == "&lt;b&gt;"


def test_timeout_is_reported_and_the_next_run_works(sb: Sandbox) -> None:
    with Sandbox(Limits(timeout=0.3), workers=1) as quick:
        stopped = quick.run("while True:\n    pass")
        assert stopped.killed == "timeout" and not stopped.ok
        assert 250 < stopped.duration_ms < 3000
        assert quick.run("def solution():\n    return 1").result == 1


def test_memory_cap_is_reported(sb: Sandbox) -> None:
    result = sb.run("def solution():\n    return len(bytearray(1024 * 1024 * 1024))")
    assert result.killed == "memory" and result.error and result.error.type == "MemoryError"


def test_output_cap_is_reported_and_output_kept_up_to_it() -> None:
    with Sandbox(Limits(output_kb=4), workers=0) as sandbox:
        result = sandbox.run("while True:\n    print('가' * 100)")
    assert result.killed == "output"
    assert 0 < len(result.stdout.encode()) <= 4096


def test_scratch_is_size_capped() -> None:
    with Sandbox(Limits(scratch_mb=1), workers=0) as sandbox:
        result = sandbox.run("def solution():\n    open('f', 'wb').write(b'x' * (2 << 20))")
    assert result.error is not None and result.error.type in ("OSError", "MemoryError")


def test_threads_are_capped_at_the_limit() -> None:
    code = (
        "import threading, time\ndef solution():\n    n = 0\n    try:\n        while n < 50:\n"
        "            threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
        "            n += 1\n    except RuntimeError:\n        pass\n    return n"
    )
    with Sandbox(Limits(threads=3, extra_modules=("threading",)), workers=0) as sandbox:
        assert sandbox.run(code).result == 3


def test_runs_from_several_threads_at_once(sb: Sandbox) -> None:
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = sb.run(f"def solution():\n    return {i} * {i}").result

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i * i for i in range(8)}


def test_json_document_has_the_documented_fields(sb: Sandbox) -> None:
    doc = sb.run("def solution():\n    return 1").to_json()
    assert set(doc) == {
        "ok", "result", "stdout", "stderr", "error", "killed", "duration_ms", "unsafe",
    }  # fmt: skip
    assert json.loads(json.dumps(doc)) == doc


def test_unsafe_mode_is_labelled() -> None:
    with Sandbox(isolation="unsafe", workers=0) as sandbox:
        result = sandbox.run("def solution():\n    return 2")
    assert result.result == 2 and result.unsafe and result.to_json()["unsafe"] is True


def test_missing_walls_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.sandbox import _walls

    monkeypatch.setattr(_walls, "landlock_abi", lambda: 0)
    with pytest.raises(SandboxUnavailableError, match="Landlock") as info:
        Sandbox().start()
    assert info.value.exit_code == 3
    hint = info.value.hint or ""
    # The next steps it names exist: the check command, and a setting every front end reads.
    assert "llamapipe sandbox check" in hint and "LLAMAPIPE_SANDBOX_ISOLATION=unsafe" in hint
    monkeypatch.setenv("LLAMAPIPE_SANDBOX_ISOLATION", "unsafe")
    assert load_settings().sandbox_isolation == "unsafe"


def test_not_linux_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module.sys, "platform", "darwin")
    with pytest.raises(SandboxUnavailableError, match="needs Linux"):
        check_system()


def test_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAPIPE_SANDBOX_TIMEOUT", "2.5")
    monkeypatch.setenv("LLAMAPIPE_SANDBOX_MODULES", '["html"]')
    limits = Limits.from_settings(load_settings(), memory_mb=128)
    assert (limits.timeout, limits.memory_mb) == (2.5, 128)
    assert "html" in limits.allowed_modules and "math" in limits.allowed_modules


def test_bad_limits_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="timeout"):
        Limits.from_settings(load_settings(), timeout=-1)


# -- CLI -------------------------------------------------------------------------------------


@walls
def test_cli_runs_a_file_and_prints_the_value(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    program = tmp_path / "p.py"
    program.write_text("print('계산')\ndef solution():\n    return {'답': 6 * 7}\n")
    r = run_cli(capsys, "sandbox", "run", str(program))
    assert r.code == 0
    assert r.stdout.splitlines() == ["계산", '{"답": 42}']


@walls
def test_cli_json_from_stdin_and_exit_1_on_failure(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"raise ValueError('no')")))
    r = run_cli(capsys, "sandbox", "run", "-", "--json")
    doc = r.json()
    assert r.code == 1
    assert doc["ok"] is False and doc["error"]["type"] == "ValueError"
    assert doc["unsafe"] is False


@walls
def test_cli_timeout_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    program = tmp_path / "loop.py"
    program.write_text("while True:\n    pass\n")
    r = run_cli(capsys, "sandbox", "run", str(program), "--timeout", "0.3", "--json")
    assert r.code == 1 and r.json()["killed"] == "timeout"


def test_cli_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = run_cli(capsys, "sandbox", "run", str(tmp_path / "missing.py"))
    assert r.code == 2 and "no such program file" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"\xff\xfe\x00")
    r = run_cli(capsys, "sandbox", "run", str(bad))
    assert r.code == 2 and "not UTF-8" in r.stderr


def test_cli_unsafe_is_labelled(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text("def solution():\n    return 1\n")
    r = run_cli(capsys, "sandbox", "run", str(program), "--isolation", "unsafe")
    assert r.code == 0 and "UNSAFE" in r.stderr


def test_cli_no_walls_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module.sys, "platform", "darwin")
    program = tmp_path / "p.py"
    program.write_text("def solution():\n    return 1\n")
    r = run_cli(capsys, "sandbox", "run", str(program))
    assert r.code == 3 and "needs Linux" in r.stderr


@walls
def test_a_sandbox_started_in_a_thread_that_ended_still_runs() -> None:
    import threading

    sandbox = Sandbox(workers=0)
    starter = threading.Thread(target=sandbox.start)
    starter.start()
    starter.join()  # the warm worker it made dies with it (PR_SET_PDEATHSIG)...
    time.sleep(0.3)  # ...once the kernel has delivered the signal
    try:
        result = sandbox.run("def solution():\n    return 5")
    finally:
        sandbox.close()
    assert result.ok and result.result == 5
