"""The CLI leaves no sandbox process behind, even under a parent that never reaps.

Each case runs `llamapipe ...` under tests/subreaper.py, which adopts every orphan of the
run (as a container's non-init pid 1 would) and lists what it holds once the CLI is gone:
a live worker, or a zombie nobody will ever reap, fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_walls

pytestmark = [needs_walls, pytest.mark.slow]

HELPER = Path(__file__).with_name("subreaper.py")
ROOT = HELPER.parents[1]
SPIN = "def solution():\n    while True:\n        pass\n"
ANSWER = "```python\ndef solution():\n    return 7 * 12\n```"
# Signal the CLI a second after the sandbox's processes are up (the zygote and the child
# that runs the program), not after a fixed time that a loaded machine may spend importing.
SANDBOX_UP = ("--wait-for-processes", "2")


def under_subreaper(tmp_path: Path, *args: str) -> dict:
    # HOME and the XDG dirs already point into tmp_path (the autouse fixture).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLAMAPIPE_SANDBOX_TIMEOUT": "30"}
    done = subprocess.run(
        [sys.executable, str(HELPER), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "program, code",
    [("def solution():\n    return 42\n", 0), ("def solution():\n    raise ValueError('no')\n", 1)],
    ids=["returns", "raises"],
)
def test_sandbox_run_leaves_nothing(tmp_path: Path, program: str, code: int) -> None:
    (tmp_path / "p.py").write_text(program)
    report = under_subreaper(tmp_path, "--", "sandbox", "run", "p.py")
    assert report["exit"] == code
    assert report["left"] == []


def test_sandbox_run_interrupted_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "spin.py").write_text(SPIN)
    report = under_subreaper(
        tmp_path, *SANDBOX_UP, "--interrupt-after", "1", "--",
        "sandbox", "run", "spin.py", "--timeout", "30",
    )  # fmt: skip
    assert report["exit"] == 130  # what a shell reports for Ctrl-C
    assert report["left"] == []


@pytest.mark.parametrize("reply, code", [(ANSWER, 0), ("no program here", 1)], ids=["ok", "error"])
def test_pal_ask_leaves_nothing(tmp_path: Path, reply: str, code: int) -> None:
    report = under_subreaper(tmp_path, "--program", reply, "--", "pal", "ask", "7 boxes of 12?")
    assert report["exit"] == code
    assert report["left"] == []


def test_pal_ask_interrupted_leaves_nothing(tmp_path: Path) -> None:
    spin = f"```python\n{SPIN}```"
    report = under_subreaper(
        tmp_path, *SANDBOX_UP, "--interrupt-after", "1", "--program", spin,
        "--", "pal", "ask", "spin?",
    )  # fmt: skip
    assert report["exit"] == 130
    assert report["left"] == []


def test_killed_cli_leaves_no_live_process(tmp_path: Path) -> None:
    (tmp_path / "spin.py").write_text(SPIN)
    report = under_subreaper(
        tmp_path, *SANDBOX_UP, "--kill-after", "1", "--",
        "sandbox", "run", "spin.py", "--timeout", "30",
    )  # fmt: skip
    assert report["exit"] == -9
    assert report["watched"], "the run should have had a worker to watch"
    assert report["alive"] == []
    assert [p for p in report["left"] if p["state"] != "Z"] == []


def test_a_script_that_never_closes_its_sandbox_leaves_nothing(tmp_path: Path) -> None:
    """A library user's script exits with its Sandbox (and the fork server's zygote, a
    child running, two warm ones) still open: the zygote is stopped and reaped at exit."""
    script = (
        "from pipelines.sandbox import Limits, Sandbox\n"
        "sandbox = Sandbox(Limits(), workers=2)\n"
        "assert sandbox.run('def solution():\\n    return 1').result == 1\n"
        "assert sandbox.engine == 'fork server'\n"
    )
    report = under_subreaper(tmp_path, "--python", script)
    assert report["exit"] == 0
    assert report["left"] == []


def test_ctrl_c_while_the_fork_server_starts_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C lands while the zygote is starting (before the Sandbox knows of it), and the
    host then leaves with os._exit as the CLI does after an interrupt (no atexit): the
    zygote was still stopped and reaped, not left to die unreaped with its thread."""
    script = (
        "import os\n"
        "from pipelines.sandbox import Sandbox, forkserver\n"
        "real = forkserver.ForkServer._receive\n"
        "def receive(self, timeout):\n"
        "    if not getattr(self, 'hit', False):\n"
        "        self.hit = True\n"
        "        raise KeyboardInterrupt  # as the SIGINT handler raises it\n"
        "    return real(self, timeout)\n"
        "forkserver.ForkServer._receive = receive\n"
        "try:\n"
        "    with Sandbox() as sandbox:\n"
        "        pass\n"
        "except KeyboardInterrupt:\n"
        "    os._exit(130)\n"
    )
    report = under_subreaper(tmp_path, "--python", script)
    assert report["exit"] == 130
    assert report["left"] == []
