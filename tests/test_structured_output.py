"""Structured output (`with_structured_output`) on the three chat models.

Embedded: decoding held to a grammar made from the schema (pipelines/backends/structured.py),
so answers parse by construction, with lengths bounded so the JSON closes within max_tokens.
Ollama: `format` over HTTP to our Ollama-protocol server (which holds decoding to the same
grammar, as Ollama does). OpenAI-compatible: `response_format` to llama-cpp-python's server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import openai
import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from pipelines.backends import structured
from pipelines.backends.embedded import EmbeddedChatModel
from pipelines.backends.openai_compat import translate_errors
from pipelines.errors import StructuredOutputError, StructuredOutputUnsupportedError, UsageError


class Person(BaseModel):
    name: str
    age: int
    city: str


class PersonDict(TypedDict):
    name: Annotated[str, ..., "the person's name"]
    age: int


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
ASK = "Kim Minjun is 32 years old and lives in Seoul. Describe him as JSON."
ASK_KO = "서울에 사는 32살 김민준을 JSON으로 소개하세요."


def hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


# -- the bound and the grammar (no model) -----------------------------------------------------


def _worst_case(schema: dict[str, Any]) -> int:
    """The bound's own worst-case cost of an already-bounded schema."""
    return structured._bound(structured._inline(schema), 0, 1)[1]


def test_free_strings_and_lists_get_bounds_that_fit_the_budget() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 5},
            "story": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title", "story", "tags"],
    }
    bounded = structured.bounded_schema(schema, 200)
    props = bounded["properties"]
    assert props["title"]["maxLength"] == 5  # a given bound is kept
    assert props["story"]["maxLength"] >= 1 and props["tags"]["maxItems"] >= 1
    assert props["tags"]["items"]["maxLength"] == props["story"]["maxLength"]
    assert _worst_case(bounded) <= 199  # one token kept for the end of the answer
    # More tokens, longer strings.
    roomy = structured.bounded_schema(schema, 800)["properties"]["story"]["maxLength"]
    assert roomy > props["story"]["maxLength"]
    assert "maxLength" not in schema["properties"]["story"]  # the caller's schema untouched


def test_refs_are_followed_and_nested_models_bounded() -> None:
    class Address(BaseModel):
        city: str

    class Resident(BaseModel):
        name: str
        home: Address
        nickname: str | None = None

    bounded = structured.bounded_schema(Resident.model_json_schema(), 300)
    assert bounded["properties"]["home"]["properties"]["city"]["maxLength"] >= 1
    assert "$defs" not in bounded
    assert _worst_case(bounded) <= 299


def test_a_schema_that_cannot_fit_is_refused_with_the_way_out() -> None:
    with pytest.raises(StructuredOutputError) as caught:
        structured.bounded_schema(Person.model_json_schema(), 40)
    assert "max_tokens is 40" in caught.value.message
    assert "--max-tokens" in (caught.value.hint or "")
    assert isinstance(caught.value, UsageError)  # exit code 2, like any bad setting


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "additionalProperties": {"type": "string"}}, "additionalProperties"),
        ({"type": "object"}, "free-form"),
        ({"type": "string", "pattern": "^a+$"}, "pattern"),
        (
            {
                "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
                "$ref": "#/$defs/N",
            },
            "recursive",
        ),
    ],
)
def test_unboundable_parts_are_named(schema: dict[str, Any], named: str) -> None:
    with pytest.raises(StructuredOutputError, match=named):
        structured.grammar_text(schema, 512)


def test_grammars_are_cached_per_schema_and_budget() -> None:
    structured.schema_grammar.cache_clear()
    first = structured.grammar_text(PERSON_SCHEMA, 256)
    again = structured.grammar_text(json.loads(json.dumps(PERSON_SCHEMA)), 256)
    assert again is first
    info = structured.schema_grammar.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    structured.grammar_text(PERSON_SCHEMA, 512)
    assert structured.schema_grammar.cache_info().misses == 2


