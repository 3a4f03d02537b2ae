"""llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`), started on
loopback for the `openai` tests: a real server this project did not write, on the embedded
GGUF, serving a chat model and an embedding model, and requiring an API key."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaCppServer:
    chat_model = "smollm2"
    embed_model = "smollm2-embed"
    # The same GGUF with llama-cpp-python's "chatml-function-calling" format: tools and a
    # named tool_choice (its own grammar); tool_choice "required" it does not take (500).
    tools_model = "smollm2-tools"

    def __init__(self, gguf: Path, workdir: Path, *, key: str | None = None, n_ctx: int = 2048):
        self.gguf, self.workdir = gguf, workdir
        self.key = key if key is not None else f"sk-llamapipe-test-{secrets.token_hex(8)}"
        self.n_ctx = n_ctx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = workdir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict:
        # One process, two models (it swaps them on demand). SmolLM2 has no pooling type in
        # its GGUF, so the embedding model is told to mean-pool: one vector per text, as
        # /v1/embeddings promises.
        return {
            "host": "127.0.0.1",
            "port": self.port,
            **({"api_key": self.key} if self.key else {}),
            "models": [
                {"model": str(self.gguf), "model_alias": self.chat_model, "n_ctx": self.n_ctx},
                {"model": str(self.gguf), "model_alias": self.embed_model, "embedding": True,
                 "n_ctx": 512, "kv_overrides": ["llama.pooling_type=int:1"]},
                {"model": str(self.gguf), "model_alias": self.tools_model, "n_ctx": self.n_ctx,
                 "chat_format": "chatml-function-calling"},
            ],
        }  # fmt: skip

    def __enter__(self) -> LlamaCppServer:
        config = self.workdir / "config.json"
        config.write_text(json.dumps(self.config()))
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            self._wait(120)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait(self, seconds: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + seconds
        request = urllib.request.Request(
            f"{self.url}/models", headers={"Authorization": f"Bearer {self.key}"}
        )
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited {self._proc.returncode}: {self.log()[-2000:]}"
                )
            try:
                urllib.request.urlopen(request, timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no answer in {seconds:g} s") from None
                time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.url}{path}",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
