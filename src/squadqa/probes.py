"""`squadqa probe RUN`: how much of the answer each layer of the encoder already holds.

For every layer's hidden states (the embeddings' output is layer 0, then each block's output:
`QATransformer.layer_states`) a linear span head is fitted: the project's own `SpanHead` (start
and end logits = hidden @ w + b, masked by the same span mask as the model), trained with the
training loss (`span_objective`: the mean of the start and end cross-entropies) by minibatch Adam
on the windows of a train subset, the encoder frozen and its states computed once. Each probe is
then scored on dev exactly as an epoch is (`extract_answers`, the official metric through
`scoring.dev_metrics`). F1 by layer says where in the encoder the answer becomes linearly
readable (Alain & Bengio 2016's linear classifier probes), which is what separates a pretrained
encoder from one trained on the task alone. The run's own span head, scored on the same dev
questions, is the reference row.

The train subset is N questions of the run's `data.train` and the dev subset M of the questions
the run was scored on, each taken at an even stride (`data.spread`) so that they span every article
(SQuAD's first 500 dev questions are all one article, Super Bowl 50). The train questions are
ones the model may have trained on, which is fine, since the probe asks what the states encode,
not how the model generalises; dev stays held out. Every window's states of every layer are held
in memory (float32): windows x tokens x hidden x (layers + 1) x 4 bytes (measured peaks at the
default 1000 + 500 questions: docs/results.md).
The result is `probes.json` in the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from squadqa import rundir, seeding
from squadqa.config import RunConfig
from squadqa.data import Example, spread
from squadqa.features import Features, batch_order, pad_batch
from squadqa.layers import SpanHead
from squadqa.model import span_objective
from squadqa.postprocess import extract_answers
from squadqa.scoring import dev_metrics, mean_span_loss

__all__ = [
    "ProbeSettings",
    "SpanProbe",
    "fit_probe",
    "format_probes",
    "layer_states",
    "probe_logits",
    "probe_run",
    "score_probe",
]

TRAIN_SAMPLES = 1000
DEV_SAMPLES = 500


# One [window length, hidden] float32 array per window (unpadded).
WindowStates = list[np.ndarray]


@dataclass(frozen=True)
class ProbeSettings:
    """How each layer's span head is fitted (the same for every layer, so F1s compare)."""

    epochs: int = 10
    learning_rate: float = 1e-2
    batch_size: int = 32
    seed: int = 0
    initializer_range: float = 0.02  # the head's kernel stddev before fitting (BERT's)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe {name}={getattr(self, name)} must be at least 1")
        if not self.learning_rate > 0:
            raise ValueError(f"probe learning_rate={self.learning_rate} must be > 0")


