"""`squadqa calibrate RUN`: a temperature that makes the top answer's probability mean what it says.

The probability shown beside an answer is a softmax over its n-best candidates' scores (start +
end logit). Nothing makes 16 % mean "right 16 % of the time": a model trained with cross-entropy
on positions is over- or under-confident about whole spans. Temperature scaling (Guo et al.
2017) divides the scores by one number T before the softmax; T is fitted so that the top
answer's probability predicts whether it is exactly right (EM against the gold answers), by
maximum likelihood on half the dev questions, and judged on the other half: expected calibration
error (ECE, equal-width bins) and Brier score, before (T = 1) and after. Ranking and answers do
not change, only probabilities.

Everything is read from the run directory (`nbest_predictions.json` of the best epoch, the dev
split of `config.toml`): no model is run. The result is `calibration.json`, whose temperature
`QAPredictor.from_run_dir` applies in `answer`, `predict` and `serve`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squadqa import rundir

# Temperatures searched (log-uniform): far beyond what any sane model needs on either side.
T_RANGE = (0.05, 20.0)
ECE_BINS = 10


def top_probability(scores: np.ndarray, temperature: float) -> float:
    """The softmax probability of the best-scoring candidate at `temperature`."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max()
    return float(1.0 / np.exp(z).sum())


def _nll(score_lists: Sequence[np.ndarray], correct: np.ndarray, temperature: float) -> float:
    p = np.array([top_probability(s, temperature) for s in score_lists])
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(correct * np.log(p) + (1 - correct) * np.log(1 - p)))


def fit_temperature(score_lists: Sequence[np.ndarray], correct: Sequence[bool]) -> float:
    """The T that maximises the likelihood of `correct` under the top answers' probabilities.

    A grid over `T_RANGE` (log-spaced) finds the basin, golden-section search refines it.
    """
    if not score_lists:
        raise ValueError("fit_temperature needs at least one question")
    y = np.asarray(correct, dtype=np.float64)
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    grid = np.linspace(lo, hi, 61)
    losses = [_nll(score_lists, y, math.exp(t)) for t in grid]
    i = int(np.argmin(losses))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if _nll(score_lists, y, math.exp(c)) <= _nll(score_lists, y, math.exp(d)):
            b = d
        else:
            a = c
    return math.exp((a + b) / 2)


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> float:
    """Σ over equal-width confidence bins of (share of questions) x |accuracy - mean confidence|.

    Bin k holds confidences in (k/bins, (k+1)/bins]; a confidence of 0 goes to the first bin.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if not len(conf):
        raise ValueError("expected_calibration_error needs at least one question")
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for k in range(bins):
        members = index == k
        if members.any():
            ece += members.mean() * abs(y[members].mean() - conf[members].mean())
    return float(ece)


def brier_score(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean squared difference between confidence and outcome (1 right, 0 wrong)."""
    conf = np.asarray(confidences, dtype=np.float64)
    return float(np.mean((conf - np.asarray(correct, dtype=np.float64)) ** 2))


def held_out(question_id: str) -> bool:
    """Whether a dev question is judged on (True) or fitted on (False): half each, by a hash of
    its id, so the split needs no seed and is the same for every run on the same dev file."""
    return hashlib.sha256(question_id.encode()).digest()[0] % 2 == 1


def calibrate(nbest: dict[str, list[dict[str, Any]]], gold: dict[str, list[str]]) -> dict[str, Any]:
    """Fit T on the fitting half of the answered questions, report both halves' metrics."""
    from squadqa.evaluation import exact_match_score, metric_max_over_ground_truths

    rows = {"fit": ([], []), "held_out": ([], [])}
    for qid, candidates in nbest.items():
        if not candidates or not gold.get(qid):  # no span, or unanswerable (SQuAD 2.0)
            continue
        right = metric_max_over_ground_truths(exact_match_score, candidates[0]["text"], gold[qid])
        scores, outcomes = rows["held_out" if held_out(qid) else "fit"]
        scores.append(np.array([c["score"] for c in candidates]))
        outcomes.append(bool(right))
    fit_scores, fit_correct = rows["fit"]
    test_scores, test_correct = rows["held_out"]
    if not fit_scores or not test_scores:
        raise ValueError("calibration needs answered dev questions in both halves")
    temperature = fit_temperature(fit_scores, fit_correct)
    record: dict[str, Any] = {
        "temperature": temperature,
        "target": "the top answer is exactly right (EM against any gold answer)",
        "fit_questions": len(fit_scores),
        "held_out_questions": len(test_scores),
        "held_out_accuracy": float(np.mean(test_correct)),
        "ece_bins": ECE_BINS,
    }
    for label, t in (("before", 1.0), ("after", temperature)):
        conf = [top_probability(s, t) for s in test_scores]
        record[f"ece_{label}"] = expected_calibration_error(conf, test_correct)
        record[f"brier_{label}"] = brier_score(conf, test_correct)
        record[f"mean_confidence_{label}"] = float(np.mean(conf))
    return record


def calibrate_run(run_dir: str | Path) -> dict[str, Any]:
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
    record = {
        **calibrate(rundir.read_json(source), gold),
        "source": f"{rundir.NBEST} (dev: {config.data.dev})",
        "created": rundir.now(),
    }
    rundir.write_json(run_dir / rundir.CALIBRATION, record)
    return record
