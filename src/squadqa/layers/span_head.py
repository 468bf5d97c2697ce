"""Span head: one ``Dense(2)`` over the last hidden states → start and end logits.

``dense`` ↔ BERT ``qa_outputs`` (column 0 = start, column 1 = end). Logits are computed in float32
even under a mixed-precision policy (the softmax over positions is sensitive), and positions where
``span_mask == 0`` (question, separators, padding) are replaced by :data:`MASKED_LOGIT`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from squadqa.architecture import MASKED_LOGIT


@keras.saving.register_keras_serializable(package="squadqa")
class SpanHead(keras.layers.Layer):
    """Start/end logits ``[batch, seq]`` (float32) with non-answer positions masked."""

    def __init__(self, hidden_size: int, *, initializer_range: float, **kwargs: Any) -> None:
        kwargs["dtype"] = "float32"  # always float32 logits, whatever the global policy
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.initializer_range = initializer_range
        self.dense = keras.layers.Dense(
            2,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range),
            name="dense",
            dtype="float32",
        )

    def build(self, input_shape: Any = None) -> None:
        if self.built:  # idempotent: loading may build before an explicit build()
            return
        self.dense.build((None, None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, span_mask: Any = None) -> tuple[Any, Any]:
        logits = self.dense(ops.cast(hidden_states, "float32"))  # [batch, seq, 2]
        start_logits = logits[..., 0]
        end_logits = logits[..., 1]
        if span_mask is not None:
            allowed = ops.cast(span_mask, "bool")
            start_logits = ops.where(allowed, start_logits, MASKED_LOGIT)
            end_logits = ops.where(allowed, end_logits, MASKED_LOGIT)
        return start_logits, end_logits

    def compute_output_shape(self, input_shape: Any) -> tuple:
        shape = tuple(input_shape)[:-1]
        return shape, shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, initializer_range=self.initializer_range)
        return config
