"""`squadqa explain`: integrated gradients against hand-computed cases and completeness, attention
against a plain numpy recomputation from the layers' weights, and the span against `answer`'s."""

from __future__ import annotations

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
from keras import ops
from test_backends import run_backend_script

from squadqa.cli import main
from squadqa.data import Example, load_squad, sample_path
from squadqa.explain import (
    EXPLANATION,
    METHODS,
    Explainer,
    integrated_gradients,
    quadrature,
)
from squadqa.features import pad_batch
from squadqa.model import QAConfig, QATransformer

CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower."
)
QUESTION = "Who is the tower named after?"


@pytest.fixture(scope="module")
def explainer(predictor):
    return Explainer(predictor)


@pytest.fixture(scope="module")
def sample():
    return load_squad(sample_path()).examples


# --------------------------------------------------------------------------- hand-computed cases


def linear(weights: np.ndarray):
    """F_t(z) = sum(z * weights[t]) + t, a batch at a time: its gradient is weights[t]."""

    def fn(z):
        return ops.stack(
            [ops.sum(ops.multiply(z, weights[t]), axis=(1, 2)) + t for t in range(len(weights))],
            axis=-1,
        )

    return fn


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_attribution_is_input_minus_baseline_times_weight(method):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(2, 5, 3)).astype(np.float32)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    baseline = rng.normal(size=(5, 3)).astype(np.float32)
    got = integrated_gradients(linear(weights), x, baseline, steps=7, method=method, batch_size=3)
    np.testing.assert_allclose(got, (x - baseline)[None] * weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("method", "steps", "factor"),
    [
        # F(z) = sum(z^3), baseline 0: the exact attribution is x^3 (the integral of 3 a^2 over
        # [0, 1] is 1); each rule's error on that integral, by hand:
        ("trapezoid", 5, 1 + (1 / 4) ** 2 / 2),  # + h^2 / 2 with h = 1 / (steps - 1)
        ("riemann", 5, 1 - 1 / (4 * 5**2)),  # midpoints: - 1 / (4 steps^2)
        ("gausslegendre", 2, 1.0),  # exact for polynomials of degree <= 3
    ],
)
def test_cubic_model_attribution_has_each_rules_hand_computed_error(method, steps, factor):
    x = np.array([[0.5, -1.0], [2.0, 1.5]], np.float32)

    def cubic(z):
        return ops.sum(z**3, axis=(1, 2))[:, None]

    got = integrated_gradients(cubic, x, np.zeros_like(x), steps=steps, method=method)
    np.testing.assert_allclose(got[0], factor * x**3, rtol=1e-5)


def test_quadrature_weights_and_bad_settings():
    for method in METHODS:
        alphas, weights = quadrature(method, 9)
        assert len(alphas) == 9 and math.isclose(weights.sum(), 1.0)
        assert alphas.min() >= 0 and alphas.max() <= 1
    with pytest.raises(ValueError, match="trapezoid rule needs steps >= 2"):
        quadrature("trapezoid", 1)
    with pytest.raises(ValueError, match="method must be one of"):
        quadrature("simpson", 8)
    with pytest.raises(ValueError, match="steps=0 must be a positive integer"):
        quadrature("riemann", 0)


# --------------------------------------------------------------------------- the run's answers


@pytest.mark.parametrize("baseline", ["pad", "zeros"])
def test_completeness_within_one_percent_at_64_steps(explainer, predictor, baseline):
    explanation = explainer.explain(
        CONTEXT, QUESTION, steps=64, baseline=baseline, method="trapezoid"
    )
    for target in ("start", "end"):
        c = explanation["completeness"][target]
        total = sum(explanation["attributions"][target])
        assert c["attribution_sum"] == pytest.approx(total)
        assert abs(c["difference"]) > 1e-3, c  # a real change of the logit, not a vacuous 0
        assert abs(total - c["difference"]) <= 0.01 * abs(c["difference"]), c
        # The forward pass from the word embeddings is the model's own: same logit as `answer`.
        assert c["logit"] == pytest.approx(explanation["span"][f"{target}_logit"], abs=1e-4)
    # [CLS] and [SEP] keep their embeddings in the baseline: nothing to attribute to them.
    for i, token in enumerate(explanation["tokens"]):
        if token["segment"] in ("cls", "sep"):
            assert explanation["attributions"]["start"][i] == 0.0


