"""Run `llamapipe ARGS` with slow stand-ins (tests/slow.py), for the progress tests (in a pty).

python tests/progress_cli.py [--reply TEXT] [--first-delay S] [--chunk-delay S]
    [--file-delay S] [--embed-delay S] -- rag ingest docs/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reply", default="hello there")
    parser.add_argument("--first-delay", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--file-delay", type=float, default=0.0)
    parser.add_argument("--embed-delay", type=float)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.slow import slow_files, use_scripted

    use_scripted(args.reply, first_delay=args.first_delay, chunk_delay=args.chunk_delay,
                 embed_delay=args.embed_delay)  # fmt: skip
    if args.file_delay:
        slow_files(args.file_delay)
    import cli

    sys.argv = ["llamapipe", *(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)]
    cli.entry()


if __name__ == "__main__":
    main()
