"""The official SQuAD v1.1 and v2.0 evaluation, re-implemented small and exact.

Numbers from here must be comparable with published ones, so every rule (normalisation,
tokenisation, max over ground truths, averaging over all gold questions, summation order) follows
the official ``evaluate-v1.1.py`` / ``evaluate-v2.0.py`` scripts. Gold answers come straight from
the raw official JSON (:func:`gold_from_dataset`) so that a bug in our data loader cannot leak
into the metric.
"""

from __future__ import annotations

import collections
import gzip
import json
import logging
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from squadqa.settings import is_number

__all__ = [
    "evaluate_files",
    "evaluate_v1",
    "evaluate_v2",
    "evaluate_v2_at_best_threshold",
    "exact_match_score",
    "f1_score",
    "gold_from_dataset",
    "is_v2_dataset",
    "load_dataset_json",
    "load_predictions",
    "metric_max_over_ground_truths",
    "normalize_answer",
    "question_scores",
]

logger = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as in the official scripts
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


# --------------------------------------------------------------------------- v1.1 metric


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop articles, collapse whitespace (official order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-bag F1 between normalised strings (v1.1: no overlap, or an empty side, gives 0)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def metric_max_over_ground_truths(
    metric_fn: Callable[[str, str], float], prediction: str, ground_truths: Iterable[str]
) -> float:
    """A prediction is as good as its best match among the annotators' answers."""
    scores = [metric_fn(prediction, gt) for gt in ground_truths]
    if not scores:
        raise ValueError("no ground-truth answers to score against")
    return max(scores)


def question_scores(prediction: str, ground_truths: Sequence[str]) -> tuple[float, float]:
    """Official EM and F1 (0/1 scale) of one question: the one per-question scorer.

    An answerable question scores its best match among the annotators' answers (both official
    scripts); an unanswerable one (no gold answers) scores 1 on both only for an answer that
    normalises to "" (v2.0's rule). Evaluation, error analysis, tracking and checks all call this.
    """
    if not ground_truths:
        correct = float(normalize_answer(prediction) == "")
        return correct, correct
    return (
        metric_max_over_ground_truths(exact_match_score, prediction, ground_truths),
        metric_max_over_ground_truths(f1_score, prediction, ground_truths),
    )


# --------------------------------------------------------------------------- gold / files


def _iter_qas(dataset_json: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for article in dataset_json["data"]:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def gold_from_dataset(dataset_json: Mapping[str, Any]) -> dict[str, list[str]]:
    """Question id -> answer texts (in file order), read directly from the official JSON.

    Unanswerable SQuAD 2.0 questions map to ``[]``. The dict keeps dataset order, which the
    evaluation relies on to sum scores in the same order as the official scripts.
    """
    gold: dict[str, list[str]] = {}
    for qa in _iter_qas(dataset_json):
        qid = qa["id"]
        if qid in gold:
            raise ValueError(f"duplicate question id {qid!r} in dataset")
        gold[qid] = [answer["text"] for answer in qa["answers"]]
    return gold


def is_v2_dataset(dataset_json: Mapping[str, Any]) -> bool:
    """SQuAD 2.0 when ``version`` is 2.x (official files say ``"v2.0"``) or any qa has
    ``is_impossible``."""
    version = str(dataset_json.get("version", "")).strip().lower().removeprefix("v")
    if version.startswith("2"):
        return True
    return any("is_impossible" in qa for qa in _iter_qas(dataset_json))


def _read_json(path: str | Path) -> Any:
    """Plain or gzipped JSON; gzip is recognised by its magic bytes, not by the file's name."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return json.loads(raw.decode("utf-8"))


def load_dataset_json(path: str | Path) -> dict[str, Any]:
    """The raw official JSON (plain or ``.gz``), checked only for shape: evaluation reads gold
    answers from it directly, independent of :mod:`squadqa.data`."""
    try:
        data = _read_json(path)
    except (OSError, EOFError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError, gzip
        raise ValueError(f"{path}: cannot read SQuAD dataset JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: not a SQuAD dataset (expected an object with a 'data' list)")
    return data


def _load_mapping(path: str | Path, what: str, value_ok: Callable[[Any], bool], want: str) -> dict:
    try:
        data = _read_json(path)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: cannot read {what} JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: {what} must be a JSON object mapping question id -> {want}, "
            f"got {type(data).__name__}"
        )
    for key, value in data.items():
        if not value_ok(value):
            raise ValueError(
                f"{path}: {what} for question id {key!r} must be {want}, got {type(value).__name__}"
            )
    return data


def load_predictions(path: str | Path) -> dict[str, str]:
    """Read a predictions file (JSON object id -> answer text); errors name the file."""
    return _load_mapping(path, "predictions", lambda v: isinstance(v, str), "a string")


def _load_na_probs(path: str | Path) -> dict[str, float]:
    return _load_mapping(path, "no-answer probabilities", is_number, "a number")


# --------------------------------------------------------------------------- v1.1


def evaluate_v1(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict:
    """Official v1.1 EM / F1 (x100), averaged over every gold question.

    A question without a prediction scores 0 on both metrics. Scores are accumulated with ``+=``
    in gold order, exactly as the official loop does, so results match it bit for bit (``sum()``
    would change the rounding on Python >= 3.12).
    """
    exact_match = 0.0
    f1 = 0.0
    total = 0
    missing = 0
    for qid, ground_truths in gold.items():
        total += 1
        if qid not in predictions:
            missing += 1
            continue
        if not ground_truths:
            raise ValueError(
                f"question {qid!r} has no gold answers; SQuAD 2.0 data needs evaluate_v2"
            )
        em, f = question_scores(predictions[qid], ground_truths)
        exact_match += em
        f1 += f
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", missing, total)
    return {
        "exact_match": 100.0 * exact_match / total if total else 0.0,
        "f1": 100.0 * f1 / total if total else 0.0,
        "total": total,
        "missing_predictions": missing,
        "predictions_not_in_dataset": sum(1 for qid in predictions if qid not in gold),
    }


# --------------------------------------------------------------------------- v2.0


def _find_best_thresh(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """Official threshold sweep: start with "abstain everywhere", then answer questions in
    increasing no-answer probability, keeping the best running score."""
    cur_score = sum(1 for qid, ans in has_ans.items() if not ans and qid in predictions)
    best_score = cur_score
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores or qid not in predictions:
            continue
        if has_ans[qid]:
            cur_score += scores[qid]
        elif predictions[qid]:
            cur_score -= 1
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def evaluate_v2(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """Official v2.0 metrics: ``exact, f1, total``, the ``HasAns_*`` / ``NoAns_*`` blocks (each
    only when such questions exist) and, with ``na_probs``, ``best_exact(_thresh)`` and
    ``best_f1(_thresh)``.

    An unanswerable question's only correct answer is ``""``. A question whose ``na_probs`` value
    exceeds ``na_prob_thresh`` counts as answered "no answer". One deliberate difference: the
    official script crashes on missing predictions; here they score 0 (also in the threshold
    sweep) and count in every total, as in v1.1.
    """
    given_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {qid: 0.0 for qid in predictions}
    else:
        lacking = [qid for qid in gold if qid in predictions and qid not in na_probs]
        if lacking:
            raise ValueError(
                f"na_probs lacks {len(lacking)} predicted question id(s), e.g. {lacking[0]!r}"
            )
    has_ans = {qid: bool(answers) for qid, answers in gold.items()}

    # Raw per-question scores, in gold order (missing predictions score 0).
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    missing = 0
    for qid, answers in gold.items():
        if qid not in predictions:
            missing += 1
            exact_raw[qid] = 0
            f1_raw[qid] = 0
            continue
        # v2.0 drops gold answers that normalise to nothing; none left means unanswerable.
        gold_answers = [a for a in answers if normalize_answer(a)]
        exact_raw[qid], f1_raw[qid] = question_scores(predictions[qid], gold_answers)
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", missing, len(gold))

    def thresholded(scores: Mapping[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for qid, s in scores.items():
            if qid in predictions and na_probs[qid] > na_prob_thresh:
                out[qid] = float(not has_ans[qid])
            else:
                out[qid] = s
        return out

    exact_th = thresholded(exact_raw)
    f1_th = thresholded(f1_raw)

    def block(qids: Sequence[str]) -> dict[str, float | int]:
        # builtin sum() as in the official script, so results match it on the same Python.
        total = len(qids)
        return {
            "exact": 100.0 * sum(exact_th[k] for k in qids) / total,
            "f1": 100.0 * sum(f1_th[k] for k in qids) / total,
            "total": total,
        }

    if not gold:
        result: dict[str, Any] = {"exact": 0.0, "f1": 0.0, "total": 0}
    else:
        result = block(list(gold))
    has_ans_qids = [qid for qid, ans in has_ans.items() if ans]
    no_ans_qids = [qid for qid, ans in has_ans.items() if not ans]
    if has_ans_qids:
        result.update({f"HasAns_{k}": v for k, v in block(has_ans_qids).items()})
    if no_ans_qids:
        result.update({f"NoAns_{k}": v for k, v in block(no_ans_qids).items()})
    if given_na_probs and gold:
        result["best_exact"], result["best_exact_thresh"] = _find_best_thresh(
            predictions, exact_raw, na_probs, has_ans
        )
        result["best_f1"], result["best_f1_thresh"] = _find_best_thresh(
            predictions, f1_raw, na_probs, has_ans
        )
    return result


def evaluate_v2_at_best_threshold(
    gold: Mapping[str, Sequence[str]],
    best_spans: Mapping[str, str],
    null_scores: Mapping[str, float],
) -> dict:
    """SQuAD 2.0 metrics at the null threshold that maximises F1, as a run will serve them.

    `best_spans` are each question's best span whatever its null score, `null_scores` the null
    score minus that span's. The official sweep (`best_f1_thresh`) picks the threshold; every
    block (overall, HasAns, NoAns) is then scored at it, so `f1` is what `predict` and the
    server reproduce with that threshold. The official `best_*` keys are kept beside them.
    """
    sweep = evaluate_v2(gold, best_spans, null_scores)
    if not gold:
        return sweep
    threshold = sweep["best_f1_thresh"]
    result = evaluate_v2(gold, best_spans, null_scores, na_prob_thresh=threshold)
    for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
        result[key] = sweep[key]
    return result


# --------------------------------------------------------------------------- files


def evaluate_files(
    data_path: str | Path,
    predictions_path: str | Path,
    na_prob_path: str | Path | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """Evaluate a predictions file against an official dataset file (plain or ``.gz``).

    SQuAD 2.0 data (see :func:`is_v2_dataset`) gets :func:`evaluate_v2`, v1.1 data
    :func:`evaluate_v1`; ``na_prob_path`` is only meaningful for 2.0.
    """
    dataset = load_dataset_json(data_path)
    predictions = load_predictions(predictions_path)
    gold = gold_from_dataset(dataset)
    if is_v2_dataset(dataset):
        na_probs = _load_na_probs(na_prob_path) if na_prob_path is not None else None
        return evaluate_v2(gold, predictions, na_probs, na_prob_thresh)
    if na_prob_path is not None:
        raise ValueError(f"{data_path}: no-answer probabilities given for a SQuAD v1.1 dataset")
    return evaluate_v1(gold, predictions)
