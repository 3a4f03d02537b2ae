"""Scheduled runs: a crontab line (or a systemd user timer), a lock, a regression exit code.

The scheduled command is `python -m cli eval run SPEC --out DIR --scheduled`, run by the
interpreter (the venv) that made the schedule, in the folder it was made in, with the
environment that decides what runs pinned as `LLAMAPIPE_*` variables (in the unit's
`Environment=` lines, or in the wrapper script `DIR/schedules/<name>-<hash>.sh` that a crontab
line runs): the backend and model chosen now (what `auto` picks, probed now: it does not
decide again at 03:00, in cron's bare environment), the GGUF file in use, then every other
setting as it is now (from `LLAMAPIPE_*`, `OLLAMA_HOST`, `OPENAI_BASE_URL`, the config file
or the defaults: the variables of the place it runs in change nothing), the config file's
path and `PYTHONPATH`. Secrets are never written into a schedule: a key the backend reads
(`$OPENAI_API_KEY`) comes at run time from a file given with `--env-file`, and without one
the schedule is refused. `eval schedule --show` reads back what each installed one pins.

It takes an exclusive lock on `DIR/.lock` (a second run started while one is going exits at
once, saying so), records the run in history like any other, and exits 1 when any system
regressed significantly against the previous run, so cron mail or CI can act on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import LlamapipeError, UsageError
from pipelines.settings import CONFIG_ENV, ENV_PREFIX

if TYPE_CHECKING:
    from pipelines.settings import Settings

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


@dataclass
class Pinned:
    """What a scheduled run carries over from the environment it was scheduled in."""

    env: dict[str, str]  # variable -> value, in the order they are written
    cwd: Path
    python: str  # the interpreter (so the venv) that made the schedule
    env_file: Path | None = None  # read when the run starts: the keys, never in the schedule
    reason: str = ""  # why this backend: what `auto` found now
    secrets: list[str] = field(default_factory=list)  # variables the env file must set


def env_value(value: Any) -> str:
    """A setting's value the way its `LLAMAPIPE_*` variable reads it back (empty: unset)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _secret(annotation: Any) -> bool:
    from typing import get_args

    from pydantic import SecretStr

    return annotation is SecretStr or any(_secret(a) for a in get_args(annotation))


def pin(settings: Settings, env_file: Path | None = None, also: Iterable[str] = ()) -> Pinned:
    """The environment a later run needs to run what these settings run now, as
    `LLAMAPIPE_*` variables: the backend and model chosen now (what `auto` picks, probed
    now), then every other setting's value, at its default or not (so the variables of the
    place it runs in change nothing; an empty one is unset); then the config file's path,
    where the code is (`PYTHONPATH`), the folder and the interpreter. Secret settings are
    left out; a key the backend (or a backend named in `also`: the spec's systems') reads
    must come from `env_file` at run time (else UsageError)."""
    from pipelines.backends.registry import REGISTRY

    backend = REGISTRY.load(settings)  # built, not loaded: no weights read
    provider = REGISTRY.get(backend.name)
    values: dict[str, Any] = {"backend": backend.name}
    if provider.model_setting:
        chosen = backend.gguf if backend.gguf is not None else backend.model
        values[provider.model_setting] = chosen
    if provider.host_setting:
        values[provider.host_setting] = getattr(settings, provider.host_setting)
    for name, info in type(settings).model_fields.items():
        if name not in values and not _secret(info.annotation):
            values[name] = getattr(settings, name)  # at its default too: what runs then
    env = {f"{ENV_PREFIX}{k.upper()}": env_value(v) for k, v in values.items()}
    env[CONFIG_ENV] = str(settings.config_file.expanduser().absolute())
    python_path = _python_path()
    if python_path:
        env["PYTHONPATH"] = python_path
    asked = [provider, *(REGISTRY.get(n) for n in also if n not in ("auto", provider.name))]
    wanted = [n for p in asked if p.secrets for n in p.secrets(settings)]
    keys = [n for n in dict.fromkeys(wanted) if os.environ.get(n, "").strip()]
    if env_file is not None:
        env_file = env_file.expanduser().absolute()
        _check_env_file(env_file, keys)
    elif keys:
        names = " and ".join(f"${n}" for n in keys)
        raise UsageError(
            f"the run reads a key from {names}, which a scheduled run would not have; a key "
            "is never written into a schedule",
            hint=f"put `{keys[0]}=...` in a file only you can read (chmod 600) and add "
            "--env-file FILE: the scheduled run reads it when it starts",
        )
    return Pinned(env, Path.cwd(), sys.executable, env_file, backend.reason, keys)


