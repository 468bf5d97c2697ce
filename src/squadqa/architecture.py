"""``QAConfig``: the architecture's hyper-parameters, apart from the Keras model they build.

Its own module so that what only reads a run's config (`squadqa.config`, an ONNX Runtime server)
does not import Keras and its backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from squadqa.settings import is_int, is_number, setting

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary")
HIDDEN_ACTS = ("gelu", "gelu_tanh", "relu")

# The logit of a position that cannot start or end an answer (question, separators, padding).
# Finite and representable in float16 too, so later casts never produce -inf/NaN; exp() of it
# relative to any real logit is exactly 0 in float32. Here, not in the span head, so that the ONNX
# Runtime path can use it without importing Keras.
MASKED_LOGIT = -1e4

# A saved config must state the architecture's sizes; the rest may take their defaults.
SIZE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")


@dataclass
class QAConfig:
    """Architecture hyper-parameters; validated on creation so errors name the bad field."""

    vocab_size: int  # from the tokenizer, never a config key
    hidden_size: int = setting(256, "width of every hidden state")
    num_layers: int = setting(4, "transformer blocks")
    num_heads: int = setting(4, "attention heads per block (must divide hidden_size)")
    num_key_value_heads: int = setting(
        0,
        "key/value heads per block, each shared by a group of query heads (grouped-query "
        "attention); must divide num_heads; 0 = num_heads (multi-head attention)",
    )
    intermediate_size: int = setting(1024, "feed-forward inner width")
    max_position_embeddings: int = setting(512, "longest input (learned positions' table)")
    type_vocab_size: int = setting(2, "token types (question 0, context 1)")
    position_embedding: str = setting("learned", "learned | sinusoidal | rotary")
    norm_first: bool = setting(False, "pre-LN blocks (True) or BERT's post-LN (False)")
    hidden_dropout: float = setting(0.1, "dropout on embeddings and block outputs")
    attention_dropout: float = setting(0.1, "dropout on attention probabilities")
    layer_norm_eps: float = setting(1e-12, "LayerNorm epsilon")
    hidden_act: str = setting("gelu", "feed-forward activation: gelu | gelu_tanh | relu")
    initializer_range: float = setting(0.02, "std of the truncated-normal initialiser")
    question_match: bool = setting(
        False, "add DrQA's exact-match embedding: does this context token occur in the question?"
    )

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"QAConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"QAConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"QAConfig.num_heads ({self.num_heads})"
            )
        kv_heads = self.num_key_value_heads
        if not is_int(kv_heads) or kv_heads < 0 or (kv_heads and self.num_heads % kv_heads):
            raise ValueError(
                f"QAConfig.num_key_value_heads must divide QAConfig.num_heads ({self.num_heads}) "
                f"(0 = num_heads), got {kv_heads!r}"
            )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"QAConfig.position_embedding must be one of {POSITION_EMBEDDINGS}, "
                f"got {self.position_embedding!r}"
            )
        if self.position_embedding == "sinusoidal" and self.hidden_size % 2:
            raise ValueError(
                f"QAConfig.hidden_size ({self.hidden_size}) must be even for sinusoidal "
                "position_embedding"
            )
        if self.position_embedding == "rotary" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"QAConfig.hidden_size / QAConfig.num_heads "
                f"({self.hidden_size // self.num_heads}) must be even for rotary "
                "position_embedding"
            )
        for name in ("norm_first", "question_match"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"QAConfig.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not is_number(value) or not (0.0 <= value < 1.0):
                raise ValueError(f"QAConfig.{name} must be in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not is_number(value) or value <= 0:
                raise ValueError(f"QAConfig.{name} must be a positive number, got {value!r}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(
                f"QAConfig.hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}"
            )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def attention_settings(self) -> dict[str, Any]:
        """`MultiHeadSelfAttention`'s keyword arguments apart from the width and initialiser that
        its block shares with its other layers. The block passes them on, and saves them, as one
        mapping: a new attention option is a field here and an argument of the attention layer."""
        return {
            "num_heads": self.num_heads,
            "num_key_value_heads": self.num_key_value_heads or self.num_heads,
            "attention_dropout": self.attention_dropout,
            "rotary": self.position_embedding == "rotary",
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QAConfig:
        """Build from a plain dict (JSON); unknown keys are an error, named, not silently lost."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown QAConfig field(s): {', '.join(unknown)}")
        missing = sorted(name for name in SIZE_FIELDS if name not in values)
        if missing:
            raise ValueError(f"missing QAConfig field(s): {', '.join(missing)}")
        return cls(**values)
