"""`squadqa train`: fit a QATransformer on SQuAD, evaluate on dev every epoch, keep a run record.

One epoch = one `model.fit` call over length-bucketed batches, then a dev pass through the real
post-processing and the official evaluation. After each epoch the run directory gets an atomic
checkpoint (weights, optimizer state and dropout RNG state), a `metrics.jsonl` line and an updated
`status.json`, so `--resume` after a crash continues to the same result as an uninterrupted run.

Run directory (`runs/<name>/`): `config.toml`, `tokenizer.json`, `status.json`, `metrics.jsonl`,
`eval.json`, `predictions.json`, `nbest_predictions.json`, `checkpoints/{last,best}.weights.h5`,
`checkpoints/state.json`, `model.keras` (best weights, self-contained).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from squadqa.config import RunConfig, TrainConfig, dump_config, load_config
from squadqa.data import Example, default_cache_dir, gold_answers, load_squad
from squadqa.evaluation import evaluate_v1
from squadqa.features import (
    Features,
    batch_order,
    build_features,
    pad_batch,
)
from squadqa.inference import padding_multiple, predict_logits
from squadqa.malloc import reuse_freed_memory
from squadqa.model import QAConfig, QATransformer
from squadqa.optim import make_adamw
from squadqa.postprocess import Predictions, extract_answers, write_json
from squadqa.tokenization import QATokenizer, load_tokenizer, train_wordpiece, training_texts
from squadqa.tracking import Tracker, make_tracker

NO_DECAY = ("bias", "layer_norm", "layernorm", "gamma", "beta")


def feature_cache_dir() -> Path:
    return default_cache_dir() / "features"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (what featurising a split costs)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS


def slow_bf16_warning() -> str | None:
    """A warning when bfloat16 would run on a CPU without bf16 instructions (emulated, slow)."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return None
    elif backend == "jax":
        import jax

        if jax.default_backend() != "cpu":
            return None
    else:
        return None
    try:
        cpu_flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    if "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags:
        return None
    return (
        "warning: train.mixed_precision = true on a CPU without AVX512-BF16 or AMX: bfloat16 "
        "is emulated there (11x slower than float32 on an AVX2 CPU); "
        "--set train.mixed_precision=false"
    )


def set_precision(mixed: bool) -> None:
    """The process-global dtype policy; set either way so it never leaks into a later run."""
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if mixed else "float32")
    warning = slow_bf16_warning() if mixed else None
    if warning:
        print(warning, file=sys.stderr)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- loss and schedule


