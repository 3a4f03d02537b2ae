"""One measurement of a llama-cpp-python build, run as a child process by bench/generation.py.

Standard library and llama_cpp only, so it runs in any venv holding a build (a crash of
the build under test ends this process, not the benchmark). Reads a JSON request from
argv[1]; prints one JSON line: prefill and generation tokens per second for each prompt.

    {"gguf": PATH, "extra_bufts": true|false|null, "env": {"OMP_WAIT_POLICY": ...},
     "prompts": {"en": TEXT, ...}, "generate": 64, "repeats": 3}
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time


def load(gguf: str, extra_bufts: bool | None) -> object:
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as low_level

    if extra_bufts is not None:  # what pipelines.backends.llama_build does on AMX builds
        original = low_level.llama_model_default_params

        def params() -> object:
            p = original()
            p.use_extra_bufts = extra_bufts
            return p

        low_level.llama_model_default_params = params
    return Llama(model_path=gguf, n_ctx=2048, seed=0, verbose=False)


def measure(llm: object, text: str, generate: int) -> dict[str, float]:
    tokens = llm.tokenize(text.encode("utf-8"))  # type: ignore[attr-defined]
    llm.reset()  # type: ignore[attr-defined]
    start = time.perf_counter()
    llm.eval(tokens)  # type: ignore[attr-defined]
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(generate):  # greedy, never stopping early: a fixed amount of work
        token = llm.sample(temp=0.0)  # type: ignore[attr-defined]
        llm.eval([token])  # type: ignore[attr-defined]
    decode = time.perf_counter() - start
    return {
        "prompt_tokens": len(tokens),
        "prefill_tok_s": len(tokens) / prefill,
        "generate_tok_s": generate / decode,
    }


def main() -> None:
    request = json.loads(sys.argv[1])
    os.environ.update(request.get("env") or {})  # before llama.cpp (and OpenMP) loads
    import llama_cpp

    info = bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace")
    llm = load(request["gguf"], request["extra_bufts"])
    results = {}
    for name, text in request["prompts"].items():
        runs = [measure(llm, text, request["generate"]) for _ in range(request["repeats"])]
        results[name] = {
            "prompt_tokens": runs[0]["prompt_tokens"],
            "prefill_tok_s": round(statistics.median(r["prefill_tok_s"] for r in runs), 1),
            "generate_tok_s": round(statistics.median(r["generate_tok_s"] for r in runs), 1),
        }
    print(
        json.dumps(
            {
                "version": llama_cpp.__version__,
                "amx": "AMX_INT8 = 1" in info,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
