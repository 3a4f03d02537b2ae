"""A scheduled run runs in the environment it was scheduled in: made under one environment
(`OLLAMA_HOST`, `LLAMAPIPE_*` variables, a config file, a folder), the generated command,
run in a subprocess under another (bare, or with other values), records in its run.json the
same backend, model, server, settings, folder and interpreter as a direct run did. Keys are
never written into a schedule, and `eval schedule --show` reads back what is pinned."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.schedule import MARK, read_cron_line, read_systemd_unit
from tests.cli_helpers import run_cli
from tests.conftest import OllamaTarget
from tests.fakes import ScriptedChat
from tests.scripted_backend import registered, scripted_provider
from tests.test_settings import write_config

# What the run must not take from where it runs: another server, other sampling.
ELSEWHERE = {"OLLAMA_HOST": "127.0.0.1:9", "LLAMAPIPE_TEMPERATURE": "1.5", "LLAMAPIPE_SEED": "99"}


def _spec(folder: Path) -> Path:
    rows = [{"id": f"p{i}", "source": f"原文 {i}", "references": [f"노래 {i}"]} for i in range(2)]
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    spec = folder / "pinned.yaml"
    spec.write_text(
        "name: pinned\ndataset: data.jsonl\nsystems: [{name: a, prompt: hyangga/zero_shot}]\n",
        encoding="utf-8",
    )
    return spec


def _run_json(runs: Path) -> dict[str, Any]:
    (found,) = runs.glob("*/run.json")
    return json.loads(found.read_text(encoding="utf-8"))


def _run_scheduled(line: str, tmp_path: Path, env: dict[str, str]) -> None:
    """The crontab line's command, as cron would run it: `/bin/sh -c`, from HOME, in a
    bare environment (PATH and HOME only) plus `env`."""
    command = line.split(f" {MARK} ", 1)[0].split(None, 5)[5].replace("\\%", "%")
    home = tmp_path / "cron-home"
    home.mkdir(exist_ok=True)
    bare = {"PATH": os.environ["PATH"], "HOME": str(home), **env}
    done = subprocess.run(
        ["/bin/sh", "-c", command], cwd=home, env=bare, capture_output=True, text=True, timeout=300
    )
    log = shlex.split(command.split(" >> ", 1)[1])[0]
    assert done.returncode == 0, Path(log).read_text() if Path(log).exists() else done.stderr


@pytest.mark.ollama
def test_a_scheduled_run_records_what_a_direct_run_did(
    tmp_path: Path,
    ollama_target: OllamaTarget,
    isolated_user_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    spec = _spec(work)
    config = write_config(
        isolated_user_state, f'num_ctx = 2048\n[ollama]\nmodel = "{ollama_target.model}"\n'
    )
    monkeypatch.chdir(work)
    monkeypatch.setenv("OLLAMA_HOST", ollama_target.url)  # from the shell: cron has none
    for name, value in {"TEMPERATURE": "0.4", "SEED": "11", "MAX_TOKENS": "8",
                        "STOP": '["\\n\\n", "50%"]', "RETRIES": "1"}.items():  # fmt: skip
        monkeypatch.setenv(f"LLAMAPIPE_{name}", value)

    direct = run_cli(capsys, "eval", "run", str(spec), "--out", str(tmp_path / "direct"))
    assert direct.code == 0, direct.stderr
    made = run_cli(capsys, "eval", "schedule", str(spec), "--cron", "0 3 * * *",
                   "--out", str(tmp_path / "scheduled"))  # fmt: skip
    assert made.code == 0, made.stderr
    line = made.stdout.strip()
    shown = read_cron_line(line)  # the wrapper script it runs, read back
    assert shown["pinned"]["LLAMAPIPE_OLLAMA_HOST"] == ollama_target.url
    assert shown["pinned"]["LLAMAPIPE_CONFIG"] == str(config) and shown["cwd"] == str(work)
    assert shown["command"].startswith(f"{sys.executable} -m cli eval run ")

    _run_scheduled(line, tmp_path, ELSEWHERE)

    was, now = _run_json(tmp_path / "direct"), _run_json(tmp_path / "scheduled")
    assert now["systems"] == was["systems"]  # backend, model, host, digest, prompt, params
    ran = now["systems"]["a"]
    assert (ran["backend"], ran["model"], ran["host"]) == ("ollama", ollama_target.model,
                                                          ollama_target.url)  # fmt: skip
    assert ran["params"] == {"temperature": 0.4, "seed": 11, "max_tokens": 8, "num_ctx": 2048,
                             "stop": ["\n\n", "50%"]}  # fmt: skip
    assert was["environment"]["settings"].pop("backend") == "auto"  # what it chose is pinned:
    assert now["environment"]["settings"].pop("backend") == "ollama"
    assert now["environment"] == was["environment"]  # every setting, config file, cwd, python
    assert now["environment"]["cwd"] == str(work)
    assert now["environment"]["settings"]["retries"] == 1


@pytest.mark.slow
def test_a_scheduled_embedded_run_uses_the_gguf_file_it_was_made_with(
    tmp_path: Path,
    gguf_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    spec = _spec(work)
    copy = tmp_path / "models" / "mine.gguf"  # not the default file
    copy.parent.mkdir()
    shutil.copyfile(gguf_path, copy)
    monkeypatch.chdir(work)
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")
    monkeypatch.setenv("LLAMAPIPE_GGUF", str(copy))
    monkeypatch.setenv("LLAMAPIPE_MAX_TOKENS", "4")
    direct = run_cli(capsys, "eval", "run", str(spec), "--out", str(tmp_path / "direct"))
    assert direct.code == 0, direct.stderr
    made = run_cli(capsys, "eval", "schedule", str(spec), "--cron", "0 3 * * *",
                   "--out", str(tmp_path / "scheduled"))  # fmt: skip
    assert made.code == 0, made.stderr
    _run_scheduled(made.stdout.strip(), tmp_path, {"LLAMAPIPE_GGUF": str(gguf_path), **ELSEWHERE})
    was, now = _run_json(tmp_path / "direct"), _run_json(tmp_path / "scheduled")
    print(json.dumps([now["systems"], was["systems"]]))
    assert now["systems"] == was["systems"]
    assert now["environment"] == was["environment"]
    assert now["systems"]["a"]["backend"] == "embedded"
    assert now["environment"]["settings"]["gguf"] == str(copy)


# -- keys, and reading schedules back -----------------------------------------------------------


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Backend `scripted`, declaring that it reads a key from $LAB_KEY (set now), and a spec."""
    provider = dataclasses.replace(
        scripted_provider(ScriptedChat(["x"])), secrets=lambda settings: ["LAB_KEY"]
    )
    with registered(provider):
        monkeypatch.setenv("LLAMAPIPE_BACKEND", "scripted")
        monkeypatch.setenv("LAB_KEY", "sk-very-secret")
        yield _spec(tmp_path)


