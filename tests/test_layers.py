"""Layer tests against independent numpy references (never against the layers' own output)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import squadqa  # noqa: F401  (sets KERAS_BACKEND=torch before keras is imported)

keras = pytest.importorskip("keras")

from squadqa.layers import (  # noqa: E402
    MASKED_LOGIT,
    Embeddings,
    FeedForward,
    MultiHeadSelfAttention,
    SpanHead,
    TransformerBlock,
    apply_rotary,
    rotary_cos_sin,
    sinusoidal_position_encoding,
)

# ---------------------------------------------------------------------------------------------
# numpy references (float64), written from the papers / BERT, shared with test_model.py


def np_layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_gelu(x: np.ndarray, approximate: bool = False) -> np.ndarray:
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def np_rotary(x: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """RoPE on ``[batch, seq, heads, d]``: rotate each pair (i, i + d/2) by pos * base^(-2i/d)."""
    out = np.array(x, dtype=np.float64)
    d = x.shape[-1]
    for pos in range(x.shape[1]):
        for i in range(d // 2):
            theta = pos * base ** (-2 * i / d)
            c, s = math.cos(theta), math.sin(theta)
            a, b = x[:, pos, :, i], x[:, pos, :, i + d // 2]
            out[:, pos, :, i] = a * c - b * s
            out[:, pos, :, i + d // 2] = a * s + b * c
    return out


def np_attention(
    layer: MultiHeadSelfAttention, x: np.ndarray, mask: np.ndarray | None, rotary: bool = False
) -> np.ndarray:
    """softmax(Q K^T / sqrt(d) + mask) V with BERT-style Q/K/V/output projections.

    Documented convention: a row with no real key at all gets a zero context vector. Grouped
    key/value heads: query head i uses K/V head i // (heads / kv_heads).
    """
    w = {
        name: [np.asarray(v, dtype=np.float64) for v in getattr(layer, name).get_weights()]
        for name in ("query", "key", "value", "output_dense")
    }
    batch, seq, hidden = x.shape
    heads, kv_heads = layer.num_heads, layer.num_key_value_heads
    d = hidden // heads

    def proj(name: str, inp: np.ndarray) -> np.ndarray:
        return inp @ w[name][0] + w[name][1]

    q = proj("query", x).reshape(batch, seq, heads, d)
    k = proj("key", x).reshape(batch, seq, kv_heads, d)
    v = proj("value", x).reshape(batch, seq, kv_heads, d)
    if rotary:
        q, k = np_rotary(q), np_rotary(k)
    group_of = np.arange(heads) // (heads // kv_heads)  # the K/V head of each query head
    k, v = k[:, :, group_of], v[:, :, group_of]
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    if mask is not None:
        scores = scores + (1.0 - mask[:, None, None, :]) * -1e9
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", probs, v)
    if mask is not None:
        context = context * (mask.sum(-1) > 0)[:, None, None, None]
    return proj("output_dense", context.reshape(batch, seq, hidden))


def np_feed_forward(layer: FeedForward, x: np.ndarray) -> np.ndarray:
    w1, b1 = (np.asarray(a, np.float64) for a in layer.intermediate_dense.get_weights())
    w2, b2 = (np.asarray(a, np.float64) for a in layer.output_dense.get_weights())
    h = x @ w1 + b1
    if layer.hidden_act == "relu":
        return np.maximum(h, 0.0) @ w2 + b2
    return np_gelu(h, approximate=layer.hidden_act == "gelu_tanh") @ w2 + b2


def np_block(block: TransformerBlock, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    def ln(layer: keras.layers.LayerNormalization, h: np.ndarray) -> np.ndarray:
        gamma, beta = (np.asarray(a, np.float64) for a in layer.get_weights())
        return np_layer_norm(h, gamma, beta, block.layer_norm_eps)

    rotary = block.attention.rotary
    if block.norm_first:
        x = x + np_attention(block.attention, ln(block.attention_layer_norm, x), mask, rotary)
        return x + np_feed_forward(block.feed_forward, ln(block.output_layer_norm, x))
    x = ln(block.attention_layer_norm, x + np_attention(block.attention, x, mask, rotary))
    return ln(block.output_layer_norm, x + np_feed_forward(block.feed_forward, x))


def randomize(layer: keras.layers.Layer, seed: int = 0, scale: float = 0.5) -> None:
    """Non-trivial weights (LayerNorm gammas/betas and biases too) so references are sensitive."""
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [rng.normal(0, scale, w.shape).astype("float32") for w in layer.get_weights()]
    )


def to_np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# position encodings


def test_sinusoidal_matches_hand_computed_values() -> None:
    pe = to_np(sinusoidal_position_encoding(np.arange(3), 4))
    # d=4: frequencies 1 and 1/10000^(2/4) = 1/100
    expected = np.array(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
        ]
    )
    np.testing.assert_allclose(pe, expected, atol=1e-6)
    pe6 = to_np(sinusoidal_position_encoding(np.arange(50), 6))
    # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
    assert pe6[37, 4] == pytest.approx(math.sin(37 / 10000 ** (4 / 6)), abs=1e-5)
    assert pe6[37, 3] == pytest.approx(math.cos(37 / 10000 ** (2 / 6)), abs=1e-5)


# Each layer setting spelled out (the layers take no defaults: QAConfig holds them).
EMBEDDINGS = dict(
    max_position_embeddings=16,
    type_vocab_size=2,
    position_embedding="learned",
    layer_norm_eps=1e-12,
    dropout=0.0,
    initializer_range=0.02,
    question_match=False,
)


def test_sinusoidal_embeddings_layer_adds_fixed_encoding() -> None:
    settings = {**EMBEDDINGS, "position_embedding": "sinusoidal", "layer_norm_eps": 1e-6}
    layer = Embeddings(20, 8, **settings)
    layer.build()
    randomize(layer, seed=3)
    assert len(layer.weights) == 4  # word, type, LN gamma/beta: the encoding is not a weight
    ids = np.array([[3, 4, 5, 6, 7]], "int32")
    types = np.array([[0, 0, 1, 1, 1]], "int32")
    out = to_np(layer(ids, types))
    word, typ, gamma, beta = (np.asarray(w, np.float64) for w in layer.get_weights())
    pe = np.array(
        [
            [
                math.sin(p / 10000 ** (2 * (j // 2) / 8))
                if j % 2 == 0
                else math.cos(p / 10000 ** (2 * (j // 2) / 8))
                for j in range(8)
            ]
            for p in range(5)
        ]
    )
    expected = np_layer_norm(word[ids] + typ[types] + pe[None], gamma, beta, 1e-6)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_learned_embeddings_layer_matches_numpy() -> None:
    layer = Embeddings(20, 8, **EMBEDDINGS)
    layer.build()
    randomize(layer, seed=4)
    ids = np.array([[1, 2, 3], [4, 5, 0]], "int32")
    types = np.array([[0, 1, 1], [0, 0, 1]], "int32")
    word, typ, pos, gamma, beta = (np.asarray(w, np.float64) for w in layer.get_weights())
    expected = np_layer_norm(word[ids] + typ[types] + pos[:3][None], gamma, beta, 1e-12)
    np.testing.assert_allclose(to_np(layer(ids, types)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        layer(np.zeros((1, 17), "int32"))


def test_rotary_embeddings_layer_adds_no_position() -> None:
    layer = Embeddings(20, 8, **{**EMBEDDINGS, "position_embedding": "rotary"})
    layer.build()
    randomize(layer)
    out = to_np(layer(np.array([[5, 5, 5, 5]], "int32")))
    np.testing.assert_allclose(out[0, 0], out[0, 3], atol=1e-6)  # same token, same vector


def test_rotary_matches_numpy_rotation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 3, 8)).astype("float32")
    cos, sin = rotary_cos_sin(7, 8)
    np.testing.assert_allclose(to_np(apply_rotary(x, cos, sin)), np_rotary(x), atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 1, 1, 8)).astype("float32")
    k = rng.normal(size=(1, 1, 1, 8)).astype("float32")
    cos, sin = rotary_cos_sin(12, 8)
    seq_q = to_np(apply_rotary(np.repeat(q, 12, axis=1), cos, sin))[0, :, 0]
    seq_k = to_np(apply_rotary(np.repeat(k, 12, axis=1), cos, sin))[0, :, 0]
    assert seq_q[5] @ seq_k[2] == pytest.approx(seq_q[9] @ seq_k[6], abs=1e-4)
    assert seq_q[5] @ seq_k[2] != pytest.approx(seq_q[5] @ seq_k[4], abs=1e-3)


# ---------------------------------------------------------------------------------------------
# attention

MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], "int32")


def attention_settings(heads: int = 2, kv_heads: int = 2, **overrides) -> dict:
    """`MultiHeadSelfAttention`'s keyword arguments but the width (as `QAConfig` gives them)."""
    return {
        "num_heads": heads,
        "num_key_value_heads": kv_heads,
        "attention_dropout": 0.0,
        "rotary": False,
        "initializer_range": 0.02,
        **overrides,
    }


