"""Run the CLI under a parent that never reaps orphans, then report what was left behind.

A container's pid 1 that is not an init adopts orphans and never reaps them, so anything a
CLI run leaves behind stays as a zombie (or runs on). This script stands in for that pid 1:
it becomes a child subreaper (orphans of its descendants come to it, not to the real
init), runs `llamapipe ARGS...` in a forked child, waits for that child only, and prints
JSON: the CLI's exit code and every process still parented to it.

    python tests/subreaper.py [--interrupt-after S] [--kill-after S] [--program TEXT] -- ARGS

--program: the PAL model's reply (a scripted model stands in for a real one).
--model-delay: the scripted model takes S seconds per reply (a slow model to interrupt).
--file-delay: reading each document takes S s longer (a slow ingest to interrupt);
  --file-marks DIR: DIR/reading-N and DIR/N appear as the Nth document starts and is read,
  DIR/embed-N once the Nth batch of vectors is done; with --program, DIR/model-N as the
  Nth model call starts.
--wait-for: wait until this path exists (e.g. DIR/3) before counting --interrupt-after.
--wait-for-line GLOB: wait until a file matching GLOB (from the working directory, e.g.
  runs/*/results.jsonl) holds a whole line, before counting --interrupt-after.
--wait-for-processes N: wait until the CLI has N processes below it (the sandbox's are up)
  before counting --interrupt-after or --kill-after.
--embed-delay: the scripted backend has embeddings taking S s per batch (dense vectors).
--interrupt-after: send the CLI SIGINT (Ctrl-C) after S seconds; --twice: again 0.3 s later.
--kill-after: send the CLI SIGKILL after S seconds; its descendants are listed first.
--python CODE: run this Python instead of the CLI (a library user's script), then exit as a
  script does (atexit handlers run).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def children_of(pid: int) -> list[dict[str, object]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append({"pid": int(entry.name), "state": fields[0]})
    return found


def descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        for child in children_of(todo.pop()):
            seen.append(int(child["pid"]))  # type: ignore[call-overload]
            todo.append(int(child["pid"]))  # type: ignore[call-overload]
    return seen


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def reached(path: str | None, line_in: str | None) -> bool:
    """`path` exists, and a file matching the glob `line_in` holds a whole line."""
    if path is not None and not Path(path).exists():
        return False
    if line_in is None:
        return True
    for found in Path().glob(line_in):
        with contextlib.suppress(OSError):
            if b"\n" in found.read_bytes():
                return True
    return False


def run_cli(
    argv: list[str],
    program: str | None,
    delay: float,
    file_delay: float = 0.0,
    embed_delay: float | None = None,
    file_marks: str | None = None,
) -> None:
    """The forked child: the CLI, with a scripted model when a program is given."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if file_delay or embed_delay is not None:
        from tests.slow import slow_files, use_scripted

        marks = Path(file_marks) if file_marks else None
        if file_delay:
            slow_files(file_delay, marks)
        if embed_delay is not None and program is None:
            use_scripted(embed_delay=embed_delay, marks=marks)
    if program is not None:
        from pipelines.backends import REGISTRY
        from tests.fakes import ScriptedChat
        from tests.scripted_backend import NAME, scripted_provider

        replies = 0
        lock = threading.Lock()

        def reply(prompt: str) -> str:
            nonlocal replies
            if file_marks:  # DIR/model-N: the Nth model call has started
                with lock:
                    replies += 1
                    Path(file_marks).mkdir(parents=True, exist_ok=True)
                    (Path(file_marks) / f"model-{replies}").touch()
            time.sleep(delay)
            return program

        REGISTRY.register(scripted_provider(ScriptedChat(reply)))
        os.environ["LLAMAPIPE_BACKEND"] = NAME
    import cli

    sys.argv = ["llamapipe", *argv]
    cli.entry()  # raises SystemExit: the interpreter shuts down as the console script's does


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interrupt-after", type=float)
    parser.add_argument("--kill-after", type=float)
    parser.add_argument("--program")
    parser.add_argument("--model-delay", type=float, default=0.0)
    parser.add_argument("--twice", action="store_true")
    parser.add_argument("--file-delay", type=float, default=0.0)
    parser.add_argument("--embed-delay", type=float)
    parser.add_argument("--file-marks")
    parser.add_argument("--wait-for")
    parser.add_argument("--wait-for-line")
    parser.add_argument("--wait-for-processes", type=int)
    parser.add_argument("--python")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = os.fork()
    if child == 0:
        if args.python is not None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            exec(compile(args.python, "<script>", "exec"), {"__name__": "__main__"})
            sys.exit(0)
        run_cli(
            argv, args.program, args.model_delay, args.file_delay, args.embed_delay, args.file_marks
        )
    watched: list[int] = []
    interrupted = 0.0
    if args.wait_for is not None or args.wait_for_line is not None:
        deadline = time.monotonic() + 60
        while not reached(args.wait_for, args.wait_for_line) and time.monotonic() < deadline:
            time.sleep(0.02)
    if args.wait_for_processes is not None:
        deadline = time.monotonic() + 60
        while len(descendants(child)) < args.wait_for_processes and time.monotonic() < deadline:
            time.sleep(0.02)
    if args.interrupt_after is not None:
        time.sleep(args.interrupt_after)
        interrupted = time.monotonic()
        os.kill(child, signal.SIGINT)
        if args.twice:
            time.sleep(0.3)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGINT)
    if args.kill_after is not None:
        time.sleep(args.kill_after)
        watched = descendants(child)
        os.kill(child, signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    stopped = time.monotonic()
    time.sleep(1.0)  # orphans reach their new parent only as their old one goes
    print(
        json.dumps(
            {
                "exit": os.waitstatus_to_exitcode(status),
                "seconds_after_interrupt": round(stopped - interrupted, 2) if interrupted else None,
                "left": children_of(os.getpid()),
                "watched": watched,
                "alive": [pid for pid in watched if alive(pid)],
            }
        )
    )
    # Exit without reaping: whatever is left goes to the real init, as in a container.
    os._exit(0)


if __name__ == "__main__":
    main()
