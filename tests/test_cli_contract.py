"""The CLI's contract for bad input, command by command.

For every case: the documented exit code (2 for bad input), one `error:` line and a `hint:`
on stderr, no traceback and no "internal error", nothing on stdout under `--json`, and
nothing half-made left behind (no index, run folder or output file the command did not
finish). No model loads for input that can be refused first. New commands join the table.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import run_cli

SPEC_OK = "name: ok\ndataset: data.jsonl\nsystems: [{name: a, prompt: hyangga/zero_shot}]\n"
DATA_OK = '{"id": "1", "source": "x", "references": ["y"]}\n'


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@dataclass
class Case:
    argv: list[str]
    code: int = 2
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    model: bool = False  # the case may load the model (the input is refused after it)


def files(**contents: str | bytes) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        for name, body in contents.items():
            path = root / name.replace("__", "/").replace("_dot_", ".")
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(body, bytes):
                path.write_bytes(body)
            elif body == "<dir>":
                path.mkdir()
            else:
                path.write_text(body, encoding="utf-8")

    return make


LATIN1 = b"caf\xe9 au lait\n"
BINARY = b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256))
LONG = "가" * 100_000

CASES: dict[str, Case] = {
    # -- the command line itself
    "unknown command": Case(["nosuch"]),
    "models: unknown option": Case(["models", "--nosuch"]),
    "chat: wrong type": Case(["chat", "hi", "--temperature", "hot"]),
    # -- settings
    "config: malformed TOML": Case(
        ["config", "--json"], env={"LLAMAPIPE_CONFIG": "bad.toml"},
        setup=files(bad_dot_toml="max_tokens = = 3\n"),
    ),
    "config: unknown setting": Case(
        ["config", "--json"], env={"LLAMAPIPE_CONFIG": "c.toml"},
        setup=files(c_dot_toml="max_token = 3\n"),
    ),
    "config: wrong type in env": Case(["config", "--json"], env={"LLAMAPIPE_TEMPERATURE": "hot"}),
    "config: out of range": Case(["config", "--json"], env={"LLAMAPIPE_MAX_TOKENS": "-5"}),
    "config: broken JSON list": Case(["config", "--json"], env={"LLAMAPIPE_STOP": '["a"'}),
    # -- chat
    "chat: empty prompt": Case(["chat", "", "--json"]),
    "chat: non-UTF-8 stdin": Case(["chat", "-", "--json"], stdin=LATIN1),
    "chat: binary stdin": Case(["chat", "-", "--json"], stdin=BINARY),
    "chat: 100,000 characters": Case(["chat", LONG, "--json"], model=True),
    "chat: zero window": Case(["chat", "hi", "--num-ctx", "0", "--json"]),
    # -- pal
    "pal ask: empty question": Case(["pal", "ask", " ", "--json"]),
    "pal ask: zero samples": Case(["pal", "ask", "q?", "--samples", "0", "--json"]),
    "pal ask: unknown task": Case(["pal", "ask", "q?", "--task", "nosuch", "--json"]),
    "pal ask: 100,000 characters": Case(["pal", "ask", LONG, "--json"], model=True),
    "pal run: missing file": Case(["pal", "run", "nosuch.jsonl", "--json"]),
    "pal run: a folder": Case(["pal", "run", "d", "--json"], setup=files(d="<dir>")),
    "pal run: binary": Case(["pal", "run", "b.jsonl", "--json"], setup=files(b_dot_jsonl=BINARY)),
    "pal run: non-UTF-8": Case(["pal", "run", "l.jsonl", "--json"], setup=files(l_dot_jsonl=LATIN1)),
    "pal run: empty": Case(["pal", "run", "e.jsonl", "--json"], setup=files(e_dot_jsonl="")),
    "pal run: malformed JSON": Case(
        ["pal", "run", "m.jsonl", "--json"], setup=files(m_dot_jsonl='{"id": 1,\n')
    ),
    "pal run: unknown method": Case(
        ["pal", "run", "p.jsonl", "--method", "magic", "--json"],
        setup=files(p_dot_jsonl='{"id": "1", "question": "1+1?", "answer": 2}\n'),
    ),
    # -- rag
    "rag ingest: missing path": Case(["rag", "ingest", "nosuch", "--index", "idx", "--json"]),
    "rag ingest: empty folder": Case(
        ["rag", "ingest", "empty", "--index", "idx", "--json"], setup=files(empty="<dir>")
    ),
    "rag ingest: index is a file": Case(
        ["rag", "ingest", "d", "--index", "f", "--json"],
        setup=files(d__a_dot_txt="text", f="not a folder"),
    ),
    "rag ingest: index under a file": Case(
        ["rag", "ingest", "d", "--index", "f/idx", "--json"],
        setup=files(d__a_dot_txt="text", f="not a folder"),
    ),
    "rag ask: no such index": Case(["rag", "ask", "q?", "--index", "typo", "--json"]),
    "rag ask: index is a file": Case(
        ["rag", "ask", "q?", "--index", "f", "--json"], setup=files(f="x")
    ),
    "rag ask: k out of range": Case(["rag", "ask", "q?", "--k", "0", "--json"]),
    "rag ask: non-UTF-8 stdin": Case(["rag", "ask", "-", "--json"], stdin=LATIN1),
    "rag sources: no such index": Case(["rag", "sources", "--index", "typo", "--json"]),
    "rag remove: no such index": Case(["rag", "remove", "a.txt", "--index", "typo", "--json"]),
    # -- chat sessions
    "chat: continue with no session": Case(["chat", "--continue", "hi", "--json"]),
    "chat: two sessions named": Case(["chat", "-c", "--session", "s", "hi", "--json"]),
    "chat: empty piped turns": Case(["chat", "--lines", "--json"], stdin=b"\n \n"),
    "chat: non-UTF-8 piped turns": Case(["chat", "--json"], stdin=LATIN1),
    "chat: interactive without a terminal": Case(["chat", "-i"], stdin=b"hi\n"),
    "rag chat: no such index": Case(["rag", "chat", "q?", "--index", "typo", "--json"]),
    "rag chat: empty piped turns": Case(["rag", "chat", "--lines"], stdin=b"\n"),
    "sessions show: no such session": Case(["sessions", "show", "nosuch", "--json"]),
    "sessions rm: no such session": Case(["sessions", "rm", "nosuch", "--json"]),
    "sessions: unknown option": Case(["sessions", "--nosuch"]),
    "sessions export: unknown format": Case(["sessions", "export", "--format", "csv"]),
    "sessions export: no such session": Case(["sessions", "export", "nosuch"]),
    "sessions export: output under a file": Case(
        ["sessions", "export", "-o", "f/out.json"], setup=files(f="not a folder")
    ),
    # -- eval
    "eval run: missing spec": Case(["eval", "run", "nosuch.yaml", "--json"]),
    "eval run: a folder": Case(["eval", "run", "d", "--json"], setup=files(d="<dir>")),
    "eval run: binary": Case(["eval", "run", "s.yaml", "--json"], setup=files(s_dot_yaml=BINARY)),
    "eval run: non-UTF-8": Case(["eval", "run", "s.yaml", "--json"], setup=files(s_dot_yaml=LATIN1)),
    "eval run: empty": Case(["eval", "run", "s.yaml", "--json"], setup=files(s_dot_yaml="")),
    "eval run: bad YAML": Case(
        ["eval", "run", "s.yaml", "--json"],
        setup=files(s_dot_yaml="name: x\ntask: translate\n  dataset: y\n"),
    ),
    "eval run: wrong type": Case(
        ["eval", "run", "s.yaml", "--json"],
        setup=files(s_dot_yaml=SPEC_OK + "bootstrap: lots\n", data_dot_jsonl=DATA_OK),
    ),
    "eval run: unknown task": Case(
        ["eval", "run", "s.yaml", "--json"],
        setup=files(s_dot_yaml=SPEC_OK + "task: poetry\n", data_dot_jsonl=DATA_OK),
    ),
    "eval run: unknown field": Case(
        ["eval", "run", "s.yaml", "--json"],
        setup=files(s_dot_yaml=SPEC_OK + "sistems: []\n", data_dot_jsonl=DATA_OK),
    ),
    "eval run: unknown prompt": Case(
        ["eval", "run", "s.yaml", "--out", "runs", "--json"],
        setup=files(
            s_dot_yaml=SPEC_OK.replace("hyangga/zero_shot", "nosuch"), data_dot_jsonl=DATA_OK
        ),
    ),
    "eval run: missing dataset": Case(
        ["eval", "run", "s.yaml", "--out", "runs", "--json"], setup=files(s_dot_yaml=SPEC_OK)
    ),
    "eval run: out is a file": Case(
        ["eval", "run", "s.yaml", "--out", "f", "--json"],
        setup=files(s_dot_yaml=SPEC_OK, data_dot_jsonl=DATA_OK, f="x"),
    ),
    "eval run: out under a file": Case(
        ["eval", "run", "s.yaml", "--out", "f/runs", "--json"],
        setup=files(s_dot_yaml=SPEC_OK, data_dot_jsonl=DATA_OK, f="x"),
    ),
    "eval run: out not writable": Case(
        ["eval", "run", "s.yaml", "--out", "/proc/llamapipe-runs", "--json"],
        setup=files(s_dot_yaml=SPEC_OK, data_dot_jsonl=DATA_OK),
    ),
    "eval report: missing run": Case(["eval", "report", "nosuch", "--json"]),
    "eval report: no run yet": Case(["eval", "report", "latest", "--out", "runs"]),
    "eval report: export to an unknown format": Case(
        ["eval", "report", "r", "-o", "items.xlsx"], setup=files(r__summary_dot_json="{}")
    ),
    "eval run: limit zero": Case(["eval", "run", "s.yaml", "--limit", "0"], setup=files(s_dot_yaml=SPEC_OK)),
    "eval report: a file": Case(["eval", "report", "f", "--json"], setup=files(f="x")),
    "eval history: a file": Case(["eval", "history", "f", "--json"], setup=files(f="x")),
    "eval schedule: bad cron": Case(
        ["eval", "schedule", "s.yaml", "--cron", "every night"],
        setup=files(s_dot_yaml=SPEC_OK, data_dot_jsonl=DATA_OK),
    ),
    "eval schedule: missing dataset": Case(
        ["eval", "schedule", "s.yaml", "--cron", "0 3 * * *"], setup=files(s_dot_yaml=SPEC_OK)
    ),
    # -- serve
    "serve: beyond loopback without a token": Case(["serve", "--host", "0.0.0.0"]),
    "serve: a short token": Case(["serve", "--token", "secret"]),
    # -- sandbox
    "sandbox run: missing file": Case(["sandbox", "run", "nosuch.py", "--json"]),
    "sandbox run: a folder": Case(["sandbox", "run", "d", "--json"], setup=files(d="<dir>")),
    "sandbox run: binary": Case(["sandbox", "run", "b.py", "--json"], setup=files(b_dot_py=BINARY)),
    "sandbox run: non-UTF-8 stdin": Case(["sandbox", "run", "-", "--json"], stdin=LATIN1),
    "sandbox run: negative timeout": Case(
        ["sandbox", "run", "p.py", "--timeout", "-1", "--json"], setup=files(p_dot_py="x = 1\n")
    ),
    "sandbox check: an argument it does not take": Case(["sandbox", "check", "now", "--json"]),
    "sandbox check: an unknown flag": Case(["sandbox", "check", "--fast"]),
    "sandbox run: zero memory": Case(
        ["sandbox", "run", "p.py", "--memory", "0", "--json"], setup=files(p_dot_py="x = 1\n")
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_its_exit_code(
    name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    use_model: Callable[..., Any],
) -> None:
    case = CASES[name]
    work = tmp_path / "work"
    work.mkdir()
    if case.setup:
        case.setup(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")  # no Ollama probe: sockets are off
    for key, value in case.env.items():
        monkeypatch.setenv(key, str(work / value) if (work / value).exists() else value)
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin)))
    if not case.model:

        def no_model(settings: object, choice: object) -> None:
            raise AssertionError("the model loaded before the input was checked")

        use_model(None, build=no_model)
        for key, value in case.env.items():  # a case's own backend stays its own
            monkeypatch.setenv(key, str(work / value) if (work / value).exists() else value)
    before = _tree(work)
    r = run_cli(capsys, *case.argv)
    assert r.code == case.code, f"{name}: exit {r.code}\n{r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert "Value error" not in r.stderr and "(top level)" not in r.stderr, "pydantic's words"
    assert "━" not in r.stderr, "no stale progress bar before the error"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Error", "│ ", "Usage:", "╭", "╰"))]
    assert errors, f"{name}: no error line\n{r.stderr}"
    if lines[0].startswith("error:"):  # ours: one error line, then a hint
        assert sum(ln.startswith("error:") for ln in lines) == 1, r.stderr
        assert any(ln.startswith("hint:") for ln in lines), f"{name}: no hint\n{r.stderr}"
    if "--json" in case.argv:
        assert r.stdout == "", f"{name}: stdout under --json: {r.stdout!r}"
    assert _tree(work) == before, f"{name}: left behind {sorted(_tree(work) - before)}"


def _commands() -> set[str]:
    from typer.main import get_command

    from cli import app

    def leaves(group: object, prefix: str = "") -> set[str]:
        names = set()
        for name, command in getattr(group, "commands", {}).items():
            if hasattr(command, "commands"):
                names |= leaves(command, f"{prefix}{name} ")
            else:
                names.add(f"{prefix}{name}")
        return names

    return leaves(get_command(app))


def test_every_command_is_in_the_table() -> None:
    """A new command joins the bad-input table."""
    covered = {name.split(":")[0] for name in CASES if ":" in name}
    missing = _commands() - covered
    assert not missing, f"add bad-input cases for: {sorted(missing)}"


@pytest.mark.parametrize("command", sorted(_commands()))
def test_help_reads_as_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No Python types (`<bool>`, `<list[str]>`) or `{arg}` placeholders in --help."""
    r = run_cli(capsys, *command.split(), "--help")
    assert r.code == 0 and "Usage:" in r.stdout
    for leak in ("<bool>", "<list", "<str>", "[OPTIONS] {"):
        assert leak not in r.stdout, f"{command} --help shows {leak!r}"