def _attention(impl: str, rotary: bool = False, dropout: float = 0.0) -> MultiHeadSelfAttention:
    layer = MultiHeadSelfAttention(
        8, **attention_settings(attention_dropout=dropout, rotary=rotary, attention_impl=impl)
    )
    layer.build()
    randomize(layer, seed=7)
    return layer


@pytest.mark.parametrize("impl", ["fused", "explicit", "auto"])
@pytest.mark.parametrize("rotary", [False, True])
def test_attention_matches_numpy_reference(impl: str, rotary: bool) -> None:
    layer = _attention(impl, rotary)
    x = np.random.default_rng(2).normal(size=(3, 6, 8)).astype("float32")
    out = to_np(layer(x, MASK))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np_attention(layer, x, MASK, rotary), atol=1e-5)
    # the all-padding row attends to nothing: context 0, output = the output projection's bias
    np.testing.assert_allclose(
        out[2], np.broadcast_to(layer.output_dense.get_weights()[1], (6, 8)), atol=1e-6
    )
    # no mask at all = every key real
    np.testing.assert_allclose(to_np(layer(x)), np_attention(layer, x, None, rotary), atol=1e-5)


def test_padded_keys_are_never_attended() -> None:
    layer = _attention("auto")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 6, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0, 0]], "int32")
    junk = x.copy()
    junk[:, 3:] = rng.normal(size=(1, 3, 8)) * 100  # wildly different padding content
    np.testing.assert_allclose(
        to_np(layer(x, mask))[:, :3], to_np(layer(junk, mask))[:, :3], atol=1e-5
    )


