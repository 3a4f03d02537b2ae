"""The page of `llamapipe serve` in a real browser: Debian's headless Chromium, driven by
Playwright, against the app served by uvicorn on loopback.

Screenshots go to the test's tmp folder, and also to $SCREENSHOTS_DIR when set (the README's
come from `make screenshots`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamapipe_app.web import create_app
from pipelines.rag import Index
from pipelines.settings import Settings, load_settings
from tests.fakes import ScriptedChat
from tests.test_web import ANSWER, CORPUS, Served, _two_runs, backend_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS_DIR = os.environ.get("SCREENSHOTS_DIR")  # read before the autouse fixture runs
pytestmark = [
    pytest.mark.web,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]

# Counts the changes to the newest answer while it streams, before the result replaces it.
COUNT_UPDATES = """
window.__updates = 0;
new MutationObserver(() => {
  const answers = document.querySelectorAll('.msg.assistant .text');
  if (answers.length && !answers[answers.length - 1].closest('.msg').dataset.done) {
    window.__updates += 1;
  }
}).observe(document.getElementById('messages'), {childList: true, subtree: true,
                                                characterData: true});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root: no setuid sandbox
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 820})
    pg = context.new_page()
    pg.problems = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.problems.append(str(e)))  # type: ignore[attr-defined]
    pg.on(
        "console",
        lambda m: m.type == "error" and pg.problems.append(m.text),  # type: ignore[attr-defined]
    )
    yield pg
    context.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    if SCREENSHOTS_DIR:
        Path(SCREENSHOTS_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS_DIR) / path.name)
    return path


def ask(page: Any, text: str) -> Any:
    """Type a question, send it with Enter, wait for the finished answer; the answer box."""
    page.fill("#input", text)
    page.press("#input", "Enter")
    box = page.locator(".msg.assistant").last
    box.locator("xpath=self::*[@data-done='1']").wait_for(timeout=120_000)
    return box


@pytest.fixture
def settings() -> Settings:
    return load_settings({"backend": "embedded", "temperature": 0.0, "seed": 7})


def test_ask_see_it_stream_click_a_citation_see_the_quote_highlighted(
    page: Any, settings: Settings, tmp_path: Path
) -> None:
    """The embedded model, the bundled corpus: the whole promise, as a reader meets it."""
    from pipelines.backends import load_backend

    Index(settings.data_dir / "index").ingest([str(CORPUS)])
    backend = load_backend(settings)
    with Served(create_app(settings, backend=backend)) as served:
        page.goto(served.url + "/")
        page.evaluate(COUNT_UPDATES)
        box = ask(page, "Who published a reading of the hyangga in 1929?")
        assert page.evaluate("window.__updates") > 3, "the answer arrived in pieces"
        links = box.locator(".text a.cite")
        assert links.count() >= 1, box.inner_text()
        first = links.first
        n = first.get_attribute("data-n")
        quote = box.locator(f'ol.citations a.cite[data-n="{n}"] ~ q').inner_text()
        first.click()
        mark = page.locator("#viewer #highlight")
        mark.wait_for()
        assert mark.inner_text() == quote
        # The highlight is the exact slice at the citation's offsets in the indexed text.
        source = first.get_attribute("title")
        before = page.evaluate("document.getElementById('viewer-text').firstChild.textContent")
        text = httpx.get(
            served.url + "/api/sources/text", params={"source": source.split(" p.")[0]}
        ).json()["text"]
        start = len(before)
        assert text[start : start + len(quote)] == quote
        assert "1929" in quote
        screenshot(page, tmp_path, "web-citation")

        # Saved: a fresh page lists the session and shows the answer with its links again.
        page.goto(served.url + "/")
        page.locator("#sessions li button.open").first.click()
        page.locator(".msg.assistant .text a.cite").first.wait_for()
        assert page.locator(".msg.user .text").inner_text().startswith("Who published")
    assert page.problems == []  # type: ignore[attr-defined]


