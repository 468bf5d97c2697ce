"""End-to-end checks of the label pipeline, independent of any model.

The round trip puts a perfect model's logits (one-hot at the labels) through the real
post-processing and the official evaluation. Whatever it loses, a trained model loses too: it is
the ceiling that label alignment, windowing and span extraction leave, and the check that would
have caught the seed project's offset and special-token bugs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from squadqa.data import Example, gold_answers
from squadqa.evaluation import evaluate_v1, exact_match_score, metric_max_over_ground_truths
from squadqa.features import FeatureConfig, Features, build_features
from squadqa.postprocess import SpanConfig, extract_answers
from squadqa.tokenization import QATokenizer


@dataclass
class RoundTrip:
    metrics: dict
    features: Features
    lost: list[dict]  # {"id", "predicted", "gold", "reason"}

    def report(self) -> str:
        lines = [
            f"round trip: EM {self.metrics['exact_match']:.2f} / F1 {self.metrics['f1']:.2f} "
            f"on {self.metrics['total']} questions; {len(self.lost)} lost",
            self.features.stats.summary(),
        ]
        reasons: dict[str, int] = {}
        for item in self.lost:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
        lines += [f"  {n} lost: {reason}" for reason, n in sorted(reasons.items())]
        lines += [
            f"  {item['id']}: predicted {item['predicted']!r}, gold {item['gold'][:3]!r} "
            f"({item['reason']})"
            for item in self.lost
        ]
        return "\n".join(lines)


def perfect_logits(features: Features, high: float = 10.0) -> tuple[list, list]:
    """Logits that put all mass on each feature's labelled start and end token."""
    starts, ends = [], []
    for ids, s, e in zip(
        features.input_ids, features.start_positions, features.end_positions, strict=True
    ):
        start = np.full(len(ids), -high)
        end = np.full(len(ids), -high)
        start[s], end[e] = high, high
        starts.append(start)
        ends.append(end)
    return starts, ends


def label_round_trip(
    examples: Sequence[Example],
    tokenizer: QATokenizer,
    feature_config: FeatureConfig = FeatureConfig(),
    span_config: SpanConfig = SpanConfig(),
) -> RoundTrip:
    """Gold answers → features/labels → one-hot logits → post-processing → official EM/F1."""
    features = build_features(examples, tokenizer, feature_config)
    starts, ends = perfect_logits(features)
    predictions = extract_answers(examples, features, starts, ends, span_config)
    gold = gold_answers(examples)
    metrics = evaluate_v1(gold, predictions.answers)
    mismatched = {m["id"] for m in features.stats.label_mismatches}
    lost = []
    for index, example in enumerate(examples):
        answers = gold[example.id]
        predicted = predictions.answers[example.id]
        if metric_max_over_ground_truths(exact_match_score, predicted, answers):
            continue
        if example.id in mismatched:
            reason = "answer starts or ends inside a token (the label's span is wider)"
        elif _answer_tokens(features, index) > span_config.max_answer_length:
            reason = f"answer longer than max_answer_length={span_config.max_answer_length} tokens"
        else:
            reason = "other"
        lost.append({"id": example.id, "predicted": predicted, "gold": answers, "reason": reason})
    return RoundTrip(metrics=metrics, features=features, lost=lost)


def _answer_tokens(features: Features, example_index: int) -> int:
    """Token length of the labelled answer in the first window that holds it (0 if none)."""
    for f in np.flatnonzero(features.example_index == example_index):
        if features.start_positions[f] != 0:
            return int(features.end_positions[f] - features.start_positions[f] + 1)
    return 0
