"""The built-in backends, one module each; `auto` tries them in this order (those that allow
it: Ollama, then the embedded model). A new backend is a module here and a line below."""

from pipelines.backends.providers import embedded, ollama, openai

BUILT_IN = (ollama.PROVIDER, embedded.PROVIDER, openai.PROVIDER)