def test_korean_pal_and_the_eval_pages(page: Any, settings: Settings, tmp_path: Path) -> None:
    """Hangul and Hanja render; a PAL answer shows its program; reports are a click away."""
    program = "```python\ndef solution():\n    # 처용가: 8구체 향가\n    return 8 * 3\n```"
    reply = "처용가(處容歌)는 신라 헌강왕 때 처용이 지은 8구체 향가입니다."
    chat = ScriptedChat(lambda p: program if "solution()" in p else reply)
    _two_runs(settings.data_dir / "evals", tmp_path)
    with Served(create_app(settings, backend=backend_for(chat))) as served:
        page.goto(served.url + "/")
        page.select_option("#mode", "chat")
        box = ask(page, "처용가는 누가 지었나요? 鄕歌")
        assert box.locator(".text").inner_text() == reply
        page.select_option("#mode", "pal")
        box = ask(page, "향가 세 수의 구 수를 모두 더하면? (8구체 × 3)")
        assert box.locator(".text").inner_text() == "24"
        assert "# 처용가: 8구체 향가" in box.locator("details.program code").inner_text()
        width = page.evaluate(
            "(() => { const r = document.createRange();"
            " r.selectNodeContents(document.querySelector('.msg.assistant .text'));"
            " return r.getBoundingClientRect().width; })()"
        )
        assert width > 200, "Korean text takes up room (a missing font draws nothing)"
        screenshot(page, tmp_path, "web-korean-pal")

        page.click("text=Eval reports and history")
        page.wait_for_url("**/evals/")
        assert page.locator("svg.chart").count() >= 1
        page.locator("table a").first.click()
        page.locator("#scores").wait_for()
        assert "서라벌" in page.locator("#items").inner_text()
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_pal_question_where_no_sandbox_can_be_built_shows_the_error_in_its_place(
    page: Any, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.sandbox import _walls

    monkeypatch.setattr(_walls, "landlock_abi", lambda: 0)  # a kernel without Landlock
    chat = ScriptedChat(lambda p: "```python\ndef solution():\n    return 2\n```")
    with Served(create_app(settings, backend=backend_for(chat))) as served:
        page.goto(served.url + "/")
        page.select_option("#mode", "pal")
        box = ask(page, "1 + 1?")
        problem = box.locator(".problem").inner_text()
        assert "Landlock" in problem and "LLAMAPIPE_SANDBOX_ISOLATION=unsafe" in problem
        assert "writing and running" not in box.inner_text()
        screenshot(page, tmp_path, "web-pal-no-sandbox")


XSS_DOC = """# 처용가 notes

The dancer Cheoyong sang at the palace gate. <script>window.__xss = 1</script>
His song <img src=x onerror="window.__xss = 2"> drove the spirit away. <b>not bold</b>
"""


def test_markup_in_documents_names_and_answers_is_shown_as_text(
    page: Any, settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / 'x<img src=y onerror="window.__xss=4">.md').write_text(XSS_DOC, encoding="utf-8")
    Index(settings.data_dir / "index").ingest([str(docs)])
    answer = 'Cheoyong sang at the palace gate <img src=x onerror="window.__xss=3"> [1].'
    chat = ScriptedChat(lambda p: answer)
    with Served(create_app(settings, backend=backend_for(chat))) as served:
        page.goto(served.url + "/")
        box = ask(page, "<b>Who</b> sang at the palace gate?")
        box.locator(".text a.cite").first.click()
        page.locator("#viewer #highlight").wait_for()
        page.locator("#sources li button.open").first.click()  # the whole document, too
        page.wait_for_timeout(200)  # let anything that might run, run
        assert page.evaluate("window.__xss") is None
        assert page.locator("#messages img, #viewer img, #sources img, b").count() == 0
        assert "<script>window.__xss = 1</script>" in page.locator("#viewer-text").inner_text()
        assert "<img src=x onerror" in box.locator(".text").inner_text()
        assert page.locator("#sources").inner_text().startswith("x<img src=y")
        assert "<b>Who</b>" in page.locator("#sessions").inner_text()
        screenshot(page, tmp_path, "web-markup-as-text")
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_pdf_citation_names_its_page(page: Any, settings: Settings, tmp_path: Path) -> None:
    from tests.test_rag import _pdf

    docs = tmp_path / "docs"
    docs.mkdir()
    _pdf(docs / "minutes.pdf", ["The council met in spring.", "The bridge opened in 1931."])
    Index(settings.data_dir / "index").ingest([str(docs), str(CORPUS)])  # BM25 needs company
    chat = ScriptedChat(lambda p: "The bridge opened in 1931 [1].")
    with Served(create_app(settings, backend=backend_for(chat))) as served:
        page.goto(served.url + "/")
        box = ask(page, "In which year was the bridge opened?")
        assert "p.2" in box.locator("ol.citations").inner_text()
        box.locator(".text a.cite").first.click()
        page.locator("#viewer #highlight").wait_for()
        assert page.locator("#highlight").inner_text() == "The bridge opened in 1931."
        assert "page 2" in page.locator("#viewer-where").inner_text()
    assert page.problems == []  # type: ignore[attr-defined]


def test_the_api_page_renders_every_endpoint_offline(page: Any, settings: Settings) -> None:
    """/docs: Swagger UI from local files under the page's CSP; no request leaves loopback."""
    local = ("http://127.0.0.1", "data:")
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
    with Served(create_app(settings, backend=backend_for(ScriptedChat([])))) as served:
        page.goto(served.url + "/docs")
        page.locator(".opblock").first.wait_for()
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/api/chat", "/api/rag/ask", "/api/pal/ask", "/api/sources/text"} <= {
            p.replace("\u200b", "") for p in paths
        }
    assert outside == [] and page.problems == []  # type: ignore[attr-defined]


