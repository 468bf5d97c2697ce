"""What `squadqa train` and `squadqa pretrain` share around their loops: the run directory, the
tokenizer, precision, seeding, progress, and step checkpoints with stopping on a signal.

Both loops are one `model.fit` per epoch over a `PyDataset` whose batches from `start` on are
those of an uninterrupted epoch. `StepCadence` is the one mechanism that makes a run survive a
stop: it reseeds every step from (seed, epoch, step), so a resumed step draws what it would have
drawn; writes the loop's checkpoint every `train.save_every_steps` steps; and when
`StopRequests` has caught SIGTERM, SIGINT or SIGUSR1 (a scheduler's or spot machine's notice,
Ctrl-C), writes one at the end of the step it is in and stops the epoch, so `--resume` continues
exactly there.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import keras
from tokenizers import Tokenizer

from squadqa import rundir, seeding
from squadqa.config import RunConfig, dump_config, load_config
from squadqa.data import Example
from squadqa.distributed import Replicas, broadcast_text
from squadqa.tokenization import QATokenizer, load_tokenizer, train_wordpiece, training_texts

# A run stopped by a signal exits with this status (BSD's EX_TEMPFAIL: "try again later"), so a
# job script can tell "resume me" from success (0) and failure (1).
EXIT_STOPPED = 75

# ------------------------------------------------------------- precision, tokenizer, run directory


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


def pretrained_path(init: str) -> str | None:
    """The checkpoint folder of `train.init = "pretrained:PATH"` (None: the installed MiniLM)."""
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

        return load_tokenizer(checkpoint_dir(pretrained_path(config.train.init)))
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


# --------------------------------------------------------------------------- seeding, progress


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


class ProgressBar(keras.callbacks.Callback):
    """tqdm bar per epoch with loss and training tokens/s."""

    def __init__(
        self, batches: keras.utils.PyDataset, epoch: int, epochs: int, log_every: int = 1
    ) -> None:
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


def run_tokenizer(
    config: RunConfig,
    run_dir: Path,
    resume: bool,
    examples: Sequence[Example],
    replicas: Replicas,
) -> QATokenizer:
    """The run's tokenizer: the one it saved (--resume), else built and saved now."""
    saved = run_dir / rundir.TOKENIZER
    if resume and saved.is_file():
        return load_tokenizer(saved)
    tokenizer = shared_tokenizer(build_tokenizer(config, examples), replicas)
    tokenizer.save(run_dir)
    return tokenizer


# --------------------------------------------------------------------------- stopping


class StopRequests:
    """While entered, SIGTERM, SIGINT and SIGUSR1 ask the run to stop at the end of its step.

    The first signal only sets `signal_name` (the loop then checkpoints and stops); a second
    SIGINT raises KeyboardInterrupt at once, for a user who does not want to wait. Handlers are
    installed in the main thread only (Python allows no other) and restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(
            f"\n{self.signal_name}: stopping after this step with a checkpoint "
            "(`--resume` continues from it)",
            file=sys.stderr,
            flush=True,
        )


def seed_step(model: keras.Model, seed: int, epoch: int, step: int) -> None:
    """Randomness of step `step` (0-based) of epoch `epoch` from (seed, epoch, step) alone.

    Reseeds the global RNGs (Python, numpy, the backend: torch's unseeded dropout fast path
    draws from its global generator) and every Keras SeedGenerator of the model, so a resumed
    step draws what it would have drawn uninterrupted.
    """
    generators = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        generators.extend(getattr(layer, "_seed_generators", []))
    state = seeding.words(seed, seeding.Stream.STEP, epoch, step, n=1 + 2 * len(generators))
    keras.utils.set_random_seed(int(state[0]))
    for generator, pair in zip(generators, state[1:].reshape(-1, 2), strict=True):
        generator.state.assign(pair.astype(generator.state.dtype))


class StepCadence(keras.callbacks.Callback):
    """Per step: reseed; after it, the loop's `on_step`, then its `checkpoint` when one is due
    (every `every` steps, or a stop was asked for), and stop `fit` after a requested stop.

    Args:
        seed, epoch: the run's seed and this epoch (0-based).
        start: steps of the epoch done before this `fit` (a resumed epoch).
        steps_per_epoch: the whole epoch's steps; its last step is left to the loop's epoch end.
        every: `train.save_every_steps` (0: only at epoch ends and on a stop).
        stop: the run's `StopRequests`.
        on_step: `(step, logs)` after each step, `step` 1-based within the epoch.
        checkpoint: `(step)` writes a checkpoint after `step` steps of the epoch.
    """

    def __init__(
        self,
        seed: int,
        epoch: int,
        start: int,
        steps_per_epoch: int,
        every: int,
        stop: StopRequests,
        on_step: Callable[[int, dict], None],
        checkpoint: Callable[[int], None],
    ) -> None:
        super().__init__()
        self.seed, self.epoch, self.start = seed, epoch, start
        self.steps_per_epoch, self.every, self.stop = steps_per_epoch, every, stop
        self.on_step, self.checkpoint = on_step, checkpoint
        self.last_step = start  # steps of the epoch done so far

    @property
    def stopped_early(self) -> bool:
        """After `fit`: whether a stop ended the epoch before its last step."""
        return self.last_step < self.steps_per_epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        seed_step(self.model, self.seed, self.epoch, self.start + batch)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self.start + batch + 1
        self.on_step(step, logs or {})
        self.last_step = step
        if step == self.steps_per_epoch:
            return  # the epoch's end: the loop checkpoints (and stops) there
        if self.stop.requested or (self.every and step % self.every == 0):
            self.model  # noqa: B018  (on jax, reading the property syncs the model's state)
            self.checkpoint(step)
        if self.stop.requested:
            self.model.stop_training = True
