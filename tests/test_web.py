"""`llamapipe serve`'s HTTP API, in process (httpx through Starlette's TestClient, no
sockets) with scripted models; and what only a real server shows (a slow client, a port in
use), on loopback. The page in a browser: tests/test_web_browser.py."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from evals.runner import run_spec
from evals.spec import load_spec
from llamapipe_app.web import create_app
from pipelines.backends import Backend
from pipelines.rag import Index
from pipelines.settings import Settings, load_settings
from tests.cli_helpers import run_cli
from tests.fakes import ScriptedChat, ScriptedLLM

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "evals" / "datasets" / "rag" / "corpus"
LOCAL = "http://127.0.0.1:8765"
ANSWER = "Ogura Shinpei published a reading of the hyangga in 1929 [1]."
PROGRAM = "```python\ndef solution():\n    return 17 * 23 + 4\n```"


def backend_for(chat: Any) -> Backend:
    return Backend(
        name="embedded", model="scripted", chat=chat, completion=ScriptedLLM(["unused"]),
        embeddings=None, reason="test",
    )  # fmt: skip


def events(text: str) -> list[tuple[str, Any]]:
    """Server-sent events as (name, data)."""
    found = []
    for frame in text.split("\n\n"):
        if frame.strip():
            lines = dict(line.split(": ", 1) for line in frame.split("\n"))
            found.append((lines["event"], json.loads(lines["data"])))
    return found


@pytest.fixture
def settings() -> Settings:
    return load_settings({"backend": "embedded"})  # its embeddings: none (BM25), no sockets


@pytest.fixture
def index(settings: Settings) -> Index:
    idx = Index(settings.data_dir / "index")
    idx.ingest([str(CORPUS)])
    return idx


@pytest.fixture
def client(settings: Settings, index: Index) -> Iterator[TestClient]:
    chat = ScriptedChat(lambda prompt: PROGRAM if "solution()" in prompt else ANSWER)
    with TestClient(create_app(settings, backend=backend_for(chat)), base_url=LOCAL) as c:
        yield c


# -- the pipelines ----------------------------------------------------------------------------


def test_rag_chat_streams_then_saves_a_checked_answer_whose_offsets_hold(
    client: TestClient, index: Index
) -> None:
    r = client.post("/api/chat", json={"message": "Who read the hyangga in 1929?", "rag": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    names = [name for name, _ in got]
    assert names[0] == "session" and names[1] == "question" and names[-2:] == ["reply", "done"]
    tokens = [data["text"] for name, data in got if name == "token"]
    assert len(tokens) > 3 and "".join(tokens).strip() == ANSWER, "streamed word by word"
    reply = got[-2][1]
    (citation,) = reply["answer"]["citations"]
    text = client.get("/api/sources/text", params={"source": citation["source"]}).json()["text"]
    assert text[citation["start"] : citation["end"]] == citation["quote"]
    assert "Ogura Shinpei" in citation["quote"]
    session = got[0][1]["session"]
    saved = client.get(f"/api/sessions/{session}").json()
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["messages"][1]["meta"]["citations"][0]["start"] == citation["start"]


def test_a_follow_up_continues_its_session(client: TestClient) -> None:
    first = events(client.post("/api/chat", json={"message": "안녕하세요"}).text)
    session = first[0][1]["session"]
    assert first[-2][0] == "reply" and first[-2][1]["answer"] == ANSWER
    again = events(client.post("/api/chat", json={"message": "또?", "session": session}).text)
    assert again[0][1]["session"] == session and again[-2][1]["history_used"] == 2
    listed = client.get("/api/sessions").json()
    assert [s["name"] for s in listed] == [session] and listed[0]["messages"] == 4
    assert listed[0]["first"] == "안녕하세요"


def test_rag_ask_gives_what_rag_ask_json_gives(client: TestClient) -> None:
    question = "What are the hyangga?"
    got = events(client.post("/api/rag/ask", json={"question": question, "k": 3}).text)
    name, answer = got[-2]
    assert name == "answer" and answer["question"] == question
    keys = {"answer", "abstained", "citations", "retrieved", "dropped_markers", "unsupported",
            "passages_dropped", "passages_trimmed", "backend", "model"}  # fmt: skip
    assert keys <= set(answer) and 0 < len(answer["retrieved"]) <= 3


def test_pal_answer_shows_its_program_and_joins_the_session(client: TestClient) -> None:
    r = client.post("/api/pal/ask", json={"question": "17 * 23 + 4?", "session": "maths"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["ok"] and doc["answer"] == 395 and "return 17 * 23 + 4" in doc["program"]
    saved = client.get("/api/sessions/maths").json()["messages"]
    assert saved[1]["content"] == "395" and "17 * 23" in saved[1]["meta"]["pal"]["program"]


def test_a_pal_turn_in_a_new_chat_starts_a_saved_session(client: TestClient) -> None:
    doc = client.post("/api/pal/ask", json={"question": "17 * 23 + 4?"}).json()
    assert doc["answer"] == 395 and doc["session"], "saved, as a chat turn would be"
    (listed,) = client.get("/api/sessions").json()
    assert listed["name"] == doc["session"] and listed["messages"] == 2
    assert doc["unsafe"] is False, "the default sandbox has its OS walls"


def test_a_pal_question_that_gets_no_answer_leaves_no_session(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.sandbox import _walls

    monkeypatch.setattr(_walls, "landlock_abi", lambda: 0)  # no sandbox can be built
    r = client.post("/api/pal/ask", json={"question": "17 * 23 + 4?"})
    assert r.status_code >= 400 and "Landlock" in r.json()["error"]
    assert client.get("/api/sessions").json() == []


def test_a_pal_answer_run_without_walls_says_unsafe() -> None:
    unsafe = load_settings({"backend": "embedded", "sandbox_isolation": "unsafe"})
    chat = ScriptedChat(lambda prompt: PROGRAM)
    with TestClient(create_app(unsafe, backend=backend_for(chat)), base_url=LOCAL) as c:
        doc = c.post("/api/pal/ask", json={"question": "17 * 23 + 4?"}).json()
        assert doc["answer"] == 395 and doc["unsafe"] is True
        schema = c.get("/openapi.json").json()["components"]["schemas"]["PALAnswer"]
        assert schema["properties"]["unsafe"]["type"] == "boolean"


def test_a_model_error_mid_stream_is_an_error_event(settings: Settings, index: Index) -> None:
    from pipelines.errors import ServerUnreachableError

    def broken(prompt: str) -> str:
        raise ServerUnreachableError("no Ollama at 127.0.0.1:11434", hint="start it: ollama serve")

    app = create_app(settings, backend=backend_for(ScriptedChat(broken)))
    with TestClient(app, base_url=LOCAL) as c:
        got = events(c.post("/api/chat", json={"message": "hi"}).text)
        assert got[-2] == ("error", {"error": "no Ollama at 127.0.0.1:11434",
                                     "hint": "start it: ollama serve"})  # fmt: skip
        assert got[-1][0] == "done"
        assert c.get("/api/sessions").json() == [], "a failed first turn leaves no session"


# -- sessions, sources, eval runs -------------------------------------------------------------


def test_sessions_read_and_delete(client: TestClient) -> None:
    session = events(client.post("/api/chat", json={"message": "hi"}).text)[0][1]["session"]
    assert client.delete(f"/api/sessions/{session}").json() == {"deleted": 2}
    assert client.get("/api/sessions").json() == []
    missing = client.get(f"/api/sessions/{session}")
    assert missing.status_code == 404 and "no session" in missing.json()["error"]
    assert client.delete("/api/sessions/nosuch").status_code == 404


def test_only_indexed_documents_are_served(client: TestClient, index: Index) -> None:
    listed = client.get("/api/sources").json()
    names = sorted(Path(s["source"]).name for s in listed["sources"])
    assert names == sorted(p.name for p in CORPUS.iterdir())
    source = listed["sources"][0]["source"]
    assert client.get("/api/sources/text", params={"source": source}).json()["text"]
    for attempt in ["/etc/passwd", f"{source}/../../../../etc/passwd", str(ROOT / "README.md"),
                    "../../index.sqlite", source + "\x00"]:  # fmt: skip
        r = client.get("/api/sources/text", params={"source": attempt})
        assert r.status_code == 404 and "not an indexed document" in r.json()["error"]


def test_without_an_index_rag_says_how_to_make_one(settings: Settings) -> None:
    app = create_app(settings, backend=backend_for(ScriptedChat([ANSWER])))
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/chat", json={"message": "hi", "rag": True})
        assert r.status_code == 400 and "no index at" in r.json()["error"]
        assert "llamapipe rag ingest" in r.json()["hint"]
        assert c.get("/api/sources").status_code == 400


def _two_runs(out: Path, tmp: Path) -> None:
    data = tmp / "data.jsonl"
    data.write_text(
        json.dumps({"id": "a", "source": "東京明期月良", "references": ["서라벌 밝은 달밤에"]})
        + "\n",
        encoding="utf-8",
    )
    outputs = tmp / "o.jsonl"
    outputs.write_text(json.dumps({"id": "a", "output": "서라벌 밝은 달에"}) + "\n")
    spec = tmp / "spec.yaml"
    spec.write_text(f"name: web\ndataset: {data}\nsystems:\n  - {{name: s, outputs: {outputs}}}\n")
    for _ in range(2):
        run_spec(load_spec(spec), out, settings=load_settings(), backend_factory=lambda s: None)


def test_eval_runs_are_listed_with_their_reports(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    _two_runs(settings.data_dir / "evals", tmp_path)
    runs = client.get("/api/evals/runs").json()["runs"]
    assert len(runs) == 2 and runs[0]["finished"] >= runs[1]["finished"]
    report = client.get(runs[0]["report"])
    assert report.status_code == 200 and "서라벌 밝은 달" in report.text and "<svg" in report.text
    summary = client.get(f"/api/evals/runs/{runs[0]['run_id']}").json()
    assert summary["spec"] == "web" and summary["run_id"] == runs[0]["run_id"]
    history = client.get("/evals/")
    assert history.status_code == 200 and f'href="/evals/runs/{runs[1]["run_id"]}"' in history.text
    for bad in ["nosuch", "%2E%2E", "..%2Fhistory.jsonl", "%2E%2E%2F%2E%2E%2Findex"]:
        assert client.get(f"/evals/runs/{bad}").status_code == 404


# -- the page, the OpenAPI page ---------------------------------------------------------------


def test_page_and_api_docs_work_offline(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js"' in page.text
    assert "Noto Sans CJK KR" in page.text, "the page names fonts that cover Hangul and Hanja"
    assert client.get("/static/app.js").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "http" not in docs.text.split("<body", 1)[1]
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/chat", "/api/rag/ask", "/api/pal/ask", "/api/sessions", "/api/sources",
            "/api/sources/text", "/api/evals/runs"} <= set(schema["paths"])  # fmt: skip
    assert "ChatRequest" in schema["components"]["schemas"]


# -- security ---------------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for r in (client.get("/"), client.get("/api/sessions"), client.get("/nosuch")):
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"


def test_other_origins_get_no_cors_and_no_form_posts(client: TestClient) -> None:
    r = client.options(
        "/api/chat",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/api/sessions", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # A cross-site <form> can only send form or plain-text bodies: they are not accepted.
    plain = {"content-type": "text/plain"}
    r = client.post("/api/chat", content='{"message": "hi"}', headers=plain)
    assert r.status_code == 422


def test_only_loopback_names_are_answered(settings: Settings) -> None:
    app = create_app(settings, backend=backend_for(ScriptedChat([])))
    for base in ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"]:
        assert TestClient(app, base_url=base).get("/api/health").status_code == 200
    rebound = TestClient(app, base_url="http://attacker.example:8765").get("/api/sessions")
    assert rebound.status_code == 421 and "loopback" in rebound.json()["error"]


def test_a_token_guards_every_request(settings: Settings) -> None:
    token = "t0ken-long-enough-to-matter"
    app = create_app(settings, token=token, loopback_only=False,
                     backend=backend_for(ScriptedChat([])))  # fmt: skip
    c = TestClient(app, base_url="http://192.0.2.10:8765")
    for path in ["/", "/api/sessions", "/static/app.js", "/openapi.json", "/evals/"]:
        r = c.get(path)
        assert r.status_code == 401 and "token" in r.json()["error"], path
    assert c.get("/api/sessions", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/sessions", headers={"authorization": f"Bearer {token}"}).status_code == 200
    opened = c.get(f"/?token={token}")
    assert opened.status_code == 200 and "HttpOnly" in opened.headers["set-cookie"]
    assert c.get("/api/sessions").status_code == 200, "the page's cookie carries it on"


def test_request_bodies_are_bounded(settings: Settings) -> None:
    app = create_app(settings, backend=backend_for(ScriptedChat([])), max_body=1000)
    c = TestClient(app, base_url=LOCAL)
    r = c.post("/api/chat", json={"message": "가" * 2000})
    assert r.status_code == 413 and "over 1000 bytes" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"message": "'
        for _ in range(50):
            yield b"x" * 100
        yield b'"}'

    r = c.post("/api/chat", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    too_long = c.post("/api/chat", json={"message": "x" * 20_001})
    assert too_long.status_code == 413 or too_long.status_code == 422


# -- the server's log -------------------------------------------------------------------------


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged, as the log's handler would print it (tracebacks too)."""
    shown = logging.Formatter("%(message)s")
    return "\n".join(shown.format(r) for r in caplog.records if r.name == "llamapipe.web")


