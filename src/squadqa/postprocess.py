"""Start/end logits of every window of an example → its answer.

The ONE home of span selection: training-time evaluation, `squadqa predict`, `squadqa answer` and
the server all call `extract_answers`, so what is evaluated is what is served.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squadqa.data import Example
from squadqa.features import CLS_INDEX, Features
from squadqa.settings import setting


@dataclass(frozen=True)
class SpanConfig:
    """How answers are chosen (BERT / `run_qa.py` defaults)."""

    n_best: int = setting(20, "start and end logits considered per window")
    max_answer_length: int = setting(30, "longest answer, in tokens")
    version_2: bool = setting(False, "SQuAD 2.0: the answer may be empty (no answer)")
    null_threshold: float = setting(
        0.0, 'SQuAD 2.0: answer "" when the null score beats the best span by more than this'
    )


@dataclass(frozen=True)
class Candidate:
    text: str
    start: int  # character offsets in the context, end exclusive
    end: int
    score: float
    start_logit: float
    end_logit: float
    probability: float = 0.0

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "score": self.score,
            "start_logit": self.start_logit,
            "end_logit": self.end_logit,
            "probability": self.probability,
        }


@dataclass
class Predictions:
    """Best answer, n-best list and null score per example id."""

    answers: dict[str, str]
    nbest: dict[str, list[Candidate]]
    null_scores: dict[str, float]  # min over windows of CLS start+end logit; minus best span

    def save(self, directory: str | Path) -> None:
        """`predictions.json` (official format), `nbest_predictions.json`, `null_odds.json`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "predictions.json", self.answers)
        write_json(
            directory / "nbest_predictions.json",
            {k: [c.to_dict() for c in v] for k, v in self.nbest.items()},
        )
        write_json(directory / "null_odds.json", self.null_scores)


def write_json(path: Path, obj: object) -> None:
    """Atomic JSON write: a reader (or a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def window_candidates(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    context: str,
    config: SpanConfig,
) -> list[Candidate]:
    """The n-best spans of one window: context tokens only, end >= start, bounded length."""
    n = len(offsets)
    start_logits, end_logits = start_logits[:n], end_logits[:n]
    in_context = np.flatnonzero(offsets[:, 0] >= 0)
    k = config.n_best
    starts = in_context[np.argsort(-start_logits[in_context], kind="stable")[:k]]
    ends = in_context[np.argsort(-end_logits[in_context], kind="stable")[:k]]
    scores = start_logits[starts][:, None] + end_logits[ends][None, :]
    span_length = ends[None, :] - starts[:, None] + 1
    valid = np.flatnonzero((span_length >= 1) & (span_length <= config.max_answer_length))
    best = valid[np.argsort(-scores.flat[valid], kind="stable")[:k]]
    found = []
    for flat in best:
        s, e = starts[flat // len(ends)], ends[flat % len(ends)]
        c_start, c_end = int(offsets[s, 0]), int(offsets[e, 1])
        found.append(
            Candidate(
                text=context[c_start:c_end],
                start=c_start,
                end=c_end,
                score=float(start_logits[s] + end_logits[e]),
                start_logit=float(start_logits[s]),
                end_logit=float(end_logits[e]),
            )
        )
    return found


def _with_probabilities(candidates: list[Candidate]) -> list[Candidate]:
    if not candidates:
        return candidates
    scores = np.array([c.score for c in candidates])
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    return [
        Candidate(c.text, c.start, c.end, c.score, c.start_logit, c.end_logit, float(p))
        for c, p in zip(candidates, probs, strict=True)
    ]


def extract_answers(
    examples: Sequence[Example],
    features: Features,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    config: SpanConfig = SpanConfig(),
) -> Predictions:
    """Best answer per example over all its windows.

    `start_logits[i]` / `end_logits[i]` are feature i's logits (any padding beyond the feature's
    length is ignored). Every example gets an entry; one with no valid span answers "".
    """
    if not len(start_logits) == len(end_logits) == len(features):
        raise ValueError(
            f"got {len(start_logits)} start and {len(end_logits)} end logit rows for "
            f"{len(features)} features"
        )
    per_example: list[list[int]] = [[] for _ in examples]
    for f, e in enumerate(features.example_index):
        per_example[e].append(f)

    answers: dict[str, str] = {}
    nbest: dict[str, list[Candidate]] = {}
    null_scores: dict[str, float] = {}
    for e, example in enumerate(examples):
        candidates: list[Candidate] = []
        null_score = np.inf
        for f in per_example[e]:
            s_logits = np.asarray(start_logits[f], dtype=np.float64)
            e_logits = np.asarray(end_logits[f], dtype=np.float64)
            null_score = min(null_score, s_logits[CLS_INDEX] + e_logits[CLS_INDEX])
            candidates.extend(
                window_candidates(s_logits, e_logits, features.offsets[f], example.context, config)
            )
        # The same span can come from two overlapping windows: keep its best score once.
        best: dict[tuple[int, int], Candidate] = {}
        for c in candidates:
            if (c.start, c.end) not in best or c.score > best[(c.start, c.end)].score:
                best[(c.start, c.end)] = c
        ranked = sorted(best.values(), key=lambda c: -c.score)[: config.n_best]
        ranked = _with_probabilities(ranked)
        nbest[example.id] = ranked
        best_score = ranked[0].score if ranked else -np.inf
        answer = ranked[0].text if ranked else ""
        null_diff = float(null_score - best_score) if per_example[e] else 0.0
        if config.version_2 and null_diff > config.null_threshold:
            answer = ""
        answers[example.id] = answer
        null_scores[example.id] = null_diff
    return Predictions(answers=answers, nbest=nbest, null_scores=null_scores)
