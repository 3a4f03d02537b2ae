"""RAG evals measure answers: against the bundled dataset's references, an answer that
echoes the question scores near zero and right answers score high."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evals.correctness import beyond, normalise, score
from evals.runner import run_spec
from evals.spec import load_spec
from pipelines.errors import UsageError
from pipelines.settings import load_settings
from tests.fakes import ScriptedChat

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "evals" / "specs" / "rag.yaml"
QUESTIONS = [
    json.loads(line)
    for line in (ROOT / "evals/datasets/rag/questions.jsonl").read_text("utf-8").splitlines()
]
RIGHT = {
    "q1": "Ogura Shinpei published one of the first complete readings in 1929 [1].",
    "q2": "처용이 지었다고 전합니다 [1].",
    "q3": "오늘날 전하는 향가는 모두 25수입니다 [1].",
    "q4": "고려의 승려 일연이 편찬했습니다 [1].",
    "q5": "Use water at about 70 to 80 degrees Celsius [1].",
    "q6": "The sources do not cover this.",
    "q7": "제공된 자료에는 이에 대한 내용이 없습니다.",
    "q8": "Some characters stand for their meaning and are read as the Korean word with that "
    "meaning, while others stand only for their sound and spell particles and endings [1].",
}


def _asked(prompt: str) -> dict[str, Any]:
    """The dataset item a RAG prompt asks about."""
    return next(q for q in QUESTIONS if f"Question: {q['question']}" in prompt)


def _run(tmp_path: Path, reply: Any) -> dict[str, Any]:
    model = ScriptedChat(reply)
    factory = lambda s: SimpleNamespace(name="fake", model="scripted", chat=model)  # noqa: E731
    settings = load_settings({"backend": "embedded"})  # no embeddings (BM25), no sockets
    return run_spec(load_spec(SPEC), tmp_path / "runs", settings=settings, backend_factory=factory)


def _correctness(summary: dict[str, Any]) -> float:
    return float(summary["systems"]["k3"]["metrics"]["answer_correctness"]["score"])


def test_echoed_questions_score_near_zero_and_right_answers_high(tmp_path: Path) -> None:
    echo = _run(tmp_path / "echo", lambda prompt: _asked(prompt)["question"])
    assert _correctness(echo) <= 5, "an answer that only repeats the question is not right"
    right = _run(tmp_path / "right", lambda prompt: RIGHT[_asked(prompt)["id"]])
    assert _correctness(right) >= 90
    rows = [
        json.loads(line)
        for line in (tmp_path / "right/runs" / right["run_id"] / "results.jsonl")
        .read_text("utf-8")
        .splitlines()
    ]
    unanswerable = {
        r["id"]: r["metrics"]["answer_correctness"] for r in rows if r["id"] in ("q6", "q7")
    }
    assert unanswerable == {"q6": None, "q7": None}, "abstention accuracy scores those"
    md = (tmp_path / "right/runs" / right["run_id"] / "report.md").read_text("utf-8")
    assert "answer_correctness" in md


def test_short_answers_are_found_but_not_in_words_the_question_gave() -> None:
    item = {"question": "처용가는 누가 지었다고 전하나요?", "answers": ["처용"], "answerable": True}
    assert score(item, "처용이 지었다고 전합니다.", abstained=False) == 100
    assert score(item, "처용가는 일연이 지었다고 전합니다.", abstained=False) == 0
    assert score(item, "처용가는 누가 지었다고 전하나요?", abstained=False) == 0
    assert score(item, "처용이 지었습니다", abstained=True) == 0, "an abstention is no answer"
    assert normalise("Ｏｇｕｒａ  Shinpei!") == "ogura shinpei"
    assert beyond("70-80 degrees", "At what temperature?") == "70 80 degrees"


def test_a_rag_dataset_without_references_is_not_scored_on_answers_and_says_so(
    tmp_path: Path,
) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "a", "question": "Who?", "gold_sources": ["hyangchal.md"]}\n', "utf-8")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: r\ntask: rag\ndataset: {data}\ncorpus: {ROOT / 'evals/datasets/rag/corpus'}\n"
        "systems: [{name: k3, k: 3}]\n",
        "utf-8",
    )
    model = ScriptedChat(lambda prompt: "Ogura Shinpei [1].")
    factory = lambda s: SimpleNamespace(name="fake", model="scripted", chat=model)  # noqa: E731
    settings = load_settings({"backend": "embedded"})
    summary = run_spec(
        load_spec(spec), tmp_path / "runs", settings=settings, backend_factory=factory
    )
    assert "answer_correctness" not in summary["systems"]["k3"]["metrics"]
    assert summary["unscored"] == ["answer_correctness"]
    report = (tmp_path / "runs" / summary["run_id"] / "report.md").read_text("utf-8")
    assert "Not scored: `answer_correctness`" in report


def _judged_spec(tmp_path: Path, extra: str) -> Path:
    spec = tmp_path / "judged.yaml"
    spec.write_text(
        f"name: judged\ntask: rag\ndataset: {ROOT / 'evals/datasets/rag/questions.jsonl'}\n"
        f"corpus: {ROOT / 'evals/datasets/rag/corpus'}\nsystems: [{{name: k3, k: 3}}]\n{extra}",
        "utf-8",
    )
    return spec


def test_a_judge_model_is_off_by_default_and_labelled_when_on(tmp_path: Path) -> None:
    assert "judged_correctness" not in load_spec(SPEC).metrics  # type: ignore[operator]
    judged: list[str] = []

    def reply(prompt: str) -> str:
        if "You grade answers" in prompt:  # the judge: right when the answer holds the name
            judged.append(prompt)
            return "CORRECT" if "Answer to grade: Ogura" in prompt else "INCORRECT."
        return RIGHT[_asked(prompt)["id"]] if "1929" in prompt else _asked(prompt)["question"]

    model = ScriptedChat(reply)
    factory = lambda s: SimpleNamespace(name="fake", model="judge-7b", chat=model)  # noqa: E731
    settings = load_settings({"backend": "embedded"})
    spec = load_spec(_judged_spec(tmp_path, "judge: {params: {temperature: 0}}\n"))
    summary = run_spec(spec, tmp_path / "runs", settings=settings, backend_factory=factory)
    score_ = summary["systems"]["k3"]["metrics"]["judged_correctness"]["score"]
    assert round(score_, 2) == round(100 / 6, 2), "one of the six answerable questions judged right"
    assert len(judged) == 6 and summary["judge"]["model"] == "judge-7b"
    report = (tmp_path / "runs" / summary["run_id"] / "report.md").read_text("utf-8")
    assert "verdict of a judge model (fake judge-7b)" in report and "not a measurement" in report
    page = (tmp_path / "runs" / summary["run_id"] / "report.html").read_text("utf-8")
    assert 'id="judge"' in page
    with pytest.raises(UsageError, match="judged_correctness needs a judge model"):
        bad = load_spec(_judged_spec(tmp_path, "metrics: [judged_correctness]\n"))
        run_spec(bad, tmp_path / "runs", settings=settings, backend_factory=factory)
