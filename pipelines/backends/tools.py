"""Tool calling for the embedded chat model: the tools shown in the prompt, the call held to
a grammar.

`bind_tools` turns each tool into an OpenAI tool (`convert_to_openai_tool`); the prompt
(prompts/chat/tools.jinja) lists them in the system message. The answer is then decoded
under a grammar built from one JSON schema: an `anyOf` over the declared tools, each
{"name": <that tool's name>, "arguments": <its argument schema>}, bounded by structured.py
so the JSON always closes within `max_tokens`. So a call can only name a declared tool,
and its arguments always parse as that tool's schema (types, required keys, enums; not
ranges or patterns, which the grammar does not hold).

tool_choice:
- "any" / "required" / True: the answer must be a call (to any declared tool);
- a tool name (or {"type": "function", "function": {"name": ...}}): a call to that tool;
- None / "auto": a call or plain text, the model's first character decides: "{" starts a
  call (then held to the call grammar), anything else but white space starts text, which
  may then not be a call. A 135M model follows the prompt here only sometimes;
- "none": no tools shown, no grammar: plain text.

One call per answer (no parallel calls): the grammar holds one object.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall

from pipelines.backends import structured
from pipelines.errors import UsageError

MODES = ("auto", "required", "none")
# Text in "auto" mode: any first character but "{" (a call) and white space, then anything.
PROSE_RULES = "prose ::= [^{ \\t\\r\\n] [^\\x00]*\nroot ::= call | prose\n"


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Each tool (a pydantic class, a @tool, a function, a dict...) as an OpenAI tool."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return [convert_to_openai_tool(t) for t in tools]


def tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def normalize_choice(tool_choice: Any, tools: Sequence[dict[str, Any]]) -> str | dict[str, Any]:
    """ "auto", "required", "none", or {"name": <a declared tool>} for one tool."""
    names = tool_names(tools)
    if tool_choice is None or tool_choice == "auto":
        return "auto"
    if tool_choice in ("any", "required"):
        return "required"
    if tool_choice == "none" or tool_choice is False:
        return "none"
    if tool_choice is True:
        if len(names) != 1:
            raise UsageError(
                "tool_choice=True needs exactly one tool", hint='use "any" or a tool name'
            )
        return {"name": names[0]}
    name = tool_choice
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if isinstance(name, str) and name in names:
        return {"name": name}
    raise UsageError(
        f"tool_choice {tool_choice!r} names no bound tool",
        hint=f'use "auto", "any", "none" or one of: {", ".join(names)}',
    )


def _call_schema(tools: Sequence[dict[str, Any]], only: str | None) -> dict[str, Any]:
    calls = []
    for tool in tools:
        function = tool["function"]
        if only is not None and function["name"] != only:
            continue
        arguments = function.get("parameters") or {"type": "object", "properties": {}}
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": arguments},
                "required": ["name", "arguments"],
            }
        )
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


@lru_cache(maxsize=64)
def _grammar_text(tools_json: str, choice_json: str, max_tokens: int) -> str:
    tools, choice = json.loads(tools_json), json.loads(choice_json)
    only = choice["name"] if isinstance(choice, dict) else None
    text = structured.grammar_text(_call_schema(tools, only), max_tokens)
    if choice != "auto":
        return text
    # The call grammar's root becomes `call`, and the root a call or prose.
    lines = [
        "call ::=" + line.removeprefix("root ::=") if line.startswith("root ::=") else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n" + PROSE_RULES


def grammar_text(
    tools: Sequence[dict[str, Any]], choice: str | dict[str, Any], max_tokens: int
) -> str:
    """The GBNF that holds an answer to these tools and this (normalized) choice."""
    return _grammar_text(json.dumps(list(tools)), json.dumps(choice), max_tokens)


def system_text(
    tools: Sequence[dict[str, Any]], choice: str | dict[str, Any], system: str | None
) -> str:
    """The system message that shows the model the tools (prompts/chat/tools.jinja)."""
    from prompts import load_prompt

    only = choice["name"] if isinstance(choice, dict) else None
    shown = [
        {
            "name": t["function"]["name"],
            "description": t["function"].get("description", ""),
            "arguments": json.dumps(t["function"].get("parameters") or {}, ensure_ascii=False),
        }
        for t in tools
        if only is None or t["function"]["name"] == only
    ]
    return (
        load_prompt("chat/tools")
        .format(tools=shown, required=choice != "auto", system=system or "")
        .strip()
    )


def with_tools_prompt(
    messages: list[dict[str, Any]],
    tools: Sequence[dict[str, Any]],
    choice: str | dict[str, Any],
) -> list[dict[str, Any]]:
    """The messages with the tools shown in the (first) system message."""
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": system_text(tools, choice, messages[0]["content"])}
        return [first, *messages[1:]]
    return [{"role": "system", "content": system_text(tools, choice, None)}, *messages]


def call_text(name: str, args: dict[str, Any]) -> str:
    """A call as the model writes it (and as history shows it back to the model)."""
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def new_id() -> str:
    return f"call_{uuid.uuid4().hex}"


def is_call(text: str) -> bool:
    return text.lstrip().startswith("{")


def parse_call(text: str) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """The tool call an answer holds ([] and [] for plain text). The grammar makes the
    JSON valid; a stop sequence that cut it leaves an invalid tool call instead."""
    from langchain_core.messages.tool import invalid_tool_call, tool_call

    if not is_call(text):
        return [], []
    try:
        value = json.loads(text)
        name, args = value["name"], value["arguments"]
        if not isinstance(name, str) or not isinstance(args, dict):
            raise TypeError("not a call")
    except (ValueError, KeyError, TypeError) as exc:
        return [], [invalid_tool_call(name=None, args=text, id=new_id(), error=str(exc))]
    return [tool_call(name=name, args=args, id=new_id())], []
