"""Token counts for a served model: per-script rates, calibrated against the server itself.

Neither Ollama nor the OpenAI API has a tokenize endpoint, but every answer says how many
prompt tokens the model read (Ollama's `prompt_eval_count`, OpenAI's `usage.prompt_tokens`).
The first time a model's prompt needs counting, four raw one-token generations of fixed
samples (a full stop, English, Korean, Hanja) measure its tokens per character by script.
The rates are kept in the cache dir under the model's identity (Ollama: its digest), so
later runs (and other processes) pay nothing. Every Ollama answer then checks the estimate:
where Ollama cannot have cut anything (fewer tokens read than half the window), the ratio of
what it read to what was estimated corrects the estimate from then on.

Ollama cuts a prompt longer than its window from the front (keeping about half of it) and
still answers 200 OK (ollama/ollama issues 3839, 8099, 17427); `truncated()` tells. The
window it really has can be smaller than the `num_ctx` asked for (a server short of
memory, `OLLAMA_CONTEXT_LENGTH`), so a prompt sized for `num_ctx` can still be cut.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
from langchain_core.messages import BaseMessage

from pipelines.budget import CONSERVATIVE, TokenRates, script_counts

# Samples whose token counts fix the rates. Their text is ours (the Hanja is the opening of
# Cheoyongga, public domain); what matters is that each is mostly one script.
SAMPLES = {
    "ascii": (
        "The committee met on Tuesday to review the budget for the coming year. Most members "
        "agreed that the library needed new shelves, longer opening hours and a small reading "
        "room for children, while the treasurer asked for a clear plan before any money moves."
    ),
    "hangul": (
        "위원회는 화요일에 모여 내년 예산을 검토했다. 대부분의 위원은 도서관에 새 책장과 더 긴 "
        "개방 시간, 그리고 아이들을 위한 작은 열람실이 필요하다는 데 동의했다."
    ),
    "cjk": "東京明期月良夜入伊遊行如可入良沙寢矣見昆脚烏伊四是良羅二肸隱吾下於叱古",
}
T = TypeVar("T", bound="ServedTokens")
TRUNCATION_SHARE = 0.8  # read fewer than this share of what was sent: cut
CLEAN_SHARE = 0.5  # read fewer tokens than this share of the window: nothing was cut
CHAT_OVERHEAD = (6.0, 8.0)  # per message, per prompt: role markers, generation prompt


@dataclass(frozen=True)
class Calibration:
    rates: TokenRates
    scale: float = 1.0  # what the server read over what was estimated, from real answers
    measured: bool = False  # False: conservative rates (calibration was not possible)

    def estimate_text(self, text: str) -> int:
        return int(self.rates.text(text) * self.scale + 0.5)

    def estimate_messages(self, messages: Sequence[BaseMessage]) -> int:
        return int(self.rates.messages(messages) * self.scale + 0.5)


class ServedTokens:
    """Counting for one model on one server; shared by its chat and completion models.

    A server's protocol fills in two hooks: `_read_identity` (the cache key, and the model's
    own window when the server says) and `_read_count` (prompt tokens of a raw text)."""

    def __init__(
        self,
        host: str,
        model: str,
        cache_file: Path | None,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.model = model
        self.cache_file = cache_file
        self.timeout = timeout
        self._headers = headers or {}  # may hold an API key: sent, never stored
        self._lock = threading.Lock()
        self._calibration: Calibration | None = None
        self._model_max: int | None = None
        self._key: str | None = None

    # -- what the budget asks -------------------------------------------------------------

    def calibration(self) -> Calibration:
        with self._lock:
            if self._calibration is None:
                self._calibration = self._load() or self._measure()
            return self._calibration

    def model_max(self) -> int | None:
        """The model's own context length, when the server says."""
        self.calibration()
        return self._model_max

    def observe(self, estimate: int, evaluated: int | None, window: int) -> None:
        """Correct the estimate with what the server read, when nothing can have been cut."""
        if not evaluated or estimate <= 0 or evaluated >= CLEAN_SHARE * window:
            return
        with self._lock:
            current = self._calibration
            if current is None or not current.measured:
                return
            ratio = min(2.0, max(0.5, evaluated / (estimate / current.scale)))
            scale = 0.7 * current.scale + 0.3 * ratio
            if abs(scale - current.scale) > 0.01:
                self._calibration = replace(current, scale=round(scale, 4))
                self._save(self._calibration)

    def truncated(self, estimate: int, evaluated: int | None, window: int) -> bool:
        """Whether the server read so much less than was sent that it must have cut it.

        With calibrated counts (within a few percent), reading under 80% of the estimate
        is a cut, whatever window the server really had. With conservative counts (which
        can be 2-3x high) only a count that also fills about half the window asked for.
        """
        if not evaluated:
            return False
        calibration = self._calibration
        if calibration is not None and calibration.measured:
            return evaluated < TRUNCATION_SHARE * estimate
        return evaluated >= 0.45 * window and evaluated < 0.5 * estimate

    # -- measuring ------------------------------------------------------------------------

    def _measure(self) -> Calibration:
        try:
            with self._client() as client:
                self._read_identity(client)
                counts = {name: self._read_count(client, text) for name, text in SAMPLES.items()}
                base = self._read_count(client, ".")
        except (httpx.HTTPError, ValueError, KeyError):
            return Calibration(CONSERVATIVE)
        prefix = max(0, base - 1)  # BOS and the like; "." is one token in any vocabulary
        ascii_rate = max(0.05, (counts["ascii"] - prefix) / len(SAMPLES["ascii"]))

        def rate(script: str, index: int) -> float:
            a, *scripts = script_counts(SAMPLES[script])
            own = scripts[index]
            return max(0.1, (counts[script] - prefix - a * ascii_rate) / own)

        hangul, cjk = rate("hangul", 0), rate("cjk", 1)
        per_message, per_prompt = CHAT_OVERHEAD
        calibration = Calibration(
            TokenRates(
                ascii=round(ascii_rate, 4), hangul=round(hangul, 4), cjk=round(cjk, 4),
                other=round(max(hangul, cjk), 4), per_message=per_message,
                per_prompt=per_prompt + prefix,
            ),
            measured=True,
        )  # fmt: skip
        self._save(calibration)
        return calibration

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.host, timeout=self.timeout, headers=self._headers)

    def _read_identity(self, client: httpx.Client) -> None:
        raise NotImplementedError

    def _read_count(self, client: httpx.Client, text: str) -> int:
        raise NotImplementedError

    # -- the cache file ----------------------------------------------------------------------

    def _load(self) -> Calibration | None:
        if self.cache_file is None or not self.cache_file.exists():
            return None
        try:
            with self._client() as client:
                self._read_identity(client)
            entry = json.loads(self.cache_file.read_text(encoding="utf-8")).get(self._key)
            if not entry:
                return None
            return Calibration(TokenRates(**entry["rates"]), entry["scale"], measured=True)
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self, calibration: Calibration) -> None:
        if self.cache_file is None or self._key is None:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            try:
                known = json.loads(self.cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                known = {}
            known[self._key] = {"rates": asdict(calibration.rates), "scale": calibration.scale}
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
            tmp.replace(self.cache_file)
        except OSError:
            pass  # a read-only cache costs a calibration next run, nothing else


class OllamaTokens(ServedTokens):
    """Ollama: `/api/show` for the window, `/api/generate` raw for counts; the cache key
    holds the model's digest, so a re-pulled model is measured again."""

    def _read_identity(self, client: httpx.Client) -> None:
        show = client.post("/api/show", json={"model": self.model}).raise_for_status().json()
        info = show.get("model_info") or {}
        arch = info.get("general.architecture")
        length = info.get(f"{arch}.context_length")
        self._model_max = int(length) if length else None
        tags = client.get("/api/tags").raise_for_status().json().get("models", [])
        digest = next(
            (m.get("digest") for m in tags if self.model in (m.get("name"), m.get("model"))), None
        )
        self._key = f"{self.model}@{digest or self.host}"

    def _read_count(self, client: httpx.Client, text: str) -> int:
        body = {
            "model": self.model,
            "prompt": text,
            "raw": True,
            "stream": False,
            "options": {"num_predict": 1, "temperature": 0},
        }
        answer = client.post("/api/generate", json=body).raise_for_status().json()
        count = answer.get("prompt_eval_count")
        if not isinstance(count, int) or count <= 0:
            raise ValueError("the server gave no prompt_eval_count")
        return count


_shared: dict[tuple[type, str, str, str], ServedTokens] = {}
_shared_lock = threading.Lock()


def tokens_for(
    kind: type[T],
    host: str,
    model: str,
    cache_file: Path | None,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> T:
    """One counter of `kind` per server, model and cache file in this process."""
    key = (kind, host, model, str(cache_file))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = kind(host, model, cache_file, timeout, headers)
        counter = _shared[key]
    assert isinstance(counter, kind)
    return counter


def describe(calibration: Calibration) -> dict[str, Any]:
    return {"measured": calibration.measured, "scale": calibration.scale,
            **asdict(calibration.rates)}  # fmt: skip