def test_each_mode_says_what_it_is_for_and_a_pal_turn_starts_a_session(
    page: Any, settings: Settings, tmp_path: Path
) -> None:
    Index(settings.data_dir / "index").ingest([str(CORPUS)])
    chat = ScriptedChat(lambda p: "```python\ndef solution():\n    return 6 * 7\n```")
    with Served(create_app(settings, backend=backend_for(chat))) as served:
        page.goto(served.url + "/")
        placeholders = {}
        for mode in ("rag", "chat", "pal"):
            page.select_option("#mode", mode)
            placeholders[mode] = page.get_attribute("#input", "placeholder")
        assert len(set(placeholders.values())) == 3, placeholders
        assert "documents" in placeholders["rag"] and "documents" not in placeholders["pal"]
        box = ask(page, "6 × 7?")
        assert box.locator(".text").inner_text() == "42"
        assert box.locator(".unsafe").count() == 0, "walls up: no label"
        session = page.locator("#session-name").inner_text()
        assert session.startswith("session chat-"), "the header names the new session"
        page.locator("#sessions li.current").wait_for()
        box = ask(page, "and 6 × 8?")  # the second turn joins the same session
        page.goto(served.url + "/")
        page.locator("#sessions li button.open").first.click()
        page.locator(".msg.assistant").nth(1).wait_for()
        assert page.locator(".msg.user .text").all_inner_texts() == ["6 × 7?", "and 6 × 8?"]
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_pal_answer_run_without_walls_is_labelled_unsafe(page: Any, tmp_path: Path) -> None:
    unsafe = load_settings({"backend": "embedded", "sandbox_isolation": "unsafe"})
    chat = ScriptedChat(lambda p: "```python\ndef solution():\n    return 6 * 7\n```")
    with Served(create_app(unsafe, backend=backend_for(chat))) as served:
        page.goto(served.url + "/")
        page.select_option("#mode", "pal")
        box = ask(page, "6 × 7?")
        assert box.locator(".who .unsafe").inner_text() == "unsafe"
        screenshot(page, tmp_path, "web-pal-unsafe")
        page.goto(served.url + "/")  # reread later: still labelled
        page.locator("#sessions li button.open").first.click()
        page.locator(".msg.assistant .who .unsafe").wait_for()
    assert page.problems == []  # type: ignore[attr-defined]


def one_line(page: Any, selector: str) -> bool:
    """Whether the element's visible children sit side by side on one line."""
    return bool(
        page.evaluate(
            """(sel) => {
              const boxes = [...document.querySelector(sel).children]
                .map((c) => c.getBoundingClientRect()).filter((r) => r.width > 0);
              const mid = (r) => r.top + r.height / 2;
              return boxes.every((r) => Math.abs(mid(r) - mid(boxes[0])) < 4)
                && boxes.every((r) => r.height < 40);
            }""",
            selector,
        )
    )


def fits(page: Any, width: int) -> None:
    """The page at `width`: one header line, room to type, nothing off the side."""
    assert one_line(page, "header"), page.locator("header").inner_text()
    typing = page.locator("#input").bounding_box()
    room = page.locator("main").bounding_box()["width"]
    assert typing["width"] >= 0.8 * room - 40, (typing, room)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("width", [600, 390])
def test_the_page_fits_a_narrow_window_with_and_without_the_source(
    browser: Any, settings: Settings, tmp_path: Path, width: int
) -> None:
    Index(settings.data_dir / "index").ingest([str(CORPUS)])
    chat = ScriptedChat(lambda p: ANSWER)
    context = browser.new_context(viewport={"width": width, "height": 780})
    page = context.new_page()
    with Served(create_app(settings, backend=backend_for(chat))) as served:
        page.goto(served.url + "/")
        box = ask(page, "Who published a reading of the hyangga in 1929?")
        fits(page, width)
        assert page.locator("aside").is_hidden(), "the side panel is a drawer here"
        screenshot(page, tmp_path, f"web-{width}")

        box.locator(".text a.cite").first.click()
        page.locator("#viewer #highlight").wait_for()
        viewer = page.locator("#viewer").bounding_box()
        assert viewer["x"] == 0 and viewer["width"] == width, "the source gets the screen"
        assert page.locator("#viewer-close").is_visible()
        fits(page, width)
        screenshot(page, tmp_path, f"web-{width}-source")
        page.click("#viewer-close")
        assert page.locator("#viewer").is_hidden()

        page.click("#menu")
        assert page.locator("aside").is_visible()
        screenshot(page, tmp_path, f"web-{width}-menu")
        page.locator("#sessions li button.open").first.click()
        page.locator("aside").wait_for(state="hidden")  # opening a session closes the drawer
        page.locator(".msg.assistant .text a.cite").first.wait_for()
    context.close()


def test_a_middling_window_keeps_the_header_on_one_line_beside_the_source(
    page: Any, settings: Settings, tmp_path: Path
) -> None:
    Index(settings.data_dir / "index").ingest([str(CORPUS)])
    page.set_viewport_size({"width": 900, "height": 780})
    with Served(create_app(settings, backend=backend_for(ScriptedChat(lambda p: ANSWER)))) as s:
        page.goto(s.url + "/")
        box = ask(page, "Who published a reading of the hyangga in 1929?")
        box.locator(".text a.cite").first.click()
        page.locator("#viewer #highlight").wait_for()
        assert page.locator("aside").is_visible() and page.locator("#viewer").is_visible()
        fits(page, 900)
        screenshot(page, tmp_path, "web-900-source")
    assert page.problems == []  # type: ignore[attr-defined]