def test_each_request_is_a_log_line_without_its_token(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="llamapipe.web")
    token = "t0ken-long-enough-to-matter"
    app = create_app(settings, token=token, loopback_only=False,
                     backend=backend_for(ScriptedChat(["가나다"])))  # fmt: skip
    with TestClient(app, base_url="http://192.0.2.10:8765") as c:
        assert c.get("/api/sessions").status_code == 401
        assert c.get(f"/?token={token}").status_code == 200
        c.post("/api/chat", json={"message": "비밀 질문"})
    lines = [r.getMessage() for r in caplog.records if r.name == "llamapipe.web"]
    assert [line.rsplit(" ", 2)[0] for line in lines] == [
        "GET /api/sessions 401", "GET / 200", "POST /api/chat 200"]  # fmt: skip
    assert all(line.endswith(" ms") and line.rsplit(" ", 2)[1].isdigit() for line in lines)
    assert token not in logged(caplog) and "비밀" not in logged(caplog)


def test_a_server_error_is_a_500_and_its_traceback_is_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def bug(prompt: str) -> str:
        raise RuntimeError("a bug in the model wrapper")

    caplog.set_level("INFO", logger="llamapipe.web")
    with TestClient(create_app(settings, backend=backend_for(ScriptedChat(bug))),
                    base_url=LOCAL) as c:  # fmt: skip
        r = c.post("/api/pal/ask", json={"question": "비밀 질문"})
        assert r.status_code == 500 and r.json()["error"] == "internal server error"
        assert r.headers["x-content-type-options"] == "nosniff"
        streamed = events(c.post("/api/chat", json={"message": "hi"}).text)
        hint = "the server's log (its stderr) says why"
        assert streamed[-2] == ("error", {"error": "internal server error", "hint": hint})
    text = logged(caplog)
    assert "POST /api/pal/ask: RuntimeError: a bug in the model wrapper" in text
    assert text.count("Traceback (most recent call last)") == 2, "the pal call and the stream"
    assert "POST /api/pal/ask 500" in text and "비밀" not in text


