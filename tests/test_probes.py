"""Per-layer span probes: on synthetic states a probe finds the layer that holds the answer (and
not the one that does not), a probe carrying the run's own head scores what evaluation scored,
and `squadqa probe` writes one row per layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from squadqa import rundir
from squadqa.config import load_config
from squadqa.features import FeatureConfig, build_features
from squadqa.probes import ProbeSettings, SpanProbe, fit_probe, layer_states, score_probe


def synthetic_layers(features, hidden: int, seed: int) -> tuple[list, list]:
    """Two layers of states for every window: in `readable`, dimension 0 is 1 exactly at the
    labelled start token and dimension 1 exactly at the end token (0 elsewhere), the rest noise;
    `noise` is noise only, with no trace of the answer."""
    rng = np.random.default_rng(seed)
    readable, noise = [], []
    for i, ids in enumerate(features.input_ids):
        states = rng.normal(size=(len(ids), hidden)).astype(np.float32)
        states[:, :2] = 0.0
        states[features.start_positions[i], 0] = 1.0
        states[features.end_positions[i], 1] = 1.0
        readable.append(states)
        noise.append(rng.normal(size=(len(ids), hidden)).astype(np.float32))
    return readable, noise


def test_the_probe_finds_the_layer_that_holds_the_answer(sample_examples, bert_tokenizer) -> None:
    config = load_config(None, [])
    windows = FeatureConfig(max_seq_length=128, doc_stride=32, max_query_length=32)
    train_examples, dev_examples = sample_examples[:150], sample_examples[150:]
    train = build_features(train_examples, bert_tokenizer, windows)
    dev = build_features(dev_examples, bert_tokenizer, windows)
    assert (train.start_positions == 0).any()  # windows without the answer: labelled CLS
    train_readable, train_noise = synthetic_layers(train, hidden=8, seed=0)
    dev_readable, dev_noise = synthetic_layers(dev, hidden=8, seed=1)
    settings = ProbeSettings(epochs=10, learning_rate=0.05)
    scores = {}
    for name, fit_on, score_on in (
        ("readable", train_readable, dev_readable),
        ("noise", train_noise, dev_noise),
    ):
        probe = fit_probe(fit_on, train, settings)
        scores[name] = score_probe(probe, score_on, config, dev_examples, dev, batch_size=16)
    # Readable: every dev answer found (EM, as the official metric counts it, short only of
    # the few answers whose tokens do not match the text exactly); noise: chance.
    assert scores["readable"]["exact_match"] > 95
    assert scores["noise"]["f1"] < 20
    # The loss says it too: near chance (log of ~100 allowed positions) on noise only.
    assert scores["readable"]["dev_loss"] < 1.5 < 3.5 < scores["noise"]["dev_loss"]


def test_a_probe_carrying_the_runs_own_head_scores_what_evaluation_scored(tiny_run: Path) -> None:
    """Probing reads the states and scores answers as evaluation does: the run's own span head,
    put on its last layer's states (post-LN: the states it was trained on), gives eval.json."""
    from squadqa.inference import QAPredictor
    from squadqa.scoring import load_dev

    config = load_config(tiny_run / rundir.CONFIG)
    loaded = QAPredictor.from_run_dir(tiny_run)
    assert not loaded.model.config.norm_first
    dev = load_dev(config)
    features = build_features(dev.examples, loaded.tokenizer, config.features)
    states = layer_states(loaded.model, features, loaded.tokenizer.pad_id, 16, 8)
    assert len(states) == loaded.model.config.num_layers + 1
    probe = SpanProbe(loaded.model.config.hidden_size, loaded.model.config.initializer_range)
    probe.head.dense.set_weights(loaded.model.span_head.dense.get_weights())
    scored = score_probe(probe, states[-1], config, dev.examples, features, batch_size=16)
    evaluated = json.loads((tiny_run / rundir.EVAL).read_text())
    assert scored["f1"] == pytest.approx(evaluated["f1"], abs=1e-6)
    assert scored["exact_match"] == pytest.approx(evaluated["exact_match"], abs=1e-6)


def test_probe_writes_one_row_per_layer(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from squadqa.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    args = ["probe", str(run_dir), "--train-samples", "24", "--dev-samples", "24", "--epochs", "2"]
    assert main(args) == 0
    record = json.loads((run_dir / rundir.PROBES).read_text())
    layers = load_config(run_dir / rundir.CONFIG).model["num_layers"]
    assert [row["layer"] for row in record["layers"]] == list(range(layers + 1))
    assert record["train_samples"] == 24 and record["dev_samples"] == 24
    # The tiny run trains and evaluates on the bundled sample: its first 24 questions are dev,
    # so the probe fits on the 24 after them.
    assert record["dev_questions_left_out_of_train"] == 24
    assert record["train_windows"] >= 24 and record["dev_windows"] >= 24
    assert record["settings"]["epochs"] == 2
    for row in record["layers"]:
        assert 0 <= row["exact_match"] <= row["f1"] <= 100
    # The run's own head on the same 24 dev questions: what training's evaluation gave.
    evaluated = json.loads((run_dir / rundir.EVAL).read_text())
    assert record["model_head"]["f1"] == pytest.approx(evaluated["f1"], abs=1e-6)
    out = capsys.readouterr().out
    assert "| 0 | embeddings |" in out and "| 1 | block 1 |" in out


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="epochs=0"):
        ProbeSettings(epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        ProbeSettings(learning_rate=0.0)


def test_spread_takes_an_even_stride_in_order() -> None:
    from squadqa.probes import spread

    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread(list(range(10)), 4) == [0, 2, 5, 7]
    assert spread(list(range(5)), 5) == [0, 1, 2, 3, 4]
    assert spread(list(range(5)), 9) == [0, 1, 2, 3, 4]