def test_the_grammar_allows_only_plain_json_strings() -> None:
    grammar = structured.grammar_text(PERSON_SCHEMA, 256)
    chars = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert chars == [structured.CHAR_RULE]  # no \\u escapes, no control characters
    assert "root ::=" in grammar


def test_json_mode_grammar_shrinks_with_the_budget_and_refuses_too_little() -> None:
    big, small = structured.json_mode_grammar(2048), structured.json_mode_grammar(100)
    assert "{0,7}" in big and "{0,1}" in small
    with pytest.raises(StructuredOutputError, match="max_tokens is 20"):
        structured.json_mode_grammar(20)


def test_schemas_of_every_kind() -> None:
    assert structured.json_schema_of(Person)["required"] == ["name", "age", "city"]
    typed = structured.json_schema_of(PersonDict)
    assert set(typed["properties"]) == {"name", "age"} and set(typed["required"]) == {
        "name",
        "age",
    }
    assert structured.json_schema_of(PERSON_SCHEMA) == PERSON_SCHEMA
    tool = {"type": "function", "function": {"name": "p", "parameters": PERSON_SCHEMA}}
    assert structured.json_schema_of(tool) == PERSON_SCHEMA


def test_unknown_methods_and_arguments_are_usage_errors(gguf_path: Path) -> None:
    model = EmbeddedChatModel(model_path=gguf_path)
    with pytest.raises(UsageError, match="unknown structured-output method"):
        model.with_structured_output(Person, method="tools")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="needs a schema"):
        model.with_structured_output(None)
    with pytest.raises(UsageError, match="unknown arguments"):
        model.with_structured_output(Person, tools=[])
    model.with_structured_output(Person, strict=True)  # accepted: a grammar is strict


def _refused(status: int, message: str) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx.Response(status, request=request)
    body = {"error": {"message": message}}
    kinds = {400: openai.BadRequestError, 422: openai.UnprocessableEntityError}
    return kinds.get(status, openai.InternalServerError)(message, response=response, body=body)


@pytest.mark.parametrize("status", [400, 422, 500])
def test_a_server_refusing_response_format_gets_a_clear_error(status: int) -> None:
    message = "Input should be 'text' or 'json_object' (body.response_format.type)"
    with (
        pytest.raises(StructuredOutputUnsupportedError) as caught,
        translate_errors("http://srv:8000/v1", "m", "OPENAI_API_KEY", 5),
    ):
        raise _refused(status, message)
    assert "http://srv:8000/v1" in caught.value.message
    assert 'method="json_mode"' in (caught.value.hint or "") and "vLLM" in (caught.value.hint or "")


def test_other_refusals_stay_what_they_were() -> None:
    with (
        pytest.raises(Exception) as caught,
        translate_errors("http://srv:8000/v1", "m", "OPENAI_API_KEY", 5),
    ):
        raise _refused(400, "temperature must be positive")
    assert not isinstance(caught.value, StructuredOutputUnsupportedError)


# -- the embedded model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(gguf_path: Path) -> EmbeddedChatModel:
    return EmbeddedChatModel(model_path=gguf_path, max_tokens=120)


@pytest.mark.slow
def test_pydantic_schema(model: EmbeddedChatModel) -> None:
    person = model.with_structured_output(Person).invoke(ASK)
    assert isinstance(person, Person)
    assert person.age == 32
    # No tool calling here: "function_calling" holds the answer to the same grammar.
    assert model.with_structured_output(Person, method="function_calling").invoke(ASK) == person


@pytest.mark.slow
def test_korean_values(model: EmbeddedChatModel) -> None:
    result = model.with_structured_output(Person, include_raw=True).invoke(ASK_KO)
    person = result["parsed"]
    assert isinstance(person, Person) and result["parsing_error"] is None
    assert hangul(person.name + person.city)
    assert json.loads(result["raw"].content) == person.model_dump()


