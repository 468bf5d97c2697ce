"""`squadqa train`: fit a QATransformer on SQuAD, evaluate on dev every epoch, keep a run record.

One epoch = one `model.fit` call over length-bucketed batches, then a dev pass through the real
post-processing and the official evaluation. After each epoch the run directory gets an atomic
checkpoint (weights, optimizer state and dropout RNG state), a `metrics.jsonl` line and an updated
`status.json`, so `--resume` after a crash continues to the same result as an uninterrupted run.

The run directory's files and how they are written: `squadqa.rundir`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops
from tokenizers import Tokenizer

from squadqa import rundir
from squadqa.config import (
    RunConfig,
    architecture_settings,
    dump_config,
    load_config,
    model_defaults,
)
from squadqa.data import Example, SquadData, default_cache_dir, gold_answers, load_squad
from squadqa.distributed import (
    ONE_DEVICE,
    Replicas,
    broadcast_text,
    join_processes,
    no_distribution,
    set_distribution,
)
from squadqa.evaluation import evaluate_v1, evaluate_v2_at_best_threshold
from squadqa.features import (
    Features,
    batch_order,
    build_features,
    pad_batch,
    split_evenly,
)
from squadqa.inference import padding_multiple, predict_logits
from squadqa.layers import MASKED_LOGIT
from squadqa.malloc import reuse_freed_memory
from squadqa.model import QAConfig, QATransformer, float32_model, span_loss, span_objective
from squadqa.optim import WarmupDecay, make_optimizer
from squadqa.postprocess import Predictions, extract_answers
from squadqa.rundir import RunRecord, write_json
from squadqa.runs import process_status
from squadqa.tokenization import QATokenizer, load_tokenizer, train_wordpiece, training_texts
from squadqa.tracking import Tracker, make_tracker

# SQuAD 2.0 metrics that go into metrics.jsonl beside EM / F1 (as dev_<key>).
V2_KEYS = ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "null_threshold")


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


# --------------------------------------------------------------------------- data feeding


class TrainBatches(keras.utils.PyDataset):
    """Length-bucketed, shuffled training batches; the order depends only on (seed, epoch)."""

    def __init__(
        self,
        features: Features,
        pad_id: int,
        batch_size: int,
        seed: int,
        multiple: int,
        replicas: Replicas = ONE_DEVICE,
    ):
        super().__init__()
        self.features, self.pad_id, self.batch_size = features, pad_id, batch_size
        self.seed, self.multiple, self.replicas = seed, multiple, replicas
        self.lengths = features.lengths
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        order = batch_order(self.lengths, self.batch_size, True, self.seed * 1000 + epoch)
        # Data parallel: each batch must split evenly over the replicas; the one short batch of
        # an epoch loses its remainder (counted, and printed once per run).
        self.order = split_evenly(order, self.replicas.devices)
        self.dropped_per_epoch = len(self.lengths) - sum(len(b) for b in self.order)
        # Real (non-padding) tokens after each batch of this epoch, for tokens/s.
        self.cumulative_tokens = np.cumsum([int(self.lengths[b].sum()) for b in self.order])

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> tuple[dict, dict]:
        """The global batch, padded to its longest row; of it, only this process's rows."""
        indices = self.order[index]
        inputs = pad_batch(self.features, indices, self.pad_id, self.multiple)
        targets = {
            "start_logits": self.features.start_positions[indices],
            "end_logits": self.features.end_positions[indices],
        }
        return self.replicas.local_rows((inputs, targets))


def mean_span_loss(features: Features, starts: Sequence[np.ndarray], ends: Sequence[np.ndarray]):
    """Dev loss: the training loss (no smoothing) averaged over features, logits unpadded."""
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
    replicas: Replicas = ONE_DEVICE  # data parallel (train.distribution)


def _pretrained_path(init: str) -> str | None:
    return init.split(":", 1)[1] if ":" in init else None


