"""The sandbox works on the Pythons users have, as root and as a normal user.

Debian's and Ubuntu's own /usr/bin/python3 (its standard library under /usr/lib, which the
view shares with the shared libraries), and a pyenv-style build whose standard library lives
under a home that the sandbox's uid cannot enter (root's /root is mode 700; programs of a
root caller run as `nobody`). CI runs this file under Debian's interpreter, as root and again
as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pipelines.sandbox import Limits, Sandbox, _root, _uidmap, _worker
from pipelines.sandbox.runtime import hidden_paths, readable_paths, stdlib_roots
from tests.cli_helpers import run_cli
from tests.conftest import needs_walls

ROOT = Path(__file__).resolve().parents[1]

# Runs in the copied interpreter: both engines, a lazy stdlib import through the codec
# registry (the Python layers on), and with them off, stdlib modules nobody preloaded.
SCRIPT = """
import json, sys
from pipelines.sandbox import Sandbox
out = []
for fork_server in (True, False):
    with Sandbox(workers=0, fork_server=fork_server) as sb:
        r = sb.run("def solution():\\n    return ('한글'.encode('utf-16').decode('utf-16'),"
                   " 'é'.encode('cp1252').decode('cp1252'), 6 * 7)")
        out.append([sb.engine, r.ok, r.result, r.error and r.error.message])
    with Sandbox(workers=0, fork_server=fork_server, python_layers=False) as sb:
        r = sb.run("import colorsys, csv, os, wave\\ndef solution():\\n"
                   "    return [os.getuid(), csv.__file__, colorsys.rgb_to_hls(1, 0, 0)]")
        out.append([sb.engine, r.ok, r.result, r.error and r.error.message])
print(json.dumps({"stdlib": sys.prefix, "runs": out}))
"""


def program_uid() -> int:
    """The uid a program sees inside: nobody for root, else the subordinate uid's inside
    number where the system has subordinate ids and newuidmap, else the caller's."""
    if os.geteuid() == 0:
        return 65534
    return _uidmap.INSIDE if _uidmap.subordinate_ids() else os.geteuid()


def _copy_interpreter(home: Path) -> Path:
    """This Python's interpreter and standard library, copied under `home` as pyenv lays
    them out (PREFIX/bin, PREFIX/lib/pythonX.Y with a site-packages inside)."""
    prefix = home / ".pyenv" / "versions" / "copy"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (prefix / "bin").mkdir(parents=True)
    binary = prefix / "bin" / version
    shutil.copy2(os.path.realpath(sys._base_executable), binary)  # type: ignore[attr-defined]

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)  # fast, where this user may
        except OSError:
            shutil.copy2(src, dst)

    stdlib = Path(sysconfig.get_path("stdlib"))
    shutil.copytree(stdlib, prefix / "lib" / version, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("site-packages", "dist-packages", "test",
                                                  "__pycache__", "idlelib", "tkinter"))  # fmt: skip
    (prefix / "lib" / version / "site-packages" / "secret_package").mkdir(parents=True)
    return binary


