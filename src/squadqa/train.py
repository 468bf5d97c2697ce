"""`squadqa train`: fit a QATransformer on SQuAD, evaluate on dev every epoch, keep a run record.

One epoch = one `model.fit` call over length-bucketed batches, then a dev pass through the real
post-processing and the official evaluation. After each epoch, every `train.save_every_steps`
steps and on a stop signal, the run directory gets an atomic checkpoint (weights and optimizer
state, with the epoch and step in `state.json`; dropout is reseeded from seed, epoch and step:
`squadqa.harness`), so `--resume` after a crash or a stop continues to the same weights as an
uninterrupted run.

The run directory's files and how they are written: `squadqa.rundir`.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from squadqa import rundir, seeding
from squadqa.config import (
    RunConfig,
    architecture_settings,
    dump_config,
    load_config,
    model_defaults,
)
from squadqa.data import Example, default_cache_dir, load_squad
from squadqa.distributed import (
    ONE_DEVICE,
    Replicas,
    join_processes,
    no_distribution,
    set_distribution,
)
from squadqa.features import (
    Features,
    batch_order,
    build_features,
    pad_batch,
    split_evenly,
)
from squadqa.harness import (
    BatchLoss,
    StepCadence,
    StopRequests,
    open_run_dir,
    pretrained_path,
    progress_bar,
    run_tokenizer,
    set_precision,
)
from squadqa.malloc import reuse_freed_memory
from squadqa.model import QAConfig, QATransformer, float32_model, span_objective
from squadqa.optim import WarmupDecay, make_optimizer
from squadqa.rundir import RunRecord, write_json
from squadqa.scoring import V2_KEYS, evaluate_dev, load_dev, padding_multiple
from squadqa.tokenization import QATokenizer, load_tokenizer
from squadqa.tracking import Tracker, make_tracker


def feature_cache_dir() -> Path:
    return default_cache_dir() / "features"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (what featurising a split costs)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS


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

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The batches of `epoch` from step `start` on (a resumed epoch skips the done ones)."""
        seed = seeding.seed_sequence(self.seed, seeding.Stream.BATCH_ORDER, epoch)
        order = batch_order(self.lengths, self.batch_size, True, seed)
        # Data parallel: each batch must split evenly over the replicas; the one short batch of
        # an epoch loses its remainder (counted, and printed once per run).
        self.order = split_evenly(order, self.replicas.devices)
        self.start = start
        self.dropped_per_epoch = len(self.lengths) - sum(len(b) for b in self.order)
        # Real (non-padding) tokens after each batch from `start` on, for tokens/s.
        done = np.cumsum([int(self.lengths[b].sum()) for b in self.order])
        self.cumulative_tokens = done[start:] - (done[start - 1] if start else 0)
        self.epoch_tokens = int(done[-1])  # the whole epoch's, resumed or not

    @property
    def steps_per_epoch(self) -> int:
        return len(self.order)

    def __len__(self) -> int:
        return len(self.order) - self.start

    def __getitem__(self, index: int) -> tuple[dict, dict]:
        """The global batch, padded to its longest row; of it, only this process's rows."""
        indices = self.order[self.start + index]
        inputs = pad_batch(self.features, indices, self.pad_id, self.multiple)
        targets = {
            "start_logits": self.features.start_positions[indices],
            "end_logits": self.features.end_positions[indices],
        }
        return self.replicas.local_rows((inputs, targets))


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

            model, _, report = load_pretrained(pretrained_path(init), **dropout)
            label = "pretrained"
        else:
            from squadqa.pretrained import load_encoder

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
    tokenizer = run_tokenizer(config, run_dir, resume, train.examples, replicas)
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


# --------------------------------------------------------------------------- the run


