"""Scoring a model on a split: its logits (batched by length), the dev loss and the official
metrics through the real post-processing. What every training epoch reports, what `squadqa
average` scores an averaged model with, and what serving's `QAPredictor` runs its windows
through (`predict_logits`); its own module so that training does not import the serving path.
Keras is imported only where a function needs it: an ONNX Runtime server imports this module
without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from squadqa.architecture import MASKED_LOGIT
from squadqa.config import RunConfig
from squadqa.data import Example, SquadData, gold_answers, load_squad
from squadqa.evaluation import evaluate_v1, evaluate_v2_at_best_threshold
from squadqa.features import Features, batch_order, default_length_multiple, pad_batch
from squadqa.postprocess import Predictions, extract_answers

# SQuAD 2.0 metrics that go into metrics.jsonl beside EM / F1 (as dev_<key>).
V2_KEYS = ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "null_threshold")


def padding_multiple(configured: int) -> int:
    """The batch-length rounding to use (see `TrainConfig.length_multiple`)."""
    import keras

    return configured or default_length_multiple(keras.backend.backend())


def predict_logits(
    model: Any,
    features: Features,
    pad_id: int,
    batch_size: int,
    multiple: int,
    replicas: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start/end logits of every feature (unpadded), batched by length.

    `replicas` > 1 (data parallel): a batch whose size is not a multiple of it is filled up with
    copies of its first row, whose outputs are dropped (inference only: nothing changes).
    """
    starts: list[np.ndarray] = [None] * len(features)  # type: ignore[list-item]
    ends: list[np.ndarray] = [None] * len(features)  # type: ignore[list-item]
    for indices in batch_order(features.lengths, batch_size, shuffle=False):
        filled = np.concatenate([indices, np.repeat(indices[:1], -len(indices) % replicas)])
        outputs = model.predict_on_batch(pad_batch(features, filled, pad_id, multiple))
        s = np.asarray(outputs["start_logits"], dtype=np.float32)
        e = np.asarray(outputs["end_logits"], dtype=np.float32)
        for row, i in enumerate(indices):
            n = len(features.input_ids[i])
            starts[i], ends[i] = s[row, :n], e[row, :n]
    return starts, ends


def mean_span_loss(
    features: Features, starts: Sequence[np.ndarray], ends: Sequence[np.ndarray]
) -> float:
    """Dev loss: the training loss (no smoothing) averaged over features, logits unpadded."""
    from keras import ops

    from squadqa.model import span_loss

    if not len(features):
        return 0.0
    width = max(len(s) for s in starts)
    total = 0.0
    for logits, labels in ((starts, features.start_positions), (ends, features.end_positions)):
        padded = np.full((len(logits), width), MASKED_LOGIT, np.float32)
        for row, z in enumerate(logits):
            padded[row, : len(z)] = z
        total += 0.5 * float(ops.convert_to_numpy(ops.sum(span_loss(labels, padded))))
    return total / len(features)


def load_dev(config: RunConfig) -> SquadData:
    """The dev split every epoch is scored on: data.dev, its first data.max_dev_samples."""
    data_cfg = config.data
    dev = load_squad(
        data_cfg.dev, max_samples=data_cfg.max_dev_samples or None, strict=data_cfg.strict
    )
    unanswerable = sum(e.is_impossible for e in dev.examples)
    if unanswerable and not config.postprocess.version_2:
        raise ValueError(
            f"{data_cfg.dev}: {unanswerable} of {len(dev.examples)} dev questions are "
            "unanswerable (SQuAD 2.0): --set postprocess.version_2=true (see "
            "configs/squad2-*.toml)"
        )
    return dev


def dev_metrics(
    config: RunConfig, examples: Sequence[Example], predictions: Predictions
) -> tuple[dict, Predictions]:
    """Official dev metrics (`exact_match`, `f1`, ...) and the predictions they score.

    SQuAD 2.0 (`postprocess.version_2`): the v2.0 metric at the null threshold that maximises dev
    F1 (`null_threshold`, saved in eval.json and served), with its HasAns / NoAns blocks.
    """
    gold = gold_answers(examples)
    if not config.postprocess.version_2:
        return evaluate_v1(gold, predictions.answers), predictions
    v2 = evaluate_v2_at_best_threshold(gold, predictions.best_spans(), predictions.null_scores)
    metrics = {
        "exact_match": v2["exact"],
        "f1": v2["f1"],
        "total": v2["total"],
        "null_threshold": v2.get("best_f1_thresh", 0.0),
        **{k: v for k, v in v2.items() if k.startswith(("HasAns_", "NoAns_", "best_"))},
    }
    return metrics, predictions.at_threshold(metrics["null_threshold"])


def evaluate_dev(
    model: Any,
    config: RunConfig,
    examples: Sequence[Example],
    features: Features,
    pad_id: int,
    devices: int = 1,
) -> tuple[dict, Predictions, float]:
    """Dev EM/F1 (official), predictions and dev loss, through the real post-processing.

    What every epoch reports, and what `squadqa average` scores an averaged model with.
    """
    t = config.train
    starts, ends = predict_logits(
        model, features, pad_id, t.eval_batch_size, padding_multiple(t.length_multiple), devices
    )
    predictions = extract_answers(examples, features, starts, ends, config.postprocess)
    metrics, predictions = dev_metrics(config, examples, predictions)
    return metrics, predictions, mean_span_loss(features, starts, ends)