class SpanProbe(keras.Model):
    """A linear span head over given hidden states: `{"hidden", "span_mask"}` -> logits."""

    def __init__(self, hidden_size: int, initializer_range: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head = SpanHead(hidden_size, initializer_range=initializer_range, name="span_head")
        self.head.build()

    def call(self, inputs: dict[str, Any]) -> dict[str, Any]:
        start_logits, end_logits = self.head(inputs["hidden"], inputs["span_mask"])
        return {"start_logits": start_logits, "end_logits": end_logits}


class _LayerStates(keras.Model):
    """Every layer's states of a QATransformer as a model's outputs: `predict_on_batch` runs
    them without gradients (torch) or compiled (jax, tensorflow), as evaluation runs logits."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.qa = model

    def call(self, inputs: dict[str, Any]) -> list[Any]:
        return self.qa.layer_states(inputs, training=False)


def _unpadded(
    features: Features, batch_size: int, run: Callable[[np.ndarray], Sequence[Any]]
) -> list[WindowStates]:
    """`run(indices)` -> outputs `[batch, seq, ...]` for windows batched by length; per output,
    every window's rows cut to its own length."""
    if not len(features):
        raise ValueError("no windows to probe (empty data)")
    per_output: list[WindowStates] = []
    for indices in batch_order(features.lengths, batch_size, shuffle=False):
        outputs = [np.asarray(o, dtype=np.float32) for o in run(indices)]
        if not per_output:
            per_output = [[None] * len(features) for _ in outputs]  # type: ignore[list-item]
        for windows, output in zip(per_output, outputs, strict=True):
            for row, i in enumerate(indices):
                windows[i] = output[row, : len(features.input_ids[i])]
    return per_output


def layer_states(
    model: Any, features: Features, pad_id: int, batch_size: int, multiple: int
) -> list[WindowStates]:
    """The hidden states of every layer (0 = embeddings) for every window, one forward pass."""
    reader = _LayerStates(model)
    return _unpadded(
        features,
        batch_size,
        lambda indices: reader.predict_on_batch(pad_batch(features, indices, pad_id, multiple)),
    )


def _probe_inputs(
    states: WindowStates, features: Features, indices: np.ndarray, multiple: int
) -> dict[str, np.ndarray]:
    """A batch for `SpanProbe`: the states padded as `pad_batch` pads, and its span mask."""
    span_mask = pad_batch(features, indices, 0, multiple)["span_mask"]
    hidden = np.zeros((*span_mask.shape, states[indices[0]].shape[-1]), np.float32)
    for row, i in enumerate(indices):
        hidden[row, : len(states[i])] = states[i]
    return {"hidden": hidden, "span_mask": span_mask}


def fit_probe(
    states: WindowStates, features: Features, settings: ProbeSettings, multiple: int = 8
) -> SpanProbe:
    """A span head fitted on `states` to the windows' start/end labels with the training loss.

    Seeds Keras' global generators with `settings.seed`, as training does: the same fit each time.
    """
    keras.utils.set_random_seed(seeding.integer(settings.seed, seeding.Stream.INIT))
    probe = SpanProbe(states[0].shape[-1], settings.initializer_range)
    probe.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), **span_objective())
    for epoch in range(settings.epochs):
        seed = seeding.seed_sequence(settings.seed, seeding.Stream.BATCH_ORDER, epoch)
        order = batch_order(features.lengths, settings.batch_size, shuffle=True, seed=seed)
        for indices in order:
            probe.train_on_batch(
                _probe_inputs(states, features, indices, multiple),
                {
                    "start_logits": features.start_positions[indices],
                    "end_logits": features.end_positions[indices],
                },
            )
    return probe


def probe_logits(
    probe: SpanProbe, states: WindowStates, features: Features, batch_size: int, multiple: int = 8
) -> tuple[WindowStates, WindowStates]:
    """The probe's start and end logits of every window (unpadded), as `predict_logits` gives."""

    def run(indices: np.ndarray) -> tuple[Any, Any]:
        out = probe.predict_on_batch(_probe_inputs(states, features, indices, multiple))
        return out["start_logits"], out["end_logits"]

    starts, ends = _unpadded(features, batch_size, run)
    return starts, ends


def score_probe(
    probe: SpanProbe,
    states: WindowStates,
    config: RunConfig,
    examples: Sequence[Example],
    features: Features,
    batch_size: int,
    multiple: int = 8,
) -> dict[str, float]:
    """Official dev EM / F1 of the probe's answers, chosen as every epoch chooses them, and its
    dev loss (the training loss)."""
    starts, ends = probe_logits(probe, states, features, batch_size, multiple)
    predictions = extract_answers(examples, features, starts, ends, config.postprocess)
    metrics, _ = dev_metrics(config, examples, predictions)
    return {
        "exact_match": float(metrics["exact_match"]),
        "f1": float(metrics["f1"]),
        "dev_loss": mean_span_loss(features, starts, ends),
    }


