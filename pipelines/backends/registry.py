"""The backends llamapipe knows, in one place: `REGISTRY`.

Settings (their fields and `backend`'s choices), the CLI's `--backend` help, `models`, the
default concurrency, eval specs and the web app all ask the registry; adding a backend is
a module declaring a `Provider` (see providers/) and one `register` line.

`auto` tries the providers that allow it, in registration order (Ollama, then embedded),
and takes the first that can serve; its reason says what it passed over and why.

The built-in providers are declared by name (providers/__init__.py) and each module is
imported the first time its provider is asked for more than its name: `names()` and
`choices()` (what `--help` shows) import none of them, nor pydantic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pipelines.backends.provider import Backend, Choice, Found, Provider
from pipelines.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from pipelines.settings import Settings


class Registry:
    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        # name -> the provider, or what imports it (declared by name, built on first use)
        self._providers: dict[str, Provider | Callable[[], Provider]] = {}
        self.frozen_settings = False  # set once Settings has its fields (pipelines/settings.py)
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider) -> Provider:
        self._check_new(provider.name)
        if self.frozen_settings and provider.own_fields():
            raise ValueError(
                f"backend {provider.name!r} brings settings, but Settings is already made: "
                "register it before settings are first loaded"
            )
        self._providers[provider.name] = provider
        return provider

    def declare(self, name: str, load: Callable[[], Provider]) -> None:
        """A provider known by name now, imported (`load()`) when first asked for more:
        listing the names costs nothing, so `--help` imports no backend."""
        self._check_new(name)
        if self.frozen_settings:
            raise ValueError(f"backend {name!r} is declared after Settings is made")
        self._providers[name] = load

    def _check_new(self, name: str) -> None:
        if name in self._providers or name == "auto":
            raise ValueError(f"a backend named {name!r} is already registered")

    def _loaded(self, name: str) -> Provider:
        entry = self._providers[name]
        if isinstance(entry, Provider):
            return entry
        provider = entry()
        if provider.name != name:
            raise ValueError(
                f"backend {name!r} was declared, but its module makes {provider.name!r}"
            )
        self._providers[name] = provider
        return provider

    def unregister(self, name: str) -> None:
        del self._providers[name]

    def get(self, name: str) -> Provider:
        if name not in self._providers:
            raise UsageError(
                f"unknown backend {name!r}", hint=f"use one of: {', '.join(self.choices())}"
            ) from None
        return self._loaded(name)

    def names(self) -> list[str]:
        """The backends' names, no provider imported."""
        return list(self._providers)

    def choices(self) -> list[str]:
        """What `backend` may be set to (no provider imported)."""
        return ["auto", *self._providers]

    def providers(self) -> list[Provider]:
        return [self._loaded(name) for name in list(self._providers)]

    def model_setting(self, backend: str) -> str | None:
        """The setting `--model` names; for `auto`, that of the first provider `auto` tries."""
        return self._named(backend).model_setting

    def host_setting(self, backend: str) -> str | None:
        return self._named(backend).host_setting

    def _named(self, backend: str) -> Provider:
        if backend == "auto":
            return next(p for p in self.providers() if p.auto)
        return self.get(backend)

    def concurrency(self, backend: str) -> int:
        return self._loaded(backend).concurrency if backend in self._providers else 1

    def describe(self, model: Any) -> tuple[str, str] | None:
        """(backend, model name) of a model some provider built; None when none did."""
        for provider in self.providers():
            name = provider.owns(model) if provider.owns else None
            if name is not None:
                return provider.name, name
        return None

    def identity(self, settings: Settings, backend: Backend) -> dict[str, Any]:
        """What its provider says pins `backend`'s model down (a digest, a file hash); {}
        when the provider says nothing or is not registered."""
        if backend.name not in self._providers:
            return {}
        provider = self._loaded(backend.name)
        if provider.identity is None:
            return {}
        return provider.identity(settings, backend)

    def choose(self, settings: Settings) -> tuple[Provider, str, Any]:
        """The provider `settings` select, why, and what selecting it found."""
        if settings.backend != "auto":
            provider = self.get(settings.backend)
            choice = provider.select(settings, "asked")
            return provider, choice.reason, choice.found
        passed: list[str] = []
        for provider in self.providers():
            if not provider.auto:
                continue
            choice = provider.select(settings, "auto")
            if choice.usable:
                return provider, "; ".join([*passed, choice.reason]), choice.found
            passed.append(choice.reason)
        raise ConfigError(
            "no backend can serve: " + "; ".join(passed),
            hint="name one with --backend (LLAMAPIPE_BACKEND); `llamapipe models` shows each",
        )

    def load(self, settings: Settings) -> Backend:
        provider, reason, found = self.choose(settings)
        return provider.build(settings, Choice(True, reason, found))

    def embeddings(self, settings: Settings) -> Found:
        """Dense retrieval's model for `settings`, and why. The chosen backend's when it
        offers one; when it is one `auto` tries (or `auto` itself), the next of those after
        it that does (so Ollama without an embedding model falls to `embed_gguf`)."""
        chain = [p for p in self.providers() if p.auto]
        if settings.backend != "auto":
            asked = self.get(settings.backend)
            chain = chain[chain.index(asked) :] if asked in chain else [asked]
        why = []
        for provider in chain:
            if provider.embeddings is None:
                continue
            found = provider.embeddings(settings)
            if found[0] is not None:
                return found
            if found[2]:
                why.append(found[2])
        if not why:
            why = [f"the {chain[0].name} backend" if chain else "no backend"]
        return None, "", "; ".join(why) + ": BM25 only"


def _built_in() -> Registry:
    from pipelines.backends import providers

    registry = Registry()
    for name in providers.NAMES:  # by name: each module is imported when first needed
        registry.declare(name, functools.partial(providers.load, name))
    return registry


REGISTRY = _built_in()  # what `Settings` and every front end use
