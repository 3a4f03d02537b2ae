"""Run `llamapipe ARGS` with a scripted chat model, for the REPL tests (run in a pty).

    python tests/chat_repl.py [--delay S] -- chat -i

The model answers "I see N user messages" (and "with a system prompt" when there is one),
so a test can tell what history reached it; asked for "a long answer" it answers thirteen
words (slowly, with --delay); given a PAL prompt, a program returning 395; given a RAG
prompt, RAG_ANSWER. With --no-landlock, the kernel seems to offer no Landlock, so no
sandbox can be built.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

RAG_ANSWER = "처용가는 신라 헌강왕 때 처용이 지었다고 전하는 향가이다 [1]."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--window", type=int, help="the model's context window (tokens)")
    parser.add_argument("--no-landlock", action="store_true")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.no_landlock:
        from pipelines.sandbox import _walls

        _walls.landlock_abi = lambda: 0  # type: ignore[assignment]
    from pipelines.backends import REGISTRY
    from tests.fakes import ScriptedChat
    from tests.scripted_backend import scripted_provider

    def reply(prompt: str) -> str:
        if "solution()" in prompt:  # a PAL prompt (/pal): a program
            return "```python\ndef solution():\n    return 17 * 23 + 4\n```"
        if "Sources:" in prompt:  # a RAG answer (`rag ask`), citing the first source
            return RAG_ANSWER
        if "long answer" in prompt.rsplit("[human]", 1)[-1]:
            return " ".join(["word"] * 12) + " end."
        system = " with a system prompt" if "[system]" in prompt else ""
        return f"I see {prompt.count('[human]')} user messages{system}."

    model = ScriptedChat(reply, chunk_delay=args.delay, num_ctx=args.window,
                         max_tokens=100 if args.window else None)  # fmt: skip
    REGISTRY.register(scripted_provider(model))  # registered as any backend is
    os.environ["LLAMAPIPE_BACKEND"] = "scripted"
    import cli

    sys.argv = ["llamapipe", *(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)]
    cli.entry()


if __name__ == "__main__":
    main()