def build_tokenizer(config: RunConfig, train_examples: Sequence[Example]) -> QATokenizer:
    kind = config.tokenizer.kind
    if config.train.init.startswith("run:"):  # the pretraining run's own vocabulary
        source = Path(config.train.init[len("run:") :])
        if not (source / rundir.TOKENIZER).is_file():
            raise FileNotFoundError(
                f"train.init = {config.train.init!r}: {source} is not a `squadqa pretrain` run "
                f"(no {rundir.TOKENIZER}); make it first, e.g. `squadqa pretrain --config "
                f"configs/pretrain-mlm.toml --name {source.name} --runs-dir {source.parent}`"
            )
        return load_tokenizer(source / rundir.TOKENIZER)
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


def shared_tokenizer(tokenizer: QATokenizer, replicas: Replicas) -> QATokenizer:
    """Process 0's tokenizer on every process of a multi-process run (the same one otherwise)."""
    if replicas.process_count == 1:
        return tokenizer
    return QATokenizer(Tokenizer.from_str(broadcast_text(tokenizer.tokenizer.to_str(), replicas)))


def overridden_architecture(config: RunConfig, model: QATransformer) -> list[str]:
    """The [model] settings that `config` moves away from their defaults but a checkpoint's
    architecture overrides (its architecture wins), as `key = config's (checkpoint: theirs)`."""
    defaults, built = model_defaults(), architecture_settings(model.config)
    return [
        f"{key} = {value!r} (checkpoint: {built[key]!r})"
        for key, value in config.model.items()
        if "dropout" not in key and value != defaults[key] and value != built[key]
    ]


def build_model(config: RunConfig, vocab_size: int) -> tuple[QATransformer, str]:
    init = config.train.init
    dropout = {k: v for k, v in config.model.items() if "dropout" in k}
    if init.startswith("pretrained") or init.startswith("run:"):
        if init.startswith("pretrained"):
            from squadqa.pretrained import load_pretrained

            model, _, report = load_pretrained(_pretrained_path(init), **dropout)
            label = "pretrained"
        else:
            from squadqa.pretrain import load_encoder

            model, report = load_encoder(init[len("run:") :], **dropout)
            label = report.label
        print(report.summary())
        ignored = overridden_architecture(config, model)
        if ignored:
            print(
                f"warning: train.init={init!r} brings its own architecture, so these [model] "
                f"settings are not used: {'; '.join(ignored)}",
                file=sys.stderr,
            )
        return model, label
    if init != "scratch":
        raise ValueError(
            f"train.init={init!r}: use scratch, pretrained, pretrained:PATH or run:RUN_DIR"
        )
    model = QATransformer(QAConfig(vocab_size=vocab_size, **config.model))
    model.build()
    return model, "scratch"


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


def prepare(
    config: RunConfig, run_dir: Path, resume: bool, replicas: Replicas = ONE_DEVICE
) -> Prepared:
    data_cfg = config.data
    train = load_squad(
        data_cfg.train,
        max_samples=data_cfg.max_train_samples or None,
        max_articles=data_cfg.max_train_articles or None,
        strict=data_cfg.strict,
    )
    dev = load_dev(config)
    n_articles = data_cfg.max_train_articles
    cut = f" (first {n_articles} articles: data.max_train_articles)" if n_articles else ""
    print(f"train: {train.stats.summary()}{cut}\ndev:   {dev.stats.summary()}")
    tokenizer_file = run_dir / rundir.TOKENIZER
    if resume and tokenizer_file.is_file():
        tokenizer = load_tokenizer(tokenizer_file)
    else:
        tokenizer = shared_tokenizer(build_tokenizer(config, train.examples), replicas)
        tokenizer.save(run_dir)
    feature_config = config.features
    cache = feature_cache_dir()
    train_features = build_features(train.examples, tokenizer, feature_config, cache)
    dev_features = build_features(dev.examples, tokenizer, feature_config, cache)
    print(f"train features: {train_features.stats.summary()}")
    print(f"dev features:   {dev_features.stats.summary()}")
    print(f"peak memory after loading and featurising: {peak_rss_mb():.0f} MB")
    model, init = build_model(config, tokenizer.vocab_size)
    if init != "scratch":  # record the checkpoint's architecture, not [model]'s unused keys
        config = replace(config, model=architecture_settings(model.config))
    return Prepared(
        config,
        tokenizer,
        train.examples,
        dev.examples,
        train_features,
        dev_features,
        model,
        init,
        replicas,
    )


