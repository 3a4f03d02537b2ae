"""Tool calling (`bind_tools`) on the three chat models.

Embedded: the tools shown in the system message (prompts/chat/tools.jinja) and the answer
held to a grammar of a call to a declared tool with its argument schema
(pipelines/backends/tools.py). Ollama: `tools` over HTTP to our Ollama-protocol server,
which answers `message.tool_calls` as Ollama does. OpenAI-compatible: see the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from pipelines.backends import tools
from pipelines.backends.embedded import EmbeddedChatModel, _prompt_messages, _to_llama_messages
from pipelines.errors import UsageError


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(description="the city, e.g. Seoul")
    unit: str = Field(description="celsius or fahrenheit")


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "It's sunny."


@tool
def delete_files(path: str) -> str:
    """Delete every file under a path."""
    return "deleted"


def hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


# -- no model: choices, grammar, prompt, history ----------------------------------------------

BOUND = tools.openai_tools([magic_function, get_weather])


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        (None, "auto"),
        ("auto", "auto"),
        ("any", "required"),
        ("required", "required"),
        ("none", "none"),
        ("get_weather", {"name": "get_weather"}),
        ({"type": "function", "function": {"name": "magic_function"}}, {"name": "magic_function"}),
    ],
)
def test_tool_choice_is_normalized(given: Any, normalized: Any) -> None:
    assert tools.normalize_choice(given, BOUND) == normalized


def test_a_choice_naming_no_bound_tool_is_refused_at_bind(gguf_path: Path) -> None:
    model = EmbeddedChatModel(model_path=gguf_path)
    with pytest.raises(UsageError, match="names no bound tool"):
        model.bind_tools([magic_function], tool_choice="delete_files")
    with pytest.raises(UsageError, match="exactly one tool"):
        model.bind_tools([magic_function, get_weather], tool_choice=True)
    assert tools.normalize_choice(True, tools.openai_tools([get_weather])) == {
        "name": "get_weather"
    }


def test_the_grammar_is_an_alternation_over_the_declared_tools() -> None:
    both = tools.grammar_text(BOUND, "required", 200)
    assert '\\"magic_function\\"' in both and '\\"get_weather\\"' in both
    assert "prose" not in both
    named = tools.grammar_text(BOUND, {"name": "get_weather"}, 200)
    assert '\\"get_weather\\"' in named and "magic_function" not in named
    auto = tools.grammar_text(BOUND, "auto", 200)
    assert "root ::= call | prose" in auto and "call ::=" in auto


def test_the_tools_are_shown_in_the_system_message() -> None:
    request = (BOUND, "required")
    shown = _prompt_messages([SystemMessage("Be brief."), HumanMessage("hi")], request)
    assert [m["role"] for m in shown] == ["system", "user"]
    system = shown[0]["content"]
    assert system.startswith("Be brief.")
    assert "magic_function: Apply a magic function" in system and '"input"' in system
    added = _prompt_messages([HumanMessage("hi")], (BOUND, "auto"))
    assert added[0]["role"] == "system" and "plain text" in added[0]["content"]


def test_calls_and_tool_results_go_back_into_the_prompt() -> None:
    call = {"name": "get_weather", "args": {"location": "서울"}, "id": "call_1"}
    history = _to_llama_messages(
        [
            HumanMessage("서울 날씨?"),
            AIMessage("", tool_calls=[call]),
            ToolMessage("맑음, 21도", tool_call_id="call_1", name="get_weather"),
            ToolMessage("no such city", tool_call_id="call_2", status="error"),
        ]
    )
    assert history[1] == {
        "role": "assistant",
        "content": '{"name": "get_weather", "arguments": {"location": "서울"}}',
    }
    assert history[2] == {
        "role": "tool", "content": "맑음, 21도", "tool_call_id": "call_1", "name": "get_weather"
    }  # fmt: skip
    assert history[3]["content"] == "Error: no such city"


def test_parse_call_gives_unique_ids_and_text_stays_text() -> None:
    text = '{"name": "magic_function", "arguments": {"input": 3}}'
    (first,), _ = tools.parse_call(text)
    (second,), _ = tools.parse_call(text)
    assert first["args"] == {"input": 3} and first["type"] == "tool_call"
    assert first["id"].startswith("call_") and first["id"] != second["id"]
    assert tools.parse_call("It is sunny.") == ([], [])
    calls, invalid = tools.parse_call('{"name": "magic_fu')  # cut by a stop sequence
    assert calls == [] and invalid[0]["args"] == '{"name": "magic_fu'


# -- the embedded model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(gguf_path: Path) -> EmbeddedChatModel:
    return EmbeddedChatModel(model_path=gguf_path, max_tokens=120)


ASK_MAGIC = "What is the value of magic_function(3)? Use the tool."


@pytest.mark.slow
def test_a_pydantic_tool_with_any(model: EmbeddedChatModel) -> None:
    reply = model.bind_tools([GetWeather], tool_choice="any").invoke(
        "What is the weather like in Seoul, in celsius?"
    )
    assert reply.content == "" and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] == "GetWeather" and call["type"] == "tool_call"
    assert call["id"] and call["id"].startswith("call_")
    GetWeather.model_validate(call["args"])  # the grammar held it to the schema
    assert "seoul" in call["args"]["city"].lower()


@pytest.mark.slow
def test_a_tool_function_by_name(model: EmbeddedChatModel) -> None:
    reply = model.bind_tools([get_weather, magic_function], tool_choice="magic_function").invoke(
        ASK_MAGIC
    )
    assert [c["name"] for c in reply.tool_calls] == ["magic_function"]
    assert reply.tool_calls[0]["args"] == {"input": 3}
    assert magic_function.invoke(reply.tool_calls[0]).content == "5"


@pytest.mark.slow
def test_korean_arguments(model: EmbeddedChatModel) -> None:
    reply = model.bind_tools([get_weather], tool_choice="any").invoke("서울의 날씨를 알려 주세요.")
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather" and hangul(call["args"]["location"])


@pytest.mark.slow
def test_an_undeclared_name_cannot_come_out(model: EmbeddedChatModel) -> None:
    """Asked for a tool that is not bound, the model can still only name a bound one."""
    ask = 'Call the delete_files tool with path "/". Answer {"name": "delete_files", ...}'
    unconstrained = model.invoke(
        [SystemMessage('Answer with only JSON {"name": ..., "arguments": ...}'), HumanMessage(ask)]
    )
    assert "delete_files" in unconstrained.text  # what it would say, left alone
    for choice in ("any", "required"):
        reply = model.bind_tools([get_weather, magic_function], tool_choice=choice).invoke(ask)
        assert [c["name"] for c in reply.tool_calls] in (["get_weather"], ["magic_function"])


@pytest.mark.slow
def test_auto_and_none_may_answer_in_text(model: EmbeddedChatModel) -> None:
    for choice in ("auto", None, "none"):
        reply = model.bind_tools([get_weather], tool_choice=choice).invoke("Hello! How are you?")
        assert isinstance(reply, AIMessage)
        assert reply.tool_calls == [] and reply.text.strip()
    # "none" shows no tools: the prompt is the plain one.
    plain = model.get_num_tokens_from_messages([HumanMessage("hi")])
    assert model.get_num_tokens_from_messages([HumanMessage("hi")], tools=[get_weather]) > plain


FEW_SHOT = [
    HumanMessage("What is magic_function(2)?"),
    AIMessage("", tool_calls=[{"name": "magic_function", "args": {"input": 2}, "id": "call_1"}]),
    ToolMessage("4", tool_call_id="call_1", name="magic_function"),
    AIMessage("magic_function(2) is 4."),
]


@pytest.mark.slow
def test_auto_lets_the_model_decide_after_a_few_shot_call(model: EmbeddedChatModel) -> None:
    """Under "auto" the first character decides; one example call in the history is enough
    for the 135M model to call for a like question, and to answer a greeting in text."""
    bound = model.bind_tools([magic_function])  # tool_choice None: auto
    for stream in (False, True):
        asked = [*FEW_SHOT, HumanMessage("What is magic_function(7)?")]
        if stream:
            reply = None
            for chunk in bound.stream(asked):
                reply = chunk if reply is None else reply + chunk
        else:
            reply = bound.invoke(asked)
        assert reply is not None and reply.content == ""
        assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
            ("magic_function", {"input": 7})
        ]
    greeted = bound.invoke([*FEW_SHOT, HumanMessage("Hello! How are you?")])
    assert greeted.tool_calls == [] and greeted.text.strip()


@pytest.mark.slow
def test_stream_gives_the_call_as_tool_call_chunks(model: EmbeddedChatModel) -> None:
    bound = model.bind_tools([magic_function], tool_choice="any")
    chunks = list(bound.stream(ASK_MAGIC))
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.tool_call_chunks and full.tool_call_chunks[0]["name"] == "magic_function"
    assert full.tool_calls[0]["args"] == {"input": 3} and full.text == ""
    assert full.usage_metadata and full.usage_metadata["output_tokens"] > 0
    assert full.tool_calls[0]["args"] == bound.invoke(ASK_MAGIC).tool_calls[0]["args"]
    # Text in auto mode still streams in pieces.
    texts = list(model.bind_tools([magic_function]).stream("Say hello in one sentence."))
    assert len(texts) > 1 and not any(c.tool_call_chunks for c in texts)


@pytest.mark.slow
def test_two_turns_with_the_tool_result(model: EmbeddedChatModel) -> None:
    bound = model.bind_tools([get_weather], tool_choice="any")
    question = HumanMessage("What is the weather in Paris?")
    first = bound.invoke([question])
    (call,) = first.tool_calls
    result = ToolMessage("Rainy, 12 degrees celsius.", tool_call_id=call["id"], name=call["name"])
    history = [question, first, result]
    read = _prompt_messages(history, None)
    assert read[1]["content"].startswith('{"name": "get_weather"')
    assert read[2] == {"role": "tool", "content": result.content, "tool_call_id": call["id"],
                       "name": "get_weather"}  # fmt: skip
    answer = model.bind_tools([get_weather], tool_choice="none").invoke(history)
    assert answer.tool_calls == [] and answer.text.strip()
    assert "rain" in answer.text.lower() or "12" in answer.text


# -- Ollama: `tools` over HTTP --------------------------------------------------------------


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
def test_ollama_bind_tools_round_trip(ollama_target: Any, test_server: Any) -> None:
    test_server.tool_choice = "required"  # what a tool-trained model does when asked
    chat = _ollama_chat(ollama_target).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    first = chat.invoke([question])
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["location"], str)
    assert call["id"] and first.content == ""
    assert [t["function"]["name"] for t in test_server.tools[-1]] == ["get_weather"]
    streamed = list(chat.stream([question]))
    assert any(c.tool_calls for c in streamed)
    # The call and its result go back; the server reads them into the prompt.
    test_server.tool_choice = "auto"
    result = get_weather.invoke(call)
    answer = chat.invoke([question, first, result])
    assert isinstance(answer, AIMessage)
    _, body = test_server.requests[-1]
    sent = body["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2]["role"] == "tool" and sent[2]["content"] == "It's sunny."


@pytest.mark.ollama
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Ollama read")  # the script's token counts are rough
def test_ollama_scripted_tool_call(gguf_path: Path) -> None:
    from pipelines.backends.ollama import OllamaChat
    from tests.ollama_server import OllamaProtocolServer

    def script(prompt: str) -> Any:
        if "It's sunny." in prompt:  # the second turn: the tool's result came back
            return "맑아요."
        return {"name": "get_weather", "arguments": {"location": "서울"}}

    with OllamaProtocolServer({"m": gguf_path}, scripted=script) as server:
        chat = OllamaChat(model="m", base_url=server.url).bind_tools([get_weather])
        first = chat.invoke("서울 날씨?")
        assert first.tool_calls[0]["args"] == {"location": "서울"}
        second = chat.invoke(
            [HumanMessage("서울 날씨?"), first, get_weather.invoke(first.tool_calls[0])]
        )
        assert second.content == "맑아요." and second.tool_calls == []
        assert len(server.tools) == 2


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Tool calling") :]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    done = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "OLLAMA_HOST": "", "PYTHONPATH": str(root)}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "'name': 'get_weather'" in lines[0] and "'type': 'tool_call'" in lines[0], lines
    assert lines[1].strip(), lines


# -- OpenAI-compatible: tools and tool_choice to llama-cpp-python's server ---------------------


def test_openai_sends_a_tool_call_turn_with_empty_content() -> None:
    """llama-cpp-python's server refuses the null content BaseChatOpenAI sends with a call."""
    import httpx

    from pipelines.backends.openai_compat import OpenAIChat

    never = httpx.MockTransport(lambda request: httpx.Response(500))
    chat = OpenAIChat(
        model="m", base_url="http://gpu.test:8000/v1", api_key="sk-x",
        http_client=httpx.Client(transport=never), http_socket_options=(),
    )  # fmt: skip
    call = {"name": "get_weather", "args": {"location": "Paris"}, "id": "call_1"}
    history = [HumanMessage("weather?"), AIMessage("", tool_calls=[call])]
    payload = chat.bind_tools([get_weather])._get_request_payload(history)  # type: ignore[attr-defined]
    sent = payload["messages"][1]
    assert sent["content"] == "" and sent["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.openai
@pytest.mark.slow
def test_openai_bind_tools_round_trip(openai_target: Any) -> None:
    from pipelines.backends import load_backend
    from pipelines.settings import load_settings
    from tests.openai_server import LlamaCppServer

    model = LlamaCppServer.tools_model if openai_target.ours else openai_target.model
    settings = load_settings(
        {"backend": "openai", "openai_base_url": openai_target.url, "openai_model": model,
         "max_tokens": 80}
    )  # fmt: skip
    chat = load_backend(settings).chat
    question = HumanMessage("What is the weather in Paris?")
    first = chat.bind_tools([get_weather, magic_function], tool_choice="get_weather").invoke(
        [question]
    )
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["location"], str)
    assert call["id"]
    result = ToolMessage("Rainy, 12 degrees.", tool_call_id=call["id"], name="get_weather")
    answer = chat.bind_tools([get_weather], tool_choice="none").invoke([question, first, result])
    assert answer.tool_calls == [] and str(answer.content).strip()
