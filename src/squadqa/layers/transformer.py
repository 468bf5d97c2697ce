"""Position-wise feed-forward network and the Transformer encoder block (post-LN or pre-LN)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import ops

from squadqa.layers.attention import MultiHeadSelfAttention

# Every `QAConfig.hidden_act` (architecture.HIDDEN_ACTS names them; a test keeps the two equal).
# QAConfig validates the name; the layers only look it up.
# gelu: the exact erf form (BERT, HF "gelu"); gelu_tanh: the tanh approximation.
ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
    "relu": ops.relu,
}


@keras.saving.register_keras_serializable(package="squadqa")
class FeedForward(keras.layers.Layer):
    """Dense(intermediate) → activation → Dense(hidden) → dropout.

    ``intermediate_dense`` ↔ BERT ``intermediate.dense``; ``output_dense`` ↔ BERT ``output.dense``.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        *,
        hidden_act: str,
        dropout: float,
        initializer_range: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.activation = ACTIVATIONS[hidden_act]
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout
        self.initializer_range = initializer_range
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.intermediate_dense = keras.layers.Dense(
            intermediate_size,
            kernel_initializer=init,
            name="intermediate_dense",
            dtype=self.dtype_policy,
        )
        self.output_dense = keras.layers.Dense(
            hidden_size, kernel_initializer=init, name="output_dense", dtype=self.dtype_policy
        )
        self.dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        if self.built:  # idempotent: loading may build before an explicit build()
            return
        self.intermediate_dense.build((None, None, self.hidden_size))
        self.output_dense.build((None, None, self.intermediate_size))
        self.built = True

    def call(self, hidden_states: Any, training: bool | None = None) -> Any:
        intermediate = self.activation(self.intermediate_dense(hidden_states))
        return self.dropout(self.output_dense(intermediate), training=training)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            dropout=self.dropout_rate,
            initializer_range=self.initializer_range,
        )
        return config


@keras.saving.register_keras_serializable(package="squadqa")
class TransformerBlock(keras.layers.Layer):
    """One encoder layer.

    ``norm_first=False`` (post-LN, BERT)::

        x = LN(x + dropout(attention(x)));  x = LN(x + feed_forward(x))

    ``norm_first=True`` (pre-LN; trains more stably from scratch, needs a final LN after the
    last block, which the model adds)::

        x = x + dropout(attention(LN(x)));  x = x + feed_forward(LN(x))

    ``attention_layer_norm`` ↔ BERT ``attention.output.LayerNorm``; ``output_layer_norm`` ↔ BERT
    ``output.LayerNorm``. The feed-forward's own dropout is the one before its residual add.

    `attention`: `MultiHeadSelfAttention`'s keyword arguments besides the width and initialiser
    (`QAConfig.attention_settings()`), passed on and saved as one mapping, so that a new attention
    option never passes through here. The settings have no defaults here: `QAConfig` holds them.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        *,
        attention: Mapping[str, Any],
        norm_first: bool,
        hidden_dropout: float,
        layer_norm_eps: float,
        hidden_act: str,
        initializer_range: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.attention_settings = dict(attention)
        self.norm_first = norm_first
        self.hidden_dropout = hidden_dropout
        self.layer_norm_eps = layer_norm_eps
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range

        self.attention = MultiHeadSelfAttention(
            hidden_size,
            **attention,
            initializer_range=initializer_range,
            name="attention",
            dtype=self.dtype_policy,
        )
        self.attention_dropout_layer = keras.layers.Dropout(
            hidden_dropout, name="attention_output_dropout", dtype=self.dtype_policy
        )
        self.attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, name="attention_layer_norm", dtype=self.dtype_policy
        )
        self.feed_forward = FeedForward(
            hidden_size,
            intermediate_size,
            hidden_act=hidden_act,
            dropout=hidden_dropout,
            initializer_range=initializer_range,
            name="feed_forward",
            dtype=self.dtype_policy,
        )
        self.output_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, name="output_layer_norm", dtype=self.dtype_policy
        )

    def build(self, input_shape: Any = None) -> None:
        if self.built:  # idempotent: loading may build before an explicit build()
            return
        shape = (None, None, self.hidden_size)
        self.attention.build(shape)
        self.attention_layer_norm.build(shape)
        self.feed_forward.build(shape)
        self.output_layer_norm.build(shape)
        self.built = True

    def call(
        self, hidden_states: Any, attention_mask: Any = None, training: bool | None = None
    ) -> Any:
        if self.norm_first:
            attention_output = self.attention(
                self.attention_layer_norm(hidden_states), attention_mask, training=training
            )
            hidden_states = hidden_states + self.attention_dropout_layer(
                attention_output, training=training
            )
            return hidden_states + self.feed_forward(
                self.output_layer_norm(hidden_states), training=training
            )
        attention_output = self.attention(hidden_states, attention_mask, training=training)
        hidden_states = self.attention_layer_norm(
            hidden_states + self.attention_dropout_layer(attention_output, training=training)
        )
        return self.output_layer_norm(
            hidden_states + self.feed_forward(hidden_states, training=training)
        )

    def attention_probabilities(self, hidden_states: Any, attention_mask: Any = None) -> Any:
        """This block's attention probabilities ``[batch, heads, queries, keys]`` for its input
        `hidden_states` (inference: no dropout), as its `call` computes them: after the
        attention LayerNorm for pre-LN, on the input itself for post-LN."""
        if self.norm_first:
            hidden_states = self.attention_layer_norm(hidden_states)
        _, probabilities = self.attention(
            hidden_states, attention_mask, training=False, return_attention_scores=True
        )
        return probabilities

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            attention=dict(self.attention_settings),
            norm_first=self.norm_first,
            hidden_dropout=self.hidden_dropout,
            layer_norm_eps=self.layer_norm_eps,
            hidden_act=self.hidden_act,
            initializer_range=self.initializer_range,
        )
        return config
