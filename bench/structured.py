"""Structured output on the embedded model: JSON validity and decode speed, with and without
the grammar, in one run.

20 prompts (10 English, 10 Korean) ask SmolLM2-135M-Instruct for a Person{name, age, city}
as JSON, with the schema in the prompt. Each prompt is answered three ways, back to back so
load from elsewhere on the machine falls on all alike:
- unconstrained, schema in the prompt,
- unconstrained, schema and an example answer in the prompt,
- constrained: `with_structured_output(Person)` (the grammar from the schema, lengths
  bounded by max_tokens; pipelines/backends/structured.py), same prompt as the first.

Valid: the answer (from its first `{` to its last `}`) parses and validates as a Person;
strict: the whole answer does. Age right: the parsed age is the one in the prompt.
Decode tokens/s: generated tokens over the call's wall time less llama.cpp's prompt
evaluation, so the grammar's sampling cost is in it. Greedy (temperature 0), max_tokens 256.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pipelines.backends.embedded import EmbeddedChatModel
from pipelines.backends.gguf import default_gguf

MAX_TOKENS = 256


class Person(BaseModel):
    name: str
    age: int
    city: str


PEOPLE_EN = [
    ("Alice Johnson", 34, "Boston"), ("Rahul Mehta", 27, "Mumbai"), ("Sofia Rossi", 45, "Rome"),
    ("Tom Baker", 61, "Leeds"), ("Emma Dubois", 29, "Lyon"), ("Carlos Ruiz", 38, "Madrid"),
    ("Yuki Tanaka", 52, "Osaka"), ("Liam Walsh", 23, "Dublin"), ("Nora Berg", 41, "Oslo"),
    ("Omar Haddad", 36, "Cairo"),
]  # fmt: skip
PEOPLE_KO = [
    ("김민준", 32, "서울"), ("이서연", 28, "부산"), ("박지호", 45, "대구"), ("최수아", 51, "인천"),
    ("정우진", 19, "광주"), ("강하은", 37, "대전"), ("조현우", 63, "울산"), ("윤지아", 24, "수원"),
    ("장도윤", 40, "전주"), ("임서윤", 56, "제주"),
]  # fmt: skip
EXAMPLE = '{"name": "Jane Doe", "age": 40, "city": "Paris"}'


def prompts() -> list[tuple[str, int, str]]:
    """(language, age asked about, prompt with the schema in it)."""
    schema = json.dumps(Person.model_json_schema())
    out = []
    for name, age, city in PEOPLE_EN:
        out.append(("English", age, f"{name} is {age} years old and lives in {city}. "
                    f"Describe this person as JSON matching this schema: {schema}"))  # fmt: skip
    for name, age, city in PEOPLE_KO:
        out.append(("Korean", age, f"{name}은(는) {age}살이고 {city}에 산다. 이 사람을 다음 "
                    f"스키마에 맞는 JSON으로 나타내세요: {schema}"))  # fmt: skip
    return out


def check(text: str, age: int) -> dict[str, bool]:
    def person(candidate: str) -> Person | None:
        try:
            return Person.model_validate_json(candidate)
        except ValidationError:
            return None

    strict = person(text.strip())
    start, end = text.find("{"), text.rfind("}")
    found = person(text[start : end + 1]) if 0 <= start < end else None
    return {
        "valid": found is not None,
        "strict": strict is not None,
        "age_right": found is not None and found.age == age,
    }


def timed(model: EmbeddedChatModel, call: Any) -> tuple[str, int, float]:
    """(answer text, generated tokens, decode seconds) of one call."""
    import llama_cpp

    ctx = model._runtime().llama._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    started = time.perf_counter()
    message = call()
    wall = time.perf_counter() - started
    prefill = llama_cpp.llama_perf_context(ctx).t_p_eval_ms / 1000
    tokens = (message.usage_metadata or {}).get("output_tokens", 0)
    return str(message.content), tokens, max(wall - prefill, 1e-9)


def main(out_dir: Path) -> dict[str, Any]:
    model = EmbeddedChatModel(model_path=default_gguf(), max_tokens=MAX_TOKENS, n_ctx=2048)
    constrained = model.with_structured_output(Person, include_raw=True)
    ways = {
        "unconstrained, schema in prompt": lambda p: model.invoke(p),
        "unconstrained, schema + example in prompt": lambda p: model.invoke(
            f"{p}\nExample answer: {EXAMPLE}"
        ),
        "constrained (grammar from the schema)": lambda p: constrained.invoke(p)["raw"],
    }
    model.invoke("warm up")
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in ways}
    for language, age, prompt in prompts():
        for name, way in ways.items():
            text, tokens, seconds = timed(model, lambda w=way, p=prompt: w(p))  # type: ignore[misc]
            samples[name].append(
                {"language": language, "tokens": tokens, "decode_s": seconds, "text": text,
                 **check(text, age)}
            )  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    for name, got in samples.items():
        rows[name] = {
            "valid": sum(s["valid"] for s in got),
            "strict": sum(s["strict"] for s in got),
            "age_right": sum(s["age_right"] for s in got),
            "valid_en": sum(s["valid"] for s in got if s["language"] == "English"),
            "valid_ko": sum(s["valid"] for s in got if s["language"] == "Korean"),
            "prompts": len(got),
            "tokens_median": statistics.median(s["tokens"] for s in got),
            "decode_tok_s_median": round(
                statistics.median(s["tokens"] / s["decode_s"] for s in got), 1
            ),
            "decode_tok_s_overall": round(
                sum(s["tokens"] for s in got) / sum(s["decode_s"] for s in got), 1
            ),
        }
    base = rows["unconstrained, schema in prompt"]
    for row in rows.values():
        row["speed_vs_unconstrained"] = round(
            row["decode_tok_s_overall"] / base["decode_tok_s_overall"], 2
        )
    doc = {
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "model": model.model_name,
        "max_tokens": MAX_TOKENS,
        "rows": rows,
        "answers": {name: [s["text"] for s in got] for name, got in samples.items()},
    }
    (out_dir / "structured.json").write_text(
        json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "structured.md").write_text(table(rows), encoding="utf-8")
    return doc


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "### Structured output (SmolLM2-135M, Person{name, age, city}, 10 English + 10 Korean)",
        "",
        "| decoding | valid | strict | age right | valid en/ko | median tokens "
        "| decode tok/s (median) | decode tok/s (overall) | speed vs unconstrained |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        n = r["prompts"]
        lines.append(
            f"| {name} | {r['valid']}/{n} | {r['strict']}/{n} | {r['age_right']}/{n} "
            f"| {r['valid_en']}/{r['valid_ko']} | {r['tokens_median']:g} "
            f"| {r['decode_tok_s_median']} | {r['decode_tok_s_overall']} "
            f"| {r['speed_vs_unconstrained']:.2f}x |"
        )
    lines += [
        "",
        "Valid: the answer's outermost {...} validates as a Person; strict: the whole answer "
        f"does. Greedy, max_tokens {MAX_TOKENS}; decode time excludes prompt evaluation.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "structured.md").read_text(encoding="utf-8"))
