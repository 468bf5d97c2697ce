"""Fine-tuning MiniLM on SQuAD: squadqa's trainer vs Hugging Face `Trainer`, same everything.

Both sides fine-tune the same weights (MiniLM-L6-H384 from
`squadqa.pretrained.default_checkpoint_dir()`, or `--checkpoint`) on the same SQuAD questions with
the same hyperparameters, and are scored by the same post-processing and official evaluation:

* **squadqa**: `squadqa.train.train(load_config(--config, overrides))` with `train.init =
  "pretrained"`: Keras 3 (torch backend) `model.fit` over squadqa's length-bucketed batches
  (each batch padded to its longest window, rounded up to `train.length_multiple`), squadqa's
  AdamW + warmup/linear-decay schedule; dev EM/F1 from its own per-epoch evaluation (last epoch).
* **HF**: `transformers.Trainer` + `BertForQuestionAnswering` (torch, loaded from the same
  directory with `local_files_only=True`), train features from run_qa.py's
  `prepare_train_features` (the statement-for-statement copy in `benchmarks/featurize.py`) with the
  HF fast tokenizer of the same directory. Variants (`--sides`):
  `hf-max_length`: `padding="max_length"` + `default_data_collator` (run_qa.py's default, every
  batch 384 long); `hf-dynamic`: `padding=False` + `DataCollatorWithPadding` (each batch padded to
  its longest window, random batches); `hf-grouped` (optional): dynamic padding plus
  `train_sampling_strategy="group_by_length"` (HF's counterpart of squadqa's length bucketing).

Evaluation, one post-processing budget: the dev windows of BOTH sides are
`squadqa.features.build_features` (squadqa tokenizer from the same checkpoint directory), batched
with `squadqa.features.pad_batch` in `batch_order`, so the windows are identical and only the model
forward differs. HF's start/end logits go through `squadqa.postprocess.extract_answers` (n_best,
max_answer_length from the config) and `squadqa.evaluation.evaluate_v1`, exactly like squadqa's.
(run_qa.py's own `prepare_validation_features` yields the same windows except that squadqa cuts
questions to 64 tokens; its `postprocess_qa_predictions` applies the same n-best/length rules.
Using one path removes every post-processing difference from the accuracy comparison.)

Measured per side, each in its own subprocess (so peak memory does not mix; the parent prints the
tables): dev EM/F1; training tokens/s = non-padding tokens of the training windows / training wall
time (time inside the epochs' step loops: data feeding, forward, backward, optimizer; not the
model loading, featurisation, dev evaluation or checkpointing), plus a steady-state rate that
leaves out the first `--skip-steps` steps (one-time set-up, allocator warm-up); padded tokens
actually computed (so the cost of HF's padding to max_length shows); peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) at the end of the first training epoch (before any
dev evaluation) and for the whole process; and the ratios squadqa/HF.

Modes: `--mode short` trains one epoch on the first N train questions, N chosen so that one epoch
is about `--steps` updates (default 200): same data, same schedule on both sides, for the speed
ratio; dev is cut to `--max-dev-samples` (default 200) questions, so its EM/F1 are only a
sanity check. `--mode full`: the whole train split for `train.epochs` epochs and the whole dev
split: the accuracy comparison.

Kept equal on both sides: torch threads (`--threads`, default: usable cores; `torch.set_num_threads`
plus OMP/MKL env), fp32 (or bf16 mixed precision on both with `--bf16`), no torch.compile,
seed, the device (`--device`, default `cpu`: the GPU is hidden from both sides; `cuda`: both
train and evaluate on the GPU, and GPU peak memory is reported), `dataloader_num_workers=0`,
no reporting, no checkpoint saving by HF.
Hyperparameters: learning rate, batch size, epochs, warmup steps (`int(warmup_ratio * total)`,
passed to HF as an integer `warmup_steps`), linear decay,
weight decay (HF and squadqa both exempt biases and LayerNorm), AdamW betas (0.9, 0.999) and
epsilon (squadqa's 1e-6, set on HF too), global gradient-norm clipping at `train.clip_norm`,
max_seq_length 384, doc_stride 128, dropout (the config's `[model]` dropout keys, also given to
HF's config), n_best, max_answer_length. Known differences that remain: the span head
(`qa_outputs`) is freshly initialised on each side by its own initializer (both std 0.02); the
shuffling order differs (squadqa buckets by length); squadqa masks non-context logits to -1e4
before the loss (HF does not); warmup is one step apart (squadqa's step s gets peak*(s+1)/W,
HF's peak*s/W); HF's optimizer is its default (`adamw_torch_fused` on torch >= 2.8,
`--hf-optim` to change), squadqa's is `squadqa.optim.FusedAdamW` on torch (the same fused torch
kernel, with Keras' global-norm clipping); squadqa cuts questions to 64
tokens (none in SQuAD v1.1 train is longer); squadqa evaluates dev after every epoch (not timed),
HF once at the end.

Checked once (not by this script): with squadqa's weights copied into HF's model
(`squadqa.pretrained.export_state_dict(model, prefix="bert.")`), `hf_dev_logits` on squadqa's dev
windows matches squadqa's `predict_logits` to 1e-6 on every context token, so the HF evaluation
path feeds the windows correctly.

Run from the repository root (the relative data paths of the configs are relative to it):

    PYTHONPATH=src python benchmarks/vs_hf.py --mode short            # speed ratio
    PYTHONPATH=src python benchmarks/vs_hf.py --mode full             # accuracy + speed

Needs `transformers` and `accelerate` (HF's `Trainer` requires it) besides squadqa's own deps.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import cpu_model, load_average, usable_cores, worker_env

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
if (REPO_ROOT / "src").is_dir():
    sys.path.insert(0, str(REPO_ROOT / "src"))
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

DEFAULT_CONFIG = REPO_ROOT / "configs" / "minilm-finetune.toml"
DEFAULT_TRAIN = REPO_ROOT.parent / "shared" / "data" / "squad-v1.1" / "train.json.gz"
DEFAULT_DEV = REPO_ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev.json.gz"
SIDES = ("squadqa", "hf-max_length", "hf-dynamic", "hf-grouped")
DEFAULT_SIDES = "squadqa,hf-max_length,hf-dynamic"
MAX_SEQ_LENGTH = 384
DOC_STRIDE = 128
SQUADQA_RUN = "vs_hf-squadqa"  # squadqa's run directory under <workdir>/runs
HF_MAP_BATCH = 1000  # datasets.map(batched=True) slice size, as in featurize.py


# --------------------------------------------------------------------------------------------
# arguments and the shared plan


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("short", "full"), default="short", help="default: short")
    parser.add_argument(
        "--steps", type=int, default=200, help="short mode: updates in its one epoch (200)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="run config whose [train]/[model] dropout/[postprocess] values both sides use "
        "(default: configs/minilm-finetune.toml)",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: installed MiniLM")
    parser.add_argument(
        "--train", type=Path, default=DEFAULT_TRAIN, help="default: shared squad-v1.1 train"
    )
    parser.add_argument(
        "--dev", type=Path, default=DEFAULT_DEV, help="default: shared squad-v1.1 dev"
    )
    parser.add_argument(
        "--max-train-samples", type=int, default=None, help="first N train questions (0 = all)"
    )
    parser.add_argument(
        "--max-dev-samples",
        type=int,
        default=None,
        help="first N dev questions (0 = all; default: 200 in short mode, all in full mode)",
    )
    parser.add_argument("--lr", type=float, default=None, help="default: the config's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--epochs", type=int, default=None, help="full mode; default: the config's")
    parser.add_argument("--warmup-ratio", type=float, default=None, help="default: the config's")
    parser.add_argument("--weight-decay", type=float, default=None, help="default: the config's")
    parser.add_argument("--seed", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--hidden-dropout", type=float, default=None, help="both sides; default: the config's"
    )
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="both sides; default: the config's (0 lets both use fused SDPA attention)",
    )
    parser.add_argument(
        "--length-multiple",
        type=int,
        default=None,
        help="squadqa's train.length_multiple (batch length rounding); default: the config's",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 mixed precision on both sides (squadqa train.mixed_precision, HF bf16=True "
        "and a bf16 autocast for its dev forward); default fp32",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per side (default: usable cores)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where both sides train and evaluate (default cpu: CUDA is hidden from both)",
    )
    parser.add_argument(
        "--sides",
        default=DEFAULT_SIDES,
        help=f"comma list, run in this order, from {', '.join(SIDES)} (default: {DEFAULT_SIDES})",
    )
    parser.add_argument(
        "--hf-attn",
        default=None,
        help="HF attn_implementation (sdpa, eager); default: transformers' default",
    )
    parser.add_argument("--hf-optim", default=None, help="HF optim; default: transformers' default")
    parser.add_argument(
        "--skip-steps",
        type=int,
        default=None,
        help="steps left out of the steady-state rate (default: min(10, steps // 10))",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where runs/logs go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # internal: one side in a subprocess
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        parser.error(f"--sides: unknown {unknown}; choose from {', '.join(SIDES)}")
    args.side_list = sides
    return args


def make_plan(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Everything both sides share, resolved once in the parent (JSON, handed to each worker)."""
    from squadqa.config import load_config
    from squadqa.features import default_length_multiple
    from squadqa.pretrained import checkpoint_dir
    from squadqa.train import feature_cache_dir

    config_path = args.config.resolve()
    overrides: list[str] = []

    def put(key: str, value: Any) -> None:
        overrides.append(f"{key}={json.dumps(value)}")

    init = f"pretrained:{args.checkpoint.resolve()}" if args.checkpoint else "pretrained"
    put("train.init", init)
    put("tokenizer.kind", "pretrained")
    put("features.max_seq_length", MAX_SEQ_LENGTH)
    put("features.doc_stride", DOC_STRIDE)
    put("train.schedule", "linear")
    put("train.grad_accum", 1)
    put("train.mixed_precision", bool(args.bf16))
    put("train.label_smoothing", 0.0)
    put("train.early_stopping_patience", 0)
    put("train.decay_epochs", 0)  # HF decays over num_train_epochs
    put("tracking.backend", "none")
    for flag, key in (
        ("lr", "train.learning_rate"),
        ("batch_size", "train.batch_size"),
        ("eval_batch_size", "train.eval_batch_size"),
        ("epochs", "train.epochs"),
        ("warmup_ratio", "train.warmup_ratio"),
        ("weight_decay", "train.weight_decay"),
        ("seed", "train.seed"),
        ("hidden_dropout", "model.hidden_dropout"),
        ("attention_dropout", "model.attention_dropout"),
        ("length_multiple", "train.length_multiple"),
    ):
        value = getattr(args, flag)
        if value is not None:
            put(key, float(value) if isinstance(value, float) else value)
    put("data.train", str(args.train.resolve()))
    put("data.dev", str(args.dev.resolve()))

    max_train = args.max_train_samples or 0
    max_dev = args.max_dev_samples
    if max_dev is None:
        max_dev = 200 if args.mode == "short" else 0
    config = load_config(config_path, overrides)
    t = config.train
    short_note = ""
    if args.mode == "short":
        if args.epochs is not None:
            print(
                "note: --epochs is ignored in short mode (one epoch of --steps updates)",
                file=sys.stderr,
            )
        put("train.epochs", 1)
        max_train, short_note = short_train_samples(config, max_train, args.steps * t.batch_size)
    put("data.max_train_samples", max_train)
    put("data.max_dev_samples", max_dev)
    config = load_config(config_path, overrides)
    t = config.train
    return {
        "mode": args.mode,
        "config_path": str(config_path),
        "overrides": overrides,
        "checkpoint": str(checkpoint_dir(args.checkpoint)),
        "train": str(args.train.resolve()),
        "dev": str(args.dev.resolve()),
        "max_train_samples": max_train,
        "max_dev_samples": max_dev,
        "short_note": short_note,
        "threads": args.threads or usable_cores(),
        "seed": t.seed,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "eval_batch_size": t.eval_batch_size,
        "learning_rate": t.learning_rate,
        "weight_decay": t.weight_decay,
        "warmup_ratio": t.warmup_ratio,
        "clip_norm": t.clip_norm,
        "length_multiple": t.length_multiple or default_length_multiple("torch"),
        "max_seq_length": config.features.max_seq_length,
        "doc_stride": config.features.doc_stride,
        "max_query_length": config.features.max_query_length,
        "n_best": config.postprocess.n_best,
        "max_answer_length": config.postprocess.max_answer_length,
        "hidden_dropout": config.model.get("hidden_dropout"),
        "attention_dropout": config.model.get("attention_dropout"),
        "bf16": bool(args.bf16),
        "device": args.device,
        "hf_attn": args.hf_attn,
        "hf_optim": args.hf_optim,
        "skip_steps": args.skip_steps,
        "workdir": str(workdir),
        "feature_cache": str(feature_cache_dir()),
    }