@pytest.mark.slow
def test_typeddict_and_dict_schemas(model: EmbeddedChatModel) -> None:
    typed = model.with_structured_output(PersonDict).invoke(ASK)
    assert set(typed) == {"name", "age"} and isinstance(typed["age"], int)
    plain = model.with_structured_output(PERSON_SCHEMA).invoke(ASK)
    assert set(plain) == {"name", "age"} and isinstance(plain["name"], str)


@pytest.mark.slow
def test_stream_yields_growing_objects_that_end_as_invoke_does(model: EmbeddedChatModel) -> None:
    chain = model.with_structured_output(PERSON_SCHEMA)
    chunks = list(chain.stream(ASK))
    assert len(chunks) > 1 and all(isinstance(c, dict) for c in chunks)
    assert chunks[-1] == chain.invoke(ASK)


@pytest.mark.slow
def test_include_raw(model: EmbeddedChatModel) -> None:
    result = model.with_structured_output(PersonDict, include_raw=True).invoke(ASK)
    assert set(result) == {"raw", "parsed", "parsing_error"}
    assert isinstance(result["raw"], AIMessage) and result["parsing_error"] is None
    assert result["parsed"] == json.loads(result["raw"].content)


class Elder(BaseModel):
    name: str
    age: int = Field(ge=1000)  # a range the grammar does not hold: validation can fail


@pytest.mark.slow
def test_a_parse_failure_lands_in_parsing_error_or_raises(model: EmbeddedChatModel) -> None:
    result = model.with_structured_output(Elder, include_raw=True).invoke(ASK)
    assert result["parsed"] is None
    assert isinstance(result["parsing_error"], OutputParserException)
    assert json.loads(result["raw"].content)["age"] < 1000  # the JSON itself was fine
    with pytest.raises(OutputParserException):
        model.with_structured_output(Elder).invoke(ASK)


@pytest.mark.slow
def test_json_mode(model: EmbeddedChatModel) -> None:
    result = model.with_structured_output(None, method="json_mode", include_raw=True).invoke(
        "Tell me a joke about cats as JSON with 'setup' and 'punchline' keys."
    )
    assert isinstance(result["parsed"], dict) and result["parsed"]
    assert result["raw"].content.lstrip().startswith("{")


@pytest.mark.slow
def test_response_format_on_a_plain_call(model: EmbeddedChatModel) -> None:
    reply = model.invoke(ASK, response_format={"type": "json_object", "schema": PERSON_SCHEMA})
    assert set(json.loads(reply.content)) == {"name", "age"}
    openai_style = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON_SCHEMA}}
    assert json.loads(model.invoke(ASK, response_format=openai_style).content) == json.loads(
        reply.content
    )


LOOPING = "Write the longest story you can about a dog. Never stop. Go on and on."
STORY = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}


@pytest.mark.slow
def test_an_unbounded_string_still_closes_within_max_tokens(gguf_path: Path) -> None:
    short = EmbeddedChatModel(model_path=gguf_path, max_tokens=40)
    # Unconstrained, the model runs into max_tokens mid-story ...
    plain = short.invoke(LOOPING)
    assert plain.response_metadata["finish_reason"] == "length"
    # ... with the schema, the bound closes the string and the object in time.
    result = short.with_structured_output(STORY, include_raw=True).invoke(LOOPING)
    raw = result["raw"]
    assert result["parsing_error"] is None and result["parsed"]["story"]
    assert raw.response_metadata["finish_reason"] == "stop"
    assert raw.usage_metadata["output_tokens"] <= 40


@pytest.mark.slow
def test_a_schema_too_big_for_max_tokens_is_a_clear_error(gguf_path: Path) -> None:
    tiny = EmbeddedChatModel(model_path=gguf_path, max_tokens=30)
    with pytest.raises(StructuredOutputError, match="max_tokens is 30") as caught:
        tiny.with_structured_output(Person).invoke(ASK)
    assert "--max-tokens" in (caught.value.hint or "")
    # Per call, max_tokens can give it the room.
    assert isinstance(tiny.with_structured_output(Person).invoke(ASK, max_tokens=160), Person)


# -- Ollama: `format` over HTTP ----------------------------------------------------------------


