"""One seed derivation: streams of different purposes, seeds, epochs and steps never coincide."""

import itertools

import keras
import numpy as np
import pytest

from squadqa import seeding
from squadqa.config import load_config
from squadqa.harness import seed_step
from squadqa.seeding import Stream


def test_no_two_keys_share_a_stream() -> None:
    keys = list(itertools.product(range(4), Stream, range(4), range(4)))
    firsts = {tuple(seeding.words(*key, n=2)) for key in keys}
    assert len(firsts) == len(keys)  # 64 bits of each stream's start: all different


def test_the_old_pretraining_collision_is_gone() -> None:
    # pretraining used to shuffle epoch e with seed + e: seed 1, epoch 0 == seed 0, epoch 1
    old = [np.random.default_rng(s + e).permutation(50) for s, e in ((1, 0), (0, 1))]
    assert np.array_equal(*old)
    new = [seeding.generator(s, Stream.BATCH_ORDER, e).permutation(50) for s, e in ((1, 0), (0, 1))]
    assert not np.array_equal(*new)


def test_epoch_and_step_are_not_interchangeable() -> None:
    # numpy pads entropy with zeros, so a key of varying length would make (e, 0) == (e,)
    a = seeding.words(0, Stream.STEP, epoch=1, step=0, n=2)
    b = seeding.words(0, Stream.STEP, epoch=0, step=1, n=2)
    assert not np.array_equal(a, b)


def test_a_stream_repeats_itself() -> None:
    draws = [seeding.generator(3, Stream.MASKING, 2, 7).random(5) for _ in range(2)]
    np.testing.assert_array_equal(*draws)


def test_negative_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        seeding.generator(-1, Stream.INIT)
    with pytest.raises(ValueError, match=r"train\.seed=-1"):
        load_config(None, ["train.seed=-1"])


def _dropout_model() -> keras.Model:
    inputs = keras.Input((64,))
    hidden = keras.layers.Dropout(0.5)(inputs)
    return keras.Model(inputs, keras.layers.Dropout(0.5)(hidden))


def test_seed_step_fixes_every_dropout_of_a_step() -> None:
    model = _dropout_model()
    ones = np.ones((2, 64), "float32")

    def masks(step: int) -> np.ndarray:
        seed_step(model, seed=0, epoch=0, step=step)
        return keras.ops.convert_to_numpy(model(ones, training=True))

    np.testing.assert_array_equal(masks(5), masks(5))
    assert not np.array_equal(masks(5), masks(6))
    states = [
        tuple(keras.ops.convert_to_numpy(g.state))
        for layer in model.layers
        for g in getattr(layer, "_seed_generators", [])
    ]
    assert len(states) == 2 and states[0] != states[1]  # the two layers draw differently
