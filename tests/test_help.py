"""`--help` on an 80-column terminal: every command's, nothing past column 80, no word cut in
two, no example or paragraph broken across lines."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from rich.cells import cell_len

import cli
from tests.cli_helpers import run_cli

WIDTH = 80
MARKUP = re.compile(r"\[/?[a-z]+\]")  # [b]...[/b]: rich markup, not shown as written


def commands(
    command: Any = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    command = command or typer.main.get_command(cli.app)
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


ALL = list(commands())


def helps(command: Any) -> list[str]:
    texts = [inspect.cleandoc(command.help or "")]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    return texts


@pytest.mark.parametrize("path, command", ALL, ids=[" ".join(p) or "llamapipe" for p, _ in ALL])
def test_help_fits_80_columns(
    path: tuple[str, ...], command: Any, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    shown = run_cli(capsys, *path, "--help")
    assert shown.code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    too_wide = [line for line in lines if cell_len(line) > WIDTH]
    assert not too_wide, "\n".join(too_wide)
    words = set(shown.stdout.replace("│", " ").split())
    for text in helps(command):
        cut = [w for w in MARKUP.sub("", text).split() if w not in words]
        assert not cut, f"words cut in two (or lost): {cut}"
    # Past its first paragraph (which typer joins into one), a command's help keeps its line
    # breaks (the examples block needs them), so each line must fit whole.
    _, _, rest = inspect.cleandoc(command.help or "").partition("\n\n")
    shown_lines = {MARKUP.sub("", line).strip() for line in lines}
    broken = [line for line in rest.splitlines() if MARKUP.sub("", line).strip() not in shown_lines]
    assert not broken, f"lines that wrapped: {broken}"


LISTED = ALL[1:]  # every command but llamapipe itself appears in its group's list


@pytest.mark.parametrize("path, command", LISTED, ids=[" ".join(p) for p, _ in LISTED])
def test_a_command_listing_shows_one_unbroken_sentence(path: tuple[str, ...], command: Any) -> None:
    """In a group's list of commands typer keeps the line breaks of each command's first
    paragraph, so a first paragraph of two lines shows as a ragged, half-empty line."""
    first = inspect.cleandoc(command.help or "").split("\n\n")[0]
    assert "\n" not in first, f"{' '.join(path)}: its first paragraph spans lines: {first!r}"