# -- paths the user may not read or write ------------------------------------------------------

UNPRIVILEGED = {
    "sandbox run: unreadable": (["sandbox", "run", "secret.py"], "cannot read program"),
    # typer checks these path arguments itself: its usage error says "is not readable"
    "pal run: unreadable": (["pal", "run", "secret.jsonl"], "is not readable"),
    "eval run: unreadable": (["eval", "run", "secret.yaml"], "is not readable"),
    "eval run: out not writable": (
        ["eval", "run", "ok.yaml", "--out", "locked/runs"],
        "cannot make runs folder",
    ),
    "rag ingest: index not writable": (
        ["rag", "ingest", "docs", "--index", "locked/idx"],
        "cannot make an index",
    ),
}


@pytest.fixture
def as_a_user(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A work folder with files nobody may read and a folder nobody may write, and the
    command prefix that makes that true for the CLI: root runs it without capabilities
    (so file modes bind it too), anyone else is already bound by them."""
    import shutil

    work = tmp_path / "as-user"
    work.mkdir()
    (work / "home").mkdir()
    for name in ("secret.py", "secret.jsonl", "secret.yaml"):
        (work / name).write_text("x = 1\n")
        (work / name).chmod(0o000)
    (work / "ok.yaml").write_text(SPEC_OK)
    (work / "data.jsonl").write_text(DATA_OK)
    (work / "docs").mkdir()
    (work / "docs" / "a.txt").write_text("text\n")
    (work / "locked").mkdir()
    (work / "locked").chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("running as root needs setpriv (util-linux) to drop capabilities")
        prefix = [setpriv, "--bounding-set=-all", "--inh-caps=-all"]
    yield work, prefix
    (work / "locked").chmod(0o755)


@pytest.mark.parametrize("name", list(UNPRIVILEGED))
def test_unreadable_and_unwritable_paths(name: str, as_a_user: tuple[Path, list[str]]) -> None:
    import subprocess

    work, prefix = as_a_user
    argv, message = UNPRIVILEGED[name]
    home = work / "home"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LLAMAPIPE_BACKEND": "embedded",
    }
    llamapipe = Path(sys.executable).with_name("llamapipe")
    before = _tree(work)
    done = subprocess.run(
        [*prefix, str(llamapipe), *argv, "--json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, f"{name}: exit {done.returncode}\n{done.stderr}"
    assert message in done.stderr, done.stderr
    assert "hint:" in done.stderr or "Try 'llamapipe" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    left = {p for p in _tree(work) - before if p.parts[0] != "home"}
    assert not left, f"{name}: left behind {sorted(left)}"
