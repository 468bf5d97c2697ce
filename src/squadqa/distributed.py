"""Data parallelism on Keras' distribution API: several devices, and several processes (hosts).

squadqa has no distributed loop of its own. One process: `keras.distribution.DataParallel` over
its devices (Keras implements it on JAX only). Several processes: each is started with Keras'
own variables (`KERAS_DISTRIBUTION_JOB_ADDRESSES`, the coordinator's `host:port` first;
`KERAS_DISTRIBUTION_NUM_PROCESSES`; `KERAS_DISTRIBUTION_PROCESS_ID`), `join_processes` calls
`keras.distribution.initialize` (i.e. `jax.distributed`), and then:

- every process builds the same global batches in the same order and feeds only its rows of
  each (`Replicas.local_rows`); Keras assembles the global batch with
  `jax.make_array_from_process_local_data`, so gradients and losses are those of one process
  running the whole batch;
- dev batches are given whole to every process (replicated), so every process holds all dev
  logits and computes the same metrics, with no gather;
- only process 0 writes (`rundir.set_writer`): run directory, checkpoints, feature cache,
  progress bar, tracking; a trained tokenizer is process 0's, sent to the others
  (`broadcast_text`), since WordPiece training breaks ties in hash order.

docs/distributed.md has the commands, and what `--resume` needs across hosts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from squadqa import rundir
from squadqa.config import TrainConfig

NUM_PROCESSES_ENV = "KERAS_DISTRIBUTION_NUM_PROCESSES"


@dataclass(frozen=True)
class Replicas:
    """Where a data-parallel run stands: its replicas (devices of all processes) and process."""

    devices: int = 1
    process_index: int = 0
    process_count: int = 1

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes the run directory and shows progress."""
        return self.process_index == 0

    def local_rows(self, batch: Any) -> Any:
        """This process's share of a global batch: nested dicts / tuples of arrays, batch first.

        Process p takes rows [p * n / P, (p + 1) * n / P): the order in which
        `jax.make_array_from_process_local_data` puts the processes' rows back together.
        """
        if self.process_count == 1:
            return batch
        if isinstance(batch, dict):
            return {key: self.local_rows(value) for key, value in batch.items()}
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.local_rows(value) for value in batch)
        rows = len(batch)
        if rows % self.process_count:
            raise ValueError(f"a batch of {rows} rows does not split over {self.process_count}")
        share = rows // self.process_count
        return batch[self.process_index * share : (self.process_index + 1) * share]


ONE_DEVICE = Replicas()  # no data parallelism


def requested_processes() -> int:
    """The number of processes the environment asks for (Keras' variable; 1 when unset)."""
    value = os.environ.get(NUM_PROCESSES_ENV, "").strip()
    try:
        return int(value) if value else 1
    except ValueError:
        raise ValueError(f"{NUM_PROCESSES_ENV}={value!r}: expected a whole number") from None


def join_processes() -> None:
    """Join the other processes of a multi-process run (from the environment), once.

    Called before the run directory is touched, so that only process 0 ever writes it.
    """
    if requested_processes() <= 1:
        rundir.set_writer(True)
        return
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"{NUM_PROCESSES_ENV}={requested_processes()}: several processes run on JAX only "
            f"(KERAS_BACKEND=jax); {backend} has no keras.distribution (docs/distributed.md)"
        )
    import jax

    if not jax.distributed.is_initialized():
        keras.distribution.initialize()
    rundir.set_writer(jax.process_index() == 0)


def set_distribution(t: TrainConfig) -> Replicas:
    """The process-global Keras distribution for this run, and where the run stands in it.

    `train.distribution = "data_parallel"`: `keras.distribution.DataParallel` over the first
    `train.devices` devices (all when 0; with several processes, all devices of all of them).
    Set either way, so a data-parallel run never leaks into a later run of the same process.
    """
    if t.distribution not in ("none", "data_parallel"):
        raise ValueError(f"train.distribution={t.distribution!r}: use none or data_parallel")
    processes = requested_processes()
    if t.distribution == "none":
        if processes > 1:
            raise ValueError(
                f"{NUM_PROCESSES_ENV}={processes} needs train.distribution = 'data_parallel'"
            )
        if keras.backend.backend() == "jax":
            keras.distribution.set_distribution(None)
        return ONE_DEVICE
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"train.distribution = 'data_parallel' runs on JAX only (KERAS_BACKEND=jax); "
            f"{backend}: Keras 3.15 has no data-parallel model.fit there (see docs/distributed.md)"
        )
    import jax

    available = keras.distribution.list_devices()
    n = t.devices or len(available)
    if not 1 <= n <= len(available):
        raise ValueError(f"train.devices={t.devices}: this run sees {len(available)} devices")
    if jax.process_count() > 1 and n != len(available):
        raise ValueError(
            f"train.devices={t.devices}: a run of {jax.process_count()} processes uses all "
            f"{len(available)} devices of all of them (train.devices = 0)"
        )
    if t.batch_size % n:
        raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the {n} devices")
    # Each process already feeds only its rows (`Replicas.local_rows`): no Keras auto-sharding.
    distribution = keras.distribution.DataParallel(devices=available[:n], auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    replicas = Replicas(n, jax.process_index(), jax.process_count())
    where = f" (process {replicas.process_index} of {replicas.process_count})"
    print(
        f"data parallel over {n} devices: {', '.join(map(str, available[:n]))}"
        + (where if replicas.process_count > 1 else "")
    )
    return replicas


@contextlib.contextmanager
def no_distribution() -> Iterator[None]:
    """Variables made inside are this process's own, not global arrays over all devices: for
    work one process does alone (process 0 exporting the model), which must not start a
    computation that the other processes' devices would have to join."""
    if keras.backend.backend() != "jax":
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def broadcast_text(text: str, replicas: Replicas) -> str:
    """Process 0's `text` on every process (as it is, in a one-process run)."""
    if replicas.process_count == 1:
        return text
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int64(len(data))))
    # Only process 0's values travel; the others send a buffer of the right shape.
    sent = data if replicas.is_main else np.zeros(size, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(sent)).tobytes().decode("utf-8")