def compile_model(model: QATransformer, config: RunConfig, steps_per_epoch: int) -> WarmupDecay:
    """AdamW and the span loss; returns the learning-rate schedule (over optimizer updates)."""
    t = config.train
    updates_per_epoch = max(steps_per_epoch // max(t.grad_accum, 1), 1)
    optimizer, schedule = make_optimizer(t, updates_per_epoch)
    model.compile(optimizer=optimizer, **span_objective(t.label_smoothing))
    optimizer.build(model.trainable_variables)
    return schedule


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
    model: keras.Model,
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


class EpochSeed(keras.callbacks.Callback):
    """Reseed at the start of each epoch, after `fit`'s own set-up has drawn from the RNGs."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        seed_epoch(self.model, self.seed, epoch)


class BatchLoss:
    """Each batch's own loss, recovered from what Keras puts in `logs["loss"]`: the
    batch-size-weighted running mean over the current `fit` call."""

    def __init__(self) -> None:
        self.seen, self.total = 0, 0.0

    def __call__(self, running_mean: float, batch_size: int) -> float:
        total = running_mean * (self.seen + batch_size)
        loss = (total - self.total) / batch_size
        self.seen, self.total = self.seen + batch_size, total
        return loss


class StepLosses(keras.callbacks.Callback):
    """The loss and learning rate of every training batch, one `steps.jsonl` line each.

    Why: an epoch's mean train loss hides a spike or a stall, and the full-data preset's runs
    differed by 6 F1 with nothing but epoch means to show where (docs/results.md).
    """

    def __init__(
        self,
        batches: TrainBatches,
        epoch: int,
        schedule: WarmupDecay,
        grad_accum: int,
        tracker: Tracker,
    ):
        super().__init__()
        self.batches, self.epoch, self.schedule = batches, epoch, schedule
        self.grad_accum, self.tracker = max(grad_accum, 1), tracker
        self.batch_loss = BatchLoss()
        self.lines: list[dict] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self.epoch * len(self.batches) + batch + 1  # 1-based, counted over the run
        loss = self.batch_loss(float(logs["loss"]), len(self.batches.order[batch]))
        # From the schedule, not the optimizer: on jax its variables are stale mid-epoch.
        lr = float(ops.convert_to_numpy(self.schedule((step - 1) // self.grad_accum)))
        self.lines.append({"epoch": self.epoch + 1, "step": step, "loss": loss, "lr": lr})
        self.tracker.log_step(self.lines[-1])


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


def progress_bar(
    batches: keras.utils.PyDataset, epoch: int, epochs: int, replicas: Replicas
) -> list[keras.callbacks.Callback]:
    """The epoch's progress bar, shown by process 0 only."""
    return [ProgressBar(batches, epoch, epochs)] if replicas.is_main else []


def open_run_dir(config: RunConfig, runs_dir: str | Path, resume: bool) -> tuple[RunConfig, Path]:
    """The run directory, made ready: a fresh one, or (--resume) the saved config of an old one."""
    run_dir = Path(runs_dir) / config.name
    if resume:
        saved = run_dir / rundir.CONFIG
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: no run to resume at {run_dir}")
        config = load_config(saved)
    elif (run_dir / rundir.STATUS).exists():
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume to continue it, or pick another "
            f"name with --set name=..."
        )
    if rundir.writes():
        (run_dir / rundir.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    rundir.write_text(run_dir / rundir.CONFIG, dump_config(config))
    return config, run_dir


def train(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train as configured; returns the final status. Writes everything to runs_dir/name."""
    join_processes()
    config, run_dir = open_run_dir(config, runs_dir, resume)

    t = config.train
    malloc_tuned = reuse_freed_memory()
    keras.utils.set_random_seed(t.seed)
    set_precision(t.mixed_precision)
    replicas = set_distribution(t)
    prep = prepare(config, run_dir, resume, replicas)
    if prep.config is not config:  # the architecture of a checkpoint (prepare)
        config = prep.config
        rundir.write_text(run_dir / rundir.CONFIG, dump_config(config))
    model = prep.model
    batches = TrainBatches(
        prep.train_features,
        prep.tokenizer.pad_id,
        t.batch_size,
        t.seed,
        padding_multiple(t.length_multiple),
        replicas,
    )
    if batches.dropped_per_epoch:
        print(
            f"data parallel: {batches.dropped_per_epoch} of {len(prep.train_features)} train "
            f"features left out of every epoch (its short batch, cut to a multiple of "
            f"{replicas.devices})"
        )
    schedule = compile_model(model, config, len(batches))

    state = {
        "epoch": 0,
        "best_f1": -1.0,
        "best_epoch": None,
        "best_em": None,
        "wait": 0,
        "wall_time_s": 0.0,
    }
    state_file = run_dir / rundir.CHECKPOINTS / rundir.STATE
    record = RunRecord(run_dir, {})
    steps = RunRecord(run_dir, {}, log=rundir.STEPS)
    if resume and state_file.is_file():
        state = rundir.read_json(state_file)
        model.load_weights(run_dir / rundir.CHECKPOINTS / rundir.LAST_WEIGHTS)
        print(f"resumed {run_dir} after epoch {state['epoch']}")
    for log in (record, steps):
        log.keep(lambda line: line["epoch"] <= state["epoch"])
    previous = record.previous_status() if resume else {}
    record.status = {
        "status": "running",
        **process_status(previous),
        "features_peak_rss_mb": round(peak_rss_mb()),
        "backend": keras.backend.backend(),
        "replicas": replicas.devices,
        **({"processes": replicas.process_count} if replicas.process_count > 1 else {}),
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
    tracker: Tracker = make_tracker(config, run_dir) if replicas.is_main else Tracker()
    tracker.start(config, record.status)

    try:
        status = _epochs(
            prep,
            model,
            batches,
            schedule,
            state,
            state_file,
            record,
            steps,
            tracker,
            extra_callbacks,
        )
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
    schedule: WarmupDecay,
    state: dict[str, Any],
    state_file: Path,
    record: RunRecord,
    steps: RunRecord,
    tracker: Tracker,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> str:
    t = prep.config.train
    run_dir = record.run_dir
    checkpoints = run_dir / rundir.CHECKPOINTS
    for epoch in range(state["epoch"], t.epochs):
        started = time.perf_counter()
        batches.set_epoch(epoch)
        step_losses = StepLosses(batches, epoch, schedule, t.grad_accum, tracker)
        callbacks = [
            EpochSeed(t.seed),
            step_losses,
            *progress_bar(batches, epoch, t.epochs, prep.replicas),
            *extra_callbacks,
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
        metrics, predictions, dev_loss = evaluate_dev(
            model,
            prep.config,
            prep.dev_examples,
            prep.dev_features,
            prep.tokenizer.pad_id,
            prep.replicas.devices,
        )
        lr = float(ops.convert_to_numpy(model.optimizer.learning_rate))
        state["wall_time_s"] += time.perf_counter() - started
        line = {
            "epoch": epoch + 1,
            "train_loss": float(history.history["loss"][-1]),
            "dev_loss": float(dev_loss),
            "dev_exact_match": metrics["exact_match"],
            "dev_f1": metrics["f1"],
            **{f"dev_{k}": v for k, v in metrics.items() if k.startswith(V2_KEYS)},
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
            rundir.save_weights(model, checkpoints / rundir.BEST_WEIGHTS)
            predictions.save(run_dir)
            write_json(run_dir / rundir.EVAL, {**metrics, "epoch": epoch + 1})
        else:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        rundir.save_weights(model, checkpoints / rundir.LAST_WEIGHTS)
        if t.keep_epoch_checkpoints:
            rundir.save_weights(model, checkpoints / rundir.epoch_weights(epoch + 1))
        steps.append(*step_losses.lines)
        write_json(state_file, state)
        record.append(line)
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
    """model.keras: the best epoch's checkpoint in a fresh, uncompiled float32 model for serving.

    Written by process 0 alone (in a multi-process run), so the model is built outside the
    data-parallel distribution and reads the checkpoint file, not the global training arrays.
    """
    if not rundir.writes():
        return
    with no_distribution():
        export = float32_model(model.get_config())
        export.load_weights(checkpoints / rundir.BEST_WEIGHTS)
    rundir.write_atomic(checkpoints.parent / rundir.MODEL, export.save)
