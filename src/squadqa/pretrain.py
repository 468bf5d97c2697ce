"""`squadqa pretrain`: self-supervised pretraining of the QATransformer encoder on train text.

The encoder is the very `QATransformer` that `squadqa train` fine-tunes (its span head frozen and
unused here); the objective heads of `squadqa.objectives` sit on top of its last hidden states.
`squadqa train --init run:RUN_DIR` then starts from `RUN_DIR/encoder.weights.h5`: every encoder
tensor carried over, the span head fresh (`squadqa.pretrained.load_encoder`).

Run directory: the files of `squadqa train` (`config.toml`, `tokenizer.json`, `status.json`,
`metrics.jsonl` with one line per epoch, `steps.jsonl` with the loss of every step,
`checkpoints/last.weights.h5` + `checkpoints/state.json`) plus `encoder.weights.h5`. A
checkpoint is written every `train.save_every_steps` steps, at the end of each epoch and on a
stop signal (`squadqa.harness`); `--resume` continues from the last one, mid-epoch included, and
reproduces the losses of an uninterrupted run (every batch's masking comes from
`seeding.Stream.MASKING`, and dropout is reseeded at each step).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from squadqa import objectives as obj
from squadqa import rundir, seeding
from squadqa.architecture import MASKED_LOGIT
from squadqa.config import RunConfig
from squadqa.data import Example, load_squad
from squadqa.distributed import ONE_DEVICE, Replicas, join_processes, set_distribution
from squadqa.harness import (
    BatchLoss,
    StepCadence,
    StopRequests,
    open_run_dir,
    progress_bar,
    run_tokenizer,
    set_precision,
)
from squadqa.malloc import reuse_freed_memory
from squadqa.model import QAConfig, QATransformer
from squadqa.optim import WarmupDecay, make_optimizer
from squadqa.rundir import RunRecord
from squadqa.scoring import padding_multiple
from squadqa.tokenization import QATokenizer

# Predicted positions / questions per row are padded to a multiple of this (few shapes for jax).
SLOT_MULTIPLE = 8


# --------------------------------------------------------------------------- heads and model


def gather_rows(hidden: Any, positions: Any, seq_len: Any) -> Any:
    """hidden [B, T, H] at positions [B, P] -> [B, P, H] (one-hot matmul: same on every backend)."""
    return ops.einsum("bpt,bth->bph", ops.one_hot(positions, seq_len, dtype=hidden.dtype), hidden)


def masked_mean(values: Any, weights: Any) -> Any:
    weights = ops.cast(weights, "float32")
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1.0)


class MaskedLMHead(keras.layers.Layer):
    """BERT's MLM head: dense + gelu + LayerNorm, then the (tied) word embeddings + a bias."""

    def __init__(self, hidden_size: int, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.transform = keras.layers.Dense(hidden_size, name="transform", dtype=self.dtype_policy)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=1e-12, name="layer_norm", dtype=self.dtype_policy
        )

    def build(self, input_shape: Any = None) -> None:
        self.transform.build((None, None, self.hidden_size))
        self.layer_norm.build((None, None, self.hidden_size))
        self.output_bias = self.add_weight(
            shape=(self.vocab_size,), initializer="zeros", name="output_bias"
        )
        self.built = True

    def call(self, hidden: Any, word_embeddings: Any) -> Any:
        hidden = self.layer_norm(keras.activations.gelu(self.transform(hidden), approximate=False))
        hidden = ops.cast(hidden, "float32")
        return ops.matmul(hidden, ops.transpose(ops.cast(word_embeddings, "float32"))) + (
            self.output_bias
        )


def scatter_samples(original: Any, positions: Any, weights: Any, sampled: Any) -> Any:
    """original [B, T] with sampled [B, P] written at positions [B, P] where weights is 1."""
    where = (
        ops.one_hot(positions, ops.shape(original)[1], dtype="int32")
        * ops.cast(weights, "int32")[:, :, None]
    )  # [B, P, T]
    written = ops.sum(where * ops.cast(sampled, "int32")[:, :, None], axis=1)
    return ops.where(ops.sum(where, axis=1) > 0, written, original)


