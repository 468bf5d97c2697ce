"""FusedAdamW against the reference it claims to be: torch.optim.AdamW + clip_grad_norm_."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from squadqa.optim import FusedAdamW, WarmupDecay, make_adamw

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the fused path is the torch backend's"
)

SHAPES = {"kernel": (6, 5), "bias": (5,), "embeddings": (11, 5)}


def _reference_run(start, grads, lrs, weight_decay, clip):
    """torch.optim.AdamW (plain for-loop implementation) with global-norm clipping."""
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in start.items()}
    decayed = [p for k, p in params.items() if k != "bias"]
    optimizer = torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": [params["bias"]], "weight_decay": 0.0},
        ],
        lr=lrs[0],
        betas=(0.9, 0.999),
        eps=1e-6,
        foreach=False,
        fused=False,
    )
    for step_grads, lr in zip(grads, lrs, strict=True):
        for key, p in params.items():
            p.grad = torch.tensor(step_grads[key])
        torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    return {k: p.detach().numpy() for k, p in params.items()}


@pytest.mark.parametrize(
    "clip, scheduled", [(1.0, True), (1e6, True), (1.0, False)]
)  # clipping active on some steps / never; a schedule / a constant learning rate
def test_fused_adamw_matches_torch_adamw(clip: float, scheduled: bool):
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s).astype("float32") for k, s in SHAPES.items()}
    steps = 6
    # Gradient norms from ~0.1 to ~30, so that with clip=1 some steps clip and the scale varies.
    grads = [
        {
            k: (rng.normal(size=s) * 10.0 ** rng.uniform(-1.5, 1)).astype("float32")
            for k, s in SHAPES.items()
        }
        for _ in range(steps)
    ]
    schedule = WarmupDecay(peak=0.05, total_steps=steps, warmup_steps=2) if scheduled else 0.03
    lrs = [float(schedule(s)) if scheduled else schedule for s in range(steps)]

    variables = [keras.Variable(v, name=k) for k, v in start.items()]
    optimizer = FusedAdamW(
        learning_rate=schedule, weight_decay=0.1, epsilon=1e-6, global_clipnorm=clip
    )
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.build(variables)
    assert optimizer._fused(variables)
    for step_grads in grads:
        optimizer.apply_gradients([(torch.tensor(step_grads[v.name]), v) for v in variables])

    expected = _reference_run(start, grads, lrs, 0.1, clip)
    for v in variables:
        got = keras.ops.convert_to_numpy(v)
        np.testing.assert_allclose(got, expected[v.name], rtol=1e-5, atol=1e-6, err_msg=v.name)
        assert not np.allclose(got, start[v.name])  # it moved
    assert int(optimizer.iterations) == steps


def test_checkpoints_move_between_keras_adamw_and_fused_adamw(tmp_path):
    """Same optimizer variables as keras.optimizers.AdamW: a checkpoint loads into either."""

    def compiled(optimizer):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer=optimizer, loss="mse")
        optimizer.build(model.trainable_variables)
        return model

    x, y = np.ones((2, 4), "float32"), np.zeros((2, 3), "float32")
    trained = compiled(keras.optimizers.AdamW(1e-2))
    trained.train_on_batch(x, y)
    trained.save_weights(tmp_path / "plain.weights.h5")
    restored = compiled(FusedAdamW(1e-2))
    restored.load_weights(tmp_path / "plain.weights.h5")
    assert len(restored.optimizer.variables) == len(trained.optimizer.variables)
    for a, b in zip(trained.optimizer.variables, restored.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(restored.optimizer.iterations) == 1


def test_make_adamw_uses_keras_adamw_where_the_fused_path_does_not_apply():
    assert type(make_adamw(learning_rate=1e-3)) is FusedAdamW
    plain = make_adamw(learning_rate=1e-3, gradient_accumulation_steps=2)
    assert type(plain) is not FusedAdamW and isinstance(plain, keras.optimizers.AdamW)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(FusedAdamW(1e-3)))
    assert type(restored) is FusedAdamW