def test_the_explained_span_is_the_answer(explainer, predictor, sample):
    """Over several questions, contexts of several windows among them (128-token windows)."""
    seen_windows = set()
    for example in sample[:40:8]:
        explanation = explainer.explain(example.context, example.question, steps=2)
        answer = predictor.answer(example.context, [example.question])[0]
        assert explanation["answer"] == answer
        span = explanation["span"]
        assert (span["text"], span["start"], span["end"]) == (
            answer["text"],
            answer["start"],
            answer["end"],
        )
        tokens = explanation["tokens"]
        assert tokens[span["start_token"]]["start"] == answer["start"]
        assert tokens[span["end_token"]]["end"] == answer["end"]
        assert span["start_logit"] + span["end_logit"] == pytest.approx(answer["score"])
        window = explanation["window"]
        seen_windows.add(window["windows"])
        for token in tokens:
            if token["segment"] == "context":
                assert token["start"] < token["end"]
            if token["segment"] == "question":
                assert example.question[token["start"] : token["end"]]
    assert max(seen_windows) > 1, seen_windows


def test_explain_needs_the_keras_model(predictor):
    class Onnx:
        pass

    with pytest.raises(ValueError, match="needs the run's Keras model"):
        Explainer(dataclasses.replace(predictor, model=Onnx()))
    with pytest.raises(ValueError, match="baseline must be one of pad, zeros"):
        Explainer(predictor).explain(CONTEXT, QUESTION, baseline="mask")


# --------------------------------------------------------------------------- attention vs numpy


def np_layer_norm(x: np.ndarray, layer) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * np.asarray(layer.gamma) + np.asarray(
        layer.beta
    )


def np_dense(x: np.ndarray, layer) -> np.ndarray:
    return x @ np.asarray(layer.kernel) + np.asarray(layer.bias)