def mlm_loss(logits: Any, labels: Any, weights: Any) -> Any:
    """Mean cross-entropy over the predicted positions (weights 1), [B, P, V] logits."""
    log_probs = ops.log_softmax(logits, axis=-1)
    picked = ops.sum(ops.one_hot(labels, ops.shape(logits)[-1]) * log_probs, axis=-1)
    return masked_mean(-picked, weights)


class PretrainModel(keras.Model):
    """A QATransformer encoder plus the heads of one objective; `call` returns the losses."""

    def __init__(self, config: QAConfig, pretrain: obj.PretrainConfig, **kwargs: Any) -> None:
        kwargs.setdefault("name", "pretrain")
        super().__init__(**kwargs)
        self.qa_config, self.pretrain_config = config, pretrain
        self.encoder = QATransformer(config, name="encoder")
        self.encoder.span_head.trainable = False  # fine-tuning starts it fresh
        hidden = config.hidden_size
        self.mlm_head = self.generator = self.generator_head = None
        if pretrain.objective == "mlm":
            self.mlm_head = MaskedLMHead(hidden, config.vocab_size, name="mlm_head")
        elif pretrain.objective == "electra":
            self.generator = QATransformer(generator_config(config, pretrain), name="generator")
            self.generator.span_head.trainable = False
            self.generator_head = MaskedLMHead(
                self.generator.config.hidden_size, config.vocab_size, name="generator_head"
            )
            self.discriminator_dense = keras.layers.Dense(hidden, name="discriminator_dense")
            self.discriminator_out = keras.layers.Dense(1, name="discriminator_out")
        else:
            self.span_start = keras.layers.Dense(hidden, name="span_start")
            self.span_end = keras.layers.Dense(hidden, name="span_end")

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        hidden_shape = (None, None, self.qa_config.hidden_size)
        self.encoder.build()
        if self.mlm_head is not None:
            self.mlm_head.build()
        if self.generator is not None:
            self.generator.build()
            self.generator_head.build()
            self.discriminator_dense.build(hidden_shape)
            self.discriminator_out.build(hidden_shape)
        if self.pretrain_config.objective == "span":
            self.span_start.build(hidden_shape)
            self.span_end.build(hidden_shape)
        self.built = True

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> dict[str, Any]:
        objective = self.pretrain_config.objective
        if objective == "mlm":
            return self._mlm(inputs, training)
        if objective == "electra":
            return self._electra(inputs, training)
        return self._span(inputs, training)

    def _mlm(self, inputs: dict[str, Any], training: bool | None) -> dict[str, Any]:
        hidden = self.encoder.encode(inputs, training=training)
        at = gather_rows(hidden, inputs["mlm_positions"], ops.shape(hidden)[1])
        logits = self.mlm_head(at, self.encoder.embeddings.word_embeddings.embeddings)
        loss = mlm_loss(logits, inputs["mlm_labels"], inputs["mlm_weights"])
        return {"loss": loss, "mlm_loss": loss}

    def _electra(self, inputs: dict[str, Any], training: bool | None) -> dict[str, Any]:
        seq_len = ops.shape(inputs["input_ids"])[1]
        gen_hidden = self.generator.encode(inputs, training=training)
        at = gather_rows(gen_hidden, inputs["mlm_positions"], seq_len)
        gen_logits = self.generator_head(at, self.generator.embeddings.word_embeddings.embeddings)
        gen_loss = mlm_loss(gen_logits, inputs["mlm_labels"], inputs["mlm_weights"])
        # Sample each masked position from the generator by inverse CDF with the batch's own
        # uniform noise (drawn in numpy from the batch's MASKING stream), so resumed runs sample
        # the same tokens.
        probs = ops.softmax(ops.stop_gradient(gen_logits), axis=-1)
        below = ops.cumsum(probs, axis=-1) < inputs["sample_noise"][:, :, None]
        sampled = ops.minimum(ops.sum(ops.cast(below, "int32"), axis=-1), ops.shape(probs)[-1] - 1)
        original = inputs["original_ids"]
        corrupted = scatter_samples(
            original, inputs["mlm_positions"], inputs["mlm_weights"], sampled
        )
        real = inputs["attention_mask"] > 0
        labels = ops.cast(obj.replaced_token_labels(original, corrupted, real), "float32")
        hidden = self.encoder.encode({**inputs, "input_ids": corrupted}, training=training)
        dense = keras.activations.gelu(self.discriminator_dense(hidden), approximate=False)
        disc_logits = ops.cast(ops.squeeze(self.discriminator_out(dense), -1), "float32")
        bce = ops.binary_crossentropy(labels, disc_logits, from_logits=True)
        disc_loss = masked_mean(bce, real)
        loss = gen_loss + self.pretrain_config.discriminator_weight * disc_loss
        replaced = ops.sum(labels) / ops.maximum(ops.sum(ops.cast(real, "float32")), 1.0)
        return {
            "loss": loss,
            "generator_loss": gen_loss,
            "discriminator_loss": disc_loss,
            "replaced_share": replaced,
        }

    def _span(self, inputs: dict[str, Any], training: bool | None) -> dict[str, Any]:
        hidden = self.encoder.encode(inputs, training=training)
        seq_len = ops.shape(hidden)[1]
        at = gather_rows(hidden, inputs["question_positions"], seq_len)  # [B, Q, H]
        allowed = ops.cast(inputs["answer_mask"], "float32")[:, None, :]  # [B, 1, T]
        losses = []
        for dense, labels in ((self.span_start, "answer_starts"), (self.span_end, "answer_ends")):
            logits = ops.cast(ops.einsum("bqh,bth->bqt", dense(at), hidden), "float32")
            logits = logits * allowed + (1.0 - allowed) * MASKED_LOGIT
            losses.append(mlm_loss(logits, inputs[labels], inputs["question_weights"]))
        loss = 0.5 * (losses[0] + losses[1])
        return {"loss": loss, "span_loss": loss}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return y_pred["loss"]