def test_fused_and_explicit_paths_agree() -> None:
    fused, explicit = _attention("fused"), _attention("explicit")
    explicit.set_weights(fused.get_weights())
    x = np.random.default_rng(4).normal(size=(3, 6, 8)).astype("float32")
    np.testing.assert_allclose(to_np(fused(x, MASK)), to_np(explicit(x, MASK)), atol=1e-6)
    for rotary in (True,):
        a, b = _attention("fused", rotary), _attention("explicit", rotary)
        np.testing.assert_allclose(to_np(a(x, MASK)), to_np(b(x, MASK)), atol=1e-6)


def test_attention_dropout_only_in_training() -> None:
    layer = _attention("auto", dropout=0.5)
    x = np.random.default_rng(5).normal(size=(3, 6, 8)).astype("float32")
    inference = to_np(layer(x, MASK, training=False))
    np.testing.assert_allclose(inference, np_attention(layer, x, MASK), atol=1e-5)
    trained = to_np(layer(x, MASK, training=True))
    assert np.isfinite(trained).all()
    assert np.abs(trained[:2] - inference[:2]).max() > 1e-3  # dropout did something
    with pytest.raises(ValueError, match="fused"):
        _attention("fused", dropout=0.5)(x, MASK, training=True)


def test_attention_rejects_bad_heads() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadSelfAttention(10, **attention_settings(heads=3, kv_heads=3))


@pytest.mark.parametrize("impl", ["fused", "explicit"])
def test_grouped_key_value_heads_by_hand(impl: str) -> None:
    """Two query heads share one key/value head (width 2, head size 1, identity-like weights).

    x = [[1, 0], [0, 1]]; Q = x (head 0 reads x0, head 1 reads x1); the one K head is x0 = [1, 0]
    and the one V head is x1 = [0, 1] over the two tokens. A query q scores the keys [q, 0]:
    q = 1 gives probabilities [e, 1] / (e + 1), so context 1 / (e + 1); q = 0 gives [1/2, 1/2],
    so context 1/2. The output projection is the identity.
    """
    layer = MultiHeadSelfAttention(
        2, **attention_settings(heads=2, kv_heads=1, attention_impl=impl)
    )
    layer.build()
    eye, zeros = np.eye(2, dtype="float32"), np.zeros(2, "float32")
    layer.query.set_weights([eye, zeros])
    layer.key.set_weights([np.array([[1.0], [0.0]], "float32"), np.zeros(1, "float32")])
    layer.value.set_weights([np.array([[0.0], [1.0]], "float32"), np.zeros(1, "float32")])
    layer.output_dense.set_weights([eye, zeros])
    x = np.eye(2, dtype="float32")[None]
    low, half = 1 / (math.e + 1), 0.5
    np.testing.assert_allclose(to_np(layer(x))[0], [[low, half], [half, low]], atol=1e-6)
    _, probs = layer(x, return_attention_scores=True)
    peaked, flat = [math.e * low, low], [half, half]
    np.testing.assert_allclose(
        to_np(probs)[0], [[peaked, flat], [flat, peaked]], atol=1e-6
    )  # [heads, queries, keys]


