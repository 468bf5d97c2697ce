"""Documents → bounded passages whose character offsets index the document's text exactly.

A `Document` is the text an answer cites and its paragraph `blocks`; passages never cross a
block. What the text is depends on the format:

- plain text (`.txt`, or no suffix) and Markdown (`.md`, `.markdown`): the file itself, decoded
  as UTF-8 without any newline translation, so offsets index the file's characters; blocks are
  runs of non-blank lines;
- HTML (`.html`, `.htm`): its visible text (tags dropped, entities decoded, `script` / `style`
  skipped, whitespace collapsed), one block per block-level element, blocks joined by a blank
  line; offsets index that text, which the index stores;
- SQuAD JSON (`.json`, `.json.gz`): one document per article, its contexts joined by a blank
  line, one block per context (the paragraph a question was asked on).

A block longer than `max_chars` is cut at its last sentence end (else whitespace) before the
bound, so the reader and the sentence encoder see passages of a bounded length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

DEFAULT_MAX_CHARS = 2000
TEXT_SUFFIXES = ("", ".txt", ".text")
MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
SQUAD_SUFFIXES = (".json", ".json.gz")
SUFFIXES = TEXT_SUFFIXES + MARKDOWN_SUFFIXES + HTML_SUFFIXES + SQUAD_SUFFIXES

_BLOCK = re.compile(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*")  # non-blank lines, no blank between
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")
_HTML_BLOCK_TAG_LIST = (
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 "
    "h4 h5 h6 header hr li main nav ol p pre section table tbody td th thead title tr ul"
)
_HTML_BLOCK_TAGS = frozenset(_HTML_BLOCK_TAG_LIST.split())
_HTML_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "svg"})


class DocumentError(ValueError):
    """A document cannot be read or is not of a supported kind; the message names the file."""


@dataclass(frozen=True)
class Document:
    """One document: `text` is what passages and answers index; `blocks` its paragraphs."""

    source: str  # the file it came from
    title: str  # the file name, or a SQuAD article's title
    kind: str  # "text", "markdown", "html" or "squad"
    text: str
    blocks: tuple[tuple[int, int], ...]  # (start, end) character spans of `text`


@dataclass(frozen=True)
class Passage:
    """`document.text[start:end]`, within one block of it."""

    document: int  # index into the collection's documents
    start: int
    end: int
    block: int  # which block of the document


def kind_of(path: Path) -> str:
    """The reader a file goes to, by its suffix."""
    name = path.name.lower()
    if name.endswith(SQUAD_SUFFIXES):
        return "squad"
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise DocumentError(
        f"{path}: unsupported document type {suffix!r} (supported: .txt, .md, .markdown, .html, "
        ".htm, SQuAD .json / .json.gz)"
    )


def find_documents(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, folders searched recursively for supported suffixes (sorted)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and _supported(p))
            if not inside:
                raise DocumentError(f"{path}: folder holds no supported documents")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such document or folder")
    return found


def _supported(path: Path) -> bool:
    try:
        kind_of(path)
    except DocumentError:
        return False
    return not path.name.startswith(".")


def read_documents(path: str | Path) -> list[Document]:
    """Every document of one file (a SQuAD file gives one per article)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "squad":
        return squad_documents(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DocumentError(f"{path}: cannot read: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DocumentError(
            f"{path}: not UTF-8 text (byte {err.start}: {raw[err.start : err.start + 1]!r})"
        ) from err
    if kind == "html":
        text, blocks = html_text(text)
    else:
        blocks = tuple((m.start(), m.end()) for m in _BLOCK.finditer(text))
    return [Document(str(path), path.name, kind, text, blocks)]


def squad_documents(path: Path) -> list[Document]:
    """One document per article of a SQuAD v1.1 / v2.0 file; its contexts are the blocks."""
    from squadqa.data import SquadFormatError, read_json_file

    try:
        doc = read_json_file(path, str(path))
    except OSError as err:
        raise DocumentError(f"{path}: cannot read: {err.strerror or err}") from err
    except SquadFormatError as err:
        raise DocumentError(str(err)) from err
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise DocumentError(f"{path}: not a SQuAD file (no top-level 'data' list)")
    documents = []
    for i, article in enumerate(data):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DocumentError(f"{path}: data[{i}] has no 'paragraphs' list")
        contexts = []
        for j, paragraph in enumerate(paragraphs):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise DocumentError(f"{path}: data[{i}] paragraphs[{j}] has no 'context' string")
            contexts.append(context)
        title = article.get("title")
        documents.append(_joined(str(path), title if isinstance(title, str) else str(i), contexts))
    return documents


def _joined(source: str, title: str, parts: Sequence[str], kind: str = "squad") -> Document:
    """A document whose blocks are `parts`, joined by a blank line."""
    blocks, offset = [], 0
    for part in parts:
        blocks.append((offset, offset + len(part)))
        offset += len(part) + 2
    return Document(source, title, kind, "\n\n".join(parts), tuple(blocks))


class _VisibleText(HTMLParser):
    """Collects the visible text of an HTML page, one string per block-level element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._current: list[str] = []
        self._skipping = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._current).split())
        if text:
            self.blocks.append(text)
        self._current = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _HTML_SKIP_TAGS:
            self._skipping += 1
        elif tag in _HTML_BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_SKIP_TAGS:
            self._skipping = max(self._skipping - 1, 0)
        elif tag in _HTML_BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._current.append(data)


def html_text(html: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The visible text of an HTML page and its blocks (one per block-level element)."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    parser._flush()
    document = _joined("", "", parser.blocks)
    return document.text, document.blocks


def split_block(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """`text[start:end]` in pieces of at most `max_chars`, cut after a sentence end where there
    is one (else at whitespace, else hard); surrounding whitespace is left out of every piece."""
    if max_chars < 1:
        raise ValueError(f"max_chars={max_chars} must be at least 1")
    while start < end:
        while start < end and text[start].isspace():
            start += 1
        if start == end:
            return
        if end - start <= max_chars:
            cut = end
        else:
            window = text[start : start + max_chars + 1]
            ends = [m.end() - 1 for m in _SENTENCE_END.finditer(window)]
            spaces = [i for i in range(len(window) - 1, 0, -1) if window[i].isspace()][:1]
            cut = start + (ends[-1] if ends else spaces[0] if spaces else max_chars)
        piece_end = cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        yield start, piece_end
        start = cut


def passages_of(
    document: Document, index: int, max_chars: int = DEFAULT_MAX_CHARS
) -> list[Passage]:
    """The passages of `document` (which is `index` in its collection)."""
    return [
        Passage(index, start, end, b)
        for b, (block_start, block_end) in enumerate(document.blocks)
        for start, end in split_block(document.text, block_start, block_end, max_chars)
    ]
