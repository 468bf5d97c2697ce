"""Error analysis: *where* a model fails (question type, answer length, context length, the
worst questions), which the single EM/F1 number cannot say, and which questions each of two runs
gets right that the other does not. Scores are the official per-question ones
(`evaluation.question_scores`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from squadqa.data import Example
from squadqa.evaluation import question_scores
from squadqa.report.loading import dev_predictions
from squadqa.runs import RunRow

QUESTION_TYPES = ("what", "who", "when", "where", "which", "how", "why", "other")
# "whom"/"whose" ask for a person too; "how many"/"how much" stay under "how".
_WH_WORDS = {w: w for w in QUESTION_TYPES[:-1]} | {"whom": "who", "whose": "who"}
# (label, lowest, highest) in words, both ends included.
ANSWER_LENGTH_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1", 1, 1),
    ("2", 2, 2),
    ("3", 3, 3),
    ("4-5", 4, 5),
    ("6-10", 6, 10),
    (">10", 11, math.inf),
)
CONTEXT_LENGTH_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("<100", 0, 99),
    ("100-149", 100, 149),
    ("150-199", 150, 199),
    ("200-299", 200, 299),
    (">=300", 300, math.inf),
)
_NO_ANSWER = "no answer"  # SQuAD 2.0 unanswerable questions, only listed when present
WORST_N = 20
SHOWN_N = 8  # head to head: questions shown per side


def question_type(question: str) -> str:
    """The first wh-word of the question ('In what year...' is a 'what' question), or 'other'."""
    for word in "".join(c if c.isalpha() else " " for c in question.lower()).split():
        if word in _WH_WORDS:
            return _WH_WORDS[word]
    return "other"


def _bucket(n: int, buckets: Sequence[tuple[str, int, float]]) -> str:
    for label, low, high in buckets:
        if low <= n <= high:
            return label
    raise ValueError(f"{n} is in no bucket")


def answer_length_bucket(example: Example) -> str:
    """Bucket of the first gold answer's length in words ('no answer' for unanswerable)."""
    if not example.answers:
        return _NO_ANSWER
    return _bucket(max(1, len(example.answers[0].text.split())), ANSWER_LENGTH_BUCKETS)


def context_length_bucket(example: Example) -> str:
    """Bucket of the context's length in whitespace-separated words."""
    return _bucket(len(example.context.split()), CONTEXT_LENGTH_BUCKETS)


def _table(
    labels: Sequence[str], groups: Mapping[str, list[tuple[float, float]]]
) -> list[dict[str, Any]]:
    rows = []
    for label in labels:
        scores = groups.get(label, [])
        n = len(scores)
        rows.append(
            {
                "bucket": label,
                "count": n,
                "exact_match": 100.0 * sum(s[0] for s in scores) / n if n else None,
                "f1": 100.0 * sum(s[1] for s in scores) / n if n else None,
            }
        )
    return rows


def error_analysis(
    examples: Sequence[Example], predictions: Mapping[str, str], *, worst: int = WORST_N
) -> dict[str, Any]:
    """EM / F1 (x100) overall and by question type, answer length and context length, plus the
    `worst` lowest-scored questions (lowest F1, then EM, then id).

    Scores are the official ones per question; a question without a prediction scores 0, as in
    the official evaluation. Every bucket is listed, in a fixed order (empty ones with count 0
    and None scores), so tables of different runs line up.
    """
    by_type: dict[str, list[tuple[float, float]]] = {}
    by_answer: dict[str, list[tuple[float, float]]] = {}
    by_context: dict[str, list[tuple[float, float]]] = {}
    by_answerability: dict[str, list[tuple[float, float]]] = {}
    scored = []
    missing = 0
    for ex in examples:
        if ex.id not in predictions:
            missing += 1
        prediction = predictions.get(ex.id, "")
        em, f1 = question_scores(prediction, [a.text for a in ex.answers])
        by_type.setdefault(question_type(ex.question), []).append((em, f1))
        by_answer.setdefault(answer_length_bucket(ex), []).append((em, f1))
        by_context.setdefault(context_length_bucket(ex), []).append((em, f1))
        by_answerability.setdefault("NoAns" if ex.is_impossible else "HasAns", []).append((em, f1))
        scored.append((f1, em, ex, prediction))
    answer_labels = [b[0] for b in ANSWER_LENGTH_BUCKETS]
    if _NO_ANSWER in by_answer:
        answer_labels.append(_NO_ANSWER)
    scored.sort(key=lambda t: (t[0], t[1], t[2].id))
    ids = {ex.id for ex in examples}
    n = len(examples)
    return {
        "total": n,
        "missing_predictions": missing,
        "predictions_not_in_dataset": sum(1 for qid in predictions if qid not in ids),
        "exact_match": 100.0 * sum(t[1] for t in scored) / n if n else 0.0,
        "f1": 100.0 * sum(t[0] for t in scored) / n if n else 0.0,
        "by_question_type": _table(QUESTION_TYPES, by_type),
        "by_answer_length": _table(answer_labels, by_answer),
        "by_context_length": _table([b[0] for b in CONTEXT_LENGTH_BUCKETS], by_context),
        # SQuAD 2.0's two slices; only when the dev data has unanswerable questions.
        "by_answerability": (
            _table(["HasAns", "NoAns"], by_answerability) if "NoAns" in by_answerability else []
        ),
        "worst": [
            {
                "id": ex.id,
                "question": ex.question,
                "gold_answers": list(dict.fromkeys(a.text for a in ex.answers)),
                "prediction": prediction,
                "exact_match": 100.0 * em,
                "f1": 100.0 * f1,
                "missing": ex.id not in predictions,
            }
            for f1, em, ex, prediction in scored[:worst]
        ],
    }


