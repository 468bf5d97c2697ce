"""The optimizer of `train` and `pretrain`: `make_optimizer` (AdamW, no decay on biases and norms,
the `WarmupDecay` schedule), whose AdamW update on torch is one fused kernel call.

The fused AdamW: its update on the torch backend is one kernel call, as torch's own AdamW does it.

Why: `keras.optimizers.AdamW` on torch runs global-norm clipping and the Adam update as a few
dozen `_foreach` passes over every parameter: 200 ms per MiniLM step on the 2-core CPU of
docs/results.md, against 36 ms for `torch._fused_adamw_` plus one `_foreach_norm`, which is what HF
`Trainer` (`adamw_torch_fused`) uses.

The math is `torch.optim.AdamW`'s (decoupled weight decay `p *= 1 - lr * wd`; epsilon added
after the bias correction of the second moment) with Keras' global-norm clipping
(`g *= min(1, clip / ||g||)`). The only difference from `keras.optimizers.AdamW` is where epsilon
sits: Keras adds it before dividing by `sqrt(1 - beta_2 ** t)`, i.e. its epsilon is larger by that
factor in the first steps (1e-6 against gradients' sqrt(v) ~ 1e-3: no visible effect). Moments
live in the same variables as Keras' Adam, so checkpoints load into either class.

On other backends, or with gradient accumulation, EMA, amsgrad or per-variable clipping, it is
exactly `keras.optimizers.AdamW` (`make_adamw` picks the plain class there).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras
from keras import ops

if TYPE_CHECKING:
    from squadqa.config import TrainConfig

NO_DECAY = ("bias", "layer_norm", "layernorm", "gamma", "beta")


@keras.saving.register_keras_serializable(package="squadqa")
class FusedAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with a fused update on torch (see the module docstring)."""

    def _fused(self, variables: list[Any]) -> bool:
        if keras.backend.backend() != "torch" or not variables:
            return False
        if self.gradient_accumulation_steps or self.use_ema or self.amsgrad:
            return False
        if self.clipnorm or self.clipvalue:
            return False
        first = variables[0].value
        return all(
            v.value.device == first.device and v.value.dtype == first.dtype for v in variables
        )

    def _backend_apply_gradients(self, grads: list[Any], trainable_variables: list[Any]) -> None:
        if not self._fused(trainable_variables):
            super()._backend_apply_gradients(grads, trainable_variables)
            return
        import torch

        with torch.no_grad():
            self._fused_update(torch, list(grads), trainable_variables)

    def _fused_update(self, torch: Any, grads: list[Any], variables: list[Any]) -> None:
        if self.global_clipnorm:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            scale = torch.clamp(self.global_clipnorm / norm, max=1.0)  # NaN norm stays NaN
            grads = torch._foreach_mul(grads, scale)
        device = variables[0].value.device
        # A schedule's value or the optimizer's learning-rate variable, as a tensor on `device`.
        lr = keras.ops.convert_to_tensor(self._get_current_learning_rate(), "float32").to(device)
        step = (torch.as_tensor(self.iterations.value) + 1).to(device, torch.float32)
        groups: dict[float, tuple[list, list, list, list]] = {}
        for grad, variable in zip(grads, variables, strict=True):
            index = self._get_variable_index(variable)
            decay = float(self.weight_decay or 0.0) if self._use_weight_decay(variable) else 0.0
            params, group_grads, momentums, velocities = groups.setdefault(decay, ([], [], [], []))
            params.append(variable.value)
            group_grads.append(grad)
            momentums.append(self._momentums[index].value)
            velocities.append(self._velocities[index].value)
        for decay, (params, group_grads, momentums, velocities) in groups.items():
            torch._fused_adamw_(
                params,
                group_grads,
                momentums,
                velocities,
                [],
                [step] * len(params),
                lr=lr,
                beta1=float(self.beta_1),
                beta2=float(self.beta_2),
                weight_decay=decay,
                eps=float(self.epsilon),
                amsgrad=False,
                maximize=False,
            )


def make_adamw(**kwargs: Any) -> keras.optimizers.AdamW:
    """`FusedAdamW` where its fused path applies (torch, no accumulation/EMA), else Keras' own."""
    plain = kwargs.get("gradient_accumulation_steps") or kwargs.get("use_ema")
    if keras.backend.backend() == "torch" and not plain:
        return FusedAdamW(**kwargs)
    return keras.optimizers.AdamW(**kwargs)


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


def make_optimizer(
    t: TrainConfig, updates_per_epoch: int
) -> tuple[keras.optimizers.Optimizer, WarmupDecay]:
    """AdamW (no decay on norms), its warmup/decay laid out over `train.decay_epochs` or epochs."""
    total_updates = updates_per_epoch * (t.decay_epochs or t.epochs)
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
