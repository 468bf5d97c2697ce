"""`squadqa evaluate-open --cache FILE`: the reader's spans of each (question, passage) pair,
appended as they are read, so a killed evaluation resumes where it stopped and a finished one
re-aggregates its rows without reading anything again.

JSON lines. The first is the header: the SHA-256 of what a reading depends on (the reader, the
SQuAD file, the collection's passages), so that readings of another reader, file or passage set
are refused, naming the file, instead of being mixed in. Then one line per pair::

    {"id": question id, "passage": index in the collection (-1: the question's own paragraph),
     "seconds": its share of its batch's reading time,
     "spans": [[start, end, score, start_logit, end_logit], ...]}

`spans`: the reader's n-best in that text, best first (`[]`: it answers "no answer" there);
character offsets into the passage, whose text gives each span's text back; `score` relative to
the passage's null score, as `read_passages` gives it (version 2; version 1 kept raw scores).
A line cut short by a kill is dropped when the file is opened again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squadqa.postprocess import Candidate
from squadqa.rundir import append_jsonl

FORMAT = "squadqa-evaluate-open-reads"
VERSION = 2  # 2: scores relative to the passage's null score (`read_passages`)
OWN_PARAGRAPH = -1  # the passage index of a question's own SQuAD paragraph
# What the header keys, each by a name and `NAME_sha256`, in the words of a refusal.
KEYED = {"reader": "reader", "data": "SQuAD file", "passages": "passage set"}


class ReadsFileError(ValueError):
    """A reads file that cannot be used here; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Reading:
    """The reader's spans for one question in one text, and the seconds they took."""

    spans: list[list[float]]  # [start, end, score, start_logit, end_logit], best first
    seconds: float

    @classmethod
    def of(cls, candidates: Sequence[Candidate], seconds: float) -> Reading:
        return cls(
            [[c.start, c.end, c.score, c.start_logit, c.end_logit] for c in candidates], seconds
        )

    def candidates(self, text: str) -> list[Candidate]:
        """The spans as `Candidate`s of `text` (the text they were read in). Their probability
        is left 0: `answer_from` computes it over all passages."""
        return [
            Candidate(text[int(s) : int(e)], int(s), int(e), score, start_logit, end_logit)
            for s, e, score, start_logit, end_logit in self.spans
        ]


def sha256_of(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))  # no two sequences hash alike
        digest.update(part)
    return digest.hexdigest()


def reader_digest(predictor: Any) -> str:
    """What a reading depends on: the model (its ONNX file, or a Keras model's config and
    weights), tokenizer, windows and span choice. Not the temperatures: `answer_from` applies
    them, so a run calibrated later keeps its readings."""
    model = predictor.model
    if hasattr(model, "get_weights"):  # a Keras model
        config = json.dumps(model.get_config(), sort_keys=True, default=str)
        weights = [config.encode()] + [
            f"{w.dtype}{w.shape}".encode() + np.ascontiguousarray(w).tobytes()
            for w in map(np.asarray, model.get_weights())
        ]
    else:  # an `OnnxModel`: its file
        weights = [Path(model.path).read_bytes()]
    span = dataclasses.replace(predictor.span_config, temperature=1.0, no_answer_temperature=1.0)
    settings = {
        "features": dataclasses.asdict(predictor.feature_config),
        "span": dataclasses.asdict(span),
    }
    return sha256_of(
        [
            type(model).__name__.encode(),
            *weights,
            predictor.tokenizer.fingerprint().encode(),
            json.dumps(settings, sort_keys=True).encode(),
        ]
    )


class ReadsFile:
    """The readings of one evaluation, keyed by (question id, passage); `add` appends."""

    def __init__(self, path: str | Path, header: dict[str, str]) -> None:
        """Open `path` (created if missing) for readings made under `header` (for each key of
        `KEYED`, a name and its `_sha256` digest): an existing file must have the same digests."""
        self.path = Path(path)
        self.readings: dict[tuple[str, int], Reading] = {}
        self.header = {"format": FORMAT, "version": VERSION, **header}
        if not self.path.is_file() or self.path.stat().st_size == 0:
            append_jsonl(self.path, self.header)
            return
        data = self.path.read_bytes()
        try:
            lines = data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise ReadsFileError(f"{self.path}: not UTF-8 (not a reads file)") from None
        # Line 1 first: a file that is not a reads file is refused before anything is cut.
        self._check(_parse(self.path, 1, lines[0]) if len(lines) > 1 else {})
        if lines[-1]:  # a line cut short by a kill: dropped
            with self.path.open("r+b") as f:
                f.truncate(len(data) - len(lines[-1].encode("utf-8")))
        for number, line in enumerate(lines[1:-1], 2):
            record = _parse(self.path, number, line)
            try:
                key = (str(record["id"]), int(record["passage"]))
                reading = Reading(record["spans"], float(record["seconds"]))
                if not all(len(span) == 5 for span in reading.spans):
                    raise ValueError("a span is not [start, end, score, start_logit, end_logit]")
            except (KeyError, TypeError, ValueError) as err:
                raise ReadsFileError(f"{self.path}:{number}: not a reading ({err})") from None
            self.readings[key] = reading

    def _check(self, found: dict[str, Any]) -> None:
        if (found.get("format"), found.get("version")) != (FORMAT, VERSION):
            raise ReadsFileError(
                f"{self.path}: not an evaluate-open reads file of version {VERSION} (line 1)"
            )
        for what, words in KEYED.items():
            digest = self.header[f"{what}_sha256"]
            if found.get(f"{what}_sha256") != digest:
                raise ReadsFileError(
                    f"{self.path}: its readings are of another {words}: {found.get(what)!r} "
                    f"(sha256 {str(found.get(f'{what}_sha256'))[:12]}), not {self.header[what]!r} "
                    f"({digest[:12]}); delete it or name another file"
                )

    def add(self, readings: dict[tuple[str, int], Reading]) -> None:
        """Keep `readings` and append them to the file (one write: a kill loses a batch at most)."""
        self.readings.update(readings)
        append_jsonl(
            self.path,
            *(
                {"id": qid, "passage": p, "seconds": r.seconds, "spans": r.spans}
                for (qid, p), r in readings.items()
            ),
        )


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ReadsFileError(f"{path}:{number}: not JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ReadsFileError(f"{path}:{number}: not a JSON object")
    return record