def test_a_backend_error_is_logged_with_its_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from pipelines.errors import ServerUnreachableError

    def gone(prompt: str) -> str:
        raise ServerUnreachableError("no Ollama at 127.0.0.1:11434", hint="start it: ollama serve")

    with TestClient(create_app(settings, backend=backend_for(ScriptedChat(gone))),
                    base_url=LOCAL) as c:  # fmt: skip
        assert c.post("/api/pal/ask", json={"question": "1 + 1?"}).status_code == 503
    text = logged(caplog)
    assert "ServerUnreachableError: no Ollama at 127.0.0.1:11434" in text
    assert "Traceback (most recent call last)" in text


# -- a real server on loopback ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """The app under uvicorn on a loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.mark.web
def test_a_slow_stream_does_not_hold_up_other_requests(settings: Settings, index: Index) -> None:
    slow = ScriptedChat(lambda p: " ".join(["word"] * 200), chunk_delay=0.05)  # ~10 s
    with (
        Served(create_app(settings, backend=backend_for(slow))) as served,
        httpx.Client(base_url=served.url, timeout=30) as first,
        httpx.Client(base_url=served.url, timeout=30) as second,
    ):
        with first.stream("POST", "/api/chat", json={"message": "talk"}) as streaming:
            lines = streaming.iter_lines()
            assert next(lines) == "event: session"  # the slow answer has begun
            sessions = second.get("/api/sessions")
            sources = second.get("/api/sources")
            assert sessions.status_code == 200 and sources.status_code == 200
            assert second.get("/api/health").json()["ok"]
            rest = "\n".join(lines)  # now read the slow one to its end
        assert rest.count("event: token") == 200 and "event: reply" in rest


