"""Multi-head self-attention whose weights map one-to-one onto BERT's.

``query``, ``key``, ``value`` and ``output_dense`` are plain ``Dense`` layers: a Keras kernel is
``[in, out]``, i.e. BERT's ``attention.self.query.weight`` (``[out, in]``) transposed.

Grouped key/value heads (grouped-query attention, Ainslie et al. 2023): with ``num_key_value_heads``
below ``num_heads``, ``key`` and ``value`` project to ``num_key_value_heads`` heads only, and query
head ``i`` attends with key/value head ``i // (num_heads / num_key_value_heads)`` (each K/V head
repeated for its consecutive group of query heads, as Hugging Face's ``repeat_kv``). With
``num_key_value_heads == num_heads`` it is BERT's multi-head attention, weights included.

Two numerically equivalent code paths:

- fused: ``keras.ops.dot_product_attention`` (torch SDPA / ``jax.nn.dot_product_attention`` /
  an einsum on TensorFlow). It has no dropout argument on any backend, so it is used only when
  attention dropout is inactive (inference, or rate 0).
- explicit: ``softmax(Q K^T / sqrt(d) + mask) V`` written out with ``keras.ops`` so that dropout
  can be applied to the attention probabilities during training, and the probabilities can be
  returned (``return_attention_scores=True``, what `squadqa explain` shows).

Masking: ``attention_mask`` is ``[batch, seq]`` with 1 for real tokens and 0 for padding. Padded
keys get a large negative score (exactly zero probability). A query whose row has *no* real key
at all (an all-padding sequence) would otherwise attend uniformly to padding; its output is set
to zero instead, so padded keys are never attended and the result is finite and identical on
both paths and all backends.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from squadqa.layers.embeddings import sequence_positions
from squadqa.layers.rotary import ROPE_BASE, apply_rotary, rotary_cos_sin

ATTENTION_IMPLS = ("auto", "fused", "explicit")
_MASKED_SCORE = -1e9  # added in float32 only; exp() underflows to exactly 0


@keras.saving.register_keras_serializable(package="squadqa")
class MultiHeadSelfAttention(keras.layers.Layer):
    """BERT-style self-attention: separate Q/K/V projections, optional RoPE, output projection.

    The model settings have no defaults here: `QAConfig` holds them (its `attention_settings`).

    Args:
        hidden_size: model width; must be divisible by ``num_heads``.
        num_heads: number of (query) attention heads.
        num_key_value_heads: key/value heads; divides ``num_heads`` (checked by `QAConfig`).
        attention_dropout: dropout on the attention probabilities (training only).
        rotary: apply rotary position embeddings to queries and keys.
        initializer_range: stddev of the truncated-normal kernel initializer.
        rotary_base: RoPE frequency base.
        attention_impl: ``"auto"`` (fused unless attention dropout is active), ``"fused"`` or
            ``"explicit"``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        num_key_value_heads: int,
        attention_dropout: float,
        rotary: bool,
        initializer_range: float,
        rotary_base: float = ROPE_BASE,
        attention_impl: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_size = hidden_size // num_heads
        if rotary and self.head_size % 2:
            raise ValueError(f"rotary attention needs an even head size, got {self.head_size}")
        self.attention_dropout = attention_dropout
        self.rotary = rotary
        self.rotary_base = rotary_base
        self.attention_impl = attention_impl
        self.initializer_range = initializer_range

        def dense(name: str, units: int = hidden_size) -> keras.layers.Dense:
            return keras.layers.Dense(
                units,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range),
                name=name,
                dtype=self.dtype_policy,
            )

        key_value_size = num_key_value_heads * self.head_size
        self.query = dense("query")
        self.key = dense("key", key_value_size)
        self.value = dense("value", key_value_size)
        self.output_dense = dense("output_dense")
        self.attention_probs_dropout = keras.layers.Dropout(
            attention_dropout, name="attention_probs_dropout", dtype=self.dtype_policy
        )

    def build(self, input_shape: Any = None) -> None:
        if self.built:  # idempotent: loading may build before an explicit build()
            return
        shape = (None, None, self.hidden_size)
        for projection in (self.query, self.key, self.value, self.output_dense):
            projection.build(shape)
        self.built = True

    def _split_heads(self, x: Any, seq_len: Any, heads: int) -> Any:
        return ops.reshape(x, (-1, seq_len, heads, self.head_size))

    def _repeat_key_value_heads(self, x: Any) -> Any:
        """``[batch, seq, kv_heads, d]`` → ``[batch, seq, heads, d]``, each key/value head
        repeated for its group of consecutive query heads (nothing to do without groups)."""
        group = self.num_heads // self.num_key_value_heads
        return x if group == 1 else ops.repeat(x, group, axis=2)

    def call(
        self,
        hidden_states: Any,
        attention_mask: Any = None,
        training: bool | None = None,
        return_attention_scores: bool = False,
    ) -> Any:
        """The attended output ``[batch, seq, hidden]``; with ``return_attention_scores``, the
        pair (output, probabilities ``[batch, heads, queries, keys]``), computed on the explicit
        path (what `squadqa explain` reports; the fused kernels do not return them)."""
        seq_len = ops.shape(hidden_states)[1]
        kv_heads = self.num_key_value_heads
        query_layer = self._split_heads(self.query(hidden_states), seq_len, self.num_heads)
        key_layer = self._split_heads(self.key(hidden_states), seq_len, kv_heads)
        value_layer = self._split_heads(self.value(hidden_states), seq_len, kv_heads)
        if self.rotary:
            positions = sequence_positions(hidden_states)
            cos, sin = rotary_cos_sin(positions, self.head_size, self.rotary_base)
            query_layer = apply_rotary(query_layer, cos, sin)
            key_layer = apply_rotary(key_layer, cos, sin)
        # Repeated here, not left to the fused kernels: their grouped-query support differs by
        # backend and version, and the explicit path then needs no grouped einsums.
        key_layer = self._repeat_key_value_heads(key_layer)
        value_layer = self._repeat_key_value_heads(value_layer)

        key_mask = None if attention_mask is None else ops.cast(attention_mask, "bool")
        dropout_active = bool(training) and self.attention_dropout > 0
        if self.attention_impl == "fused" and dropout_active:
            raise ValueError(
                "attention_impl='fused' cannot apply attention dropout; use 'auto' or 'explicit'"
            )
        attention_probs = None
        if (
            return_attention_scores
            or self.attention_impl == "explicit"
            or (self.attention_impl == "auto" and dropout_active)
        ):
            attention_probs = self._attention_probs(query_layer, key_layer, key_mask)
            dropped = self.attention_probs_dropout(attention_probs, training=training)
            dropped = ops.cast(dropped, value_layer.dtype)
            context = ops.einsum("bnts,bsnh->btnh", dropped, value_layer)
        else:
            context = ops.dot_product_attention(
                query_layer,
                key_layer,
                value_layer,
                mask=None if key_mask is None else key_mask[:, None, None, :],
                scale=1.0 / math.sqrt(self.head_size),
            )
        if key_mask is not None:
            # Rows without any real key: zero instead of uniform attention over padding.
            has_real_key = ops.cast(ops.any(key_mask, axis=-1), context.dtype)
            context = context * has_real_key[:, None, None, None]
        context = ops.reshape(context, (-1, seq_len, self.hidden_size))
        output = self.output_dense(context)
        return (output, attention_probs) if return_attention_scores else output

    def _attention_probs(self, query_layer: Any, key_layer: Any, key_mask: Any) -> Any:
        """softmax(Q K^T / sqrt(d) + mask) in float32, ``[batch, heads, queries, keys]``: the
        explicit path, which applies dropout to them before multiplying by V.

        The scale goes on Q and the padding mask is an additive [batch, 1, 1, keys] bias, so
        neither costs a pass over the [batch, heads, queries, keys] scores (in the CPU profile of
        docs/results.md the `where`, one forward and two backward passes, and the division there
        took 0.38 s of a 4.1 s MiniLM training step).
        """
        query_layer = query_layer * ops.cast(1.0 / math.sqrt(self.head_size), query_layer.dtype)
        attention_scores = ops.einsum("btnh,bsnh->bnts", query_layer, key_layer)
        attention_scores = ops.cast(attention_scores, "float32")
        if key_mask is not None:
            key_bias = ops.where(key_mask, 0.0, _MASKED_SCORE)
            attention_scores = attention_scores + key_bias[:, None, None, :]
        return ops.softmax(attention_scores, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            num_key_value_heads=self.num_key_value_heads,
            attention_dropout=self.attention_dropout,
            rotary=self.rotary,
            initializer_range=self.initializer_range,
            rotary_base=self.rotary_base,
            attention_impl=self.attention_impl,
        )
        return config
