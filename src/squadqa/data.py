"""SQuAD v1.1 / v2.0 data: read, validate, repair and write (downloads: `squadqa.download`).

Everything downstream (features, evaluation, training) trusts that an `Example`'s answers are
exact substrings of its context at their `answer_start`. This module is the one place that
checks it, so a bad file fails here with a message naming the record, not later as a silent
label error. Official files are read unchanged, plain or gzipped.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from squadqa.rundir import write_atomic
from squadqa.settings import is_int

__all__ = [
    "Answer",
    "DataStats",
    "Example",
    "SquadData",
    "SquadFormatError",
    "default_cache_dir",
    "examples_from_hf_rows",
    "gold_answers",
    "load_hf_squad",
    "load_squad",
    "read_json_file",
    "sample_path",
    "write_squad",
]

_GZIP_MAGIC = b"\x1f\x8b"


class SquadFormatError(ValueError):
    """A SQuAD file or record is malformed; the message names file, article, question and field."""


@dataclass(frozen=True)
class Answer:
    """One gold answer span: `context[answer_start:answer_start + len(text)] == text`."""

    text: str
    answer_start: int


@dataclass(frozen=True)
class Example:
    """One question on one context. SQuAD 2.0 unanswerable: `answers == ()`, `is_impossible`."""

    id: str
    title: str
    context: str
    question: str
    answers: tuple[Answer, ...]
    is_impossible: bool = False


@dataclass(frozen=True)
class DataStats:
    """Counts of what was loaded (after `max_samples` and rejections), for logs and reports.

    The first six fields are the contract of docs/design.md; `source`, `version` and
    `unanswerable` only feed `summary()`.
    """

    articles: int
    paragraphs: int
    questions: int
    answers: int
    repaired: int
    rejected: int
    source: str = ""
    version: str = ""
    unanswerable: int = 0

    def summary(self) -> str:
        """One line, e.g. `train.json.gz: SQuAD v1.1, 44 articles, ... 0 repaired, 0 rejected`."""
        head = f"{self.source}: " if self.source else ""
        ver = f"SQuAD v{self.version}, " if self.version else ""
        questions = f"{self.questions} questions"
        if self.unanswerable:
            questions += f" ({self.unanswerable} unanswerable)"
        return (
            f"{head}{ver}{self.articles} articles, {self.paragraphs} paragraphs, {questions}, "
            f"{self.answers} answers, {self.repaired} repaired, {self.rejected} rejected"
        )


@dataclass
class SquadData:
    """A loaded data set: its examples, their counts and a record of every change made.

    `repairs` lists each moved `answer_start` (one line per answer, counted in
    `stats.repaired`) and `problems` each question dropped under `skip_invalid`, both naming
    the record, so nothing is changed or dropped silently.
    """

    path: Path | str
    version: str
    examples: list[Example]
    stats: DataStats
    repairs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Same as `stats.summary()`."""
        return self.stats.summary()


