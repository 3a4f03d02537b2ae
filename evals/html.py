"""HTML, made one way: Jinja templates, autoescaped.

The eval reports (`evals/report.py`) use the templates in `evals/templates/`; the web page
(`llamapipe_app/web/`) adds its own folder and extends the same `base.html`, which inlines
`style.css`, so a report written to disk stays one self-contained file that works offline.
Every value is escaped unless a template marks it safe; none does. Templates are package
data (found by package name, not by a path in the source tree), so they work from a wheel.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape


@cache
def environment(extra: str | None = None) -> Environment:
    """The templates of `evals`, and first those of the package `extra` when given."""
    loaders = [PackageLoader(extra, "templates")] if extra else []
    return Environment(
        loader=ChoiceLoader([*loaders, PackageLoader("evals", "templates")]),
        autoescape=select_autoescape(["html", "svg"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, extra: str | None = None, **context: Any) -> str:
    """Render `name` (e.g. "report.html") with `context`; `extra`: see `environment`."""
    return environment(extra).get_template(name).render(**context)