@pytest.mark.web
def test_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli(capsys, "serve", "--port", str(port), "--backend", "embedded")
    assert r.code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "another --port" in r.stderr


@pytest.mark.web
@pytest.mark.parametrize("found", [True, False], ids=["its-address", "no-route"])
def test_serve_on_every_address_prints_a_url_a_browser_opens(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    use_model: Any,
    found: bool,
) -> None:
    import uvicorn

    from llamapipe_app.commands import serve
    from llamapipe_app.web import logs

    use_model(ScriptedChat([]))
    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw))
    monkeypatch.setattr(logs.LOG, "handlers", [])  # the one serve adds goes with the test
    if not found:
        monkeypatch.setattr(serve, "this_host_address", lambda family: None)
    port = free_port()
    r = run_cli(capsys, "serve", "--host", "0.0.0.0", "--port", str(port), "--new-token")
    assert r.code == 0, r.stderr
    url = r.stdout.split("serving on ", 1)[1].split()[0]
    host = httpx.URL(url).host
    assert host != "0.0.0.0" and not ipaddress.ip_address(host).is_unspecified
    assert ipaddress.ip_address(host).is_loopback is not found
    token = httpx.URL(url).params["token"]
    said = (r.stdout + r.stderr).replace("\n", "")
    assert len(token) >= 16 and f"http://127.0.0.1:{port}/?token={token}" in said
    assert "every address" in r.stderr
    assert ran["host"] == "0.0.0.0" and ran["access_log"] is False, "its log shows the token"
    assert logs.LOG.handlers, "requests are logged to stderr"


