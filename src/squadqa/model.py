"""``QATransformer``: the encoder plus span head that turns a batch into logits.

Input (a dict, as built by ``squadqa.features``; extra keys are ignored):
    ``input_ids`` (required), ``token_type_ids``, ``attention_mask``, ``span_mask`` — int
    ``[batch, seq]``; missing optional keys default to zeros / ones / ones. ``word_embeddings``
    (float ``[batch, seq, hidden]``, optional) replaces the looked-up word embeddings of
    ``input_ids`` (integrated gradients in ``squadqa.explain``).
Output: ``{"start_logits": [batch, seq], "end_logits": [batch, seq]}`` float32, with positions
where ``span_mask == 0`` set to :data:`squadqa.architecture.MASKED_LOGIT`.

Variables (``model.encoder_layers[i]`` etc.), BERT equivalent in brackets:
    ``embeddings.word_embeddings`` [embeddings.word_embeddings],
    ``embeddings.token_type_embeddings``, ``embeddings.position_embeddings`` (learned only),
    ``embeddings.layer_norm`` [embeddings.LayerNorm];
    ``encoder_layers[i].attention.{query,key,value,output_dense}``
    [encoder.layer.i.attention.self.{query,key,value}, attention.output.dense],
    ``encoder_layers[i].attention_layer_norm`` [attention.output.LayerNorm],
    ``encoder_layers[i].feed_forward.{intermediate_dense,output_dense}``
    [intermediate.dense, output.dense], ``encoder_layers[i].output_layer_norm`` [output.LayerNorm];
    ``final_layer_norm`` (pre-LN only); ``span_head.dense`` [qa_outputs].
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from squadqa.architecture import MASKED_LOGIT, QAConfig
from squadqa.layers import Embeddings, SpanHead, TransformerBlock

__all__ = [
    "QAConfig",
    "QATransformer",
    "SpanLoss",
    "float32_model",
    "span_loss",
    "span_objective",
]


@keras.saving.register_keras_serializable(package="squadqa")
class QATransformer(keras.Model):
    """Transformer encoder + span head for extractive QA (see the module docstring for I/O)."""

    def __init__(self, config: QAConfig | dict[str, Any], **kwargs: Any) -> None:
        kwargs.setdefault("name", "qa_transformer")
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = QAConfig.from_dict(config)
        self.config = config
        self.embeddings = Embeddings(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            position_embedding=config.position_embedding,
            layer_norm_eps=config.layer_norm_eps,
            dropout=config.hidden_dropout,
            initializer_range=config.initializer_range,
            question_match=config.question_match,
            name="embeddings",
            dtype=self.dtype_policy,
        )
        self.encoder_layers = [
            TransformerBlock(
                hidden_size=config.hidden_size,
                intermediate_size=config.intermediate_size,
                attention=config.attention_settings(),
                norm_first=config.norm_first,
                hidden_dropout=config.hidden_dropout,
                layer_norm_eps=config.layer_norm_eps,
                hidden_act=config.hidden_act,
                initializer_range=config.initializer_range,
                name=f"encoder_layer_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(config.num_layers)
        ]
        self.final_layer_norm = None
        if config.norm_first:
            self.final_layer_norm = keras.layers.LayerNormalization(
                epsilon=config.layer_norm_eps, name="final_layer_norm", dtype=self.dtype_policy
            )
        self.span_head = SpanHead(
            config.hidden_size, initializer_range=config.initializer_range, name="span_head"
        )

    def build(self, input_shape: Any = None) -> None:
        """Create every variable from the config alone (shapes do not depend on the batch)."""
        if self.built:  # idempotent: loading may build before an explicit build()
            return
        hidden_shape = (None, None, self.config.hidden_size)
        self.embeddings.build((None, None))
        for block in self.encoder_layers:
            block.build(hidden_shape)
        if self.final_layer_norm is not None:
            self.final_layer_norm.build(hidden_shape)
        self.span_head.build(hidden_shape)
        self.built = True

    def layer_states(self, inputs: dict[str, Any], training: bool | None = False) -> list[Any]:
        """Hidden states ``[batch, seq, hidden]`` of every layer: the embeddings' output (layer
        0), then each block's (layers 1..num_layers; no final LN), what `squadqa probe` reads."""
        if not self.built:
            self.build()
        attention_mask = inputs.get("attention_mask")
        hidden_states = self.embeddings(
            inputs["input_ids"],
            inputs.get("token_type_ids"),
            training=training,
            question_match=inputs.get("question_match"),
            word_embeddings=inputs.get("word_embeddings"),
        )
        states = [hidden_states]
        for block in self.encoder_layers:
            hidden_states = block(hidden_states, attention_mask, training=training)
            states.append(hidden_states)
        return states

    def encode(self, inputs: dict[str, Any], training: bool | None = False) -> Any:
        """Last hidden states ``[batch, seq, hidden]`` (after the final LN for pre-LN)."""
        hidden_states = self.layer_states(inputs, training=training)[-1]
        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> dict[str, Any]:
        hidden_states = self.encode(inputs, training=training)
        span_mask = inputs.get("span_mask")
        start_logits, end_logits = self.span_head(hidden_states, span_mask)
        return {"start_logits": start_logits, "end_logits": end_logits}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QATransformer:
        config = dict(config)
        qa_config = QAConfig.from_dict(config.pop("config"))
        return cls(qa_config, **config)


def float32_model(config: dict[str, Any]) -> QATransformer:
    """A fresh, built QATransformer of `config` (a `get_config()`) that computes in float32.

    What a run saves for serving, whatever precision it trained in: bfloat16 is emulated, about
    10x slower, on CPUs without AVX512-BF16 or AMX, and ONNX Runtime's CPU kernels lack it.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # the sublayers take the global policy
    try:
        model = QATransformer.from_config({**config, "dtype": "float32"})
        model.build()
    finally:
        keras.config.set_dtype_policy(previous)
    return model


@keras.saving.register_keras_serializable(package="squadqa")
def span_loss(y_true: Any, y_pred: Any, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy over positions; smoothing spreads mass over the allowed positions only."""
    logits = ops.cast(y_pred, "float32")
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    log_probs = ops.log_softmax(logits, axis=-1)
    nll = -ops.sum(ops.one_hot(labels, ops.shape(logits)[-1]) * log_probs, axis=-1)
    if label_smoothing == 0.0:
        return nll
    # Masked positions hold MASKED_LOGIT; any real logit is far above a tenth of it.
    allowed = ops.cast(logits > MASKED_LOGIT / 10, "float32")
    uniform = -ops.sum(log_probs * allowed, axis=-1) / ops.maximum(ops.sum(allowed, axis=-1), 1.0)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


@keras.saving.register_keras_serializable(package="squadqa")
class SpanLoss(keras.losses.Loss):
    def __init__(self, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return span_loss(y_true, y_pred, self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def span_objective(label_smoothing: float = 0.0) -> dict[str, Any]:
    """`model.compile` keyword arguments of the one span loss: the mean of the start and end
    cross-entropies (BERT's), targets `{"start_logits": [batch], "end_logits": [batch]}` (int).

    Example:
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), **span_objective())
    """
    return {
        "loss": {name: SpanLoss(label_smoothing) for name in ("start_logits", "end_logits")},
        "loss_weights": {"start_logits": 0.5, "end_logits": 0.5},
    }