def short_train_samples(config: Any, max_train: int, want_features: int) -> tuple[int, str]:
    """Fewest first train questions whose squadqa windows fill `want_features` (= steps x batch)."""
    from squadqa.data import load_squad
    from squadqa.features import build_features
    from squadqa.harness import build_tokenizer
    from squadqa.train import feature_cache_dir

    data = load_squad(config.data.train, max_samples=max_train or None)
    tokenizer = build_tokenizer(config, data.examples)
    features = build_features(data.examples, tokenizer, config.features, feature_cache_dir())
    if len(features) <= want_features:
        return max_train, (
            f"the train data has only {len(features)} windows (< {want_features}): "
            "one epoch over all of it"
        )
    n = int(features.example_index[want_features - 1]) + 1
    return n, f"first {n} train questions = {want_features}+ windows"


# --------------------------------------------------------------------------------------------
# timing helpers shared by both workers


class StepClock:
    """The training loop's clocks: per-step end times, real/padded tokens, RSS, CPU time.

    Wall time runs from each epoch's start to its last step's end (so it holds data feeding,
    forward, backward, optimizer and per-step framework work, not evaluation or checkpoints).
    CPU time (`time.process_time`, all threads of the process) over the same stretches is
    reported too: on a machine shared with other jobs it is the steadier measure of work done.
    """

    def __init__(self) -> None:
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0
        self.epoch_start = 0.0
        self.epoch_cpu_start = 0.0
        self.last_step_end = 0.0
        self.last_step_cpu = 0.0
        self.step_ends: list[float] = []  # perf_counter at each step's end
        self.step_tokens: list[int] = []  # real tokens of each step
        self.padded_tokens = 0
        self.epoch_losses: list[float] = []
        self.rss_before_training_kib: int | None = None
        self.rss_after_first_epoch_kib: int | None = None

    def train_begin(self) -> None:
        if self.rss_before_training_kib is None:
            self.rss_before_training_kib = peak_rss_kib()

    def epoch_begin(self) -> None:
        self.train_begin()
        self.epoch_start = self.last_step_end = time.perf_counter()
        self.epoch_cpu_start = self.last_step_cpu = time.process_time()

    def step_end(self, tokens: int) -> None:
        now = time.perf_counter()
        self.last_step_cpu = time.process_time()
        self.step_ends.append(now)
        self.step_tokens.append(int(tokens))
        self.last_step_end = now

    def epoch_end(self) -> None:
        self.train_seconds += self.last_step_end - self.epoch_start
        self.train_cpu_seconds += self.last_step_cpu - self.epoch_cpu_start
        if self.rss_after_first_epoch_kib is None:
            self.rss_after_first_epoch_kib = peak_rss_kib()

    def summary(self, skip: int | None) -> dict[str, Any]:
        steps = len(self.step_ends)
        if skip is None:
            skip = min(10, steps // 10)
        skip = min(skip, max(steps - 2, 0))
        tokens = sum(self.step_tokens)
        nan = float("nan")
        out = {
            "steps": steps,
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.train_cpu_seconds,
            "real_tokens": tokens,
            "padded_tokens": self.padded_tokens,
            "tokens_per_s": tokens / self.train_seconds if self.train_seconds else nan,
            "tokens_per_cpu_s": tokens / self.train_cpu_seconds if self.train_cpu_seconds else nan,
            "seconds_per_step": self.train_seconds / steps if steps else nan,
            "steady_skip_steps": skip,
            "steady_tokens_per_s": nan,
            "steady_seconds_per_step": nan,
            "rss_before_training_mib": (self.rss_before_training_kib or 0) / 1024,
            "rss_after_first_epoch_mib": (self.rss_after_first_epoch_kib or 0) / 1024,
            "final_epoch_loss": self.epoch_losses[-1] if self.epoch_losses else nan,
        }
        if steps - skip >= 2 and skip >= 1:
            # From the end of step `skip` to the end of the last step (callers restrict this to
            # the first epoch when there are several: squadqa evaluates between epochs).
            span = self.step_ends[steps - 1] - self.step_ends[skip - 1]
            toks = sum(self.step_tokens[skip:steps])
            out["steady_tokens_per_s"] = toks / span if span > 0 else nan
            out["steady_seconds_per_step"] = span / (steps - skip)
        return out


def steady_within_first_epoch(clock: StepClock, steps_first_epoch: int, skip: int | None) -> dict:
    """Steady-state rate over the first epoch only (no evaluation gaps inside)."""
    sub = StepClock()
    sub.step_ends = clock.step_ends[:steps_first_epoch]
    sub.step_tokens = clock.step_tokens[:steps_first_epoch]
    sub.train_seconds = 1.0  # unused here
    s = sub.summary(skip)
    keys = ("steady_skip_steps", "steady_tokens_per_s", "steady_seconds_per_step")
    return {k: s[k] for k in keys}


def peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def peak_gpu_mib() -> float | None:
    """Peak memory torch's CUDA allocator handed out in this process (both sides use it)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "none"


def frameworks_loaded() -> str:
    """Which ML frameworks this process imported: each costs resident memory."""
    names = ("torch", "tensorflow", "jax", "keras", "transformers")
    return ", ".join(n for n in names if n in sys.modules)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(1)


# --------------------------------------------------------------------------------------------
# squadqa side


def worker_squadqa(plan: dict[str, Any]) -> dict[str, Any]:
    set_threads(plan["threads"])
    import keras

    import squadqa.train as sq_train
    from squadqa.config import load_config

    config = load_config(plan["config_path"], plan["overrides"])
    config.name = SQUADQA_RUN
    clock = StepClock()
    steps_per_epoch: list[int] = []
    current: dict[str, Any] = {}

    class RecordingBatches(sq_train.TrainBatches):
        """squadqa's own batches; remembers itself so the clock can read its token counts."""

        def set_epoch(self, epoch: int, start: int = 0) -> None:
            super().set_epoch(epoch, start)
            current["batches"] = self

        def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
            inputs, targets = super().__getitem__(index)
            clock.padded_tokens += int(inputs["input_ids"].size)
            return inputs, targets

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            clock.train_begin()
            current["optimizer"] = type(self.model.optimizer).__name__

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.steps = 0
            clock.epoch_begin()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            cumulative = current["batches"].cumulative_tokens
            previous = int(cumulative[batch - 1]) if batch > 0 else 0
            clock.step_end(int(cumulative[batch]) - previous)
            self.steps += 1
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])  # Keras: running mean over the epoch

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            clock.epoch_end()
            steps_per_epoch.append(self.steps)
            clock.epoch_losses.append(float((logs or {}).get("loss", getattr(self, "loss", 0))))

    sq_train.TrainBatches = RecordingBatches  # type: ignore[misc]
    runs_dir = Path(plan["workdir"]) / "runs"
    started = time.perf_counter()
    status = sq_train.train(config, runs_dir=runs_dir, extra_callbacks=[Clock()])
    total_seconds = time.perf_counter() - started
    run_dir = runs_dir / config.name
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    last = metrics[-1]
    result = {
        "side": "squadqa",
        "label": "squadqa",
        "dev_exact_match": last["dev_exact_match"],
        "dev_f1": last["dev_f1"],
        "train_examples": status["train_examples"],
        "train_features": status["train_features"],
        "dev_examples": status["dev_examples"],
        "parameters": status["parameters"],
        "process_seconds": total_seconds,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "peak_gpu_mib": peak_gpu_mib(),
        "gpu": gpu_name(),
        "steps_per_epoch": steps_per_epoch,
        "frameworks_loaded": frameworks_loaded(),
        "squadqa_reported_tokens_per_s": [m["tokens_per_s"] for m in metrics],
        "details": (
            f"keras {keras.__version__} ({keras.backend.backend()}), {current['optimizer']}, "
            f"length-bucketed batches padded to a multiple of {plan['length_multiple']}"
        ),
        **clock.summary(plan["skip_steps"]),
    }
    if len(steps_per_epoch) > 1:
        result.update(steady_within_first_epoch(clock, steps_per_epoch[0], plan["skip_steps"]))
    return result