class StepLog:
    """Each training step's own loss and learning rate, for `steps.jsonl` (written with each
    checkpoint), and the epoch's loss so far in the run state (so a resumed epoch's mean is the
    uninterrupted one's).

    Why per step: an epoch's mean train loss hides a spike or a stall, and the full-data preset's
    runs differed by 6 F1 with nothing but epoch means to show where (docs/results.md).
    """

    def __init__(
        self,
        batches: TrainBatches,
        epoch: int,
        schedule: WarmupDecay,
        grad_accum: int,
        tracker: Tracker,
        state: dict[str, Any],
    ) -> None:
        self.batches, self.epoch, self.schedule = batches, epoch, schedule
        self.grad_accum, self.tracker, self.state = max(grad_accum, 1), tracker, state
        self.batch_loss = BatchLoss()  # one per `fit` call: Keras' running mean restarts there
        self.pending: list[dict] = []  # lines not yet in steps.jsonl

    def __call__(self, step: int, logs: dict) -> None:
        rows = len(self.batches.order[step - 1])
        loss = self.batch_loss(float(logs["loss"]), rows)
        run_step = self.epoch * self.batches.steps_per_epoch + step  # 1-based, over the run
        # From the schedule, not the optimizer: on jax its variables are stale mid-epoch.
        lr = float(ops.convert_to_numpy(self.schedule((run_step - 1) // self.grad_accum)))
        self.pending.append({"epoch": self.epoch + 1, "step": run_step, "loss": loss, "lr": lr})
        self.state["loss_sum"] += loss * rows
        self.state["loss_rows"] += rows
        self.tracker.log_step(self.pending[-1])


def train(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train as configured; returns the final status. Writes everything to runs_dir/name.

    SIGTERM, SIGINT or SIGUSR1 stop it at the end of the current step with a checkpoint: the
    status is then `stopped`, and `resume=True` continues to what an uninterrupted run gives.
    """
    join_processes()
    config, run_dir = open_run_dir(config, runs_dir, resume)

    t = config.train
    malloc_tuned = reuse_freed_memory()
    keras.utils.set_random_seed(seeding.integer(t.seed, seeding.Stream.INIT))
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
    schedule = compile_model(model, config, batches.steps_per_epoch)

    # epoch: epochs done; step: steps done of the next one (a checkpoint within an epoch).
    state = {
        "epoch": 0,
        "step": 0,
        "loss_sum": 0.0,
        "loss_rows": 0,
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
        state.update(rundir.read_json(state_file))
        model.load_weights(run_dir / rundir.CHECKPOINTS / rundir.LAST_WEIGHTS)
        where = (
            f"epoch {state['epoch'] + 1}, step {state['step']}"
            if state["step"]
            else (f"the end of epoch {state['epoch']}")
        )
        print(f"resumed {run_dir} at {where}")
    done = state["epoch"] * batches.steps_per_epoch + state["step"]
    record.keep(lambda line: line["epoch"] <= state["epoch"])
    steps.keep(lambda line: line["step"] <= done)  # steps after the checkpoint are redone
    previous = record.previous_status() if resume else {}
    record.status = {
        "status": "running",
        **rundir.process_status(previous),
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
        "steps_per_epoch": batches.steps_per_epoch,
        "best_epoch": state["best_epoch"],
        "best_dev_exact_match": state["best_em"],
        "best_dev_f1": state["best_f1"] if state["best_epoch"] else None,
        "wall_time_s": state["wall_time_s"],
    }
    record.write_status()
    tracker: Tracker = make_tracker(config, run_dir) if replicas.is_main else Tracker()
    tracker.start(config, record.status)

    try:
        with StopRequests() as stop:
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
                stop,
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
    stop: StopRequests,
) -> str:
    t = prep.config.train
    run_dir = record.run_dir
    checkpoints = run_dir / rundir.CHECKPOINTS
    per_epoch = batches.steps_per_epoch
    clock = [time.perf_counter()]

    def lap() -> float:
        """Seconds since the last lap, added to the run's wall time."""
        now = time.perf_counter()
        state["wall_time_s"] += now - clock[0]
        clock[0] = now
        return state["wall_time_s"]

    def checkpoint(epoch: int, step: int, log: StepLog) -> None:
        """Weights + optimizer, the step log and the state, in that order: a kill between them
        leaves a state that names what the files before it hold (later steps are redone)."""
        lap()
        rundir.save_weights(model, checkpoints / rundir.LAST_WEIGHTS)
        steps.append(*log.pending)
        log.pending.clear()
        state.update(epoch=epoch, step=step)
        write_json(state_file, state)
        record.write_status(wall_time_s=round(state["wall_time_s"], 2))

    for epoch in range(state["epoch"], t.epochs):
        start = state["step"]  # > 0 only in an epoch resumed from a step checkpoint
        if not start:
            state["loss_sum"], state["loss_rows"] = 0.0, 0
        batches.set_epoch(epoch, start)
        log = StepLog(batches, epoch, schedule, t.grad_accum, tracker, state)
        began = clock[0] = time.perf_counter()
        cadence = StepCadence(
            t.seed,
            epoch,
            start,
            per_epoch,
            t.save_every_steps,
            stop,
            on_step=log,
            checkpoint=lambda step, log=log, epoch=epoch: checkpoint(epoch, step, log),
        )
        model.fit(
            batches,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            callbacks=[
                cadence,
                *progress_bar(batches, epoch, t.epochs, prep.replicas),
                *extra_callbacks,
            ],
            shuffle=False,
        )
        if cadence.stopped_early:  # checkpointed at that step
            print(f"stopped at epoch {epoch + 1}, step {cadence.last_step}: --resume continues")
            return "stopped"
        train_seconds = time.perf_counter() - began
        metrics, predictions, dev_loss = evaluate_dev(
            model,
            prep.config,
            prep.dev_examples,
            prep.dev_features,
            prep.tokenizer.pad_id,
            prep.replicas.devices,
        )
        lr = float(ops.convert_to_numpy(model.optimizer.learning_rate))
        line = {
            "epoch": epoch + 1,
            "train_loss": state["loss_sum"] / max(state["loss_rows"], 1),
            "dev_loss": float(dev_loss),
            "dev_exact_match": metrics["exact_match"],
            "dev_f1": metrics["f1"],
            **{f"dev_{k}": v for k, v in metrics.items() if k.startswith(V2_KEYS)},
            "lr": lr,
            "wall_time_s": round(lap(), 2),
            "tokens_per_s": int(batches.cumulative_tokens[-1]) / max(train_seconds, 1e-9),
            "train_tokens": batches.epoch_tokens,
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
        if t.keep_epoch_checkpoints:
            rundir.save_weights(model, checkpoints / rundir.epoch_weights(epoch + 1))
        # The metrics line first: a kill before the checkpoint redoes the epoch's tail and
        # drops the line again.
        record.append(line)
        checkpoint(epoch + 1, 0, log)
        record.write_status(
            epochs_run=epoch + 1,
            best_epoch=state["best_epoch"],
            best_dev_exact_match=state["best_em"],
            best_dev_f1=state["best_f1"],
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
        if stop.requested and epoch + 1 < t.epochs:
            print(f"stopped after epoch {epoch + 1}: --resume continues")
            return "stopped"
    _export_best(model, checkpoints)
    return "finished"


def _export_best(model: QATransformer, checkpoints: Path, target: Path | None = None) -> None:
    """model.keras (in `target`, by default the run's own directory): the best epoch's checkpoint
    in a fresh, uncompiled float32 model for serving.

    Written by process 0 alone (in a multi-process run), so the model is built outside the
    data-parallel distribution and reads the checkpoint file, not the global training arrays.
    """
    if not rundir.writes():
        return
    with no_distribution():
        export = float32_model(model.get_config())
        export.load_weights(checkpoints / rundir.BEST_WEIGHTS)
    rundir.write_atomic((target or checkpoints.parent) / rundir.MODEL, export.save)


# What a snapshot copies from its run besides the model: the best epoch's scores and predictions.
SNAPSHOT_FILES = (
    rundir.CONFIG, rundir.TOKENIZER, rundir.EVAL, rundir.METRICS, rundir.PREDICTIONS,
    rundir.NBEST, rundir.NULL_ODDS,
)  # fmt: skip


def snapshot(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """`squadqa snapshot`: the best epoch so far of a run that trains on (or was stopped) as a
    finished run directory of its own, which `answer`, `predict`, `serve`, `export`, `calibrate`,
    `probe` and `ship_reader.py` take like any other (Hugging Face Trainer's `checkpoint-N`).

    A run longer than a session is read at each epoch's end without waiting for its last one,
    and without touching it: the snapshot is `RUN-eN` beside it (N: the best epoch), holding
    model.keras built from `checkpoints/best.weights.h5`, the files of `SNAPSHOT_FILES` the run
    has, and status.json `finished` at N epochs with `snapshot_of` and `snapshot_step` (the
    run's step when it was taken).
    """
    source = Path(run_dir)
    status_path = source / rundir.STATUS
    if not status_path.is_file():
        raise FileNotFoundError(f"{status_path} does not exist: {source} is not a training run")
    status = rundir.read_json(status_path)
    checkpoints = source / rundir.CHECKPOINTS
    best = checkpoints / rundir.BEST_WEIGHTS
    epoch = status.get("best_epoch")
    if not best.is_file() or not epoch:
        raise FileNotFoundError(
            f"{best} does not exist (best_epoch {epoch} in {status_path}): the run has not "
            "finished an epoch yet, so there is no scored model to take"
        )
    target = Path(out) if out else source.with_name(f"{source.name}-e{epoch}")
    if target.exists():
        raise FileExistsError(f"{target} exists: remove it or pass another --out")
    config = load_config(source / rundir.CONFIG)
    tokenizer = load_tokenizer(source / rundir.TOKENIZER)
    model, _ = build_model(config, tokenizer.vocab_size)  # the run's architecture
    target.mkdir(parents=True)
    for name in SNAPSHOT_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    _export_best(model, checkpoints, target)
    state = checkpoints / rundir.STATE
    step = rundir.read_json(state).get("step") if state.is_file() else None
    rundir.write_json(
        target / rundir.STATUS,
        {
            **status,
            "status": "finished",
            "epochs_run": epoch,
            "snapshot_of": str(source),
            "snapshot_step": step,
            "source_status": status.get("status"),
            "updated": rundir.now(),
        },
    )
    print(
        f"snapshot of {source} at its best epoch {epoch} (dev EM "
        f"{status.get('best_dev_exact_match'):.2f} F1 {status.get('best_dev_f1'):.2f}): {target}"
    )
    return target