def generator_config(config: QAConfig, pretrain: obj.PretrainConfig) -> QAConfig:
    """ELECTRA's small generator: the encoder's depth at `generator_size` of its width, with one
    key/value head per head (its head count is scaled, so the encoder's grouping may not divide
    it; grouping is the encoder's choice, not the throwaway generator's)."""
    heads = max(1, round(config.num_heads * pretrain.generator_size))
    head_size = max(2, round(config.hidden_size * pretrain.generator_size / heads) // 2 * 2)
    return QAConfig(
        **{
            **config.to_dict(),
            "hidden_size": heads * head_size,
            "num_heads": heads,
            "num_key_value_heads": 0,
            "intermediate_size": max(4, round(config.intermediate_size * pretrain.generator_size)),
            "question_match": False,
        }
    )


# --------------------------------------------------------------------------- batches


class PretrainBatches(keras.utils.PyDataset):
    """One epoch of objective batches from `start` on; batch i depends on (seed, epoch, i) only."""

    def __init__(
        self,
        windows: obj.TextWindows,
        tokenizer: QATokenizer,
        config: obj.PretrainConfig,
        batch_size: int,
        seed: int,
        multiple: int,
        replicas: Replicas = ONE_DEVICE,
    ) -> None:
        super().__init__()
        self.windows, self.tokenizer, self.config = windows, tokenizer, config
        self.batch_size, self.seed, self.multiple = batch_size, seed, multiple
        self.replicas = replicas
        self.mask_id = tokenizer.token_id("[MASK]")
        if self.mask_id is None:
            raise ValueError("pretraining needs a [MASK] token in the tokenizer vocabulary")
        self.random_ids = obj.non_special_ids(tokenizer)
        self.content = obj.content_tokens(tokenizer)
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        from squadqa.features import batch_order, split_evenly

        self.epoch, self.start = epoch, start
        seed = seeding.seed_sequence(self.seed, seeding.Stream.BATCH_ORDER, epoch)
        order = batch_order(self.windows.lengths, self.batch_size, True, seed)
        self.order = split_evenly(order, self.replicas.devices)  # data parallel: counted at start
        lengths = self.windows.lengths
        self.dropped_per_epoch = len(lengths) - sum(len(b) for b in self.order)
        done = np.cumsum([int(lengths[b].sum()) for b in self.order])
        self.cumulative_tokens = done[start:] - (done[start - 1] if start else 0)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.order)

    def __len__(self) -> int:
        return len(self.order) - self.start

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """The global batch (its masking drawn as in a one-process run); this process's rows."""
        step = self.start + index
        batch = self.batch(
            self.order[step], seeding.generator(self.seed, seeding.Stream.MASKING, self.epoch, step)
        )
        return self.replicas.local_rows(batch)

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        if self.config.objective == "span":
            return self._span_batch(indices, rng)
        return self._masked_batch(indices, rng)

    def _masked_batch(self, indices: Sequence[int], rng: np.random.Generator) -> dict:
        c, pad = self.config, self.tokenizer.pad_id
        originals = [self.windows.input_ids[i] for i in indices]
        chosen = [
            obj.choose_positions(self.windows.word_ids[i], c.mask_rate, c.whole_word, rng)
            for i in indices
        ]
        corrupted = [
            obj.corrupt(ids, mask, c, self.mask_id, self.random_ids, rng)
            for ids, mask in zip(originals, chosen, strict=True)
        ]
        positions = [np.flatnonzero(mask) for mask in chosen]
        labels = [ids[p] for ids, p in zip(originals, positions, strict=True)]
        input_ids = obj.pad_rows(corrupted, pad, self.multiple)
        batch = {
            "input_ids": input_ids,
            "attention_mask": (obj.pad_rows(originals, -1, self.multiple) >= 0).astype(np.int32),
            "mlm_positions": obj.pad_rows(positions, 0, SLOT_MULTIPLE),
            "mlm_labels": obj.pad_rows(labels, 0, SLOT_MULTIPLE),
            "mlm_weights": obj.pad_rows(
                [np.ones(len(p), np.int32) for p in positions], 0, SLOT_MULTIPLE
            ),
        }
        if c.objective == "electra":
            batch["original_ids"] = obj.pad_rows(originals, pad, self.multiple)
            batch["sample_noise"] = rng.random(batch["mlm_positions"].shape).astype(np.float32)
        return batch

    def _span_batch(self, indices: Sequence[int], rng: np.random.Generator) -> dict:
        rows, questions = [], []
        for i in indices:
            ids, asks = obj.span_questions(
                self.windows.input_ids[i],
                self.windows.word_ids[i],
                self.content,
                self.mask_id,
                self.config,
                rng,
            )
            rows.append(ids)
            questions.append(np.asarray(asks, dtype=np.int32).reshape(-1, 3))
        input_ids = obj.pad_rows(rows, self.tokenizer.pad_id, self.multiple)
        real = obj.pad_rows(rows, -1, self.multiple) >= 0
        answer_mask = real.copy()
        answer_mask[:, 0] = False  # [CLS]
        for row, ids in enumerate(rows):
            answer_mask[row, len(ids) - 1] = False  # [SEP]
            answer_mask[row, questions[row][:, 0]] = False  # a question never answers itself
        return {
            "input_ids": input_ids,
            "attention_mask": real.astype(np.int32),
            "answer_mask": answer_mask.astype(np.int32),
            "question_positions": obj.pad_rows([q[:, 0] for q in questions], 0, SLOT_MULTIPLE),
            "answer_starts": obj.pad_rows([q[:, 1] for q in questions], 0, SLOT_MULTIPLE),
            "answer_ends": obj.pad_rows([q[:, 2] for q in questions], 0, SLOT_MULTIPLE),
            "question_weights": obj.pad_rows(
                [np.ones(len(q), np.int32) for q in questions], 0, SLOT_MULTIPLE
            ),
        }


