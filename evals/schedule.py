"""Scheduled runs: a crontab line (or a systemd user timer), a lock, a regression exit code.

The scheduled command is `llamapipe eval run SPEC --out DIR --scheduled`: it takes an
exclusive lock on `DIR/.lock` (a second run started while one is going exits at once,
saying so), records the run in history like any other, and exits 1 when any system
regressed significantly against the previous run, so cron mail or CI can act on it.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.errors import LlamapipeError, UsageError

MARK = "# llamapipe eval"


class AlreadyRunning(LlamapipeError):
    """Another scheduled run holds the lock."""


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another eval run holds {out / '.lock'}",
                hint="runs never overlap; this one is skipped",
            ) from None
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) != 5 or not all(all(c in "0123456789*/,-" for c in f) for f in fields):
        raise UsageError(
            f"not a cron schedule: {expr!r}",
            hint='five fields, e.g. --cron "0 3 * * *" (03:00 daily)',
        )
    return " ".join(fields)


def command(spec: Path, out: Path) -> str:
    exe = shutil.which("llamapipe") or f"{sys.executable} -m cli"
    spec_arg, out_arg = shlex.quote(str(spec.resolve())), shlex.quote(str(out.resolve()))
    return f"{exe} eval run {spec_arg} --out {out_arg} --scheduled"


def cron_line(expr: str, spec: Path, out: Path) -> str:
    log = shlex.quote(str((out / "scheduled.log").resolve()))
    return f"{check_cron(expr)} {command(spec, out)} >> {log} 2>&1 {MARK} {spec.resolve()}"


def install_cron(line: str, spec: Path) -> str:
    """Add (or replace) this spec's line in the user's crontab."""
    if shutil.which("crontab") is None:
        raise UsageError(
            "no `crontab` command here", hint="install cron, or add the printed line by hand"
        )
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    lines = current.stdout.splitlines() if current.returncode == 0 else []
    tag = f"{MARK} {spec.resolve()}"
    lines = [ln for ln in lines if not ln.endswith(tag)] + [line]
    done = subprocess.run(
        ["crontab", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True
    )
    if done.returncode != 0:
        raise UsageError(f"crontab refused the line: {done.stderr.strip()}")
    return line
