"""QAConfig / QATransformer tests: numpy reference forward, masking, saving, training."""

from __future__ import annotations

import numpy as np
import pytest

import squadqa  # noqa: F401  (sets KERAS_BACKEND=torch before keras is imported)

keras = pytest.importorskip("keras")

from test_layers import np_block, np_layer_norm, randomize, to_np  # noqa: E402

from squadqa.layers import MASKED_LOGIT  # noqa: E402
from squadqa.model import QAConfig, QATransformer, span_objective  # noqa: E402

TINY = dict(
    vocab_size=40,
    hidden_size=16,
    num_layers=2,
    num_heads=4,
    intermediate_size=32,
    max_position_embeddings=32,
)


def tiny_config(**overrides) -> QAConfig:
    values = {**TINY, "hidden_dropout": 0.0, "attention_dropout": 0.0, **overrides}
    return QAConfig(**values)


def make_batch(batch: int = 3, seq: int = 10, lengths=(10, 7, 4), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(1, TINY["vocab_size"], size=(batch, seq)).astype("int32")
    attention_mask = np.zeros((batch, seq), "int32")
    token_type_ids = np.zeros((batch, seq), "int32")
    span_mask = np.zeros((batch, seq), "int32")
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        token_type_ids[row, length // 2 : length] = 1
        span_mask[row, 0] = 1
        span_mask[row, length // 2 : length - 1] = 1
    input_ids[attention_mask == 0] = 0
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "span_mask": span_mask,
    }


def built_model(config: QAConfig, seed: int = 0) -> QATransformer:
    model = QATransformer(config)
    model.build()
    randomize(model, seed=seed, scale=0.3)
    return model


def logits_np(model: QATransformer, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    out = model(batch, training=False)
    return to_np(out["start_logits"]), to_np(out["end_logits"])


# ---------------------------------------------------------------------------------------------
# config


def test_config_dict_round_trip() -> None:
    config = QAConfig(**TINY, position_embedding="rotary", norm_first=True, hidden_act="gelu_tanh")
    assert QAConfig.from_dict(config.to_dict()) == config
    assert config.head_size == 4
    grouped = QAConfig(**TINY, num_key_value_heads=2)
    assert QAConfig.from_dict(grouped.to_dict()) == grouped


def test_key_value_heads_default_to_one_per_attention_head() -> None:
    """0 (the default, and what configs saved before the setting existed imply) = num_heads."""
    values = dict(TINY)
    assert QAConfig.from_dict(values).attention_settings()["num_key_value_heads"] == 4
    grouped = QAConfig(**TINY, num_key_value_heads=1).attention_settings()
    assert (grouped["num_heads"], grouped["num_key_value_heads"]) == (4, 1)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_heads": 5}, "num_heads"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"position_embedding": "alibi"}, "position_embedding"),
        ({"hidden_dropout": 1.0}, "hidden_dropout"),
        ({"attention_dropout": -0.1}, "attention_dropout"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
        ({"hidden_act": "swish"}, "hidden_act"),
        ({"num_layers": 2.5}, "num_layers"),
        ({"norm_first": "yes"}, "norm_first"),
        ({"hidden_size": 12, "num_heads": 4, "position_embedding": "rotary"}, "num_heads"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"num_key_value_heads": 8}, "num_key_value_heads"),
        ({"num_key_value_heads": -2}, "num_key_value_heads"),
        ({"num_key_value_heads": 2.0}, "num_key_value_heads"),
    ],
)
def test_config_validation_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        QAConfig(**{**TINY, **overrides})


def test_config_from_dict_names_unknown_and_missing_fields() -> None:
    with pytest.raises(ValueError, match="num_hidden_layers"):
        QAConfig.from_dict({**TINY, "num_hidden_layers": 3})
    values = dict(TINY)
    del values["num_heads"]
    with pytest.raises(ValueError, match="num_heads"):
        QAConfig.from_dict(values)


# ---------------------------------------------------------------------------------------------
# forward pass


def np_forward(model: QATransformer, batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole model in numpy float64 from its weights (learned positions)."""
    config = model.config
    emb = model.embeddings
    word, typ, pos, gamma, beta = (np.asarray(w, np.float64) for w in emb.get_weights())
    ids, types = batch["input_ids"], batch["token_type_ids"]
    mask = batch["attention_mask"].astype(np.float64)
    seq = ids.shape[1]
    hidden = np_layer_norm(
        word[ids] + typ[types] + pos[:seq][None], gamma, beta, config.layer_norm_eps
    )
    for block in model.encoder_layers:
        hidden = np_block(block, hidden, mask)
    if model.final_layer_norm is not None:
        g, b = (np.asarray(w, np.float64) for w in model.final_layer_norm.get_weights())
        hidden = np_layer_norm(hidden, g, b, config.layer_norm_eps)
    kernel, bias = (np.asarray(w, np.float64) for w in model.span_head.get_weights())
    logits = hidden @ kernel + bias
    allowed = batch["span_mask"] == 1
    return (
        hidden,
        np.where(allowed, logits[..., 0], MASKED_LOGIT),
        np.where(allowed, logits[..., 1], MASKED_LOGIT),
    )


@pytest.mark.parametrize("kv_heads", [0, 2])
@pytest.mark.parametrize("norm_first", [False, True])
def test_model_matches_numpy_reference(norm_first: bool, kv_heads: int) -> None:
    config = tiny_config(norm_first=norm_first, layer_norm_eps=1e-6, num_key_value_heads=kv_heads)
    model = built_model(config)
    batch = make_batch()
    hidden, start, end = np_forward(model, batch)
    out = model(batch, training=False)
    assert set(out) == {"start_logits", "end_logits"}
    for key in out:
        assert tuple(out[key].shape) == (3, 10)
        assert keras.backend.standardize_dtype(out[key].dtype) == "float32"
    real = batch["attention_mask"] == 1
    np.testing.assert_allclose(to_np(out["start_logits"]), start, atol=1e-4)
    np.testing.assert_allclose(to_np(out["end_logits"]), end, atol=1e-4)
    np.testing.assert_allclose(to_np(model.encode(batch))[real], hidden[real], atol=1e-4)


def test_span_mask_sets_large_negative() -> None:
    model = built_model(tiny_config())
    batch = make_batch()
    start, end = logits_np(model, batch)
    blocked = batch["span_mask"] == 0
    assert (start[blocked] == MASKED_LOGIT).all() and (end[blocked] == MASKED_LOGIT).all()
    assert (start[~blocked] > MASKED_LOGIT / 2).all()
    assert np.isfinite(start).all()


@pytest.mark.parametrize("position_embedding", ["learned", "sinusoidal", "rotary"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_appended_padding_does_not_change_real_positions(
    position_embedding: str, norm_first: bool
) -> None:
    model = built_model(tiny_config(position_embedding=position_embedding, norm_first=norm_first))
    short = make_batch(seq=10)
    padded = {key: np.pad(value, ((0, 0), (0, 6))) for key, value in short.items()}
    padded["input_ids"][:, 10:] = 7  # padding content must not matter either
    s_short, e_short = logits_np(model, short)
    s_padded, e_padded = logits_np(model, padded)
    real = short["span_mask"] == 1
    np.testing.assert_allclose(s_padded[:, :10][real], s_short[real], atol=1e-5)
    np.testing.assert_allclose(e_padded[:, :10][real], e_short[real], atol=1e-5)
    assert (s_padded[:, 10:] == MASKED_LOGIT).all()


def test_dynamic_sequence_lengths_and_optional_inputs() -> None:
    model = built_model(tiny_config())
    for seq in (5, 12, 3):
        out = model({"input_ids": np.ones((2, seq), "int32")})
        assert tuple(out["start_logits"].shape) == (2, seq)
    assert tuple(model.encode({"input_ids": np.ones((2, 4), "int32")}).shape) == (2, 4, 16)


def test_all_padding_row_is_finite() -> None:
    model = built_model(tiny_config())
    batch = make_batch(lengths=(10, 7, 0))
    start, end = logits_np(model, batch)
    assert np.isfinite(start).all() and np.isfinite(end).all()


def test_too_long_sequence_is_an_error() -> None:
    model = built_model(tiny_config())
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model({"input_ids": np.ones((1, 33), "int32")})


def test_mixed_precision_still_float32_logits() -> None:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = QATransformer(tiny_config())
        out = model(make_batch())
        assert keras.backend.standardize_dtype(out["start_logits"].dtype) == "float32"
        assert model.span_head.dense.kernel.dtype == "float32"
        assert np.isfinite(to_np(out["start_logits"])).all()
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------------------------------
# saving


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"position_embedding": "rotary", "norm_first": True},
        {"position_embedding": "sinusoidal"},
        {"position_embedding": "rotary", "num_key_value_heads": 1},
    ],
)
def test_keras_file_round_trip(tmp_path, overrides: dict) -> None:
    model = built_model(tiny_config(**overrides, hidden_dropout=0.1, attention_dropout=0.1))
    batch = make_batch()
    before = logits_np(model, batch)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, QATransformer)
    assert loaded.config == model.config
    after = logits_np(loaded, batch)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])


def test_config_round_trip_model() -> None:
    model = QATransformer(tiny_config(norm_first=True, num_key_value_heads=2))
    clone = QATransformer.from_config(model.get_config())
    assert clone.config == model.config
    assert clone.name == model.name


def test_weights_only_round_trip(tmp_path) -> None:
    config = tiny_config()
    model = built_model(config, seed=1)
    path = tmp_path / "ckpt.weights.h5"
    model.save_weights(path)
    fresh = QATransformer(config)
    fresh.build()
    batch = make_batch()
    assert np.abs(logits_np(fresh, batch)[0] - logits_np(model, batch)[0]).max() > 1e-3
    fresh.load_weights(path)
    np.testing.assert_array_equal(logits_np(fresh, batch)[0], logits_np(model, batch)[0])


# ---------------------------------------------------------------------------------------------
# training


def test_fit_reduces_loss() -> None:
    keras.utils.set_random_seed(0)
    model = QATransformer(QAConfig(**TINY))  # with dropout: the training path
    batch = make_batch(batch=4, lengths=(10, 8, 6, 9), seed=2)
    targets = {
        "start_logits": np.array([0, 5, 3, 6], "int32"),
        "end_logits": np.array([0, 6, 4, 7], "int32"),
    }
    model.compile(optimizer=keras.optimizers.Adam(3e-3), **span_objective())
    history = model.fit(batch, targets, batch_size=4, epochs=10, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] * 0.7, losses


def test_question_match_embedding_is_an_input_only_when_enabled(tmp_path) -> None:
    """The DrQA-style match flag changes the logits exactly when the config turns it on."""
    import keras

    batch = make_batch()
    flags = np.zeros_like(batch["input_ids"])
    flags[:, 3:6] = 1
    for enabled in (False, True):
        model = built_model(tiny_config(question_match=enabled))
        plain = logits_np(model, {**batch, "question_match": np.zeros_like(flags)})
        flagged = logits_np(model, {**batch, "question_match": flags})
        assert np.array_equal(plain[0], logits_np(model, batch)[0])  # absent == all zeros
        assert (not np.allclose(plain[0], flagged[0])) == enabled
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.config.question_match
    np.testing.assert_allclose(
        logits_np(loaded, {**batch, "question_match": flags})[0], flagged[0], atol=1e-6
    )


def test_hf_export_refuses_grouped_key_value_heads() -> None:
    """BERT has one key/value head per head: a grouped model's key/value matrices (16 x 8 here)
    would not load into it, so exporting under HF names refuses instead of writing them."""
    from squadqa.pretrained import export_state_dict

    assert "qa_outputs.weight" in export_state_dict(QATransformer(tiny_config()))
    with pytest.raises(ValueError, match=r"num_key_value_heads=2 \(grouped\) has no HF BERT"):
        export_state_dict(QATransformer(tiny_config(num_key_value_heads=2)))
