"""LangChain's own conformance suites (`langchain-tests`) for what llamapipe hands to LangChain.

The embedded chat model runs the unit suite (construction, parameters, serialization) and
the integration suite against the real GGUF model (invoke, stream, batch, usage metadata on
whole and streamed answers, stop sequences, multi-turn, Korean...). The retriever runs the
retriever suite (`k` in the constructor and in `invoke`). Structured output (grammar-
constrained, pipelines/backends/structured.py), JSON mode and tool calling (the call grammar-
constrained too, pipelines/backends/tools.py; tool_choice "any" and a tool's name force a
call) are declared and run; features the model does not have (images, PDFs, audio) are
declared absent, which the suites then skip by their own rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from pipelines.backends.embedded import EmbeddedChatModel
from pipelines.backends.gguf import default_gguf
from pipelines.rag import Index, IndexRetriever
from tests.corpora import hyangga_corpus


class _EmbeddedChat:
    """What both chat suites need to know about the embedded model."""

    @property
    def chat_model_class(self) -> type[EmbeddedChatModel]:
        return EmbeddedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # The suites add their standard parameters (max_tokens=100, temperature=0, stop...).
        return {"model_path": default_gguf()}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True  # "any"/"required" and a tool's name force a call (a grammar)

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestEmbeddedChatUnit(_EmbeddedChat, ChatModelUnitTests):
    pass


@pytest.mark.slow
class TestEmbeddedChatIntegration(_EmbeddedChat, ChatModelIntegrationTests):
    @pytest.mark.xfail(
        reason="JSON mode holds the answer to any JSON object, and SmolLM2-135M closes it "
        "after the first key ({'setup': ...}) however the prompt names both; the schema "
        "methods (test_structured_output*) hold it to the keys and pass",
        raises=OutputParserException,
        strict=False,
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        reason="the suite binds the tool with tool_choice None (auto: a call or text, the "
        "model's first character decides), and SmolLM2-135M answers the weather question "
        "in prose instead of calling get_weather; forced (tool_choice any or a name) it "
        "calls it, as test_tool_calling* and test_tool_choice show",
        raises=AssertionError,
        strict=False,
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)  # as the suite
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)


@pytest.fixture(scope="module")
def hyangga_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    root = tmp_path_factory.mktemp("standard-retriever")
    hyangga_corpus(root / "docs")
    index = Index(root / "index")
    index.ingest([root / "docs"])
    return index


class TestIndexRetriever(RetrieversIntegrationTests):
    index: Index

    @pytest.fixture(autouse=True)
    def _built(self, hyangga_index: Index) -> None:
        self.index = hyangga_index

    @property
    def retriever_constructor(self) -> type[IndexRetriever]:
        return IndexRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": self.index, "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return "처용가를 지은 사람은 누구인가?"


def test_k_is_honoured_per_call(hyangga_index: Index) -> None:
    """The suite's `invoke(query, k=...)`, with the order kept: k=1 is the best of k=3."""
    retriever = IndexRetriever(index=hyangga_index, k=5)
    three = retriever.invoke("처용가를 지은 사람은 누구인가?", k=3)
    one = retriever.invoke("처용가를 지은 사람은 누구인가?", k=1)
    assert len(three) == 3 and len(one) == 1
    assert one[0].page_content == three[0].page_content
    assert Path(one[0].metadata["source"]).name == "hyangga-00.txt"  # 처용가