@keras.saving.register_keras_serializable(package="squadqa")
def span_loss(y_true: Any, y_pred: Any, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy over positions; smoothing spreads mass over the allowed positions only."""
    logits = ops.cast(y_pred, "float32")
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    log_probs = ops.log_softmax(logits, axis=-1)
    nll = -ops.sum(ops.one_hot(labels, ops.shape(logits)[-1]) * log_probs, axis=-1)
    if label_smoothing == 0.0:
        return nll
    allowed = ops.cast(logits > -1e3, "float32")  # masked positions hold a huge negative logit
    uniform = -ops.sum(log_probs * allowed, axis=-1) / ops.maximum(ops.sum(allowed, axis=-1), 1.0)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


@keras.saving.register_keras_serializable(package="squadqa")
class SpanLoss(keras.losses.Loss):
    def __init__(self, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return span_loss(y_true, y_pred, self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="squadqa")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then linear / cosine / polynomial (power 2) decay to 0."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, kind: str = "linear"):
        if kind not in ("linear", "cosine", "polynomial", "constant"):
            raise ValueError(f"train.schedule={kind!r}: use linear, cosine, polynomial or constant")
        self.peak, self.total_steps, self.warmup_steps, self.kind = (
            peak,
            max(total_steps, 1),
            warmup_steps,
            kind,
        )

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = ops.clip(
            (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0
        )
        if self.kind == "linear":
            decayed = self.peak * (1.0 - progress)
        elif self.kind == "cosine":
            decayed = self.peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "polynomial":
            decayed = self.peak * (1.0 - progress) ** 2
        else:
            decayed = self.peak + 0.0 * progress
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
        }


# --------------------------------------------------------------------------- data feeding


class TrainBatches(keras.utils.PyDataset):
    """Length-bucketed, shuffled training batches; the order depends only on (seed, epoch)."""

    def __init__(self, features: Features, pad_id: int, batch_size: int, seed: int, multiple: int):
        super().__init__()
        self.features, self.pad_id, self.batch_size = features, pad_id, batch_size
        self.seed, self.multiple = seed, multiple
        self.lengths = features.lengths
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.order = batch_order(self.lengths, self.batch_size, True, self.seed * 1000 + epoch)
        # Real (non-padding) tokens after each batch of this epoch, for tokens/s.
        self.cumulative_tokens = np.cumsum([int(self.lengths[b].sum()) for b in self.order])

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> tuple[dict, dict]:
        indices = self.order[index]
        inputs = pad_batch(self.features, indices, self.pad_id, self.multiple)
        targets = {
            "start_logits": self.features.start_positions[indices],
            "end_logits": self.features.end_positions[indices],
        }
        return inputs, targets


def mean_span_loss(features: Features, starts: Sequence[np.ndarray], ends: Sequence[np.ndarray]):
    """Dev loss in numpy: mean over features of (start CE + end CE) / 2."""
    total = 0.0
    for s, e, ls, le in zip(
        starts, ends, features.start_positions, features.end_positions, strict=True
    ):
        for logits, label in ((s, ls), (e, le)):
            z = logits.astype(np.float64)
            total += 0.5 * (np.log(np.exp(z - z.max()).sum()) + z.max() - z[label])
    return total / max(len(features), 1)


# --------------------------------------------------------------------------- building blocks


@dataclass
class Prepared:
    """Everything a training run needs, built once from the config."""

    config: RunConfig
    tokenizer: QATokenizer
    train_examples: list[Example]
    dev_examples: list[Example]
    train_features: Features
    dev_features: Features
    model: QATransformer
    init: str


def _pretrained_path(init: str) -> str | None:
    return init.split(":", 1)[1] if ":" in init else None


def build_tokenizer(config: RunConfig, train_examples: Sequence[Example]) -> QATokenizer:
    kind = config.tokenizer.kind
    if config.train.init.startswith("run:"):  # the pretraining run's own vocabulary
        return load_tokenizer(Path(config.train.init[len("run:") :]) / "tokenizer.json")
    if config.train.init.startswith("pretrained") or kind == "pretrained":
        from squadqa.pretrained import checkpoint_dir

        return load_tokenizer(checkpoint_dir(_pretrained_path(config.train.init)))
    if kind == "train":
        return train_wordpiece(training_texts(train_examples), config.tokenizer.vocab_size)
    if kind == "vocab":
        if not config.tokenizer.path:
            raise ValueError("tokenizer.kind = 'vocab' needs tokenizer.path (vocab.txt or .json)")
        return load_tokenizer(config.tokenizer.path)
    raise ValueError(f"tokenizer.kind={kind!r}: use train, vocab or pretrained")


def build_model(config: RunConfig, vocab_size: int) -> tuple[QATransformer, str]:
    init = config.train.init
    dropout = {k: v for k, v in config.model.items() if "dropout" in k}
    if init.startswith("pretrained"):
        from squadqa.pretrained import load_pretrained

        model, _, report = load_pretrained(_pretrained_path(init), **dropout)
        print(report.summary())
        return model, "pretrained"
    if init.startswith("run:"):
        from squadqa.pretrain import load_encoder

        model, report = load_encoder(init[len("run:") :], **dropout)
        print(report.summary())
        return model, report.label
    if init != "scratch":
        raise ValueError(
            f"train.init={init!r}: use scratch, pretrained, pretrained:PATH or run:RUN_DIR"
        )
    model = QATransformer(QAConfig(vocab_size=vocab_size, **config.model))
    model.build()
    return model, "scratch"


def prepare(config: RunConfig, run_dir: Path, resume: bool) -> Prepared:
    data_cfg = config.data
    train = load_squad(
        data_cfg.train, max_samples=data_cfg.max_train_samples or None, strict=data_cfg.strict
    )
    dev = load_squad(
        data_cfg.dev, max_samples=data_cfg.max_dev_samples or None, strict=data_cfg.strict
    )
    print(f"train: {train.stats.summary()}\ndev:   {dev.stats.summary()}")
    tokenizer_file = run_dir / "tokenizer.json"
    if resume and tokenizer_file.is_file():
        tokenizer = load_tokenizer(tokenizer_file)
    else:
        tokenizer = build_tokenizer(config, train.examples)
        tokenizer.save(run_dir)
    feature_config = config.features
    cache = feature_cache_dir()
    train_features = build_features(train.examples, tokenizer, feature_config, cache)
    dev_features = build_features(dev.examples, tokenizer, feature_config, cache)
    print(f"train features: {train_features.stats.summary()}")
    print(f"dev features:   {dev_features.stats.summary()}")
    print(f"peak memory after loading and featurising: {peak_rss_mb():.0f} MB")
    model, init = build_model(config, tokenizer.vocab_size)
    return Prepared(
        config, tokenizer, train.examples, dev.examples, train_features, dev_features, model, init
    )


def make_optimizer(
    t: TrainConfig, total_updates: int
) -> tuple[keras.optimizers.Optimizer, WarmupDecay]:
    """AdamW with the configured warmup/decay schedule over `total_updates` (no decay on norms)."""
    schedule = WarmupDecay(
        t.learning_rate, total_updates, int(t.warmup_ratio * total_updates), t.schedule
    )
    optimizer = make_adamw(
        learning_rate=schedule,
        weight_decay=t.weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        global_clipnorm=t.clip_norm or None,
        gradient_accumulation_steps=t.grad_accum if t.grad_accum > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer, schedule


def compile_model(model: QATransformer, config: RunConfig, steps_per_epoch: int) -> None:
    t = config.train
    updates_per_epoch = max(steps_per_epoch // max(t.grad_accum, 1), 1)
    optimizer, _ = make_optimizer(t, updates_per_epoch * t.epochs)
    model.compile(
        optimizer=optimizer,
        loss={
            "start_logits": SpanLoss(t.label_smoothing),
            "end_logits": SpanLoss(t.label_smoothing),
        },
        loss_weights={"start_logits": 0.5, "end_logits": 0.5},
    )
    optimizer.build(model.trainable_variables)


def seed_epoch(model: keras.Model, seed: int, epoch: int) -> None:
    """Make an epoch's randomness depend only on (seed, epoch), resumed or not.

    Reseeds the global RNGs (Python, numpy, the backend: torch's unseeded dropout fast path
    draws from its global generator) and every Keras SeedGenerator of the model.
    """
    keras.utils.set_random_seed(seed * 1000 + epoch)
    generators = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        generators.extend(getattr(layer, "_seed_generators", []))
    for index, generator in enumerate(generators):
        state = np.array([seed * 7919 + index, epoch], dtype=generator.state.dtype)
        generator.state.assign(state)


# --------------------------------------------------------------------------- the run


class RunRecord:
    """status.json and metrics.jsonl of one run directory."""

    def __init__(self, run_dir: Path, fields: dict[str, Any]):
        self.run_dir = run_dir
        self.status: dict[str, Any] = fields

    def write_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=now())
        write_json(self.run_dir / "status.json", self.status)

    def metrics(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def keep_epochs(self, epochs: int) -> None:
        """Drop metric lines past the checkpoint we resume from (work that will be redone)."""
        kept = [m for m in self.metrics() if m["epoch"] <= epochs]
        text = "".join(json.dumps(m) + "\n" for m in kept)
        tmp = self.run_dir / "metrics.jsonl.tmp"
        tmp.write_text(text)
        tmp.replace(self.run_dir / "metrics.jsonl")

    def append_metrics(self, line: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name("tmp-" + path.name)
    model.save_weights(tmp)
    tmp.replace(path)


def evaluate_dev(prep: Prepared, model: keras.Model) -> tuple[dict, Predictions, float]:
    """Dev EM/F1 (official), predictions and dev loss, through the real post-processing."""
    t = prep.config.train
    starts, ends = predict_logits(
        model,
        prep.dev_features,
        prep.tokenizer.pad_id,
        t.eval_batch_size,
        padding_multiple(t.length_multiple),
    )
    predictions = extract_answers(
        prep.dev_examples, prep.dev_features, starts, ends, prep.config.postprocess
    )
    metrics = evaluate_v1(gold_answers(prep.dev_examples), predictions.answers)
    return metrics, predictions, mean_span_loss(prep.dev_features, starts, ends)


class EpochSeed(keras.callbacks.Callback):
    """Reseed at the start of each epoch, after `fit`'s own set-up has drawn from the RNGs."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        seed_epoch(self.model, self.seed, epoch)


class ProgressBar(keras.callbacks.Callback):
    """tqdm bar per epoch with loss and training tokens/s."""

    def __init__(self, batches: TrainBatches, epoch: int, epochs: int, log_every: int = 1):
        super().__init__()
        self.batches, self.epoch, self.epochs = batches, epoch, epochs
        self.log_every = log_every

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        from tqdm.auto import tqdm

        interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=len(self.batches),
            desc=f"epoch {self.epoch + 1}/{self.epochs}",
            mininterval=2.0 if interactive else 60.0,  # a log file gets a line a minute
            disable=False,
        )
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.bar.update(1)
        if batch % self.log_every == 0 and logs:
            tokens = self.batches.cumulative_tokens[batch]
            rate = tokens / max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.3f}", tok_s=f"{rate:.0f}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.bar.close()