@needs_walls
def test_a_python_under_a_home_the_sandbox_uid_cannot_enter(tmp_path: Path) -> None:
    home = tmp_path / "private-home"  # mode 700: as root, `nobody` cannot enter it
    home.mkdir(mode=0o700)
    python = _copy_interpreter(home)
    deps = [str(ROOT), *site.getsitepackages()]  # pydantic and the rest, for the host side
    done = subprocess.run(
        [str(python), "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PYTHONPATH": os.pathsep.join(deps), "PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["stdlib"] == str(python.parents[1])  # it really is the copy's stdlib
    uid = program_uid()
    for engine, ok, result, error in report["runs"]:
        assert ok, (engine, error)
        if len(result) == 3 and result[2] == 42:
            assert result[:2] == ["한글", "é"]
        else:
            assert result[0] == uid
            assert result[1] == f"{report['stdlib']}/lib/{python.name}/csv.py"
    assert [r[0] for r in report["runs"]] == ["fork server"] * 2 + [
        "per-run worker (fork server off)"
    ] * 2


@needs_walls
@pytest.mark.parametrize("fork_server", [True, False], ids=["fork server", "per-run worker"])
def test_the_descriptor_cap_counts_only_what_the_program_holds(fork_server: bool) -> None:
    """RLIMIT_NOFILE is set after the walls' own descriptors are closed: a program has
    exactly OPEN_FILES minus its stdin, stdout, stderr and report (the old order set it while
    the zygote's Landlock rules still held one descriptor per stdlib entry: EMFILE)."""
    program = (
        "def solution():\n    held = []\n    try:\n        while True:\n"
        "            held.append(open('/dev/null'))\n    except OSError as exc:\n"
        "        return [len(held), exc.errno]"
    )
    with Sandbox(Limits(timeout=5), workers=0, fork_server=fork_server) as sb:
        result = sb.run(program)
    assert result.ok, result.error
    assert result.result == [_worker.OPEN_FILES - 4, 24]  # EMFILE


def test_the_view_is_a_handful_of_binds_whatever_the_stdlib_holds() -> None:
    """One bind for the whole stdlib (Debian's has 200-odd entries; the old Landlock rules
    held one descriptor each), one per loaded library, none for the rest of /usr/lib."""
    plan = _root._plan([*readable_paths(), *_root.mapped_files()], hidden_paths())
    binds = [path for kind, path, _ in plan if kind in ("bind", "dev")]
    assert [b for b in binds if b in stdlib_roots()] == stdlib_roots()
    assert not any(b.startswith(tuple(r + "/" for r in stdlib_roots())) for b in binds)
    assert "/usr/lib" not in binds and "/usr/lib/python3/dist-packages" not in binds
    assert len(plan) < 100, plan  # this test process has loaded more than a zygote has


def test_the_view_hides_site_packages_inside_a_pyenv_stdlib(tmp_path: Path) -> None:
    stdlib = tmp_path / "home" / ".pyenv" / "versions" / "3.11.7" / "lib" / "python3.11"
    (stdlib / "encodings").mkdir(parents=True)
    (stdlib / "os.py").write_text("")
    (stdlib / "site-packages" / "numpy").mkdir(parents=True)
    plan = _root._plan([str(stdlib), str(stdlib / "site-packages" / "numpy")],
                       [str(stdlib / "site-packages")])  # fmt: skip
    assert [(kind, path) for kind, path, _ in plan] == [
        ("bind", str(stdlib)),
        ("hide", str(stdlib / "site-packages")),
        ("bind", str(stdlib / "site-packages" / "numpy")),  # an allowed module stays in view
    ]


def test_the_runtime_description_of_this_python() -> None:
    roots = stdlib_roots()
    assert roots and all((Path(r) / "os.py").exists() for r in roots)
    assert all(Path(p).name in ("site-packages", "dist-packages") for p in hidden_paths())
    assert set(roots) <= set(readable_paths())


# -- sandbox check --------------------------------------------------------------------------


@needs_walls
def test_sandbox_check_shows_every_wall_holding(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "sandbox", "check", "--json").__dict__.values()
    report = json.loads(out)
    assert code == 0 and report["ok"], report
    walls = {w["wall"]: w for w in report["walls"]}
    assert list(walls) == list(
        ("private root", "uid", "namespaces", "scratch", "capabilities", "landlock", "rlimits",
         "seccomp", "memory")
    )  # fmt: skip
    assert all(w["state"] == "ok" for w in walls.values())
    assert "/proc is absent" in walls["private root"]["detail"]
    if os.geteuid() == 0:
        assert walls["uid"]["detail"] == "programs run as uid 65534 (nobody)"
    elif _uidmap.subordinate_ids():
        assert "a subordinate uid that owns nothing" in walls["uid"]["detail"]
    assert "socket(): EPERM" in walls["seccomp"]["detail"]
    assert [e["engine"] for e in report["engines"] if e["ok"]] == ["fork server", "per-run worker"]
    code, out, _ = run_cli(capsys, "sandbox", "check").__dict__.values()
    assert code == 0 and "private root" in out and "per-run worker: runs" in out


def test_sandbox_check_names_what_the_kernel_lacks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.sandbox import _walls

    monkeypatch.setattr(_walls, "landlock_abi", lambda: 0)
    code, out, _ = run_cli(capsys, "sandbox", "check", "--json").__dict__.values()
    report = json.loads(out)
    assert code == 3 and not report["ok"]
    states = {w["wall"]: w["state"] for w in report["walls"]}
    assert states["landlock"] == "missing"
    assert not any(e["ok"] for e in report["engines"])
    assert "Landlock" in report["engines"][0]["detail"]


@needs_walls
def test_sandbox_check_names_the_wall_that_failed_to_build(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A wall that the kernel refuses while it is built: named with its call; the walls
    built before it are ok, those after it not tried."""
    from pipelines.sandbox import forkserver, process

    real = process.worker_config

    def refused(*args: object, **kwargs: object) -> dict:
        cfg = real(*args, **kwargs)  # type: ignore[arg-type]
        cfg["memory_bytes"] = 1 << 64  # no rlim_t holds it: setrlimit refuses it
        return cfg

    monkeypatch.setattr(process, "worker_config", refused)
    monkeypatch.setattr(forkserver, "worker_config", refused)
    code, out, _ = run_cli(capsys, "sandbox", "check", "--json").__dict__.values()
    report = json.loads(out)
    assert code == 3
    walls = {w["wall"]: w for w in report["walls"]}
    assert walls["rlimits"]["state"] == "failed"
    assert "setrlimit failed" in walls["rlimits"]["detail"]
    assert walls["landlock"]["state"] == "ok" and walls["seccomp"]["state"] == "not tried"
    program = tmp_path / "one.py"
    program.write_text("def solution():\n    return 1\n")
    code, _, err = run_cli(capsys, "sandbox", "run", str(program)).__dict__.values()
    assert code == 3 and "rlimits wall: setrlimit failed" in err
    assert "llamapipe sandbox check" in err and "LLAMAPIPE_SANDBOX_ISOLATION=unsafe" in err
