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
from squadqa.evaluation import evaluate_v1, question_scores
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
        if question_scores(predicted, answers)[0]:
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


def overfit_check(
    n_examples: int = 32,
    epochs: int = 60,
    data: str = "sample",
    target_em: float = 95.0,
    runs_dir: str | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Train a small model on `n_examples` and score it on the same examples.

    A model and training loop that cannot memorise 32 examples cannot learn SQuAD: the check the
    seed project failed. Returns {"passed", "exact_match", "f1", "epochs", "message", "run_dir"}.
    """
    import tempfile
    from pathlib import Path

    import keras

    from squadqa.config import load_config
    from squadqa.data import load_squad, write_squad
    from squadqa.train import train

    examples = load_squad(data, max_samples=n_examples).examples
    workdir = Path(runs_dir or tempfile.mkdtemp(prefix="squadqa-sanity-"))
    subset = write_squad(examples, workdir / "subset.json")
    settings = [
        f'name="sanity-{keras.backend.backend()}"',
        f'data.train="{subset}"',
        f'data.dev="{subset}"',
        "tokenizer.vocab_size=2000",
        "features.max_seq_length=256",
        "model.hidden_size=128",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.intermediate_size=256",
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
        f"train.epochs={epochs}",
        "train.batch_size=16",
        "train.learning_rate=0.002",
        "train.warmup_ratio=0.05",
        'train.schedule="constant"',
        "train.weight_decay=0.0",
        "train.early_stopping_patience=0",
        *overrides,
    ]
    status = train(load_config(None, settings), workdir)
    em, f1 = status["best_dev_exact_match"], status["best_dev_f1"]
    passed = em >= target_em
    verdict = "PASSED" if passed else "FAILED"
    message = (
        f"sanity {verdict}: after {status['epochs_run']} epochs the model reproduces "
        f"{len(examples)} training examples with EM {em:.1f} / F1 {f1:.1f} "
        f"(target EM >= {target_em}) on the {keras.backend.backend()} backend; run: {workdir}"
    )
    return {
        "passed": passed,
        "exact_match": em,
        "f1": f1,
        "epochs": status["epochs_run"],
        "message": message,
        "run_dir": str(workdir),
    }
