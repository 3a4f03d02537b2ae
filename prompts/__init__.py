"""Every prompt llamapipe sends lives in this folder as a Jinja template file.

A template is either
- chat form: it calls `role("system" | "user" | "assistant")` to start each message
  (loops may emit many turns, e.g. few-shot examples), or
- completion form: no `role()` calls; the rendered text is the raw prompt.

An optional leading comment holds YAML metadata:

    {#
    description: What this prompt is for.
    optional: [system]        # variables that may be left out
    #}

`load_prompt("chat/default")` returns a `FilePrompt`, a langchain-core prompt template,
so `load_prompt(...) | model` works for chat and completion models alike.
"""

from __future__ import annotations

import re
import secrets
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from langchain_core.prompts import BasePromptTemplate
from pydantic import ConfigDict

from pipelines.errors import UsageError

SUFFIX = ".jinja"
_MESSAGE_TYPES: dict[str, type[BaseMessage]] = {
    "system": SystemMessage,
    "user": HumanMessage,
    "assistant": AIMessage,
}
# Sandboxed: spec files and user overlays can name their own templates.
_ENV = SandboxedEnvironment(
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_METADATA = re.compile(r"\A\s*\{#(.*?)#\}\s*", re.DOTALL)


class PromptError(UsageError):
    """A prompt file is missing, malformed, or was rendered with bad variables."""


class FilePrompt(BasePromptTemplate):
    """A prompt template loaded from a `.jinja` file."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    source: str
    description: str = ""

    @classmethod
    def from_source(cls, name: str, source: str) -> FilePrompt:
        header: dict[str, Any] = {}
        match = _METADATA.match(source)
        if match:
            loaded = yaml.safe_load(match.group(1))
            header = loaded if isinstance(loaded, dict) else {}
        try:
            ast = _ENV.parse(source)
        except TemplateSyntaxError as exc:
            raise PromptError(f"prompt {name}: line {exc.lineno}: {exc.message}") from None
        variables = sorted(meta.find_undeclared_variables(ast) - {"role"})
        optional = [v for v in header.get("optional", []) if v in variables]
        return cls(
            name=name,
            source=source,
            description=str(header.get("description", "")).strip(),
            input_variables=[v for v in variables if v not in optional],
            optional_variables=optional,
        )

    @property
    def _prompt_type(self) -> str:
        return "llamapipe-file"

    @cached_property
    def form(self) -> Literal["chat", "completion"]:
        calls = _ENV.parse(self.source).find_all(nodes.Call)
        uses_role = any(isinstance(c.node, nodes.Name) and c.node.name == "role" for c in calls)
        return "chat" if uses_role else "completion"

    def _validate_input(self, inner_input: Any) -> dict[str, Any]:
        if not isinstance(inner_input, dict) and len(self.input_variables) == 1:
            inner_input = {self.input_variables[0]: inner_input}
        if not isinstance(inner_input, dict):
            raise PromptError(
                f"prompt {self.name} takes a mapping of {', '.join(self.input_variables)}",
                hint=f"pass a dict, not {type(inner_input).__name__}",
            )
        missing = [v for v in self.input_variables if v not in inner_input]
        if missing:
            raise PromptError(
                f"prompt {self.name} is missing variables: {', '.join(missing)}",
                hint=f"it takes {', '.join(self.input_variables + self.optional_variables)}",
            )
        return inner_input

    def _render(self, variables: dict[str, Any]) -> tuple[str, str]:
        # A fresh nonce per render: text from users or documents can never forge a role marker.
        nonce = secrets.token_hex(8)

        def role(name: str) -> str:
            if name not in _MESSAGE_TYPES:
                raise PromptError(f"prompt {self.name}: unknown role {name!r}")
            return f"\x00{nonce}:{name}\x00"

        try:
            text = _ENV.from_string(self.source).render(**variables, role=role)
        except UndefinedError as exc:
            raise PromptError(f"prompt {self.name}: {exc.message}") from None
        return text, nonce

    def format_prompt(self, **kwargs: Any) -> PromptValue:
        variables = self._merge_partial_and_user_variables(**kwargs)
        text, nonce = self._render(variables)
        if self.form == "completion":
            return StringPromptValue(text=text)
        parts = re.split(f"\x00{nonce}:(system|user|assistant)\x00", text)
        if parts[0].strip():
            raise PromptError(f"prompt {self.name}: text before the first role() call")
        messages = [
            _MESSAGE_TYPES[role](content=content.strip("\n"))
            for role, content in zip(parts[1::2], parts[2::2], strict=True)
        ]
        return ChatPromptValue(messages=messages)

    def format(self, **kwargs: Any) -> str:
        return self.format_prompt(**kwargs).to_string()


def show(value: PromptValue) -> str:
    """A rendered prompt as a person reads it (for `--verbose`)."""
    if isinstance(value, ChatPromptValue):
        return "\n".join(f"--- {_role_name(m)} ---\n{m.text}" for m in value.messages)
    return value.to_string()


def _role_name(message: BaseMessage) -> str:
    return next((r for r, t in _MESSAGE_TYPES.items() if isinstance(message, t)), message.type)


def prompt_root() -> Path:
    return Path(str(resources.files(__name__)))


def load_prompt(name_or_path: str | Path) -> FilePrompt:
    """A bundled prompt by name (`"pal/math"`), or any `.jinja` file by path."""
    path = Path(name_or_path)
    if path.suffix != SUFFIX:
        path = prompt_root() / f"{name_or_path}{SUFFIX}"
        name = str(name_or_path)
    else:
        name = path.stem
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(list_prompts())
        raise PromptError(
            f"no prompt named {name_or_path!r}",
            hint=f"use a bundled one ({known}) or a path to a {SUFFIX} file",
        ) from None
    return FilePrompt.from_source(name, source)


def list_prompts() -> list[str]:
    root = prompt_root()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob(f"*{SUFFIX}"))