def np_forward(model, batch: dict) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per-layer attention probabilities [heads, n, n] and start/end logits of one unpadded
    window, written out in numpy from the variables (learned positions, BERT's post-LN or
    pre-LN blocks, erf GELU)."""
    ids, types = batch["input_ids"][0], batch["token_type_ids"][0]
    emb = model.embeddings
    h = (
        np.asarray(emb.word_embeddings.embeddings)[ids]
        + np.asarray(emb.token_type_embeddings.embeddings)[types]
        + np.asarray(emb.position_embeddings.embeddings)[: len(ids)]
    )
    h = np_layer_norm(h.astype(np.float64), emb.layer_norm)
    erf = np.vectorize(math.erf)
    all_probs = []
    for block in model.encoder_layers:
        att = block.attention
        heads, size = att.num_heads, att.head_size
        x = np_layer_norm(h, block.attention_layer_norm) if block.norm_first else h
        q, k, v = (
            np_dense(x, d).reshape(len(ids), heads, size) for d in (att.query, att.key, att.value)
        )
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(size)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        all_probs.append(probs)
        attended = np_dense(
            np.einsum("hqk,khd->qhd", probs, v).reshape(len(ids), -1), att.output_dense
        )
        ff = block.feed_forward

        def feed_forward(y, ff=ff):
            inner = np_dense(y, ff.intermediate_dense)
            return np_dense(0.5 * inner * (1 + erf(inner / math.sqrt(2))), ff.output_dense)

        if block.norm_first:
            h = h + attended
            h = h + feed_forward(np_layer_norm(h, block.output_layer_norm))
        else:
            h = np_layer_norm(h + attended, block.attention_layer_norm)
            h = np_layer_norm(h + feed_forward(h), block.output_layer_norm)
    if model.final_layer_norm is not None:
        h = np_layer_norm(h, model.final_layer_norm)
    logits = np_dense(h, model.span_head.dense)
    return all_probs, logits[:, 0], logits[:, 1]


def two_layer_model(predictor, norm_first: bool) -> QATransformer:
    """Random weights wide enough (stddev 0.5) for peaked, not uniform, attention."""
    keras.utils.set_random_seed(1)
    config = QAConfig(
        vocab_size=predictor.tokenizer.vocab_size,
        hidden_size=16,
        num_layers=2,
        num_heads=4,
        intermediate_size=32,
        max_position_embeddings=128,
        norm_first=norm_first,
        initializer_range=0.5,
    )
    model = QATransformer(config)
    model.build()
    return model


@pytest.mark.parametrize("model_kind", ["trained", "post-LN 2 layers", "pre-LN 2 layers"])
def test_attention_equals_numpy_recomputation(predictor, model_kind):
    if model_kind != "trained":
        model = two_layer_model(predictor, norm_first=model_kind.startswith("pre"))
        predictor = dataclasses.replace(predictor, model=model)
    explanation = Explainer(predictor).explain(CONTEXT, QUESTION, steps=2)
    window = explanation["window"]
    example = Example(id="0", title="", context=CONTEXT, question=QUESTION, answers=())
    features = predictor.features([example])
    batch = pad_batch(features, [window["index"]], predictor.tokenizer.pad_id, multiple=1)
    probs, start, end = np_forward(predictor.model, batch)
    probs = np.stack(probs)  # [layers, heads, n, n]
    attention = explanation["attention"]
    assert (attention["layers"], attention["heads"]) == probs.shape[:2]
    q, c = attention["question_rows"], attention["context_columns"]
    first = window["context_start"]
    assert q == list(range(1, first - 1)) and c == list(range(first, window["length"] - 1))
    np.testing.assert_allclose(
        attention["question_to_context"], probs[:, :, q][..., c], atol=2e-5, rtol=0
    )
    s, e = explanation["span"]["start_token"], explanation["span"]["end_token"]
    np.testing.assert_allclose(attention["answer_to_window"], probs[:, :, s : e + 1], atol=2e-5)
    summary = attention["heads_summary"]
    np.testing.assert_allclose(summary["cls"], probs[..., 0].mean(-1), atol=1e-5)
    np.testing.assert_allclose(
        summary["sep"], probs[..., [first - 1, window["length"] - 1]].sum(-1).mean(-1), atol=1e-5
    )
    np.testing.assert_allclose(summary["question"], probs[..., q].sum(-1).mean(-1), atol=1e-5)
    entropy = -(probs * np.log(probs)).sum(-1).mean(-1)
    np.testing.assert_allclose(summary["entropy"], entropy, atol=1e-4)
    if model_kind != "trained":  # peaked attention, so the comparison is not one of uniforms
        assert probs.max() > 0.5
    # The logits the explanation reports, from the same numpy forward pass.
    assert explanation["span"]["start_logit"] == pytest.approx(start[s], abs=1e-3)
    assert explanation["span"]["end_logit"] == pytest.approx(end[e], abs=1e-3)


# --------------------------------------------------------------------------- command line


def test_cli_writes_explain_json_and_pictures(tiny_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "why"
    status = main(
        [
            "explain", "--model", str(tiny_run), "--context", CONTEXT, "--question", QUESTION,
            "--out", str(out), "--steps", "8", "--method", "gausslegendre",
        ]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    explanation = json.loads((out / EXPLANATION).read_text(encoding="utf-8"))
    assert explanation["integrated_gradients"] == {
        "steps": 8,
        "method": "gausslegendre",
        "baseline": "pad",
    }
    assert explanation["span"]["text"] in printed and "top tokens" in printed
    for name in ("attributions.png", "attention_heads.png", "attention_question_context.png"):
        assert (out / name).stat().st_size > 5_000, name


def test_cli_bad_steps_is_a_clear_error(tiny_run, tmp_path, capsys):
    args = ["explain", "--model", str(tiny_run), "--context", CONTEXT, "--question", QUESTION]
    assert main([*args, "--out", str(tmp_path), "--steps", "1", "--method", "trapezoid"]) == 2
    assert "trapezoid rule needs steps >= 2" in capsys.readouterr().err


# --------------------------------------------------------------------------- other backends

OTHER_BACKEND = """
import json
import numpy as np
import keras
from squadqa.explain import integrated_gradients

assert keras.backend.backend() == "{backend}"
layer = keras.layers.Dense(2)
layer.build((None, 3))
rng = np.random.default_rng(0)
kernel = rng.normal(size=(3, 2)).astype("float32")
layer.set_weights([kernel, np.zeros(2, "float32")])
x = rng.normal(size=(4, 3)).astype("float32")
baseline = rng.normal(size=(4, 3)).astype("float32")
# Two outputs per row: the Dense layer's two units summed over the 4 positions.
got = integrated_gradients(lambda z: keras.ops.sum(layer(z), axis=1), x, baseline, steps=5)
want = (x - baseline)[None] * kernel.T[:, None, :]
print("RESULT " + json.dumps({{"max_error": float(np.abs(got - want).max())}}))
"""


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_gradient_path_on_other_backends(backend, tmp_path):
    result = run_backend_script(backend, OTHER_BACKEND.format(backend=backend), tmp_path)
    assert result["max_error"] < 1e-5, result
