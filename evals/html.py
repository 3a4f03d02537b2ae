"""HTML, made one way: the Jinja templates in this folder, autoescaped.

The web page (`web/`) and the eval reports (`evals/report.py`) extend the same `base.html`,
which inlines `style.css`, so a report written to disk stays one self-contained file that
works offline. Every value is escaped unless a template marks it safe; none does.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("templates", ""),
        autoescape=select_autoescape(["html", "svg"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    """Render `name` (e.g. "report.html") with `context`."""
    return environment().get_template(name).render(**context)