@pytest.mark.parametrize("impl", ["fused", "explicit", "auto"])
@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_attention_is_multi_head_with_repeated_key_value_heads(
    impl: str, rotary: bool, kv_heads: int
) -> None:
    """4 query heads over `kv_heads` K/V heads = ordinary 4-head attention whose K/V projection
    columns are each grouped head's, repeated for its consecutive query heads (weights made in
    numpy, float64 reference as well)."""
    hidden, heads, d = 8, 4, 2
    grouped = MultiHeadSelfAttention(
        hidden, **attention_settings(heads, kv_heads, rotary=rotary, attention_impl=impl)
    )
    plain = MultiHeadSelfAttention(
        hidden, **attention_settings(heads, heads, rotary=rotary, attention_impl=impl)
    )
    rng = np.random.default_rng(12)

    def weights(units: int) -> list[np.ndarray]:
        return [rng.normal(0, 0.7, size).astype("float32") for size in ((hidden, units), units)]

    q, k, v, o = weights(hidden), weights(kv_heads * d), weights(kv_heads * d), weights(hidden)
    group_of = np.arange(heads) // (heads // kv_heads)  # kv_heads 2: [0, 0, 1, 1]

    def repeated(kernel: np.ndarray, bias: np.ndarray) -> list[np.ndarray]:
        """The [in, kv_heads*d] projection as [in, heads*d]: head h takes K/V head group_of[h]."""
        return [
            kernel.reshape(hidden, kv_heads, d)[:, group_of].reshape(hidden, heads * d),
            bias.reshape(kv_heads, d)[group_of].reshape(heads * d),
        ]

    grouped.build()
    plain.build()
    grouped.set_weights([*q, *k, *v, *o])  # query, key, value, output_dense
    plain.set_weights([*q, *repeated(*k), *repeated(*v), *o])
    assert tuple(grouped.key.kernel.shape) == (hidden, kv_heads * d)
    x = np.random.default_rng(13).normal(size=(3, 6, hidden)).astype("float32")
    out = to_np(grouped(x, MASK))
    np.testing.assert_allclose(out, to_np(plain(x, MASK)), atol=1e-5)
    np.testing.assert_allclose(out, np_attention(plain, x, MASK, rotary), atol=1e-5)
    np.testing.assert_allclose(out, np_attention(grouped, x, MASK, rotary), atol=1e-5)
    _, grouped_probs = grouped(x, MASK, return_attention_scores=True)
    _, plain_probs = plain(x, MASK, return_attention_scores=True)
    np.testing.assert_allclose(to_np(grouped_probs), to_np(plain_probs), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# feed-forward, block, span head


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu"])
def test_feed_forward_matches_numpy(act: str) -> None:
    layer = FeedForward(8, 16, hidden_act=act, dropout=0.0, initializer_range=0.02)
    layer.build()
    randomize(layer, seed=8, scale=1.0)
    x = np.random.default_rng(6).normal(size=(2, 5, 8)).astype("float32")
    np.testing.assert_allclose(to_np(layer(x)), np_feed_forward(layer, x), atol=1e-4)


def test_every_configurable_activation_has_a_layer_and_no_other() -> None:
    from squadqa.architecture import HIDDEN_ACTS
    from squadqa.layers.transformer import ACTIVATIONS

    assert set(ACTIVATIONS) == set(HIDDEN_ACTS)  # QAConfig validates against HIDDEN_ACTS


def test_exact_and_tanh_gelu_differ() -> None:
    exact = FeedForward(8, 16, hidden_act="gelu", dropout=0.0, initializer_range=0.02)
    approx = FeedForward(8, 16, hidden_act="gelu_tanh", dropout=0.0, initializer_range=0.02)
    exact.build()
    approx.build()
    randomize(exact, seed=8, scale=2.0)
    approx.set_weights(exact.get_weights())
    x = np.random.default_rng(6).normal(size=(2, 5, 8)).astype("float32") * 3
    assert np.abs(to_np(exact(x)) - to_np(approx(x))).max() > 1e-4


def block_settings(**overrides) -> dict:
    """`TransformerBlock`'s keyword arguments but the sizes (as `QATransformer` gives them)."""
    return {
        "attention": {
            "num_heads": 2,
            "num_key_value_heads": 2,
            "attention_dropout": 0.0,
            "rotary": False,
        },
        "norm_first": False,
        "hidden_dropout": 0.0,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        **overrides,
    }


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_block_matches_numpy(norm_first: bool) -> None:
    block = TransformerBlock(8, 16, **block_settings(norm_first=norm_first))
    block.build()
    randomize(block, seed=9)
    x = np.random.default_rng(7).normal(size=(3, 6, 8)).astype("float32")
    np.testing.assert_allclose(to_np(block(x, MASK)), np_block(block, x, MASK), atol=1e-4)


def test_span_head_masks_and_uses_float32() -> None:
    head = SpanHead(8, initializer_range=0.02)
    head.build()
    randomize(head, seed=10)
    x = np.random.default_rng(8).normal(size=(2, 4, 8)).astype("float32")
    span_mask = np.array([[1, 0, 1, 1], [1, 0, 0, 0]], "int32")
    start, end = head(x, span_mask)
    assert keras.backend.standardize_dtype(start.dtype) == "float32"
    kernel, bias = (np.asarray(w, np.float64) for w in head.get_weights())
    logits = x @ kernel + bias
    expected_start = np.where(span_mask == 1, logits[..., 0], MASKED_LOGIT)
    expected_end = np.where(span_mask == 1, logits[..., 1], MASKED_LOGIT)
    np.testing.assert_allclose(to_np(start), expected_start, atol=1e-5)
    np.testing.assert_allclose(to_np(end), expected_end, atol=1e-5)
    # a float16 input (mixed precision) still gives float32 logits
    start16, _ = head(keras.ops.cast(x, "float16"), span_mask)
    assert keras.backend.standardize_dtype(start16.dtype) == "float32"


# ---------------------------------------------------------------------------------------------
# serialization


LAYER_FACTORIES = {
    "embeddings": (
        lambda: Embeddings(
            30,
            8,
            **{
                **EMBEDDINGS,
                "max_position_embeddings": 12,
                "position_embedding": "sinusoidal",
                "dropout": 0.2,
                "layer_norm_eps": 1e-7,
            },
        ),
        lambda layer: layer(np.array([[1, 2, 3]], "int32")),
    ),
    "attention": (
        lambda: MultiHeadSelfAttention(
            8, **attention_settings(attention_dropout=0.3, rotary=True, attention_impl="explicit")
        ),
        lambda layer: layer(np.ones((1, 3, 8), "float32"), MASK[1:2, :3]),
    ),
    "grouped_attention": (
        lambda: MultiHeadSelfAttention(8, **attention_settings(4, 2, rotary=True)),
        lambda layer: layer(np.ones((1, 3, 8), "float32"), MASK[1:2, :3]),
    ),
    "feed_forward": (
        lambda: FeedForward(8, 16, hidden_act="gelu_tanh", dropout=0.2, initializer_range=0.05),
        lambda layer: layer(np.ones((1, 3, 8), "float32")),
    ),
    "block": (
        lambda: TransformerBlock(
            8,
            16,
            **block_settings(
                norm_first=True,
                attention={
                    "num_heads": 2,
                    "num_key_value_heads": 1,
                    "attention_dropout": 0.1,
                    "rotary": True,
                    "rotary_base": 500.0,
                    "attention_impl": "explicit",
                },
            ),
        ),
        lambda layer: layer(np.ones((1, 3, 8), "float32"), MASK[1:2, :3]),
    ),
    "span_head": (
        lambda: SpanHead(8, initializer_range=0.05),
        lambda layer: layer(np.ones((1, 3, 8), "float32"), MASK[1:2, :3])[0],
    ),
}


@pytest.mark.parametrize("name", sorted(LAYER_FACTORIES))
def test_layer_config_round_trip(name: str) -> None:
    make, run = LAYER_FACTORIES[name]
    layer = make()
    layer.build()
    randomize(layer, seed=11)
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("squadqa>")
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    clone.build()
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_np(run(clone)), to_np(run(layer)), atol=1e-6)
