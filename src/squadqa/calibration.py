"""`squadqa calibrate RUN`: make the top answer's probability mean what it says.

The probability shown beside an answer is a softmax over its n-best candidates' scores (start +
end logit). Nothing makes 16 % mean "right 16 % of the time": a model trained with cross-entropy
on positions is over- or under-confident about whole spans. Temperature scaling (Guo et al.
2017) divides the scores by one number T before the softmax; T is fitted so that the top
answer's probability predicts whether it is exactly right (EM against the gold answers), by
maximum likelihood on half the dev questions, and judged on the other half: expected calibration
error (ECE, equal-width bins) and Brier score, before (T = 1) and after. Ranking and answers do
not change, only probabilities.

One number cannot bend the curve: a reader can be overconfident at 90 % and underconfident at
40 % at once (the full-data MiniLM, epoch 1: held-out ECE 0.069 at its best temperature). So
with enough questions (`ISOTONIC_MIN_QUESTIONS`; `--method`) an isotonic map (Zadrozny & Elkan
2002) of the tempered top probability is fitted on the same half, by pool adjacent violators, and
stored as knots (`isotonic`); `with_probabilities` applies it where answers are made.

`calibration.json` also keeps the held-out reliability bins before, at the temperature alone (with
the map) and after (per confidence bin: its questions, their mean confidence and their
accuracy), what `squadqa report` draws. For SQuAD 2.0 runs a second temperature is fitted the
same way for the probability that "no answer" is right (`no_answer`; a temperature only): "no
answer" is one more candidate beside the n-best spans, scored by its null score minus the run's
null threshold (so it is the top candidate exactly when the run answers "no answer"), and its
softmax share at the temperature is judged against the question being unanswerable, on every
question with a span.

Everything is read from the run directory (`nbest_predictions.json` and `null_odds.json` of the
best epoch, the dev split of `config.toml`): no model is run. The result is `calibration.json`,
which `QAPredictor.from_run_dir` applies in `answer`, `predict`, `serve` and `ask`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squadqa import rundir
from squadqa.postprocess import TopProbabilityMap, no_answer_candidate, softmax

# Temperatures searched (log-uniform): far beyond what any sane model needs on either side.
T_RANGE = (0.05, 20.0)
ECE_BINS = 10
METHODS = ("auto", "temperature", "isotonic")
# "auto" adds the isotonic map from this many fitting questions on: with fewer, a step function
# fitted to 0/1 outcomes overfits (scikit-learn's calibration guide gives the same advice).
ISOTONIC_MIN_QUESTIONS = 1000


def top_probability(scores: np.ndarray, temperature: float) -> float:
    """The softmax probability of the best-scoring candidate at `temperature`."""
    return float(softmax(scores, temperature).max())


def first_probability(scores: np.ndarray, temperature: float) -> float:
    """The softmax probability of the first candidate at `temperature` (for "no answer", which
    stands first however it ranks)."""
    return float(softmax(scores, temperature)[0])


# A candidate list and a temperature -> the probability judged (top_probability, first_probability)
Probability = Callable[[np.ndarray, float], float]


def _nll(
    score_lists: Sequence[np.ndarray], correct: np.ndarray, temperature: float, prob: Probability
) -> float:
    p = np.array([prob(s, temperature) for s in score_lists])
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(correct * np.log(p) + (1 - correct) * np.log(1 - p)))


def fit_temperature(
    score_lists: Sequence[np.ndarray],
    correct: Sequence[bool],
    probability: Probability = top_probability,
) -> float:
    """The T that maximises the likelihood of `correct` under `probability` (by default the top
    answers' probabilities).

    A grid over `T_RANGE` (log-spaced) finds the basin, golden-section search refines it.
    """
    if not score_lists:
        raise ValueError("fit_temperature needs at least one question")
    y = np.asarray(correct, dtype=np.float64)

    def nll(log_t: float) -> float:
        return _nll(score_lists, y, math.exp(log_t), probability)

    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    grid = np.linspace(lo, hi, 61)
    i = int(np.argmin([nll(t) for t in grid]))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(c) <= nll(d):
            b = d
        else:
            a = c
    return math.exp((a + b) / 2)


def fit_isotonic(confidences: Sequence[float], correct: Sequence[bool]) -> TopProbabilityMap:
    """The non-decreasing function of confidence nearest the outcomes in least squares (pool
    adjacent violators), as the knots of a `TopProbabilityMap`: each pooled block's lowest and
    highest confidence at the block's accuracy.

    Equal confidences are pooled first, so each maps to one value (as scikit-learn's
    `IsotonicRegression` does). The map never claims certainty: an end block where every answer
    was right (or wrong) says 1 (or 0) from a few hundred (or a handful of) questions, so the
    values are clipped to Laplace's rule of succession of the end blocks, 1/(n+2) from 0 for the
    lowest block's n and from 1 for the highest's (a monotone clip: the map stays isotonic).
    """
    conf = np.asarray(confidences, dtype=np.float64)
    if not len(conf):
        raise ValueError("fit_isotonic needs at least one question")
    x, inverse = np.unique(conf, return_inverse=True)
    weight = np.bincount(inverse).astype(np.float64)
    total = np.bincount(inverse, weights=np.asarray(correct, dtype=np.float64))
    blocks: list[list[float]] = []  # [sum of outcomes, count, lowest x, highest x]
    for xi, t, w in zip(x, total, weight, strict=True):
        blocks.append([t, w, xi, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            t_last, w_last, _, hi = blocks.pop()
            blocks[-1][0] += t_last
            blocks[-1][1] += w_last
            blocks[-1][3] = hi
    floor, ceiling = 1 / (blocks[0][1] + 2), 1 - 1 / (blocks[-1][1] + 2)
    knots = [
        (x_at, min(max(t / w, floor), ceiling))
        for t, w, lo, hi in blocks
        for x_at in dict.fromkeys((lo, hi))
    ]
    return TopProbabilityMap(
        tempered=tuple(k[0] for k in knots), calibrated=tuple(k[1] for k in knots)
    )


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: its edges, its questions, their mean confidence and
    accuracy (None when empty): the reliability diagram, and what ECE sums.

    Bin k holds confidences in (k/bins, (k+1)/bins]; a confidence of 0 goes to the first bin.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if not len(conf):
        raise ValueError("reliability bins need at least one question")
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        members = index == k
        rows.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "count": int(members.sum()),
                "confidence": float(conf[members].mean()) if members.any() else None,
                "accuracy": float(y[members].mean()) if members.any() else None,
            }
        )
    return rows


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> float:
    """Σ over equal-width confidence bins (`reliability_bins`) of (share of questions) x
    |accuracy - mean confidence|."""
    n = len(confidences)
    if not n:
        raise ValueError("expected_calibration_error needs at least one question")
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(confidences, correct, bins)
            if b["count"]
        )
    )


def brier_score(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean squared difference between confidence and outcome (1 right, 0 wrong)."""
    conf = np.asarray(confidences, dtype=np.float64)
    return float(np.mean((conf - np.asarray(correct, dtype=np.float64)) ** 2))


def held_out(question_id: str) -> bool:
    """Whether a dev question is judged on (True) or fitted on (False): half each, by a hash of
    its id, so the split needs no seed and is the same for every run on the same dev file."""
    return hashlib.sha256(question_id.encode()).digest()[0] % 2 == 1


# Questions of the fitting half and of the held-out half: candidate scores and outcomes each.
_Halves = dict[str, tuple[list[np.ndarray], list[bool]]]


def _fit_and_judge(
    halves: _Halves, probability: Probability, what: str, isotonic: bool = False
) -> dict[str, Any]:
    """Fit T on the fitting half (then, with `isotonic`, the map of the tempered probability);
    ECE, Brier, mean confidence and reliability bins of the held-out half before (T = 1), at
    the temperature alone (with `isotonic`) and after."""
    fit_scores, fit_correct = halves["fit"]
    test_scores, test_correct = halves["held_out"]
    if not fit_scores or not test_scores:
        raise ValueError(f"calibration needs {what} in both halves of the dev questions")
    temperature = fit_temperature(fit_scores, fit_correct, probability)
    record: dict[str, Any] = {
        "method": "temperature",
        "temperature": temperature,
        "fit_questions": len(fit_scores),
        "held_out_questions": len(test_scores),
        "held_out_accuracy": float(np.mean(test_correct)),
        "ece_bins": ECE_BINS,
        "reliability": {},
    }
    stages: list[tuple[str, Callable[[np.ndarray], float]]] = [
        ("before", lambda s: probability(s, 1.0)),
        ("after", lambda s: probability(s, temperature)),
    ]
    if isotonic:
        top_map = fit_isotonic([probability(s, temperature) for s in fit_scores], fit_correct)
        record["method"] = "temperature+isotonic"
        record["isotonic"] = {"tempered": top_map.tempered, "calibrated": top_map.calibrated}
        stages = [
            stages[0],
            ("temperature", stages[1][1]),
            ("after", lambda s: top_map(probability(s, temperature))),
        ]
    for label, prob in stages:
        conf = [prob(s) for s in test_scores]
        record[f"ece_{label}"] = expected_calibration_error(conf, test_correct)
        record[f"brier_{label}"] = brier_score(conf, test_correct)
        record[f"mean_confidence_{label}"] = float(np.mean(conf))
        record["reliability"][label] = reliability_bins(conf, test_correct)
    return record


def _halves() -> _Halves:
    return {"fit": ([], []), "held_out": ([], [])}


def calibrate(
    nbest: dict[str, list[dict[str, Any]]],
    gold: dict[str, list[str]],
    null_odds: dict[str, float] | None = None,
    null_threshold: float = 0.0,
    method: str = "auto",
) -> dict[str, Any]:
    """Fit T on the fitting half of the answered questions, report both halves' metrics.

    `method`: "temperature", "isotonic" (T, then the isotonic map of the top answer's tempered
    probability) or "auto" (isotonic from `ISOTONIC_MIN_QUESTIONS` fitting questions on). With
    `null_odds` (SQuAD 2.0: null score minus best span score per question) also the no-answer
    temperature, under `no_answer` (module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: one of {', '.join(METHODS)}")
    from squadqa.evaluation import exact_match_score, metric_max_over_ground_truths

    answers, no_answer = _halves(), _halves()
    for qid, candidates in nbest.items():
        if not candidates:  # no span at all: "no answer" by rule, nothing to calibrate
            continue
        if qid not in gold:
            raise ValueError(
                f"{rundir.NBEST}: question {qid!r} is not in the dev data (another dev file?)"
            )
        side = "held_out" if held_out(qid) else "fit"
        spans = np.array([c["score"] for c in candidates])
        if null_odds is not None:
            if qid not in null_odds:
                raise ValueError(f"{rundir.NULL_ODDS}: no entry for question {qid!r}")
            null = no_answer_candidate(candidates[0]["score"], null_odds[qid], null_threshold)
            no_answer[side][0].append(np.concatenate([[null], spans]))
            no_answer[side][1].append(not gold.get(qid))
        if not gold.get(qid):  # unanswerable (SQuAD 2.0)
            continue
        right = metric_max_over_ground_truths(exact_match_score, candidates[0]["text"], gold[qid])
        answers[side][0].append(spans)
        answers[side][1].append(bool(right))
    record = {
        "target": "the top answer is exactly right (EM against any gold answer)",
        **_fit_and_judge(
            answers,
            top_probability,
            "answered questions",
            isotonic=method == "isotonic"
            or (method == "auto" and len(answers["fit"][0]) >= ISOTONIC_MIN_QUESTIONS),
        ),
    }
    if null_odds is not None:
        record["no_answer"] = {
            "target": '"no answer" is right (the question is unanswerable)',
            "null_threshold": null_threshold,
            **_fit_and_judge(no_answer, first_probability, "questions with a span"),
        }
    return record


def calibrate_run(run_dir: str | Path, method: str = "auto") -> dict[str, Any]:
    """`squadqa calibrate`: fit on the run's own dev n-best lists, write `calibration.json`."""
    from squadqa.config import load_config
    from squadqa.data import gold_answers
    from squadqa.scoring import load_dev

    run_dir = Path(run_dir)
    source = run_dir / rundir.NBEST
    if not source.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {rundir.NBEST}: calibration reads the dev n-best lists that "
            "`squadqa train` writes for its best epoch"
        )
    config = load_config(run_dir / rundir.CONFIG)
    gold = gold_answers(load_dev(config).examples)
    null_odds, threshold, sources = None, 0.0, rundir.NBEST
    if config.postprocess.version_2:
        odds = run_dir / rundir.NULL_ODDS
        if not odds.is_file():
            raise FileNotFoundError(
                f"{run_dir} has no {rundir.NULL_ODDS}: a SQuAD 2.0 run's calibration of "
                '"no answer" reads the null scores that `squadqa train` writes'
            )
        null_odds, sources = rundir.read_json(odds), f"{rundir.NBEST}, {rundir.NULL_ODDS}"
        chosen = rundir.null_threshold(run_dir)
        threshold = config.postprocess.null_threshold if chosen is None else chosen
    record = {
        **calibrate(rundir.read_json(source), gold, null_odds, threshold, method),
        "source": f"{sources} (dev: {config.data.dev})",
        "created": rundir.now(),
    }
    rundir.write_json(run_dir / rundir.CALIBRATION, record)
    return record
