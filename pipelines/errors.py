"""One exception hierarchy for everything llamapipe raises on purpose.

Every error carries a `hint`: the next thing the user should do. The CLI prints
message and hint and exits with `exit_code`; library users can catch
`LlamapipeError` and read the same fields.

Exit codes (documented in the README):

    0  success
    1  the job ran and failed (a program raised, an eval regressed)
    2  bad input: flags, files, settings, specs
    3  this system cannot do it (no sandbox walls, llama-cpp-python missing)
    4  the model backend failed (Ollama unreachable, model not pulled, bad GGUF)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_BACKEND = 4
EXIT_INTERRUPTED = 130


class LlamapipeError(Exception):
    """Base class: a message saying what is wrong and a hint saying what to do."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Interrupted(LlamapipeError):
    """Stopped by the user (Ctrl-C): the message says what was kept, the hint how to go on."""

    exit_code = EXIT_INTERRUPTED


class UsageError(LlamapipeError):
    """The user asked for something malformed: a flag, a path, a setting, a spec."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A settings value or the config file is invalid."""


class ContextOverflowError(UsageError):
    """A prompt does not fit in the model's context window, even after packing."""

    DEFAULT_HINT = (
        "shorten it, or raise the window with --num-ctx (LLAMAPIPE_NUM_CTX) if the model "
        "allows more"
    )

    def __init__(self, message: str, hint: str | None = None, *, tokens: int = 0,
                 window: int = 0) -> None:  # fmt: skip
        super().__init__(message, hint or self.DEFAULT_HINT)
        self.tokens = tokens
        self.window = window

    @classmethod
    def counted(
        cls, what: str, tokens: int, limit: int, window: int, hint: str | None = None
    ) -> ContextOverflowError:
        return cls(
            f"{what} is {tokens} tokens, but {limit} of the model's {window}-token context "
            "window can hold the prompt",
            hint,
            tokens=tokens,
            window=window,
        )


class StructuredOutputError(UsageError):
    """A structured-output schema the model cannot be held to: one whose shortest complete
    answer does not fit in max_tokens, or a part whose length cannot be bounded."""


class UnsupportedSystemError(LlamapipeError):
    """This machine lacks something llamapipe needs for the request."""

    exit_code = EXIT_UNSUPPORTED


class LlamaCppMissingError(UnsupportedSystemError):
    """llama-cpp-python is not installed, so the embedded backend cannot run."""


class BackendError(LlamapipeError):
    """The model backend could not serve the request."""

    exit_code = EXIT_BACKEND


class ServerUnreachableError(BackendError):
    """Nothing answered at a model server's address."""


class ModelMissingError(BackendError):
    """The server answered, but does not serve the requested model."""


class ServerResponseError(BackendError):
    """The server answered with an error status or broke off mid-answer."""


class ServerAuthError(BackendError):
    """The server refused the API key (401/403); the message never contains the key."""


class OllamaUnreachableError(ServerUnreachableError):
    """Nothing answered at the Ollama host."""


class OllamaModelMissingError(ModelMissingError):
    """Ollama answered, but the requested model is not pulled there."""


class OllamaResponseError(ServerResponseError):
    """Ollama answered with an error status or broke off mid-answer."""


class StructuredOutputUnsupportedError(ServerResponseError):
    """The server refused the structured-output request (`response_format`, `format`)."""


class ModelTimeoutError(BackendError):
    """The backend did not answer in time."""


class GGUFError(BackendError):
    """The embedded model file is missing or is not a GGUF model."""


class PromptTruncatedWarning(UserWarning):
    """The server read fewer prompt tokens than were sent: it cut the prompt (Ollama does
    this silently when a prompt is longer than `num_ctx`), so the answer rests on part of it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def first_problem(exc: Exception) -> tuple[str, str, object]:
    """(field path, message, input) of a pydantic ValidationError's first error, so every
    caller can say which value is wrong in one line."""
    first = exc.errors()[0]  # type: ignore[attr-defined]
    message = str(first["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):  # pydantic's wording, not ours
        message = message.removeprefix(prefix)
    return ".".join(str(p) for p in first["loc"]), message, first.get("input")