def _python_path() -> str:
    """`PYTHONPATH` as it is now (made absolute), with this code's folder first when it is
    not installed (a source checkout run as `python -m cli`)."""
    parts = [
        str(Path(p).absolute()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    ]
    root = str(Path(__file__).resolve().parent.parent)  # holds cli.py, evals/, pipelines/
    installed = {str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("purelib", "platlib")}
    if root not in installed and root not in {str(Path(p).resolve()) for p in parts}:
        parts.insert(0, root)
    return os.pathsep.join(dict.fromkeys(parts))


def _check_env_file(path: Path, keys: list[str]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(
            f"cannot read --env-file {path}: {exc.strerror}", hint="give a file of NAME=value lines"
        ) from None
    missing = [k for k in keys if not re.search(rf"^\s*(export\s+)?{re.escape(k)}=", text, re.M)]
    if missing:
        raise UsageError(
            f"{path} does not set {', '.join(missing)}, which the scheduled run needs",
            hint=f"add a line `{missing[0]}=...` to it",
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"others may read {path} (mode {stat.filemode(mode)}), and it is for keys",
            hint=f"chmod 600 {path}",
        )


def command(spec: Path, out: Path, pinned: Pinned | None = None) -> list[str]:
    """The scheduled run's arguments, the interpreter first."""
    python = pinned.python if pinned else sys.executable
    run = ["eval", "run", str(spec.resolve()), "--out", str(out.resolve()), "--scheduled"]
    return [python, "-m", "cli", *run]


def script_path(spec: Path, out: Path) -> Path:
    """Where a crontab line's wrapper script lives: with the runs it makes, named by the
    spec and its path (two `demo.yaml` in two folders have a script each)."""
    import hashlib

    tag = hashlib.sha256(str(spec.resolve()).encode()).hexdigest()[:8]
    return out.resolve() / "schedules" / f"{unit_name(spec)}-{tag}.sh"


def wrapper_script(spec: Path, out: Path, pinned: Pinned) -> str:
    """The script a crontab line runs: into the folder, the env file read (keys), every
    pinned variable exported, then the interpreter (a crontab line holding them all would
    pass 1,000 characters, more than some crons keep of one line)."""
    lines = [
        "#!/bin/sh",
        f"# {MARK[2:]} {spec.resolve()}: the environment it was scheduled in, pinned",
        f"cd {shlex.quote(str(pinned.cwd))} || exit 1",
    ]
    if pinned.env_file is not None:
        lines.append(f"set -a && . {shlex.quote(str(pinned.env_file))} && set +a || exit 1")
    lines += [f"export {k}={shlex.quote(v)}" for k, v in pinned.env.items()]
    lines.append(f"exec {shlex.join(command(spec, out, pinned))}")
    return "\n".join(lines) + "\n"


def write_wrapper(spec: Path, out: Path, pinned: Pinned) -> Path:
    path = script_path(spec, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wrapper_script(spec, out, pinned), encoding="utf-8")
    path.chmod(0o700)
    return path


def cron_line(expr: str, spec: Path, out: Path, pinned: Pinned | None = None) -> str:
    """The crontab line: the wrapper script (with `pinned`; write it with `write_wrapper`),
    else the bare command."""
    log = shlex.quote(str((out / "scheduled.log").resolve()))
    run = shlex.quote(str(script_path(spec, out))) if pinned else shlex.join(command(spec, out))
    run = f"{run} >> {log} 2>&1".replace("%", "\\%")  # cron reads % as a newline
    return f"{check_cron(expr)} {run} {MARK} {spec.resolve()}"


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


def _unit_word(text: str, *, command: bool = True) -> str:
    """One word of a unit file line, as systemd reads it back: `%` specifiers (and in
    ExecStart=, `$` variables) escaped; quoted C-style when it has spaces or quotes (and
    always in Environment=)."""
    text = text.replace("%", "%%")
    if command:
        text = text.replace("$", "$$")
    if command and re.fullmatch(r"[\w@%+=:,./-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_units(expr: str, spec: Path, out: Path, pinned: Pinned | None = None) -> dict[str, str]:
    """{file name: contents} for a user service and the timer that starts it."""
    name = unit_name(spec)
    lines = []
    if pinned is not None:
        lines.append(f"WorkingDirectory={str(pinned.cwd).replace('%', '%%')}")
        lines += [
            f"Environment={_unit_word(f'{k}={v}', command=False)}" for k, v in pinned.env.items()
        ]
        if pinned.env_file is not None:  # read after Environment=, when the run starts
            lines.append(f"EnvironmentFile={str(pinned.env_file).replace('%', '%%')}")
    exec_start = " ".join(_unit_word(w) for w in command(spec, out, pinned))
    environment = "".join(f"{line}\n" for line in lines)
    service = (
        "[Unit]\n"
        f"Description=llamapipe eval {spec.name}\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"{environment}"
        f"ExecStart={exec_start}\n"
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


def systemd_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("systemd")) / "user"


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


# -- what is installed, and what it pins ---------------------------------------------------------

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _described(kind: str, when: str, words: list[str], **known: Any) -> dict[str, Any]:
    """A schedule's command line (as words) read back: its folder, env file, pinned
    variables and the command itself."""
    doc: dict[str, Any] = {"kind": kind, "when": when, "spec": None, "cwd": None,
                           "env_file": None, "pinned": {}, "command": ""}  # fmt: skip
    doc.update(known)
    pinned, rest = dict(doc["pinned"]), list[str]()
    it = iter(words)
    for word in it:
        if rest:
            if word == ">>":
                break
            rest.append(word)
        elif word == "cd":
            doc["cwd"] = next(it, None)
        elif word == ".":
            doc["env_file"] = next(it, None)
        elif word == "set":
            next(it, None)
        elif word == "&&":
            continue
        elif _ASSIGNMENT.match(word):
            key, _, value = word.partition("=")
            pinned[key] = value
        else:
            rest.append(word)
    if "run" in rest[:-1]:
        doc["spec"] = rest[rest.index("run") + 1]
    doc["pinned"], doc["command"] = pinned, shlex.join(rest)
    return doc


def read_cron_line(line: str) -> dict[str, Any]:
    """A crontab line read back, with the wrapper script it runs (when it is there)."""
    body = line.split(f" {MARK} ", 1)[0]
    fields = body.split(None, 5)
    words = shlex.split(fields[5].replace("\\%", "%"))
    script = Path(words[0])
    if words[0].endswith(".sh") and script.is_file():
        text = script.read_text(encoding="utf-8").replace("|| exit 1", "")
        words = [w for ln in text.splitlines() if not ln.startswith("#")
                 for w in shlex.split(ln) if w not in ("export", "exec")]  # fmt: skip
        return _described("cron", " ".join(fields[:5]), words, script=str(script))
    return _described("cron", " ".join(fields[:5]), words)


def read_systemd_unit(service: str, timer: str = "") -> dict[str, Any]:
    def values(text: str, key: str) -> list[str]:
        return [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith(f"{key}=")]

    def words(value: str) -> list[str]:
        return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]

    pinned = dict(w.split("=", 1) for v in values(service, "Environment") for w in words(v))
    cwd, env_file = values(service, "WorkingDirectory"), values(service, "EnvironmentFile")
    when = values(timer, "OnCalendar")
    return _described(
        "systemd",
        when[0] if when else "",
        words(values(service, "ExecStart")[0]) if values(service, "ExecStart") else [],
        pinned=pinned,
        cwd=cwd[0].replace("%%", "%") if cwd else None,
        env_file=env_file[0].replace("%%", "%") if env_file else None,
    )


def installed() -> list[dict[str, Any]]:
    """The scheduled runs installed here: this user's crontab lines, then systemd timers."""
    found = []
    if shutil.which("crontab") is not None:
        listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
        if listed.returncode == 0:
            found += [read_cron_line(ln) for ln in listed.stdout.splitlines() if f" {MARK} " in ln]
    where = systemd_dir()
    for service in sorted(where.glob("llamapipe-eval-*.service")) if where.is_dir() else []:
        timer = service.with_suffix(".timer")
        found.append(
            read_systemd_unit(
                service.read_text(encoding="utf-8"),
                timer.read_text(encoding="utf-8") if timer.exists() else "",
            )
            | {"unit": str(service)}
        )
    return found