def head_to_head(
    examples: Sequence[Example],
    predictions_a: Mapping[str, str],
    predictions_b: Mapping[str, str],
    *,
    shown: int = SHOWN_N,
) -> dict[str, Any]:
    """Which questions each of two runs answers exactly (official EM) and the other does not.

    `counts`: both / only_a / only_b / neither (they sum to the question count); `only_a` and
    `only_b`: up to `shown` such questions each, the largest F1 gap first (then id).
    """
    groups: dict[str, list[dict[str, Any]]] = {
        "both": [],
        "only_a": [],
        "only_b": [],
        "neither": [],
    }
    for ex in examples:
        golds = [a.text for a in ex.answers]
        a, b = predictions_a.get(ex.id, ""), predictions_b.get(ex.id, "")
        em_a, f1_a = question_scores(a, golds)
        em_b, f1_b = question_scores(b, golds)
        key = {(1, 1): "both", (1, 0): "only_a", (0, 1): "only_b", (0, 0): "neither"}[
            (int(em_a), int(em_b))
        ]
        groups[key].append(
            {
                "id": ex.id,
                "question": ex.question,
                "gold_answers": list(dict.fromkeys(golds)),
                "prediction_a": a,
                "prediction_b": b,
                "f1_a": 100.0 * f1_a,
                "f1_b": 100.0 * f1_b,
            }
        )
    groups["only_a"].sort(key=lambda q: (q["f1_b"] - q["f1_a"], q["id"]))
    groups["only_b"].sort(key=lambda q: (q["f1_a"] - q["f1_b"], q["id"]))
    return {
        "total": len(examples),
        "counts": {key: len(value) for key, value in groups.items()},
        "only_a": groups["only_a"][:shown],
        "only_b": groups["only_b"][:shown],
    }


def analyse_run(run: RunRow) -> tuple[dict[str, Any] | None, str]:
    """Error analysis of a run's dev predictions, or None and the reason it cannot be done."""
    read = dev_predictions(run)
    if isinstance(read, str):
        return None, read
    examples, predictions, dev = read
    analysis = error_analysis(examples, predictions)
    analysis["dev_path"] = str(dev)
    return analysis, ""


def compare_runs(a: RunRow, b: RunRow) -> tuple[dict[str, Any] | None, str]:
    """Both runs' slices and `head_to_head`, when they were scored on the same dev questions."""
    read_a, read_b = dev_predictions(a), dev_predictions(b)
    for run, read in ((a, read_a), (b, read_b)):
        if isinstance(read, str):
            return None, f"{run.name}: {read}"
    examples_a, predictions_a, dev_a = read_a  # type: ignore[misc]
    examples_b, predictions_b, _ = read_b  # type: ignore[misc]
    if [e.id for e in examples_a] != [e.id for e in examples_b]:
        return None, f"{a.name} and {b.name} were scored on different dev questions"
    result = head_to_head(examples_a, predictions_a, predictions_b)
    result["analysis_a"] = error_analysis(examples_a, predictions_a)
    result["analysis_b"] = error_analysis(examples_b, predictions_b)
    result["dev_path"] = str(dev_a)
    return result, ""