def test_a_key_is_never_written_into_a_schedule(
    keyed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = run_cli(capsys, "eval", "schedule", str(keyed), "--cron", "0 3 * * *")
    assert refused.code == 2 and "$LAB_KEY" in refused.stderr and "--env-file" in refused.stderr
    with monkeypatch.context() as m:  # a system naming a backend that reads a key: the same
        m.setenv("LLAMAPIPE_BACKEND", "embedded")
        m.setenv("OPENAI_API_KEY", "sk-openai-secret")
        mixed = keyed.parent / "mixed.yaml"
        mixed.write_text(keyed.read_text().replace("zero_shot}", "zero_shot, backend: openai}"))
        other = run_cli(capsys, "eval", "schedule", str(mixed), "--cron", "0 3 * * *")
        assert other.code == 2 and "$OPENAI_API_KEY" in other.stderr, other.stderr
    keys = tmp_path / "keys.env"
    keys.write_text("LAB_KEY=sk-very-secret\n")
    keys.chmod(0o644)
    loose = run_cli(capsys, "eval", "schedule", str(keyed), "--cron", "0 3 * * *",
                    "--env-file", str(keys))  # fmt: skip
    assert loose.code == 2 and f"chmod 600 {keys}" in loose.stderr
    keys.chmod(0o600)
    for extra in ([], ["--systemd"]):
        made = run_cli(capsys, "eval", "schedule", str(keyed), "--cron", "0 3 * * *",
                       "--env-file", str(keys), *extra)  # fmt: skip
        assert made.code == 0, made.stderr
        assert "sk-very-secret" not in made.stdout + made.stderr
    assert f"EnvironmentFile={keys}\n" in made.stdout
    cron = run_cli(capsys, "eval", "schedule", str(keyed), "--cron", "0 3 * * *",
                   "--env-file", str(keys))  # fmt: skip
    script = Path(read_cron_line(cron.stdout.strip())["script"])
    assert f"set -a && . {keys} && set +a" in script.read_text()
    assert "sk-very-secret" not in script.read_text()
    assert read_cron_line(cron.stdout.strip())["env_file"] == str(keys)


def test_show_lists_what_each_installed_schedule_pins(
    tmp_path: Path,
    isolated_user_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bin_dir, table = tmp_path / "bin", tmp_path / "crontab.txt"
    bin_dir.mkdir()
    (bin_dir / "crontab").write_text(  # a crontab that keeps the table in a file
        f'#!/bin/sh\nif [ "$1" = "-l" ]; then cat {table} 2>/dev/null || exit 1; '
        f"else cat > {table}; fi\n"
    )
    (bin_dir / "crontab").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")  # and no systemctl there?
    monkeypatch.setattr(shutil, "which", lambda name, _w=shutil.which: None
                        if name == "systemctl" else _w(name))  # fmt: skip
    spec = _spec(tmp_path)
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")
    monkeypatch.setenv("LLAMAPIPE_TEMPERATURE", "0.25")
    nothing = run_cli(capsys, "eval", "schedule", "--show")
    assert nothing.code == 0 and "no llamapipe eval schedules" in nothing.stderr
    for extra in ([], ["--systemd"]):
        made = run_cli(capsys, "eval", "schedule", str(spec), "--cron", "0 3 * * *",
                       "--install", *extra)  # fmt: skip
        assert made.code == 0, made.stderr
    shown = run_cli(capsys, "eval", "schedule", "--show", "--json")
    assert shown.code == 0, shown.stderr
    cron, timer = shown.json()["schedules"]
    assert (cron["kind"], cron["when"], timer["kind"]) == ("cron", "0 3 * * *", "systemd")
    assert timer["when"] == "*-*-* 03:00:00"
    for s in (cron, timer):
        assert s["spec"] == str(spec.resolve()) and s["cwd"] == str(Path.cwd())
        assert s["pinned"]["LLAMAPIPE_BACKEND"] == "embedded"
        assert s["pinned"]["LLAMAPIPE_TEMPERATURE"] == "0.25"
        assert s["command"].startswith(f"{sys.executable} -m cli eval run ")
    text = run_cli(capsys, "eval", "schedule", str(spec), "--show")
    assert "LLAMAPIPE_TEMPERATURE=0.25" in text.stdout and "runs in" in text.stdout


def test_unit_files_and_cron_lines_read_back_what_was_written(tmp_path: Path) -> None:
    from evals.schedule import Pinned, cron_line, systemd_units, write_wrapper

    odd = tmp_path / "a dir with 50% and $HOME"
    odd.mkdir()
    pinned = Pinned({"LLAMAPIPE_STOP": '["a b", "c\\"d", "5%"]', "X": "$HOME"}, odd, "/py")
    spec = odd / "s.yaml"
    write_wrapper(spec, odd, pinned)
    line = cron_line("0 3 * * *", spec, odd, pinned)
    units = systemd_units("0 3 * * *", spec, odd, pinned)
    for read in (
        read_cron_line(line),
        read_systemd_unit(units["llamapipe-eval-s.service"], units["llamapipe-eval-s.timer"]),
    ):
        assert read["pinned"] == pinned.env and read["cwd"] == str(odd)
        assert read["spec"] == str(spec) and read["command"].startswith("/py -m cli eval run")


def test_two_specs_of_one_name_have_a_script_each(tmp_path: Path) -> None:
    from evals.schedule import script_path

    one, two = tmp_path / "a" / "demo.yaml", tmp_path / "b" / "demo.yaml"
    assert script_path(one, tmp_path) != script_path(two, tmp_path)
    assert script_path(one, tmp_path).name.startswith("llamapipe-eval-demo-")
