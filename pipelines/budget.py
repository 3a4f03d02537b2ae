"""What fits in a model's context window: the one place that counts prompt tokens.

    budget = budget_for(model)
    budget.count(prompt)                     # tokens, by the model's own tokenizer if it has one
    budget.fits(prompt)                      # leaves room for the answer (max_tokens)?
    budget.require(prompt, "the chat input") # or ContextOverflowError, naming --num-ctx

Counting, best source first:
- llamapipe's models know their tokenizer and window (`context_window()` beside LangChain's
  `get_num_tokens_from_messages`): the embedded backend counts exactly with llama.cpp over
  the chat template; Ollama estimates per script with rates calibrated for the model against
  the server's own `prompt_eval_count` (backends/served_tokens.py);
- any other model: the same estimate with conservative rates, and the window it declares
  (`num_ctx` or `n_ctx`), or none (then everything fits: pass `window=` to be safe).

An estimate carries a safety margin, so what the budget packs fits the real window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseLLM
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.prompt_values import PromptValue

from pipelines.errors import ContextOverflowError

ESTIMATE_MARGIN = 1.10  # an estimated count is inflated this much before comparing
DEFAULT_RESERVE = 512  # tokens kept for the answer when the model does not say

_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


def script_counts(text: str) -> tuple[int, int, int, int]:
    """(ASCII, Hangul, CJK ideographs and kana, other) characters in `text`."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    hangul = len(_HANGUL.findall(text))
    cjk = len(_CJK.findall(text))
    return ascii_chars, hangul, cjk, len(text) - ascii_chars - hangul - cjk


@dataclass(frozen=True)
class TokenRates:
    """Tokens per character by script, and what wrapping a message or prompt costs."""

    ascii: float
    hangul: float
    cjk: float
    other: float
    per_message: float  # role markers around each chat message
    per_prompt: float  # BOS, the generation prompt

    def text(self, text: str) -> float:
        a, h, c, o = script_counts(text)
        return a * self.ascii + h * self.hangul + c * self.cjk + o * self.other

    def messages(self, messages: Sequence[BaseMessage]) -> float:
        return self.per_prompt + sum(self.per_message + self.text(m.text) for m in messages)


# Upper-end rates seen across small and large Llama-family tokenizers (SmolLM2's spends
# ~3 tokens per Hangul syllable, Llama 3's about 1): an unknown model's prompt fits.
CONSERVATIVE = TokenRates(ascii=0.4, hangul=3.0, cjk=2.0, other=1.5, per_message=8, per_prompt=8)


def as_messages(prompt: PromptValue | str | Sequence[BaseMessage]) -> list[BaseMessage]:
    if isinstance(prompt, PromptValue):
        return prompt.to_messages()
    if isinstance(prompt, str):
        return [HumanMessage(content=prompt)]
    return list(prompt)


def as_text(prompt: PromptValue | str | Sequence[BaseMessage]) -> str:
    if isinstance(prompt, PromptValue):
        return prompt.to_string()
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m.text for m in prompt)


@dataclass(frozen=True)
class Budget:
    """A model's context window and how much of it a prompt may take.

    `window` is what the model reads (prompt plus answer); `reserve` is kept for the answer
    (the model's max_tokens, at most half the window). `window=None`: unknown, no limit.
    """

    window: int | None
    reserve: int
    counter: Callable[[PromptValue | str | Sequence[BaseMessage]], int]
    exact: bool

    @property
    def limit(self) -> int | None:
        """The most tokens a prompt may take."""
        return None if self.window is None else self.window - self.reserve

    def count(self, prompt: PromptValue | str | Sequence[BaseMessage]) -> int:
        """The prompt's tokens; an estimate includes its safety margin."""
        n = self.counter(prompt)
        return n if self.exact else int(n * ESTIMATE_MARGIN + 0.999)

    def room(self, prompt: PromptValue | str | Sequence[BaseMessage]) -> int | None:
        """Tokens still free for the prompt to grow by (negative: over); None: no limit."""
        return None if self.limit is None else self.limit - self.count(prompt)

    def fits(self, prompt: PromptValue | str | Sequence[BaseMessage]) -> bool:
        room = self.room(prompt)
        return room is None or room >= 0

    def require(
        self,
        prompt: PromptValue | str | Sequence[BaseMessage],
        what: str,
        hint: str | None = None,
    ) -> int:
        """The prompt's count, or ContextOverflowError when it leaves no room for the answer."""
        tokens = self.count(prompt)
        if self.limit is not None and tokens > self.limit:
            assert self.window is not None
            raise ContextOverflowError.counted(what, tokens, self.limit, self.window, hint=hint)
        return tokens


def budget_for(model: Any, *, window: int | None = None, reserve: int | None = None) -> Budget:
    """The budget of `model`: its tokenizer and window when it knows them (llamapipe's
    models do), else conservative estimates and whatever window it declares."""
    completion = isinstance(model, BaseLLM)
    knows = callable(getattr(model, "context_window", None))
    if knows:
        window = window or model.context_window()
        exact = bool(getattr(model, "exact_token_counts", False))
        if completion:
            counter: Callable[[Any], int] = lambda p: model.get_num_tokens(as_text(p))  # noqa: E731
        else:
            counter = lambda p: model.get_num_tokens_from_messages(as_messages(p))  # noqa: E731
    else:
        window = window or getattr(model, "num_ctx", None) or getattr(model, "n_ctx", None)
        exact = False
        if completion:
            counter = lambda p: int(CONSERVATIVE.per_prompt + CONSERVATIVE.text(as_text(p)))  # noqa: E731
        else:
            counter = lambda p: int(CONSERVATIVE.messages(as_messages(p)))  # noqa: E731
    if reserve is None:
        reserve = getattr(model, "max_tokens", None) or getattr(model, "num_predict", None) or 0
        reserve = reserve if reserve > 0 else DEFAULT_RESERVE
    if window is not None:
        reserve = min(reserve, window // 2)
    return Budget(window=window, reserve=reserve, counter=counter, exact=exact)