# --------------------------------------------------------------------------------------------
# Hugging Face side


class ListDataset:
    """Features as compact int32 arrays; rows come out as Python lists, as `datasets` gives them."""

    def __init__(self, columns: dict[str, list]) -> None:
        self.columns = columns
        self.n = len(columns["input_ids"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = {}
        for k, v in self.columns.items():
            value = v[i]
            row[k] = value.tolist() if hasattr(value, "tolist") else value
        return row


def hf_train_dataset(tokenizer: Any, examples: Sequence[Any], padding: str | bool) -> ListDataset:
    """run_qa.py prepare_train_features over slices of 1000 questions (as datasets.map does)."""
    import numpy as np
    from featurize import hf_columns, hf_prepare_train_features

    columns = hf_columns(examples)
    keys = ("input_ids", "token_type_ids", "attention_mask")
    out: dict[str, list] = {k: [] for k in (*keys, "start_positions", "end_positions")}
    for lo in range(0, len(examples), HF_MAP_BATCH):
        batch = {k: v[lo : lo + HF_MAP_BATCH] for k, v in columns.items()}
        enc = hf_prepare_train_features(tokenizer, batch, MAX_SEQ_LENGTH, DOC_STRIDE, padding)
        for k in keys:
            out[k].extend(np.asarray(row, dtype=np.int32) for row in enc[k])
        out["start_positions"].extend(int(x) for x in enc["start_positions"])
        out["end_positions"].extend(int(x) for x in enc["end_positions"])
    return ListDataset(out)


def hf_dev_logits(
    model: Any, features: Any, pad_id: int, batch_size: int, multiple: int, bf16: bool = False
):
    """Start/end logits of squadqa's dev windows from the HF model (the only differing step)."""
    import numpy as np
    import torch

    from squadqa.features import batch_order, pad_batch

    starts: list[Any] = [None] * len(features)
    ends: list[Any] = [None] * len(features)
    model.eval()
    device = model.device
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for indices in batch_order(features.lengths, batch_size, shuffle=False):
            batch = pad_batch(features, indices, pad_id, multiple)
            inputs = {
                key: torch.from_numpy(batch[key].astype(np.int64)).to(device)
                for key in ("input_ids", "token_type_ids", "attention_mask")
            }
            out = model(**inputs)
            s = out.start_logits.float().cpu().numpy()
            e = out.end_logits.float().cpu().numpy()
            for row, i in enumerate(indices):
                n = len(features.input_ids[i])
                starts[i], ends[i] = s[row, :n], e[row, :n]
    return starts, ends


def worker_hf(plan: dict[str, Any], side: str) -> dict[str, Any]:
    set_threads(plan["threads"])
    import torch
    import transformers
    from transformers import (
        AutoTokenizer,
        BertForQuestionAnswering,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from squadqa.data import gold_answers, load_squad
    from squadqa.evaluation import evaluate_v1
    from squadqa.features import FeatureConfig, build_features
    from squadqa.postprocess import SpanConfig, extract_answers
    from squadqa.tokenization import load_tokenizer

    transformers.logging.set_verbosity_warning()
    started = time.perf_counter()
    ckpt = plan["checkpoint"]
    seed = plan["seed"]
    padding: str | bool = "max_length" if side == "hf-max_length" else False

    train = load_squad(plan["train"], max_samples=plan["max_train_samples"] or None)
    dev = load_squad(plan["dev"], max_samples=plan["max_dev_samples"] or None)
    tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True, use_fast=True)
    train_ds = hf_train_dataset(tokenizer, train.examples, padding)
    print(
        f"[{side}] {len(train.examples)} train questions -> {len(train_ds)} windows "
        f"(padding={padding!r})",
        flush=True,
    )

    transformers.set_seed(seed)
    load_kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32}
    if plan["hf_attn"]:
        load_kwargs["attn_implementation"] = plan["hf_attn"]
    overrides = {}
    if plan["hidden_dropout"] is not None:
        overrides["hidden_dropout_prob"] = plan["hidden_dropout"]
    if plan["attention_dropout"] is not None:
        overrides["attention_probs_dropout_prob"] = plan["attention_dropout"]
    model = BertForQuestionAnswering.from_pretrained(ckpt, **load_kwargs, **overrides)

    bs = plan["batch_size"]
    steps_per_epoch = -(-len(train_ds) // bs)
    total_steps = steps_per_epoch * plan["epochs"]
    warmup_steps = int(plan["warmup_ratio"] * total_steps)  # squadqa's rule (HF rounds up)
    clock = StepClock()
    batch_tokens: list[int] = []  # real tokens per collated batch, in step order
    hf_steps: list[int] = []  # steps per epoch

    base_collator = (
        default_data_collator
        if side == "hf-max_length"
        else DataCollatorWithPadding(tokenizer, padding="longest")
    )

    def collator(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = base_collator(rows)
        batch_tokens.append(int(batch["attention_mask"].sum()))
        clock.padded_tokens += int(batch["input_ids"].numel())
        return batch

    progress_every = max(1, total_steps // 20)

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            clock.train_begin()

        def on_epoch_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.epoch_step_losses: list[float] = []
            self.steps = 0
            self.first_step = len(clock.step_ends)
            clock.epoch_begin()

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            index = len(clock.step_ends)
            clock.step_end(batch_tokens[index])
            self.steps += 1
            done = len(clock.step_ends)
            if done % progress_every == 0 or done == total_steps:
                tokens = sum(clock.step_tokens[self.first_step :])
                rate = tokens / max(clock.last_step_end - clock.epoch_start, 1e-9)
                loss = self.epoch_step_losses[-1] if self.epoch_step_losses else float("nan")
                print(
                    f"[{side}] step {done}/{total_steps} loss {loss:.3f} "
                    f"({rate:.0f} tokens/s this epoch)",
                    flush=True,
                )

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs and "train_runtime" not in logs:
                self.epoch_step_losses.append(float(logs["loss"]))

        def on_epoch_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            clock.epoch_end()
            hf_steps.append(self.steps)
            losses = self.epoch_step_losses
            clock.epoch_losses.append(sum(losses) / len(losses) if losses else float("nan"))

    workdir = Path(plan["workdir"]) / side
    arg_values: dict[str, Any] = {
        "output_dir": str(workdir),
        "use_cpu": plan["device"] == "cpu",
        "seed": seed,
        "data_seed": seed,
        "num_train_epochs": plan["epochs"],
        "per_device_train_batch_size": bs,
        "per_device_eval_batch_size": plan["eval_batch_size"],
        "learning_rate": plan["learning_rate"],
        "weight_decay": plan["weight_decay"],
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-6,
        "max_grad_norm": plan["clip_norm"] or 0.0,
        "lr_scheduler_type": "linear",
        "warmup_steps": warmup_steps,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_strategy": "steps",
        "logging_steps": 1,  # per-step loss for the last-epoch mean (a .item() per step)
        "report_to": "none",
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
        "disable_tqdm": True,
        "torch_compile": False,
        "bf16": plan["bf16"],
        "fp16": False,
        "remove_unused_columns": False,
    }
    if side == "hf-grouped":
        if "train_sampling_strategy" in inspect.signature(TrainingArguments).parameters:
            arg_values["train_sampling_strategy"] = "group_by_length"
        else:  # transformers < 5
            arg_values["group_by_length"] = True
    if plan["hf_optim"]:
        arg_values["optim"] = plan["hf_optim"]
    args = TrainingArguments(**arg_values)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=collator,
        processing_class=tokenizer if side == "hf-grouped" else None,
        callbacks=[Clock()],
    )
    trainer.remove_callback(PrinterCallback)  # one line per step otherwise (logging_steps=1)
    train_output = trainer.train()
    if len(clock.step_ends) != total_steps:
        print(f"[{side}] note: ran {len(clock.step_ends)} steps, planned {total_steps}", flush=True)

    # Evaluation on squadqa's dev windows through squadqa's post-processing.
    sq_tokenizer = load_tokenizer(ckpt)
    dev_features = build_features(
        dev.examples,
        sq_tokenizer,
        FeatureConfig(plan["max_seq_length"], plan["doc_stride"], plan["max_query_length"]),
        plan["feature_cache"],  # squadqa.train's cache dir, without importing keras here
    )
    starts, ends = hf_dev_logits(
        model,
        dev_features,
        sq_tokenizer.pad_id,
        plan["eval_batch_size"],
        plan["length_multiple"],
        plan["bf16"],
    )
    span_config = SpanConfig(n_best=plan["n_best"], max_answer_length=plan["max_answer_length"])
    predictions = extract_answers(dev.examples, dev_features, starts, ends, span_config)
    metrics = evaluate_v1(gold_answers(dev.examples), predictions.answers)
    total_seconds = time.perf_counter() - started

    labels = {
        "hf-max_length": 'HF padding="max_length"',
        "hf-dynamic": "HF dynamic padding",
        "hf-grouped": "HF dynamic + group_by_length",
    }
    result = {
        "side": side,
        "label": labels[side],
        "dev_exact_match": metrics["exact_match"],
        "dev_f1": metrics["f1"],
        "train_examples": len(train.examples),
        "train_features": len(train_ds),
        "dev_examples": len(dev.examples),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "process_seconds": total_seconds,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "peak_gpu_mib": peak_gpu_mib(),
        "gpu": gpu_name(),
        "steps_per_epoch": hf_steps,
        "frameworks_loaded": frameworks_loaded(),
        "hf_train_runtime": train_output.metrics.get("train_runtime"),
        "details": (
            f"transformers {transformers.__version__}, attn_implementation="
            f"{model.config._attn_implementation}, optim={args.optim}, "
            f"warmup_steps={warmup_steps}, torch threads {torch.get_num_threads()}"
        ),
        **clock.summary(plan["skip_steps"]),
    }
    if len(hf_steps) > 1:
        result.update(steady_within_first_epoch(clock, hf_steps[0], plan["skip_steps"]))
    return result


# --------------------------------------------------------------------------------------------
# parent: run the sides, print the report


def machine_info(threads: int, load_at_start: str) -> list[str]:
    lines = []
    cpu = cpu_model()
    mem = "n/a"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    versions = []
    for name in ("torch", "keras", "transformers", "accelerate", "tokenizers", "numpy"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            versions.append(f"{name} (not installed)")
    lines.append(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    lines.append(
        f"cpu: {cpu}; {os.cpu_count()} logical cores ({usable_cores()} usable); RAM {mem}; "
        f"load avg (1/5/15 min) at start {load_at_start}, at end {load_average()}; "
        f"torch threads per side: {threads}"
    )
    lines.append(f"python {platform.python_version()} ({platform.platform()})")
    lines.append(", ".join(versions) + f"; KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}")
    return lines


def run_side(
    side: str, plan_path: Path, out_path: Path, threads: int, device: str
) -> dict[str, Any] | None:
    env = worker_env(threads)
    env["KERAS_BACKEND"] = "torch"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # Keras' torch backend would take a visible GPU
    env.setdefault("TOKENIZERS_PARALLELISM", "true")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side]
    cmd += ["--plan", str(plan_path), "--out", str(out_path)]
    print(f"\n=== {side} ===", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr, cwd=REPO_ROOT)
    if proc.returncode != 0 or not out_path.is_file():
        print(f"{side} failed (exit {proc.returncode})", file=sys.stderr, flush=True)
        return None
    return json.loads(out_path.read_text())


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != value:  # nan
            return "n/a"
        return format(value, spec)
    return str(value)


def ratio(a: Any, b: Any) -> str:
    try:
        if a is None or b is None or b == 0 or a != a or b != b:
            return "n/a"
        return f"{a / b:.2f}"
    except TypeError:
        return "n/a"


def report(plan: dict[str, Any], results: list[dict[str, Any]], command: str) -> str:
    out: list[str] = []
    mode = plan["mode"]
    out.append(f"# squadqa vs Hugging Face Trainer: MiniLM fine-tuning on SQuAD ({mode} mode)")
    out.append("")
    out += [f"- {line}" for line in machine_info(plan["threads"], plan["load_at_start"])]
    gpus = sorted({r.get("gpu") or "none" for r in results})
    out.append(f"- device: {plan.get('device', 'cpu')} (GPU seen by the sides: {', '.join(gpus)})")
    with contextlib.suppress(ValueError, IndexError):
        if float(plan["load_at_start"].split()[0]) > 0.5 * usable_cores():
            out.append(
                "- **warning: the machine was busy at the start (load average above half the "
                "cores): wall-clock rates are unreliable; compare the CPU-time rows, or rerun "
                "on an idle machine**"
            )
    out.append(f"- command: `{command}`")
    out.append(f"- checkpoint: {plan['checkpoint']}")
    first = results[0] if results else {}
    out.append(
        f"- train: {plan['train']} (max_train_samples={plan['max_train_samples'] or 'all'}"
        f"{'; ' + plan['short_note'] if plan['short_note'] else ''}); "
        f"dev: {plan['dev']} (max_dev_samples={plan['max_dev_samples'] or 'all'}, "
        f"{first.get('dev_examples', '?')} questions)"
    )
    out.append(
        f"- hyperparameters (both): lr {plan['learning_rate']:g}, batch {plan['batch_size']}, "
        f"epochs {plan['epochs']}, warmup_ratio {plan['warmup_ratio']:g} (linear warmup, linear "
        f"decay), weight decay {plan['weight_decay']:g}, AdamW (0.9, 0.999, eps 1e-6), clip "
        f"norm {plan['clip_norm']:g}, seed {plan['seed']}, dropout hidden "
        f"{plan['hidden_dropout']} / attention {plan['attention_dropout']}, max_seq_length "
        f"{plan['max_seq_length']}, doc_stride {plan['doc_stride']}, "
        f"{'bf16 mixed precision' if plan.get('bf16') else 'fp32'}; post-processing (both): "
        f"n_best {plan['n_best']}, max_answer_length {plan['max_answer_length']}, squadqa "
        f"dev windows + extract_answers + evaluate_v1"
    )
    out.append(f"- config: {plan['config_path']} with --set {' '.join(plan['overrides'])}")
    for r in results:
        out.append(f"- {r['label']}: {r['details']}")
    if mode == "short":
        out.append(
            "- short mode: dev EM/F1 are from a one-epoch run on a subset and a small dev "
            "slice: a sanity check, not the accuracy comparison (use --mode full)"
        )
    out.append("")

    rows: list[tuple[str, str, str]] = [
        ("dev EM", "dev_exact_match", ".2f"),
        ("dev F1", "dev_f1", ".2f"),
        ("train questions / windows", "", ""),
        ("optimizer steps", "steps", ""),
        ("training wall time (s)", "train_seconds", ".1f"),
        ("training CPU time, all threads (s)", "train_cpu_seconds", ".1f"),
        ("real (non-padding) tokens", "real_tokens", ""),
        ("padded tokens computed", "padded_tokens", ""),
        ("padding efficiency (real / computed)", "", ""),
        ("**tokens/s** (real tokens / training wall time)", "tokens_per_s", ".0f"),
        ("tokens/s steady (after the first steps)", "steady_tokens_per_s", ".0f"),
        ("tokens per CPU-second", "tokens_per_cpu_s", ".0f"),
        ("s/step", "seconds_per_step", ".2f"),
        ("train loss, mean of last epoch", "final_epoch_loss", ".3f"),
        ("peak RSS before the first step (MiB)", "rss_before_training_mib", ".0f"),
        ("peak RSS after 1st training epoch (MiB)", "rss_after_first_epoch_mib", ".0f"),
        ("peak RSS, whole process (MiB)", "peak_rss_mib", ".0f"),
        ("peak GPU memory, torch allocator (MiB)", "peak_gpu_mib", ".0f"),
        ("process wall time (s)", "process_seconds", ".0f"),
        ("frameworks imported", "frameworks_loaded", ""),
    ]
    out.append("| | " + " | ".join(r["label"] for r in results) + " |")
    out.append("|---|" + "---:|" * len(results))
    for title, key, spec in rows:
        cells = []
        for r in results:
            if title.startswith("train questions"):
                cells.append(f"{r['train_examples']} / {r['train_features']}")
            elif title.startswith("padding efficiency"):
                eff = r["real_tokens"] / r["padded_tokens"] if r.get("padded_tokens") else None
                cells.append(fmt(eff, ".2f"))
            elif title.startswith("tokens/s steady"):
                cells.append(f"{fmt(r.get(key), spec)} (skip {r.get('steady_skip_steps')})")
            else:
                cells.append(fmt(r.get(key), spec) if spec else fmt(r.get(key)))
        out.append(f"| {title} | " + " | ".join(cells) + " |")

    ours = next((r for r in results if r["side"] == "squadqa"), None)
    others = [r for r in results if r["side"] != "squadqa"]
    if ours and others:
        out.append("")
        out.append("Ratios squadqa / HF (> 1: squadqa faster or higher; for memory, > 1 = more):")
        out.append("")
        out.append("| squadqa / | " + " | ".join(r["label"] for r in others) + " |")
        out.append("|---|" + "---:|" * len(others))
        for title, key in (
            ("tokens/s", "tokens_per_s"),
            ("tokens/s steady", "steady_tokens_per_s"),
            ("tokens per CPU-second", "tokens_per_cpu_s"),
            ("peak RSS after 1st epoch", "rss_after_first_epoch_mib"),
            ("peak RSS, whole process", "peak_rss_mib"),
            ("dev EM", "dev_exact_match"),
            ("dev F1", "dev_f1"),
        ):
            cells = [ratio(ours.get(key), r.get(key)) for r in others]
            out.append(f"| {title} | " + " | ".join(cells) + " |")
        out.append("")
        diffs = ", ".join(
            f"{r['label']} {ours['dev_f1'] - r['dev_f1']:+.2f} F1 / "
            f"{ours['dev_exact_match'] - r['dev_exact_match']:+.2f} EM"
            for r in others
        )
        out.append(f"Dev difference squadqa - HF (points): {diffs}.")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        plan = json.loads(args.plan.read_text())
        result = worker_squadqa(plan) if args.worker == "squadqa" else worker_hf(plan, args.worker)
        args.out.write_text(json.dumps(result, indent=2))
        return 0

    load_at_start = load_average()
    os.environ["KERAS_BACKEND"] = "torch"  # the parent featurises with squadqa (short mode)
    try:
        import accelerate  # noqa: F401  (HF's Trainer refuses to run without it)
    except ImportError:
        if any(s.startswith("hf") for s in args.side_list):
            print("HF's Trainer needs `accelerate`: pip install 'accelerate>=1.1'", file=sys.stderr)
            return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="squadqa-vs-hf-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/vs_hf.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    plan = make_plan(args, workdir)
    plan["load_at_start"] = load_at_start
    plan_path = workdir / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2))
    print(f"work directory: {workdir}", file=sys.stderr, flush=True)

    results = []
    for side in args.side_list:
        result = run_side(
            side, plan_path, workdir / f"result-{side}.json", plan["threads"], plan["device"]
        )
        if result is not None:
            results.append(result)
    text = report(plan, results, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"plan": plan, "results": results}, indent=2))
    if not args.keep and args.workdir is None:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"(kept {workdir})", file=sys.stderr)
    return 0 if len(results) == len(args.side_list) else 1


if __name__ == "__main__":
    sys.exit(main())