def open_run_dir(config: RunConfig, runs_dir: str | Path, resume: bool) -> tuple[RunConfig, Path]:
    """The run directory, made ready: a fresh one, or (--resume) the saved config of an old one."""
    run_dir = Path(runs_dir) / config.name
    if resume:
        saved = run_dir / "config.toml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: no run to resume at {run_dir}")
        config = load_config(saved)
    elif (run_dir / "status.json").exists():
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume to continue it, or pick another "
            f"name with --set name=..."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "config.toml").write_text(dump_config(config))
    return config, run_dir


def train(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train as configured; returns the final status. Writes everything to runs_dir/name."""
    config, run_dir = open_run_dir(config, runs_dir, resume)

    t = config.train
    malloc_tuned = reuse_freed_memory()
    keras.utils.set_random_seed(t.seed)
    set_precision(t.mixed_precision)
    prep = prepare(config, run_dir, resume)
    model = prep.model
    batches = TrainBatches(
        prep.train_features,
        prep.tokenizer.pad_id,
        t.batch_size,
        t.seed,
        padding_multiple(t.length_multiple),
    )
    compile_model(model, config, len(batches))

    state = {
        "epoch": 0,
        "best_f1": -1.0,
        "best_epoch": None,
        "best_em": None,
        "wait": 0,
        "wall_time_s": 0.0,
    }
    state_file = run_dir / "checkpoints" / "state.json"
    record = RunRecord(run_dir, {})
    if resume and state_file.is_file():
        state = json.loads(state_file.read_text())
        model.load_weights(run_dir / "checkpoints" / "last.weights.h5")
        print(f"resumed {run_dir} after epoch {state['epoch']}")
    record.keep_epochs(state["epoch"])
    previous = (
        json.loads((run_dir / "status.json").read_text())
        if resume and (run_dir / "status.json").is_file()
        else {}
    )
    record.status = {
        "status": "running",
        "started": previous.get("started", now()),
        "process_started": now(),
        "features_peak_rss_mb": round(peak_rss_mb()),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "backend": keras.backend.backend(),
        "malloc_tuned": malloc_tuned,
        "init": prep.init,
        "parameters": int(model.count_params()),
        "train_examples": len(prep.train_examples),
        "train_features": len(prep.train_features),
        "dev_examples": len(prep.dev_examples),
        "epochs_planned": t.epochs,
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_dev_exact_match": state["best_em"],
        "best_dev_f1": state["best_f1"] if state["best_epoch"] else None,
        "wall_time_s": state["wall_time_s"],
    }
    record.write_status()
    tracker: Tracker = make_tracker(config, run_dir)
    tracker.start(config, record.status)

    try:
        status = _epochs(prep, model, batches, state, state_file, record, tracker, extra_callbacks)
    except BaseException as err:
        record.write_status(status="crashed", error=f"{type(err).__name__}: {err}")
        tracker.finish(record.status)
        raise
    record.write_status(status=status)
    tracker.finish(record.status)
    return record.status


def _epochs(
    prep: Prepared,
    model: QATransformer,
    batches: TrainBatches,
    state: dict[str, Any],
    state_file: Path,
    record: RunRecord,
    tracker: Tracker,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> str:
    t = prep.config.train
    run_dir = record.run_dir
    checkpoints = run_dir / "checkpoints"
    for epoch in range(state["epoch"], t.epochs):
        started = time.perf_counter()
        batches.set_epoch(epoch)
        callbacks = [
            EpochSeed(t.seed),
            ProgressBar(batches, epoch, t.epochs),
            *extra_callbacks,
            *tracker.callbacks(),
        ]
        history = model.fit(
            batches,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            callbacks=callbacks,
            shuffle=False,
        )
        train_seconds = time.perf_counter() - started
        train_tokens = int(batches.cumulative_tokens[-1])
        metrics, predictions, dev_loss = evaluate_dev(prep, model)
        lr = float(ops.convert_to_numpy(model.optimizer.learning_rate))
        state["wall_time_s"] += time.perf_counter() - started
        line = {
            "epoch": epoch + 1,
            "train_loss": float(history.history["loss"][-1]),
            "dev_loss": float(dev_loss),
            "dev_exact_match": metrics["exact_match"],
            "dev_f1": metrics["f1"],
            "lr": lr,
            "wall_time_s": round(state["wall_time_s"], 2),
            "tokens_per_s": train_tokens / max(train_seconds, 1e-9),
            "train_tokens": train_tokens,
        }
        improved = metrics["f1"] > state["best_f1"]
        if improved:
            state.update(
                best_f1=metrics["f1"], best_em=metrics["exact_match"], best_epoch=epoch + 1, wait=0
            )
            save_weights_atomic(model, checkpoints / "best.weights.h5")
            predictions.save(run_dir)
            write_json(run_dir / "eval.json", {**metrics, "epoch": epoch + 1})
        else:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        save_weights_atomic(model, checkpoints / "last.weights.h5")
        write_json(state_file, state)
        record.append_metrics(line)
        record.write_status(
            epochs_run=epoch + 1,
            best_epoch=state["best_epoch"],
            best_dev_exact_match=state["best_em"],
            best_dev_f1=state["best_f1"],
            wall_time_s=round(state["wall_time_s"], 2),
        )
        tracker.log_epoch(line, prep.dev_examples, predictions)
        print(
            f"epoch {epoch + 1}/{t.epochs}: train loss {line['train_loss']:.4f}, dev loss "
            f"{dev_loss:.4f}, dev EM {metrics['exact_match']:.2f} F1 {metrics['f1']:.2f}, "
            f"{line['tokens_per_s']:.0f} tokens/s, {line['wall_time_s']:.0f}s"
            + (" (best)" if improved else "")
        )
        patience = t.early_stopping_patience
        if patience and state["wait"] >= patience and epoch + 1 < t.epochs:
            print(f"early stop: no dev F1 gain for {patience} epochs")
            _export_best(model, checkpoints)
            return "stopped_early"
    _export_best(model, checkpoints)
    return "finished"


def _export_best(model: QATransformer, checkpoints: Path) -> None:
    """model.keras: the best epoch's weights as a self-contained Keras model for serving."""
    model.load_weights(checkpoints / "best.weights.h5")
    export = QATransformer.from_config(model.get_config())  # uncompiled: no optimizer state
    export.build()
    export.set_weights(model.get_weights())
    tmp = checkpoints.parent / "tmp-model.keras"
    export.save(tmp)
    tmp.replace(checkpoints.parent / "model.keras")
