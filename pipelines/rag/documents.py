"""Turn files into text with character offsets: .txt, .md, .html, .pdf (pages kept).

For .txt and .md the text is the file's own text (UTF-8; a leading BOM is dropped), so a
citation's `start`/`end` index straight into the file. HTML is reduced to its visible
text; a PDF's pages are joined with a blank line and their spans recorded.
A file that cannot be read as a document raises `BadDocument` with the reason.
`walk_all` finds the files under folders, and which of them are of no supported type.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = {".txt": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html",
            ".pdf": "pdf"}  # fmt: skip


class BadDocument(Exception):
    """Why a file was skipped: binary, not UTF-8, encrypted, empty, unsupported."""


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    start: int
    end: int


@dataclass(frozen=True)
class LoadedDocument:
    source: str
    kind: str
    text: str
    sha256: str
    size: int
    pages: list[Page] = field(default_factory=list)

    def page_at(self, offset: int) -> int | None:
        for page in self.pages:
            if page.start <= offset < page.end:
                return page.number
        return None


def kind_of(path: Path) -> str | None:
    return SUFFIXES.get(path.suffix.lower())


@dataclass
class Walked:
    """What a walk over files and folders found: supported files, unsupported files met
    inside folders, paths that were no file or folder, and unsupported files named."""

    files: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    given_unsupported: list[Path] = field(default_factory=list)  # named, not in a folder

    def unsupported_types(self) -> list[str]:
        """The suffixes of the unsupported files met in folders, most frequent first."""
        counts: dict[str, int] = {}
        for path in self.unsupported:
            suffix = path.suffix.lower() or "(none)"
            counts[suffix] = counts.get(suffix, 0) + 1
        return sorted(counts, key=lambda s: (-counts[s], s))


def walk_all(paths: Iterable[str | Path]) -> Walked:
    """Every file under `paths` in order, sorted within folders; hidden files and folders
    inside a folder are left out, unsupported ones are counted (so a caller can say so)."""
    walked = Walked()
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if not child.is_file() or _hidden(child, path):
                    continue
                (walked.files if kind_of(child) else walked.unsupported).append(child)
        elif path.is_file():
            (walked.files if kind_of(path) else walked.given_unsupported).append(path)
        else:
            walked.missing.append(str(given))
    return walked


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def load_document(path: Path, source: str | None = None) -> LoadedDocument:
    kind = kind_of(path)
    if kind is None:
        raise BadDocument(f"unsupported file type {path.suffix or '(none)'}")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    pages: list[Page] = []
    if kind == "pdf":
        text, pages = _pdf_text(path)
    else:
        text = _decode(raw)
        if kind == "html":
            text = html_text(text)
    if not text.strip():
        raise BadDocument("no text in it" if raw else "the file is empty")
    return LoadedDocument(source or str(path), kind, text, digest, len(raw), pages)


def _decode(raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise BadDocument("binary file (NUL bytes), not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadDocument(f"not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None


def _pdf_text(path: Path) -> tuple[str, list[Page]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise BadDocument("encrypted PDF; decrypt it first (e.g. qpdf --decrypt)")
        parts: list[str] = []
        pages: list[Page] = []
        offset = 0
        for number, page in enumerate(reader.pages, 1):
            text = (page.extract_text() or "").strip()
            if parts:
                parts.append("\n\n")
                offset += 2
            parts.append(text)
            pages.append(Page(number, offset, offset + len(text)))
            offset += len(text)
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise BadDocument(f"unreadable PDF ({exc})") from None
    text = "".join(parts)
    if not text.strip():
        raise BadDocument("the PDF has no extractable text (scanned images?)")
    return text, pages


_BLOCK = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
          "table", "section", "article", "header", "footer", "blockquote", "pre", "hr"}  # fmt: skip
_SKIP = {"script", "style", "noscript", "template", "head"}


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in _SKIP:
            self.skipping += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """Visible text of an HTML page, blocks on their own lines."""
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
