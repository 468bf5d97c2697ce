"""Input embeddings: token + token type + position, then LayerNorm and dropout.

Three position schemes share one layer so a config switch is all it takes to compare them:

- ``learned``: a trainable absolute table (BERT; what pretrained checkpoints hold).
- ``sinusoidal``: the fixed Vaswani et al. (2017) encoding,
  ``PE[pos, 2i] = sin(pos / 10000^(2i/d))`` and ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d))``;
  nothing to train, nothing saved (no ``sqrt(d)`` scaling of the token embeddings, as in BERT).
- ``rotary``: no absolute vector is added here; attention rotates queries and keys instead
  (`squadqa.layers.rotary`), so scores depend on relative offsets only.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from squadqa.architecture import POSITION_EMBEDDINGS


def sinusoidal_position_encoding(positions: Any, dim: int, base: float = 10000.0) -> Any:
    """Vaswani sinusoidal encoding, ``[len(positions), dim]`` float32 (sin on even, cos on odd)."""
    if dim % 2:
        raise ValueError(f"sinusoidal position encoding needs an even dimension, got {dim}")
    positions = ops.cast(positions, "float32")
    # 1 / base^(2i/d) for i in [0, d/2)
    inv_freq = ops.exp(ops.arange(0, dim, 2, dtype="float32") * (-math.log(base) / dim))
    angles = positions[:, None] * inv_freq[None, :]  # [len, d/2]
    # Interleave: [sin_0, cos_0, sin_1, cos_1, ...]
    encoding = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return ops.reshape(encoding, (-1, dim))


def sequence_positions(x: Any) -> Any:
    """Positions ``0 .. seq-1`` (int32, ``[seq]``) of ``x`` of shape ``[batch, seq, ...]``.

    A cumulative sum over a row of ``x`` rather than ``arange(seq_len)``: exporters
    (`torch.export`, hence ONNX) then trace the positions as a function of the input, where
    ``arange`` of a symbolic length fails ("Invalid dtype: SymInt").
    """
    row = ops.cast(ops.ones_like(x[0]), "int32")  # [seq, ...]
    while len(row.shape) > 1:
        row = row[:, 0]
    return ops.cast(ops.cumsum(row, axis=0) - 1, "int32")


@keras.saving.register_keras_serializable(package="squadqa")
class Embeddings(keras.layers.Layer):
    """Sum of word, token-type and (unless rotary) position embeddings; LayerNorm; dropout.

    Sublayer names follow BERT (``word_embeddings``, ``token_type_embeddings``,
    ``position_embeddings``, ``layer_norm``) so the pretrained name map stays obvious. The
    settings have no defaults here: `QAConfig` holds them.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        *,
        max_position_embeddings: int,
        type_vocab_size: int,
        position_embedding: str,
        layer_norm_eps: float,
        dropout: float,
        initializer_range: float,
        question_match: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"position_embedding must be one of {POSITION_EMBEDDINGS}, "
                f"got {position_embedding!r}"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.position_embedding = position_embedding
        self.layer_norm_eps = layer_norm_eps
        self.dropout_rate = dropout
        self.initializer_range = initializer_range
        self.question_match = question_match

        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.word_embeddings = keras.layers.Embedding(
            vocab_size,
            hidden_size,
            embeddings_initializer=init,
            name="word_embeddings",
            dtype=self.dtype_policy,
        )
        self.token_type_embeddings = keras.layers.Embedding(
            type_vocab_size,
            hidden_size,
            embeddings_initializer=init,
            name="token_type_embeddings",
            dtype=self.dtype_policy,
        )
        self.position_embeddings = None
        if position_embedding == "learned":
            self.position_embeddings = keras.layers.Embedding(
                max_position_embeddings,
                hidden_size,
                embeddings_initializer=init,
                name="position_embeddings",
                dtype=self.dtype_policy,
            )
        # DrQA's exact-match feature: does this context token occur in the question? A strong
        # lexical signal for models trained from scratch on little data (off for BERT weights).
        self.question_match_embeddings = None
        if question_match:
            self.question_match_embeddings = keras.layers.Embedding(
                2,
                hidden_size,
                embeddings_initializer=init,
                name="question_match_embeddings",
                dtype=self.dtype_policy,
            )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, name="layer_norm", dtype=self.dtype_policy
        )
        self.dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        if self.built:  # idempotent: loading may build before an explicit build()
            return
        self.word_embeddings.build((None, None))
        self.token_type_embeddings.build((None, None))
        if self.position_embeddings is not None:
            self.position_embeddings.build((None, None))
        if self.question_match_embeddings is not None:
            self.question_match_embeddings.build((None, None))
        self.layer_norm.build((None, None, self.hidden_size))
        self.built = True

    def call(
        self,
        input_ids: Any,
        token_type_ids: Any = None,
        training: bool | None = None,
        question_match: Any = None,
        word_embeddings: Any = None,
    ) -> Any:
        """`word_embeddings` ``[batch, seq, hidden]``: used instead of looking `input_ids` up,
        so that integrated gradients (`squadqa explain`) can scale them; None: looked up."""
        seq_len = ops.shape(input_ids)[1]
        if (
            isinstance(seq_len, int)
            and self.position_embedding != "rotary"
            and seq_len > self.max_position_embeddings
        ):
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings "
                f"({self.max_position_embeddings})"
            )
        if token_type_ids is None:
            token_type_ids = ops.zeros_like(input_ids)
        if word_embeddings is None:
            word_embeddings = self.word_embeddings(input_ids)
        embeddings = word_embeddings + self.token_type_embeddings(token_type_ids)
        if self.position_embedding == "learned":
            position_ids = sequence_positions(input_ids)[None, :]
            embeddings = embeddings + self.position_embeddings(position_ids)
        elif self.position_embedding == "sinusoidal":
            position_encoding = sinusoidal_position_encoding(
                sequence_positions(input_ids), self.hidden_size
            )
            embeddings = embeddings + ops.cast(position_encoding, embeddings.dtype)[None]
        if self.question_match_embeddings is not None:
            if question_match is None:
                question_match = ops.zeros_like(input_ids)
            embeddings = embeddings + self.question_match_embeddings(question_match)
        embeddings = self.layer_norm(embeddings)
        return self.dropout(embeddings, training=training)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (*tuple(input_shape), self.hidden_size)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            position_embedding=self.position_embedding,
            layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout_rate,
            initializer_range=self.initializer_range,
            question_match=self.question_match,
        )
        return config