def default_cache_dir() -> Path:
    """`$SQUADQA_CACHE`, else `~/.cache/squadqa`."""
    env = os.environ.get("SQUADQA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "squadqa"


def sample_path() -> Path:
    """The bundled 3-article v1.1 train sample, so quickstart and tests need no download."""
    return Path(__file__).parent / "sample" / "squad-v1.1-sample.json.gz"


def data_path(path: str | Path) -> Path:
    """A data file named on the command line or in a config: `"sample"` is the bundled sample."""
    return sample_path() if str(path) == "sample" else Path(path)


# --------------------------------------------------------------------------------------------
# Validation of one question (shared by the JSON reader and the Hugging Face rows converter)


class _Problem(Exception):
    """A problem inside one question; the caller adds the location and raises or records it."""

    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(field_name, detail)
        self.field = field_name
        self.detail = detail


def _short(value: Any, limit: int = 60) -> str:
    """repr() of a value, cut so a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _nearest(context: str, text: str, start: int) -> int:
    """Offset of the occurrence of `text` in `context` nearest `start` (-1 when absent)."""
    best = -1
    pos = context.find(text)
    while pos != -1:
        if best == -1 or abs(pos - start) < abs(best - start):
            best = pos
        elif pos > start:
            break  # occurrences only get farther from here on
        pos = context.find(text, pos + 1)
    return best


def _parse_question(
    qa: Any, context: str, strict: bool, repairs: list[tuple[str, int, int, str]]
) -> tuple[str, tuple[Answer, ...], bool]:
    """Validate one official `qas` entry; return (question, answers, is_impossible).

    Raises `_Problem` for anything wrong. A misplaced `answer_start` whose text occurs in the
    context is moved to the nearest occurrence and appended to `repairs` (unless `strict`).
    `id` is checked by the caller first, so that every message can name it.
    """
    question = qa.get("question")
    if question is None:
        raise _Problem("question", "is missing")
    if not isinstance(question, str):
        raise _Problem("question", f"= {_short(question)} is not a string")
    if not question:
        raise _Problem("question", "is empty")

    is_impossible = qa.get("is_impossible", False)
    if not isinstance(is_impossible, bool):
        raise _Problem("is_impossible", f"= {_short(is_impossible)} is not true/false")

    raw_answers = qa.get("answers")
    if raw_answers is None:
        raise _Problem("answers", "is missing")
    if not isinstance(raw_answers, list):
        raise _Problem("answers", f"is a {type(raw_answers).__name__}, not a list")
    if is_impossible:
        if raw_answers:
            raise _Problem(
                "answers",
                f"has {len(raw_answers)} answers but 'is_impossible' is true "
                "(unanswerable questions have none; see 'plausible_answers')",
            )
        return question, (), True
    if not raw_answers:
        raise _Problem("answers", "is empty for an answerable question")

    answers: list[Answer] = []
    for n, ans in enumerate(raw_answers):
        where = f"answers[{n}]"
        if not isinstance(ans, dict):
            raise _Problem(where, f"is a {type(ans).__name__}, not an object")
        text = ans.get("text")
        if text is None:
            raise _Problem(f"{where}.text", "is missing")
        if not isinstance(text, str):
            raise _Problem(f"{where}.text", f"= {_short(text)} is not a string")
        if not text:
            raise _Problem(f"{where}.text", "is empty")
        start = ans.get("answer_start")
        if start is None:
            raise _Problem(f"{where}.answer_start", "is missing")
        if not is_int(start):
            raise _Problem(f"{where}.answer_start", f"= {_short(start)} is not an integer")
        if start < 0:
            raise _Problem(f"{where}.answer_start", f"= {start} is negative")
        if start >= len(context):
            raise _Problem(
                f"{where}.answer_start",
                f"= {start} is out of range for a context of {len(context)} characters",
            )
        if context.startswith(text, start):
            answers.append(Answer(text, start))
            continue
        found = _nearest(context, text, start)
        there = _short(context[start : start + len(text)])
        if found == -1:
            raise _Problem(
                f"{where}.text",
                f"= {_short(text)} does not occur in the context "
                f"(at answer_start {start} the context has {there})",
            )
        if strict:
            raise _Problem(
                f"{where}.answer_start",
                f"= {start} does not point at the answer text {_short(text)} (the context has "
                f"{there} there; the text occurs at {found}; strict=True forbids repairs)",
            )
        repairs.append((f"{where}.answer_start", start, found, text))
        answers.append(Answer(text, found))
    return question, tuple(answers), False


def _check_id(qa: Any) -> str:
    """The question's `id`, checked first so that later messages can name the question."""
    if not isinstance(qa, dict):
        raise _Problem("", f"is a {type(qa).__name__}, not an object")
    qid = qa.get("id")
    if qid is None:
        raise _Problem("id", "is missing")
    if not isinstance(qid, str):
        raise _Problem("id", f"= {_short(qid)} is not a string")
    if not qid:
        raise _Problem("id", "is empty")
    return qid


class _Collector:
    """Accumulates examples, counts, repairs and rejections for one load."""

    def __init__(self, source: str, strict: bool, skip_invalid: bool) -> None:
        self.source = source
        self.strict = strict
        self.skip_invalid = skip_invalid
        self.examples: list[Example] = []
        self.repairs: list[str] = []
        self.problems: list[str] = []
        self.seen: dict[str, str] = {}
        self.articles: set[Any] = set()
        self.paragraphs: set[Any] = set()
        self.n_answers = 0
        self.n_unanswerable = 0

    def fail(self, where: str, field_name: str, detail: str) -> SquadFormatError:
        """The error for a record-level problem (always raised)."""
        fld = f"field {field_name!r} " if field_name else ""
        return SquadFormatError(f"{self.source}: {where}: {fld}{detail}")

    def add(
        self, qa: Any, title: str, context: str, where: str, article_key: Any, para_key: Any
    ) -> None:
        """Validate one question at `where` and keep it, or raise / record why it was dropped."""
        try:
            qid = _check_id(qa)
        except _Problem as p:
            self._reject(where, p)
            return
        where = f"{where} id={qid!r}"
        fixes: list[tuple[str, int, int, str]] = []
        try:
            if qid in self.seen:
                raise _Problem("id", f"= {qid!r} is a duplicate of {self.seen[qid]}")
            question, answers, impossible = _parse_question(qa, context, self.strict, fixes)
        except _Problem as p:
            self._reject(where, p)
            return
        self.seen[qid] = where
        for fld, old, new, text in fixes:
            self.repairs.append(
                f"{self.source}: {where}: field {fld!r} = {old} moved to {new}, the occurrence "
                f"of {_short(text)} nearest to it"
            )
        self.examples.append(Example(qid, title, context, question, answers, impossible))
        self.articles.add(article_key)
        self.paragraphs.add(para_key)
        self.n_answers += len(answers)
        self.n_unanswerable += impossible

    def _reject(self, where: str, p: _Problem) -> None:
        err = self.fail(where, p.field, p.detail)
        if not self.skip_invalid:
            raise err
        self.problems.append(str(err))

    def result(self, path: Path | str, version: str, name: str) -> SquadData:
        stats = DataStats(
            articles=len(self.articles),
            paragraphs=len(self.paragraphs),
            questions=len(self.examples),
            answers=self.n_answers,
            repaired=len(self.repairs),
            rejected=len(self.problems),
            source=name,
            version=version,
            unanswerable=self.n_unanswerable,
        )
        return SquadData(path, version, self.examples, stats, self.repairs, self.problems)


# --------------------------------------------------------------------------------------------
# Official JSON files


def read_json_file(path: Path, source: str) -> Any:
    """Parse a plain or gzipped JSON file; gzip is recognised by its magic bytes, not its name."""
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise SquadFormatError(f"{source}: not a valid gzip file: {e}") from e
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise SquadFormatError(
            f"{source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})"
        ) from e
    except UnicodeDecodeError as e:
        raise SquadFormatError(f"{source}: not UTF-8 JSON text: {e}") from e


def _version_of(doc: dict[str, Any], source: str) -> str | None:
    """'2.0' or '1.1' from the file's `version` ('1.1', 'v2.0'); None if absent or unknown."""
    version = doc.get("version")
    if version is None:
        return None
    if not isinstance(version, str):
        raise SquadFormatError(f"{source}: field 'version' = {_short(version)} is not a string")
    v = version.strip().lstrip("vV")
    if v.startswith("2"):
        return "2.0"
    if v.startswith("1"):
        return "1.1"
    return None


def load_squad(
    path: str | os.PathLike[str],
    *,
    max_samples: int | None = None,
    max_articles: int | None = None,
    strict: bool = False,
    skip_invalid: bool = False,
) -> SquadData:
    """Read and validate an official SQuAD v1.1 / v2.0 JSON file (plain or gzipped).

    `path` may be `"sample"` for the bundled sample. `max_samples` keeps the first N valid
    questions in file order (the rest of the file is not validated); `max_articles` the first N
    articles, so that growing N gives nested subsets (each one a superset of the last). A misplaced
    `answer_start` whose text occurs in the context is moved to the nearest occurrence and
    listed in `repairs`; `strict=True` raises instead. With `skip_invalid=True` a question
    with any problem is dropped and listed in `problems`; without it the first problem raises
    `SquadFormatError`. Problems outside questions (JSON, file, article, paragraph) always raise.
    """
    if max_samples is not None and max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    if max_articles is not None and max_articles < 0:
        raise ValueError(f"max_articles must be >= 0, got {max_articles}")
    p = data_path(path)
    source = str(p)
    doc = read_json_file(p, source)
    if not isinstance(doc, dict):
        raise SquadFormatError(
            f"{source}: top level is a {type(doc).__name__}, not an object with a 'data' list"
        )
    data = doc.get("data")
    if data is None:
        raise SquadFormatError(f"{source}: field 'data' is missing at the top level")
    if not isinstance(data, list):
        raise SquadFormatError(f"{source}: field 'data' is a {type(data).__name__}, not a list")
    version = _version_of(doc, source)
    col = _Collector(source, strict, skip_invalid)
    saw_impossible = False
    for i, article in enumerate(data):
        if max_samples is not None and len(col.examples) >= max_samples:
            break
        if max_articles is not None and i >= max_articles:
            break
        if not isinstance(article, dict):
            raise col.fail(f"data[{i}]", "", f"is a {type(article).__name__}, not an object")
        title = article.get("title", "")
        if not isinstance(title, str):
            raise col.fail(f"data[{i}]", "title", f"= {_short(title)} is not a string")
        art = f"data[{i}] {title!r}"
        paragraphs = article.get("paragraphs")
        if paragraphs is None:
            raise col.fail(art, "paragraphs", "is missing")
        if not isinstance(paragraphs, list):
            raise col.fail(art, "paragraphs", f"is a {type(paragraphs).__name__}, not a list")
        for j, para in enumerate(paragraphs):
            if max_samples is not None and len(col.examples) >= max_samples:
                break
            pw = f"{art} paragraphs[{j}]"
            if not isinstance(para, dict):
                raise col.fail(pw, "", f"is a {type(para).__name__}, not an object")
            context = para.get("context")
            if context is None:
                raise col.fail(pw, "context", "is missing")
            if not isinstance(context, str):
                raise col.fail(pw, "context", f"= {_short(context)} is not a string")
            if not context:
                raise col.fail(pw, "context", "is empty")
            qas = para.get("qas")
            if qas is None:
                raise col.fail(pw, "qas", "is missing")
            if not isinstance(qas, list):
                raise col.fail(pw, "qas", f"is a {type(qas).__name__}, not a list")
            for k, qa in enumerate(qas):
                if max_samples is not None and len(col.examples) >= max_samples:
                    break
                if isinstance(qa, dict) and "is_impossible" in qa:
                    saw_impossible = True
                col.add(qa, title, context, f"{pw} qas[{k}]", i, (i, j))
    if version is None:
        version = "2.0" if saw_impossible else "1.1"
    return col.result(p, version, p.name)


def spread(examples: Sequence[Example], n: int) -> list[Example]:
    """`n` of `examples` at an even stride, in order (all of them when there are no more): a
    subset that spans the file's articles, where the first `n` would be one or two."""
    if n >= len(examples):
        return list(examples)
    return [examples[i * len(examples) // n] for i in range(n)]


def gold_answers(examples: Iterable[Example]) -> dict[str, list[str]]:
    """id -> gold answer texts (all annotators; `[]` for unanswerable), as evaluation wants."""
    return {ex.id: [a.text for a in ex.answers] for ex in examples}


def write_squad(
    examples: Iterable[Example],
    path: str | os.PathLike[str],
    version: Literal["1.1", "2.0"] = "1.1",
) -> Path:
    """Write examples in the official format (gzipped if the name ends in `.gz`); returns path.

    Questions are grouped by title, then by context, in first-appearance order, so a file
    written from `load_squad` output loads back to equal examples, and subsets can be saved.
    """
    v = version.lstrip("vV")
    if v not in ("1.1", "2.0"):
        raise ValueError(f"version must be '1.1' or '2.0', got {version!r}")
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ex in examples:
        if v == "1.1" and (ex.is_impossible or not ex.answers):
            raise ValueError(
                f"example id={ex.id!r} has no answer; SQuAD v1.1 cannot hold it (use version='2.0')"
            )
        qa: dict[str, Any] = {
            "answers": [{"answer_start": a.answer_start, "text": a.text} for a in ex.answers],
            "question": ex.question,
            "id": ex.id,
        }
        if v == "2.0":
            qa["is_impossible"] = ex.is_impossible
        articles.setdefault(ex.title, {}).setdefault(ex.context, []).append(qa)
    doc = {
        "version": "1.1" if v == "1.1" else "v2.0",
        "data": [
            {
                "title": title,
                "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()],
            }
            for title, paragraphs in articles.items()
        ],
    }
    out = Path(path)
    payload = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    if out.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    write_atomic(out, lambda tmp: tmp.write_bytes(payload))
    return out


# --------------------------------------------------------------------------------------------
# Hugging Face `datasets`


def examples_from_hf_rows(
    rows: Iterable[Mapping[str, Any]],
    source: str,
    *,
    version: Literal["1.1", "2.0"] | None = None,
    max_samples: int | None = None,
    max_articles: int | None = None,
    strict: bool = False,
    skip_invalid: bool = False,
) -> SquadData:
    """Convert Hugging Face SQuAD rows to validated examples, with the checks of `load_squad`.

    Rows are `{id, title, context, question, answers: {text: [...], answer_start: [...]}}`.
    `version` defaults to '2.0' when `source` names a v2 set (e.g. 'squad_v2'), in which case
    rows with no answers are unanswerable; in v1.1 they are errors. Messages name the row.
    """
    if max_samples is not None and max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    if max_articles is not None and max_articles < 0:
        raise ValueError(f"max_articles must be >= 0, got {max_articles}")
    v = (version or ("2.0" if "v2" in source.lower() else "1.1")).lstrip("vV")
    col = _Collector(source, strict, skip_invalid)
    titles_seen, last_title = 0, object()  # an article is a run of rows with one title
    for n, row in enumerate(rows):
        if max_samples is not None and len(col.examples) >= max_samples:
            break
        title = row.get("title", "") if isinstance(row, Mapping) else None
        if title != last_title:
            titles_seen, last_title = titles_seen + 1, title
        if max_articles is not None and titles_seen > max_articles:
            break
        where = f"row {n}"
        try:
            if not isinstance(row, Mapping):
                raise _Problem("", f"is a {type(row).__name__}, not a mapping")
            title = row.get("title", "")
            if not isinstance(title, str):
                raise _Problem("title", f"= {_short(title)} is not a string")
            where = f"row {n} title={title!r}"
            context = row.get("context")
            if context is None:
                raise _Problem("context", "is missing")
            if not isinstance(context, str) or not context:
                raise _Problem("context", f"= {_short(context)} is not a non-empty string")
            qa = {"id": row.get("id"), "question": row.get("question")}
            ans = row.get("answers")
            if ans is None:
                raise _Problem("answers", "is missing")
            if not isinstance(ans, Mapping):
                raise _Problem("answers", f"is a {type(ans).__name__}, not a mapping")
            texts, starts = ans.get("text"), ans.get("answer_start")
            for name, seq in (("answers.text", texts), ("answers.answer_start", starts)):
                if not isinstance(seq, Sequence) or isinstance(seq, str):
                    raise _Problem(name, f"= {_short(seq)} is not a list")
            texts, starts = cast(Sequence[Any], texts), cast(Sequence[Any], starts)
            if len(texts) != len(starts):
                raise _Problem(
                    "answers", f"has {len(texts)} texts but {len(starts)} answer_start values"
                )
            qa["answers"] = [
                {"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=True)
            ]
            if v == "2.0":
                qa["is_impossible"] = not texts
        except _Problem as p:
            qid = row.get("id") if isinstance(row, Mapping) else None
            if isinstance(qid, str) and qid:
                where = f"{where} id={qid!r}"
            col._reject(where, p)
            continue
        col.add(qa, title, context, where, title, (title, context))
    return col.result(source, v, source)


def load_hf_squad(
    name: str = "squad",
    split: str = "validation",
    *,
    max_samples: int | None = None,
    max_articles: int | None = None,
    strict: bool = False,
    skip_invalid: bool = False,
) -> SquadData:
    """Load SQuAD through Hugging Face `datasets` (optional dependency) with the same checks."""
    try:
        import datasets  # optional: imported only when this path is used
    except ImportError as e:
        raise ImportError(
            "load_hf_squad needs the optional 'datasets' package: pip install 'squadqa[hf]' "
            "(or use load_squad / squadqa.download.download_squad with the official JSON files)"
        ) from e
    rows = datasets.load_dataset(name, split=split)
    return examples_from_hf_rows(
        rows,
        f"{name}/{split}",
        max_samples=max_samples,
        max_articles=max_articles,
        strict=strict,
        skip_invalid=skip_invalid,
    )
