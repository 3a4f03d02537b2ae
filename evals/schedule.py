"""Scheduled runs: a crontab line (or a systemd user timer), a lock, a regression exit code.

The scheduled command is `llamapipe eval run SPEC --out DIR --scheduled`, with the backend
and model it was scheduled with pinned in its environment (`LLAMAPIPE_BACKEND=ollama
LLAMAPIPE_OLLAMA_MODEL=...`: `auto` does not decide again at 03:00, in cron's bare
environment), and the server too when it was not the default. It takes an
exclusive lock on `DIR/.lock` (a second run started while one is going exits at once,
saying so), records the run in history like any other, and exits 1 when any system
regressed significantly against the previous run, so cron mail or CI can act on it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.errors import LlamapipeError, UsageError
from pipelines.settings import ENV_PREFIX, Settings

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


def pinned_environment(settings: Settings) -> dict[str, str]:
    """The variables that make a later run use the backend and model these settings choose
    now (what `auto` picks, probed now), and their server when it is not the default."""
    from pipelines.backends.registry import REGISTRY

    backend = REGISTRY.load(settings)  # built, not loaded: no weights read
    provider = REGISTRY.get(backend.name)
    env = {f"{ENV_PREFIX}BACKEND": backend.name}
    if provider.model_setting:
        model = backend.gguf if backend.gguf is not None else backend.model
        env[f"{ENV_PREFIX}{provider.model_setting.upper()}"] = str(model)
    host = provider.host_setting
    if host and settings.origin(host) != "default":
        env[f"{ENV_PREFIX}{host.upper()}"] = str(getattr(settings, host))
    return env


def _assignments(env: dict[str, str] | None) -> str:
    return "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())


def command(spec: Path, out: Path) -> str:
    exe = shutil.which("llamapipe") or f"{sys.executable} -m cli"
    spec_arg, out_arg = shlex.quote(str(spec.resolve())), shlex.quote(str(out.resolve()))
    return f"{exe} eval run {spec_arg} --out {out_arg} --scheduled"


def cron_line(expr: str, spec: Path, out: Path, env: dict[str, str] | None = None) -> str:
    log = shlex.quote(str((out / "scheduled.log").resolve()))
    run = _assignments(env) + command(spec, out)
    return f"{check_cron(expr)} {run} >> {log} 2>&1 {MARK} {spec.resolve()}"


def install_cron(line: str, spec: Path) -> str:
    """Add (or replace) this spec's line in the user's crontab."""
    if shutil.which("crontab") is None:
        raise UsageError(
            "no `crontab` command here, so nothing was installed",
            hint=f"install cron, or add this line to your crontab by hand: {line}",
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


# -- systemd user timers ------------------------------------------------------------------------

_DOW = {
    "0": "Sun",
    "1": "Mon",
    "2": "Tue",
    "3": "Wed",
    "4": "Thu",
    "5": "Fri",
    "6": "Sat",
    "7": "Sun",
}


def on_calendar(expr: str) -> str:
    """A cron schedule as systemd `OnCalendar=` (minute, hour, day, month, weekday fields:
    numbers, lists, ranges and `*`; steps like `*/15` in minutes and hours)."""
    minute, hour, day, month, weekday = check_cron(expr).split()

    def field(value: str, name: str) -> str:
        if value == "*":
            return "*"
        if value.startswith("*/") and name in ("minute", "hour"):
            return f"00/{int(value[2:]):02d}"
        if "/" in value:
            raise UsageError(f"cannot express the {name} field {value!r} as a systemd timer",
                             hint="use the crontab line instead")  # fmt: skip
        # numbers zero-padded, ranges in systemd's a..b form: "0,30" -> "00,30"
        return re.sub(r"\d+", lambda m: f"{int(m.group()):02d}", value).replace("-", "..")

    days = ""
    if weekday != "*":
        parts = []
        for part in weekday.split(","):
            lo, _, hi = part.partition("-")
            if lo not in _DOW or (hi and hi not in _DOW):
                raise UsageError(f"weekday {part!r} must be 0-7", hint="e.g. 1-5 for weekdays")
            parts.append(f"{_DOW[lo]}..{_DOW[hi]}" if hi else _DOW[lo])
        days = ",".join(parts) + " "
    date = f"*-{field(month, 'month')}-{field(day, 'day')}"
    return f"{days}{date} {field(hour, 'hour')}:{field(minute, 'minute')}:00"


def unit_name(spec: Path) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in spec.stem)
    return f"llamapipe-eval-{safe}"


def systemd_units(
    expr: str, spec: Path, out: Path, env: dict[str, str] | None = None
) -> dict[str, str]:
    """{file name: contents} for a user service and the timer that starts it."""
    name = unit_name(spec)
    environment = "".join(f'Environment="{k}={v}"\n' for k, v in (env or {}).items())
    service = (
        "[Unit]\n"
        f"Description=llamapipe eval {spec.name}\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"{environment}"
        f"ExecStart={command(spec, out)}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=Run llamapipe eval {spec.name} on a schedule\n\n"
        "[Timer]\n"
        f"OnCalendar={on_calendar(expr)}\n"
        "Persistent=true\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def install_systemd(units: dict[str, str], where: Path) -> list[str]:
    """Write the units into the user's systemd folder and enable the timer when systemctl
    is there; returns what was done, line by line."""
    where.mkdir(parents=True, exist_ok=True)
    done = []
    for file, text in units.items():
        (where / file).write_text(text, encoding="utf-8")
        done.append(f"wrote {where / file}")
    timer = next(f for f in units if f.endswith(".timer"))
    if shutil.which("systemctl") is None:
        done.append(
            f"no systemctl here: run `systemctl --user enable --now {timer}` where there is one"
        )
        return done
    for args in (["daemon-reload"], ["enable", "--now", timer]):
        result = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True)
        if result.returncode != 0:
            why = (result.stderr.strip() or f"exit {result.returncode}").splitlines()[0]
            raise UsageError(
                f"the units are written ({where}), but `systemctl --user {' '.join(args)}` "
                f"failed: {why}",
                hint="start a systemd user session (`loginctl enable-linger $USER`, then log in "
                f"again) and run `systemctl --user daemon-reload && systemctl --user enable --now "
                f"{timer}`",
            )
        done.append(f"systemctl --user {' '.join(args)}")
    return done
