"""Start/end logits of every window of an example → its answer.

The ONE home of span selection: training-time evaluation, `squadqa predict`, `squadqa answer` and
the server all call `extract_answers`, so what is evaluated is what is served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squadqa import rundir
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
        0.0,
        'SQuAD 2.0: answer "" when the null score beats the best span by more than this '
        "(a trained run serves the threshold it chose on dev, eval.json's best_f1_thresh)",
    )
    temperature: float = setting(
        1.0,
        "span scores are divided by this before the softmax that gives each candidate's "
        "probability (ranking unchanged); a run serves the one `squadqa calibrate` fitted",
    )

    no_answer_temperature: float = setting(
        1.0,
        'SQuAD 2.0: temperature of the probability that "no answer" is right (no_answer_candidate '
        "in the softmax); a run serves the one `squadqa calibrate` fitted",
    )

    def __post_init__(self) -> None:
        for name in ("temperature", "no_answer_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"postprocess.{name}={getattr(self, name)} must be > 0")


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
    # min over windows of the CLS start+end logit, minus the best span's score (no span: minus 0)
    null_scores: dict[str, float]

    def best_spans(self) -> dict[str, str]:
        """The best span of every question, whatever its null score (what a v2.0 threshold
        sweep needs)."""
        return {qid: ranked[0].text if ranked else "" for qid, ranked in self.nbest.items()}

    def at_threshold(self, threshold: float) -> Predictions:
        """These predictions with SQuAD 2.0's rule at another threshold: "" where the null score
        beats the best span by more than `threshold`."""
        answers = {
            qid: "" if self.null_scores[qid] > threshold else span
            for qid, span in self.best_spans().items()
        }
        return Predictions(answers, self.nbest, self.null_scores)

    def is_no_answer(self, qid: str, config: SpanConfig) -> bool:
        """Whether `qid` is answered "no answer": no span at all, or (SQuAD 2.0) the null score
        above the threshold."""
        return not self.nbest[qid] or (
            config.version_2 and self.null_scores[qid] > config.null_threshold
        )

    def no_answer_probability(self, qid: str, config: SpanConfig) -> float | None:
        """SQuAD 2.0: the probability that "no answer" is right, the softmax share of
        `no_answer_candidate` beside the n-best spans at `config.no_answer_temperature`; None
        for v1.1 runs and for a question without any span (no answer by rule)."""
        ranked = self.nbest[qid]
        if not config.version_2 or not ranked:
            return None
        scores = np.array([c.score for c in ranked], dtype=np.float64)
        null = no_answer_candidate(scores[0], self.null_scores[qid], config.null_threshold)
        return float(softmax(np.concatenate([[null], scores]), config.no_answer_temperature)[0])

    def save(self, directory: str | Path) -> None:
        """`predictions.json` (official format), `nbest_predictions.json`, `null_odds.json`."""
        directory = Path(directory)
        rundir.write_json(directory / rundir.PREDICTIONS, self.answers)
        rundir.write_json(
            directory / rundir.NBEST,
            {k: [c.to_dict() for c in v] for k, v in self.nbest.items()},
        )
        rundir.write_json(directory / rundir.NULL_ODDS, self.null_scores)


def no_answer_candidate(best_score: float, null_odds: float, null_threshold: float) -> float:
    """The score of "no answer" as one more candidate beside the spans: the best span's score
    plus the null odds minus the threshold, so it ranks first exactly when the run answers "no
    answer" (`squadqa calibrate` fits its temperature on the same score)."""
    return best_score + null_odds - null_threshold


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


@dataclass(frozen=True)
class TopProbabilityMap:
    """`squadqa calibrate`'s isotonic map: the top answer's probability at the run's temperature
    -> the chance that it is exactly right, piecewise linear through the knots (`tempered`
    increasing, `calibrated` non-decreasing), flat beyond the first and last knot.

    Example:
        >>> TopProbabilityMap(tempered=(0.2, 0.8), calibrated=(0.1, 0.5))(0.5)
        0.3
    """

    tempered: tuple[float, ...]
    calibrated: tuple[float, ...]

    def __post_init__(self) -> None:
        x, y = np.asarray(self.tempered), np.asarray(self.calibrated)
        if not len(x) or len(x) != len(y):
            raise ValueError(f"isotonic map: {len(x)} tempered and {len(y)} calibrated knots")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
            raise ValueError(
                "isotonic map: knots must rise (tempered strictly, calibrated never falling)"
            )
        if x[0] < 0 or x[-1] > 1 or y[0] < 0 or y[-1] > 1:
            raise ValueError("isotonic map: knots must be probabilities in [0, 1]")

    def __call__(self, probability: float) -> float:
        return float(np.interp(probability, self.tempered, self.calibrated))


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of scores / temperature (a stable one: the largest is subtracted first)."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    p = np.exp(z - z.max())
    return p / p.sum()


def _shares_with_top(scores: np.ndarray, top: float) -> np.ndarray:
    """Probabilities whose best candidate has exactly `top`; the others share the rest as the
    softmax at the one temperature that gives the best `top` (bisection on log T: the best's
    share falls as T rises). Where no temperature can (`top` below 1/n, or one candidate), they
    take the nearest and are capped at `top`, so none outranks the answer."""
    best = int(np.argmax(scores))
    lo, hi = math.log(1e-3), math.log(1e3)
    for _ in range(40):
        mid = (lo + hi) / 2
        if softmax(scores, math.exp(mid))[best] > top:
            lo = mid  # too sharp: a higher temperature
        else:
            hi = mid
    probs = np.minimum(softmax(scores, math.exp((lo + hi) / 2)), top)
    probs[best] = top
    return probs


def with_probabilities(
    candidates: list[Candidate], temperature: float, top_map: TopProbabilityMap | None = None
) -> list[Candidate]:
    """The candidates with `probability` = softmax of score / temperature over this list (the
    n-best of one example, or every passage's candidates in `squadqa ask`); with `top_map` the
    best candidate's probability is mapped by it and the others share the rest
    (`_shares_with_top`). Ranking never changes."""
    if not candidates:
        return candidates
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    probs = softmax(scores, temperature)
    if top_map is not None:
        probs = _shares_with_top(scores, top_map(float(probs.max())))
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
    top_map: TopProbabilityMap | None = None,
) -> Predictions:
    """Best answer per example over all its windows (probabilities by `with_probabilities`).

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
        ranked = with_probabilities(ranked, config.temperature, top_map)
        nbest[example.id] = ranked
        # No window, or no valid span (a context without tokens): finite, so JSON stays valid;
        # such a question is "no answer" whatever its null score (`is_no_answer`).
        if not per_example[e]:
            null_scores[example.id] = 0.0
        else:
            null_scores[example.id] = float(null_score - (ranked[0].score if ranked else 0.0))
        answers[example.id] = ranked[0].text if ranked else ""
    predictions = Predictions(answers=answers, nbest=nbest, null_scores=null_scores)
    return predictions.at_threshold(config.null_threshold) if config.version_2 else predictions
