"""`make bench`: run every benchmark module (or the ones named) and write bench/results/.

    python -m bench            # all of them
    python -m bench rag pal    # some of them

Each module writes `<name>.json` and `<name>.md` into the results dir; this runner
also prints each Markdown table so one run shows every comparison.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(
            f"error: no benchmark named {', '.join(unknown)}; have: {', '.join(available())}",
            file=sys.stderr,
        )
        return 2
    if not names:
        print("no benchmarks yet")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== bench/{name}.py ==", flush=True)
        module.main(RESULTS)
        print((RESULTS / f"{name}.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
