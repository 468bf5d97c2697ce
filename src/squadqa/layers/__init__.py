"""Keras 3 building blocks of the encoder (``keras.ops`` only: torch, jax and tensorflow)."""

from squadqa.layers.attention import MultiHeadSelfAttention
from squadqa.layers.embeddings import Embeddings, sinusoidal_position_encoding
from squadqa.layers.rotary import apply_rotary, rotary_cos_sin
from squadqa.layers.span_head import MASKED_LOGIT, SpanHead
from squadqa.layers.transformer import FeedForward, TransformerBlock

__all__ = [
    "MASKED_LOGIT",
    "Embeddings",
    "FeedForward",
    "MultiHeadSelfAttention",
    "SpanHead",
    "TransformerBlock",
    "apply_rotary",
    "rotary_cos_sin",
    "sinusoidal_position_encoding",
]