class CountingChat(ScriptedChat):
    """A slow scripted model that counts the words it has been asked to stream."""

    streamed: int = 0

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for chunk in super()._stream(*args, **kwargs):
            self.streamed += 1
            yield chunk


@pytest.mark.web
def test_a_client_that_leaves_stops_the_model_and_keeps_what_came(settings: Settings) -> None:
    """The page's Stop button (or a closed tab) ends the request: the model is asked for no
    more words, and the turn is saved as far as it got, marked stopped (as Ctrl-C in the REPL)."""
    model = CountingChat(lambda p: " ".join(f"w{i}" for i in range(400)), chunk_delay=0.02)
    with (
        Served(create_app(settings, backend=backend_for(model))) as served,
        httpx.Client(base_url=served.url, timeout=30) as client,
    ):
        with client.stream("POST", "/api/chat", json={"message": "talk"}) as streaming:
            seen = 0
            for line in streaming.iter_lines():
                seen += line.startswith("event: token")
                if seen == 5:
                    break  # leaving: the response is closed here
        for _ in range(200):  # the server notices at its next write
            session = client.get("/api/sessions").json()
            if session and session[0]["messages"] == 2:
                break
            time.sleep(0.05)
        (info,) = session
        saved = client.get(f"/api/sessions/{info['name']}").json()["messages"]
    answer = saved[1]
    assert answer["meta"]["stopped"] is True and answer["content"].startswith("w0 w1 w2 w3 w4")
    assert model.streamed < 100, "the model went on after the client had gone"