# --------------------------------------------------------------------------- transfer


# --------------------------------------------------------------------------- the run


class StepLoss:
    """Each step's own loss (from Keras' running mean) into the run's log; one per `fit` call."""

    def __init__(self, run: PretrainRun, batches: PretrainBatches, epoch: int) -> None:
        self.run, self.batches, self.epoch = run, batches, epoch
        self.batch_loss = BatchLoss()

    def __call__(self, step: int, logs: dict) -> None:
        size = len(self.batches.order[step - 1])
        self.run.log_step(self.epoch, step, self.batch_loss(float(logs["loss"]), size))


class PretrainRun:
    """The run directory and state of one pretraining run."""

    def __init__(
        self, config: RunConfig, run_dir: Path, model: PretrainModel, schedule: WarmupDecay
    ) -> None:
        self.config, self.run_dir, self.model, self.schedule = config, run_dir, model, schedule
        self.pretrain, self.seed = config.pretrain, config.train.seed
        self.checkpoints = run_dir / rundir.CHECKPOINTS
        self.steps = RunRecord(run_dir, {}, log=rundir.STEPS)
        self.state: dict[str, Any] = {
            "epoch": 0,
            "step": 0,
            "loss_sum": 0.0,
            "global_step": 0,
            "wall_time_s": 0.0,
        }
        self.pending: list[dict] = []  # step lines not yet on disk (written at checkpoints)
        self.started = time.perf_counter()

    def log_step(self, epoch: int, step: int, loss: float) -> None:
        self.state["loss_sum"] += loss
        self.state["global_step"] += 1
        # From the schedule, not the optimizer: on jax its variables are stale mid-epoch.
        lr = float(ops.convert_to_numpy(self.schedule(self.state["global_step"] - 1)))
        self.pending.append({"epoch": epoch + 1, "step": step, "loss": loss, "lr": lr})

    def checkpoint(self, epoch: int, step: int) -> None:
        """Weights + optimizer, encoder, state and the step log, all consistent with each other."""
        now_s = time.perf_counter()
        self.state.update(epoch=epoch, step=step)
        self.state["wall_time_s"] += now_s - self.started
        self.started = now_s
        rundir.save_weights(self.model, self.checkpoints / rundir.LAST_WEIGHTS)
        rundir.save_weights(self.model.encoder, self.run_dir / rundir.ENCODER)
        self.steps.append(*self.pending)
        self.pending = []
        rundir.write_json(self.checkpoints / rundir.STATE, self.state)

    def restore(self) -> None:
        state_file = self.checkpoints / rundir.STATE
        if not state_file.is_file():
            return
        self.state = rundir.read_json(state_file)
        self.model.load_weights(self.checkpoints / rundir.LAST_WEIGHTS)
        # Steps run after that checkpoint are redone: drop their lines.
        self.steps.keep(lambda line: _done(line, self.state))
        epoch, step = self.state["epoch"] + 1, self.state["step"]
        print(f"resumed {self.run_dir} at epoch {epoch}, step {step}")


