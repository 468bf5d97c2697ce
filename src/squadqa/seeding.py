"""Every random stream of a run, derived from the run's seed by purpose, epoch and step.

One derivation for all of them: numpy's `SeedSequence` hashes the key (seed, stream, epoch,
step), so streams of different purposes, epochs, steps or seeds do not overlap. The formulas it
replaced did: pretraining shuffled epoch `e` with `seed + e`, so seed 1's first epoch was seed
0's second. The key always has four words because `SeedSequence` pads its entropy with zeros:
`[1, 2]` and `[1, 2, 0]` give the same stream.

Example:
    >>> order_rng = generator(seed=0, stream=Stream.BATCH_ORDER, epoch=3)
    >>> order_rng.permutation(4).shape
    (4,)
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """What a random stream is for; part of its key, so two purposes never share draws."""

    INIT = 1  # weight initialisation (Keras' global seed before the model is built)
    BATCH_ORDER = 2  # the shuffled batches of an epoch
    STEP = 3  # dropout of one step: the global RNGs and every Keras SeedGenerator
    MASKING = 4  # pretraining's masks, replacements and spans of one batch


def seed_sequence(
    seed: int, stream: Stream, epoch: int = 0, step: int = 0
) -> np.random.SeedSequence:
    """The seed sequence of one stream; `seed`, `epoch` and `step` must be non-negative."""
    key = [seed, int(stream), epoch, step]
    if min(key) < 0:
        raise ValueError(f"seed, epoch and step must be non-negative, got {key}")
    return np.random.SeedSequence(key)


def generator(seed: int, stream: Stream, epoch: int = 0, step: int = 0) -> np.random.Generator:
    """A numpy generator of one stream."""
    return np.random.default_rng(seed_sequence(seed, stream, epoch, step))


def words(seed: int, stream: Stream, epoch: int = 0, step: int = 0, n: int = 1) -> np.ndarray:
    """`n` 32-bit words of one stream, for APIs that take integer seeds or states."""
    return seed_sequence(seed, stream, epoch, step).generate_state(n, np.uint32)


def integer(seed: int, stream: Stream, epoch: int = 0, step: int = 0) -> int:
    """One integer seed (below 2**32) of one stream, e.g. for `keras.utils.set_random_seed`."""
    return int(words(seed, stream, epoch, step)[0])
