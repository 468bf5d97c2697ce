"""Rotary position embedding (RoPE, Su et al. 2021): queries and keys rotated by their position.

Attention applies it (`MultiHeadSelfAttention` with ``rotary=True``); the embeddings then add no
position vector, so attention scores depend on relative offsets only.
"""

from __future__ import annotations

import math
from typing import Any

from keras import ops

ROPE_BASE = 10000.0


def rotary_cos_sin(positions: Any, head_dim: int, base: float = ROPE_BASE) -> tuple[Any, Any]:
    """cos/sin tables ``[seq, head_dim]`` for RoPE in the half-split ("rotate_half") layout.

    `positions`: a ``[seq]`` tensor (:func:`sequence_positions`) or a length (``0 .. n-1``).
    Dimension ``i`` and ``i + head_dim/2`` form one rotating pair with angle
    ``pos * base^(-2i/head_dim)``; both halves of the table repeat the same angles.
    """
    if head_dim % 2:
        raise ValueError(f"rotary position embedding needs an even head size, got {head_dim}")
    if isinstance(positions, int):
        positions = ops.arange(positions)
    positions = ops.cast(positions, "float32")
    inv_freq = ops.exp(ops.arange(0, head_dim, 2, dtype="float32") * (-math.log(base) / head_dim))
    angles = positions[:, None] * inv_freq[None, :]  # [seq, head_dim/2]
    angles = ops.concatenate([angles, angles], axis=-1)  # [seq, head_dim]
    return ops.cos(angles), ops.sin(angles)


def apply_rotary(x: Any, cos: Any, sin: Any) -> Any:
    """Rotate ``x`` of shape ``[batch, seq, heads, head_dim]`` by per-position angles."""
    x = ops.convert_to_tensor(x)
    half = ops.shape(x)[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    rotated_half = ops.concatenate([-x2, x1], axis=-1)
    cos = ops.cast(cos, x.dtype)[None, :, None, :]
    sin = ops.cast(sin, x.dtype)[None, :, None, :]
    return x * cos + rotated_half * sin