def _done(line: dict, state: dict) -> bool:
    return (line["epoch"] - 1, line["step"]) <= (state["epoch"], state["step"])


def train_examples(config: RunConfig) -> list[Example]:
    """The train split only: pretraining never reads `data.dev`."""
    data = load_squad(
        config.data.train,
        max_samples=config.data.max_train_samples or None,
        max_articles=config.data.max_train_articles or None,
        strict=config.data.strict,
    )
    print(f"pretraining text: contexts of {data.stats.summary()}")
    return data.examples


def pretrain(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Pretrain as configured; returns the final status. Writes everything to runs_dir/name."""
    if config.train.init != "scratch":
        raise ValueError(f"pretraining starts from scratch; train.init={config.train.init!r}")
    config.check_window_fits("pretrain.max_seq_length", config.pretrain.max_seq_length)
    join_processes()
    config, run_dir = open_run_dir(config, runs_dir, resume)
    t, p = config.train, config.pretrain
    malloc_tuned = reuse_freed_memory()
    keras.utils.set_random_seed(seeding.integer(t.seed, seeding.Stream.INIT))
    set_precision(t.mixed_precision)
    replicas = set_distribution(t)
    examples = train_examples(config)
    tokenizer = run_tokenizer(config, run_dir, resume, examples, replicas)
    windows = obj.build_windows((e.context for e in examples), tokenizer, p.max_seq_length)
    print(f"pretraining windows: {windows.summary()}")
    model = PretrainModel(QAConfig(vocab_size=tokenizer.vocab_size, **config.model), p)
    model.build()
    batches = PretrainBatches(
        windows, tokenizer, p, t.batch_size, t.seed, padding_multiple(t.length_multiple), replicas
    )
    if batches.dropped_per_epoch:
        print(
            f"data parallel: {batches.dropped_per_epoch} of {len(windows)} pretraining windows "
            f"left out of every epoch (its short batch, cut to a multiple of {replicas.devices})"
        )
    optimizer, schedule = make_optimizer(t, batches.steps_per_epoch)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)

    run = PretrainRun(config, run_dir, model, schedule)
    if resume:
        run.restore()
    record = RunRecord(run_dir, {})
    record.keep(lambda line: line["epoch"] <= run.state["epoch"])
    previous = record.previous_status() if resume else {}
    record.status = {
        "status": "running",
        "kind": "pretrain",
        **rundir.process_status(previous),
        "backend": keras.backend.backend(),
        "malloc_tuned": malloc_tuned,
        "init": f"pretrain:{p.objective}",
        "parameters": int(model.encoder.count_params()),
        "parameters_with_heads": int(model.count_params()),
        "train_examples": len(examples),
        "pretrain_windows": len(windows),
        "pretrain_tokens": int(windows.lengths.sum()),
        "steps_per_epoch": batches.steps_per_epoch,
        "replicas": replicas.devices,
        **({"processes": replicas.process_count} if replicas.process_count > 1 else {}),
        "epochs_planned": t.epochs,
        "epochs_run": run.state["epoch"],
        "wall_time_s": run.state["wall_time_s"],
    }
    record.write_status()
    try:
        with StopRequests() as stop:
            status = _epochs(run, model, batches, record, replicas, stop, extra_callbacks)
    except BaseException as err:
        record.write_status(status="crashed", error=f"{type(err).__name__}: {err}")
        raise
    record.write_status(status=status)
    return record.status


def _epochs(
    run: PretrainRun,
    model: PretrainModel,
    batches: PretrainBatches,
    record: RunRecord,
    replicas: Replicas,
    stop: StopRequests,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> str:
    t, p = run.config.train, run.pretrain
    for epoch in range(run.state["epoch"], t.epochs):
        start = run.state["step"] if epoch == run.state["epoch"] else 0
        if start == 0:
            run.state["loss_sum"] = 0.0
        batches.set_epoch(epoch, start)
        run.started = time.perf_counter()
        began = run.started
        losses = StepLoss(run, batches, epoch)
        cadence = StepCadence(
            run.seed,
            epoch,
            start,
            batches.steps_per_epoch,
            t.save_every_steps,
            stop,
            on_step=losses,
            checkpoint=lambda step, epoch=epoch: run.checkpoint(epoch, step),
        )
        model.fit(
            batches,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            shuffle=False,
            callbacks=[
                cadence,
                *progress_bar(batches, epoch, t.epochs, replicas),
                *extra_callbacks,
            ],
        )
        if cadence.stopped_early:  # checkpointed at that step
            print(f"stopped at epoch {epoch + 1}, step {cadence.last_step}: --resume continues")
            return "stopped"
        seconds = time.perf_counter() - began
        steps = batches.steps_per_epoch
        loss = run.state["loss_sum"] / steps
        line = {
            "epoch": epoch + 1,
            "train_loss": loss,
            "objective": p.objective,
            "lr": float(ops.convert_to_numpy(model.optimizer.learning_rate)),
            "wall_time_s": round(run.state["wall_time_s"] + time.perf_counter() - run.started, 2),
            "tokens_per_s": int(batches.cumulative_tokens[-1]) / max(seconds, 1e-9),
            "steps": steps,
        }
        # Metrics first: a kill between the two redoes the epoch's tail and drops the line.
        record.append(line)
        run.checkpoint(epoch + 1, 0)
        record.write_status(epochs_run=epoch + 1, wall_time_s=line["wall_time_s"])
        print(
            f"pretrain epoch {epoch + 1}/{t.epochs}: loss {loss:.4f}, "
            f"{line['tokens_per_s']:.0f} tokens/s"
        )
        if stop.requested and epoch + 1 < t.epochs:
            print(f"stopped after epoch {epoch + 1}: --resume continues")
            return "stopped"
    return "finished"