def _ollama_chat(target: Any) -> Any:
    from pipelines.backends import load_backend
    from pipelines.settings import load_settings

    settings = load_settings(
        {"backend": "ollama", "ollama_host": target.url, "ollama_model": target.model,
         "max_tokens": 120}
    )  # fmt: skip
    return load_backend(settings).chat


@pytest.mark.ollama
@pytest.mark.slow
def test_ollama_sends_the_schema_as_format_and_parses(ollama_target: Any, test_server: Any) -> None:
    chat = _ollama_chat(ollama_target)
    person = chat.with_structured_output(Person).invoke(ASK)
    assert isinstance(person, Person)
    assert test_server.formats == [Person.model_json_schema()]
    streamed = list(chat.with_structured_output(PersonDict).stream(ASK))
    assert streamed and set(streamed[-1]) == {"name", "age"}
    assert test_server.formats[-1]["required"] == ["name", "age"]


@pytest.mark.ollama
@pytest.mark.slow
def test_ollama_json_mode_sends_format_json(ollama_target: Any, test_server: Any) -> None:
    chat = _ollama_chat(ollama_target)
    result = chat.with_structured_output(None, method="json_mode", include_raw=True).invoke(
        "Describe Kim, 32, of Seoul, as JSON with name and age keys."
    )
    assert isinstance(result["parsed"], dict) and result["parsing_error"] is None
    assert test_server.formats == ["json"]


@pytest.mark.ollama
@pytest.mark.slow
def test_ollama_server_without_format_answers_free_text(
    ollama_target: Any, test_server: Any
) -> None:
    """The test server constrains only when asked: the same prompt, unconstrained, is not
    the schema's JSON (so the tests above would fail if `format` were not sent)."""
    chat = _ollama_chat(ollama_target)
    reply = chat.invoke(ASK)
    assert test_server.formats == []
    with pytest.raises(ValueError):
        Person.model_validate_json(str(reply.content))


# -- OpenAI-compatible: `response_format` to llama-cpp-python's server -------------------------


def _openai_chat(target: Any) -> Any:
    from pipelines.backends import load_backend
    from pipelines.settings import load_settings

    settings = load_settings(
        {"backend": "openai", "openai_base_url": target.url, "openai_model": target.model,
         "max_tokens": 80}
    )  # fmt: skip
    return load_backend(settings).chat


@pytest.mark.openai
@pytest.mark.slow
def test_openai_json_mode(openai_target: Any) -> None:
    chat = _openai_chat(openai_target)
    result = chat.with_structured_output(Person, method="json_mode", include_raw=True).invoke(
        "Kim is 32 and lives in Seoul. Answer as JSON with name, age and city."
    )
    assert result["parsing_error"] is None and isinstance(result["parsed"], Person)


@pytest.mark.openai
@pytest.mark.slow
def test_openai_json_schema_is_sent_or_refused_clearly(openai_target: Any) -> None:
    chat = _openai_chat(openai_target)
    chain = chat.with_structured_output(Person)
    if not openai_target.ours:  # a server with guided decoding (vLLM) answers it
        assert isinstance(chain.invoke(ASK), Person)
        return
    # llama-cpp-python's server takes only {"type": "json_object", "schema": ...}; the
    # json_schema form is what was sent (not BaseChatOpenAI's default, tool calling).
    with pytest.raises(StructuredOutputUnsupportedError) as caught:
        chain.invoke(ASK)
    assert openai_target.url in caught.value.message
    assert 'method="json_mode"' in (caught.value.hint or "")
    # What the hint offers for this server does work, schema and all (bounded by hand: the
    # server does not bound lengths, and an unbounded string runs into max_tokens).
    short = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = chat.invoke(ASK, response_format={"type": "json_object", "schema": short})
    assert set(json.loads(str(reply.content))) == {"name", "age"}


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Structured output") :]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    done = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "OLLAMA_HOST": "", "PYTHONPATH": str(root)}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "age=32" in lines[0] and lines[1].endswith(" None"), lines