def probe_run(
    run_dir: str | Path,
    train_samples: int = TRAIN_SAMPLES,
    dev_samples: int = DEV_SAMPLES,
    settings: ProbeSettings = ProbeSettings(),
) -> dict[str, Any]:
    """Fit and score one probe per layer of a finished run; write and return `probes.json`."""
    from squadqa.config import load_config
    from squadqa.data import load_squad
    from squadqa.features import build_features
    from squadqa.inference import QAPredictor
    from squadqa.scoring import evaluate_dev, load_dev, padding_multiple
    from squadqa.train import feature_cache_dir

    for name, n in (("train_samples", train_samples), ("dev_samples", dev_samples)):
        if n < 1:
            raise ValueError(f"probe {name}={n} must be at least 1")
    run_dir = Path(run_dir)
    # the one loader: checks the run's files
    loaded = QAPredictor.from_run_dir(run_dir, runtime="keras")
    model, tokenizer = loaded.model, loaded.tokenizer
    config = load_config(run_dir / rundir.CONFIG)
    dev_examples = spread(load_dev(config).examples, dev_samples)
    # Never fit on dev: a run whose train and dev files share questions (the quickstart trains
    # and evaluates on the bundled sample) has those left out of the probe's train subset.
    dev_ids = {e.id for e in dev_examples}
    read = load_squad(config.data.train, strict=config.data.strict).examples
    candidates = [example for example in read if example.id not in dev_ids]
    left_out = len(read) - len(candidates)
    train = spread(candidates, train_samples)
    cache = feature_cache_dir()
    train_features = build_features(train, tokenizer, config.features, cache)
    dev_features = build_features(dev_examples, tokenizer, config.features, cache)
    batch_size = config.train.eval_batch_size
    multiple = padding_multiple(config.train.length_multiple)
    print(
        f"probe train: {len(train)} questions of {config.data.train} at an even stride "
        f"({left_out} dev questions left out) -> {len(train_features)} windows"
    )
    print(
        f"probe dev:   {len(dev_examples)} questions of {config.data.dev} at an even stride -> "
        f"{len(dev_features)} windows"
    )

    began = time.perf_counter()
    train_states = layer_states(model, train_features, tokenizer.pad_id, batch_size, multiple)
    dev_states = layer_states(model, dev_features, tokenizer.pad_id, batch_size, multiple)
    states_s = time.perf_counter() - began
    reference, _, reference_loss = evaluate_dev(
        model, config, dev_examples, dev_features, tokenizer.pad_id
    )

    began = time.perf_counter()
    layers = []
    for layer, (fit_on, score_on) in enumerate(zip(train_states, dev_states, strict=True)):
        probe = fit_probe(fit_on, train_features, settings, multiple)
        fitted = probe_logits(probe, fit_on, train_features, batch_size, multiple)
        layers.append(
            {
                "layer": layer,
                "states": "embeddings" if layer == 0 else f"block {layer}",
                **score_probe(
                    probe, score_on, config, dev_examples, dev_features, batch_size, multiple
                ),
                "train_loss": mean_span_loss(train_features, *fitted),
            }
        )
    record = {
        "layers": layers,
        "model_head": {
            "exact_match": float(reference["exact_match"]),
            "f1": float(reference["f1"]),
            "dev_loss": reference_loss,
        },
        "train_data": str(config.data.train),
        "train_samples": len(train),
        "dev_questions_left_out_of_train": left_out,
        "train_windows": len(train_features),
        "dev_data": str(config.data.dev),
        "dev_samples": len(dev_examples),
        "subsets": "an even stride over each file (data.spread)",
        "dev_windows": len(dev_features),
        "settings": {**asdict(settings), "optimizer": "adam", "loss": "span_objective()"},
        "hidden_size": int(train_states[0][0].shape[-1]),
        "backend": keras.backend.backend(),
        "seconds": {"states": states_s, "fit_and_score": time.perf_counter() - began},
        "created": rundir.now(),
    }
    rundir.write_json(run_dir / rundir.PROBES, record)
    return record


def format_probes(record: dict[str, Any]) -> str:
    """probes.json as a markdown table, the run's own head last."""
    lines = [
        "| layer | states | dev EM | dev F1 | dev loss | train loss |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in record["layers"]:
        lines.append(
            f"| {row['layer']} | {row['states']} | {row['exact_match']:.2f} | {row['f1']:.2f} "
            f"| {row['dev_loss']:.4f} | {row['train_loss']:.4f} |"
        )
    head = record["model_head"]
    lines.append(
        f"| - | the run's own head | {head['exact_match']:.2f} | {head['f1']:.2f} "
        f"| {head['dev_loss']:.4f} | - |"
    )
    return "\n".join(lines)
