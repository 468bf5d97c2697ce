"""Self-supervised pretraining: masking, ELECTRA labels, recurring spans, resume and transfer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAINING

from squadqa import objectives as obj
from squadqa.config import load_config

MLM = obj.PretrainConfig()


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def sample_tokenizer(tmp_path_factory, sample_examples):
    """One vocabulary for every run of this module (WordPiece training breaks ties by hash)."""
    from squadqa.tokenization import train_wordpiece, training_texts

    tokenizer = train_wordpiece(training_texts(sample_examples), 1500)
    return tokenizer, tokenizer.save(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def windows(sample_tokenizer, sample_examples):
    tokenizer, _ = sample_tokenizer
    return obj.build_windows((e.context for e in sample_examples), tokenizer, 64)


# ------------------------------------------------------------------------------ windows


def test_windows_keep_every_token_and_wrap_each_in_cls_sep(sample_tokenizer, sample_examples):
    tokenizer, _ = sample_tokenizer
    contexts = list(dict.fromkeys(e.context for e in sample_examples))
    got = obj.build_windows(contexts, tokenizer, 64)
    expected_tokens = sum(len(enc.ids) for enc in tokenizer.encode_batch(contexts))
    assert got.paragraphs == len(contexts)
    assert all(len(ids) <= 64 for ids in got.input_ids)
    assert all(ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id for ids in got.input_ids)
    assert sum(len(ids) - 2 for ids in got.input_ids) == expected_tokens  # nothing dropped
    assert all(w[0] == -1 and w[-1] == -1 and (w[1:-1] >= 0).all() for w in got.word_ids)


# ------------------------------------------------------------------------------ masking


def test_whole_word_masking_takes_all_pieces_of_a_word_hand_case():
    # [CLS] w0 w1 w1 w1 w2 [SEP]: word 1 has three pieces.
    word_ids = np.array([-1, 0, 1, 1, 1, 2, -1])
    for seed in range(200):
        chosen = obj.choose_positions(word_ids, 0.5, True, np.random.default_rng(seed))
        assert not chosen[0] and not chosen[-1]
        assert chosen[2] == chosen[3] == chosen[4]  # the three pieces go together


def test_masking_never_touches_special_tokens_or_padding_and_hits_its_rates(
    windows, sample_tokenizer
):
    """Statistical bound: over ~10k words the chosen share is within 5 sigma of the rate, and
    the 80/10/10 split of the chosen tokens too."""
    tokenizer, _ = sample_tokenizer
    rng = np.random.default_rng(0)
    words_total = words_chosen = tokens_chosen = 0
    outcome = {"mask": 0, "random_or_kept": 0}
    mask_id, random_ids = 4, np.arange(5, 1500)
    for ids, word_ids in zip(windows.input_ids * 6, windows.word_ids * 6, strict=True):
        chosen = obj.choose_positions(word_ids, MLM.mask_rate, True, rng)
        assert not chosen[word_ids < 0].any()  # never [CLS] / [SEP]
        n_words = int(word_ids.max()) + 1
        words_total += n_words
        words_chosen += len(np.unique(word_ids[chosen]))
        tokens_chosen += int(chosen.sum())
        out = obj.corrupt(ids, chosen, MLM, mask_id, random_ids, rng)
        assert (out[~chosen] == ids[~chosen]).all()  # unchosen tokens are untouched
        outcome["mask"] += int((out[chosen] == mask_id).sum())
        outcome["random_or_kept"] += int((out[chosen] != mask_id).sum())
    p = MLM.mask_rate
    assert abs(words_chosen / words_total - p) < 5 * math.sqrt(p * (1 - p) / words_total)
    q = MLM.mask_token_share
    assert abs(outcome["mask"] / tokens_chosen - q) < 5 * math.sqrt(q * (1 - q) / tokens_chosen)

    # Padding: a batch's padded positions are never predicted and never attended.
    batch = _batches(windows, tokenizer, "mlm").batch(list(range(16)), np.random.default_rng(1))
    pad = batch["attention_mask"] == 0
    assert pad.any()
    rows = np.repeat(np.arange(16)[:, None], batch["mlm_positions"].shape[1], axis=1)
    predicted = batch["mlm_weights"] > 0
    assert (batch["attention_mask"][rows[predicted], batch["mlm_positions"][predicted]] == 1).all()
    assert (batch["input_ids"][pad] == tokenizer.pad_id).all()


def test_random_replacements_are_never_special_tokens(sample_tokenizer):
    tokenizer, _ = sample_tokenizer
    special = set(obj.special_ids(tokenizer).tolist())
    assert special == {
        tokenizer.token_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    }
    ids = np.arange(10, 2010) % 1400 + 10
    chosen = np.ones(len(ids), dtype=bool)
    config = obj.PretrainConfig(mask_token_share=0.0, random_token_share=1.0)
    out = obj.corrupt(
        ids, chosen, config, 4, obj.non_special_ids(tokenizer), np.random.default_rng(0)
    )
    assert not set(out.tolist()) & special


# ------------------------------------------------------------------------------ ELECTRA


def test_electra_labels_mark_exactly_the_replaced_positions_hand_case():
    from keras import ops

    from squadqa.pretrain import scatter_samples

    original = np.array([[2, 11, 12, 13, 14, 3, 0]])
    positions = np.array([[1, 3, 4, 0]])  # the last slot is padding (weight 0)
    weights = np.array([[1, 1, 1, 0]])
    sampled = np.array([[20, 13, 30, 99]])  # position 3 samples its own original token
    corrupted = ops.convert_to_numpy(scatter_samples(original, positions, weights, sampled))
    assert corrupted.tolist() == [[2, 20, 12, 13, 30, 3, 0]]
    real = original != 0
    labels = obj.replaced_token_labels(original, corrupted, real)
    assert labels.tolist() == [[False, True, False, False, True, False, False]]
    # The same function on backend tensors, as the model calls it.
    graph = obj.replaced_token_labels(
        ops.convert_to_tensor(original),
        ops.convert_to_tensor(corrupted),
        ops.convert_to_tensor(real),
    )
    assert ops.convert_to_numpy(graph).tolist() == labels.tolist()


# ------------------------------------------------------------------------------ recurring spans


def test_recurring_span_selection_hand_case(sample_tokenizer):
    tokenizer, _ = sample_tokenizer
    text = "the old mill burned in 1901 . later the old mill was rebuilt by the town"
    enc = tokenizer.encode_batch([text])[0]
    ids = np.concatenate([[tokenizer.cls_id], enc.ids, [tokenizer.sep_id]]).astype(np.int32)
    word_ids = np.array([-1, *enc.word_ids, -1], dtype=np.int32)
    content = obj.content_tokens(tokenizer)
    groups = obj.recurring_spans(word_ids, ids, content, 10)
    decoded = [tokenizer.tokenizer.decode(ids[a : b + 1].tolist()) for a, b in groups[0]]
    assert decoded == ["the old mill", "the old mill"]
    # "the" alone recurs too, but is a stopword: no other group.
    assert len(groups) == 1
    mask_id = tokenizer.token_id("[MASK]")
    new_ids, questions = obj.span_questions(
        ids, word_ids, content, mask_id, obj.PretrainConfig(), np.random.default_rng(0)
    )
    assert len(questions) == 1
    q, start, end = questions[0]
    assert new_ids[q] == mask_id
    assert tokenizer.tokenizer.decode(new_ids[start : end + 1].tolist()) == "the old mill"
    assert len(new_ids) == len(ids) - (groups[0][0][1] - groups[0][0][0])  # 3 tokens -> 1


# ------------------------------------------------------------------------------ runs


def _batches(windows, tokenizer, objective):
    from squadqa.pretrain import PretrainBatches

    config = obj.PretrainConfig(objective=objective)
    return PretrainBatches(windows, tokenizer, config, 16, seed=0, multiple=8)


def _tiny(tokenizer_path: Path, *extra: str):
    return load_config(
        None,
        [
            *TINY_TRAINING,
            'tokenizer.kind="vocab"',
            f'tokenizer.path="{tokenizer_path}"',
            'model.position_embedding="rotary"',
            "model.norm_first=true",
            "pretrain.max_seq_length=64",
            "train.save_every_steps=3",
            "train.batch_size=16",
            "train.epochs=2",
            "data.max_train_samples=0",  # the whole sample: 12 steps an epoch
            *extra,
        ],
    )


def _steps(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "steps.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("objective", "stop"),
    [("mlm", "crash"), ("electra", "crash"), ("span", "crash"), ("mlm", "sigterm")],
)
def test_pretraining_stopped_mid_epoch_resumes_to_the_same_losses(
    tmp_path: Path, sample_tokenizer, objective: str, stop: str
):
    """A crash at step 5 loses the steps after the checkpoint at step 3; SIGTERM at step 5 ends
    the step in progress (6) with a checkpoint and status `stopped`. Both resume exactly."""
    import os
    import signal

    import keras

    from squadqa.pretrain import PretrainModel, pretrain
    from squadqa.runs import read_run

    _, tok_path = sample_tokenizer
    extra = (f'pretrain.objective="{objective}"',)
    whole = pretrain(_tiny(tok_path, *extra, "name=whole"), tmp_path)
    assert whole["status"] == "finished"

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == 5:
                if stop == "crash":
                    raise KeyboardInterrupt("killed at step 5")
                os.kill(os.getpid(), signal.SIGTERM)

    cut = _tiny(tok_path, *extra, "name=cut")
    if stop == "crash":
        with pytest.raises(KeyboardInterrupt):
            pretrain(cut, tmp_path, extra_callbacks=[Stop()])
        assert read_run(tmp_path / "cut").status == "crashed"
        assert [s["step"] for s in _steps(tmp_path / "cut")] == [1, 2, 3]  # checkpoint at 3
    else:
        assert pretrain(cut, tmp_path, extra_callbacks=[Stop()])["status"] == "stopped"
        assert read_run(tmp_path / "cut").status == "stopped"
        assert [s["step"] for s in _steps(tmp_path / "cut")] == [1, 2, 3, 4, 5, 6]
    resumed = pretrain(_tiny(tok_path, *extra, "name=cut"), tmp_path, resume=True)
    assert resumed["status"] == "finished"

    a, b = _steps(tmp_path / "whole"), _steps(tmp_path / "cut")
    assert [(s["epoch"], s["step"]) for s in a] == [(s["epoch"], s["step"]) for s in b]
    assert len(a) > 6 and len({s["epoch"] for s in a}) == 2
    # Step losses are recovered from Keras' float32 running mean: equal to its rounding.
    losses_a, losses_b = [s["loss"] for s in a], [s["loss"] for s in b]
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-5, atol=1e-4)
    assert all(math.isfinite(s["loss"]) for s in a)
    # The weights themselves are bit-identical.
    models = []
    for name in ("whole", "cut"):
        config = load_config(tmp_path / name / "config.toml")
        from squadqa.model import QAConfig
        from squadqa.tokenization import load_tokenizer

        vocab = load_tokenizer(tmp_path / name / "tokenizer.json").vocab_size
        model = PretrainModel(QAConfig(vocab_size=vocab, **config.model), config.pretrain)
        model.build()
        model.encoder.load_weights(tmp_path / name / "encoder.weights.h5")
        models.append(model.encoder.get_weights())
    for x, y in zip(*models, strict=True):
        np.testing.assert_array_equal(x, y)
    metrics = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]


def test_fine_tuning_from_a_pretraining_run_keeps_every_encoder_tensor(
    tmp_path: Path, sample_tokenizer
):
    import h5py

    from squadqa.pretrain import pretrain
    from squadqa.pretrained import load_encoder
    from squadqa.rundir import ENCODER
    from squadqa.train import train

    _, tok_path = sample_tokenizer
    pretrain(_tiny(tok_path, "name=pt", "train.epochs=1"), tmp_path)
    model, report = load_encoder(tmp_path / "pt")
    # Reference: the tensors as stored in the file, read with h5py, not through Keras.
    with h5py.File(tmp_path / "pt" / ENCODER) as f:
        stored: list[np.ndarray] = []
        f.visititems(lambda n, v: stored.append(v[()]) if isinstance(v, h5py.Dataset) else None)
    ours = {v.path: np.asarray(v.numpy()) for v in model.weights}
    encoder = [a for p, a in ours.items() if "span_head" not in p]
    assert len(report.loaded) == len(encoder)
    for array in encoder:  # each encoder tensor is in the file, bit for bit
        assert any(s.shape == array.shape and np.array_equal(s, array) for s in stored)
    head = next(a for p, a in ours.items() if "span_head/dense/kernel" in p)
    assert not any(s.shape == head.shape and np.array_equal(s, head) for s in stored)

    status = train(
        load_config(
            None,
            [*TINY_TRAINING, "name=ft", "train.epochs=1", f'train.init="run:{tmp_path / "pt"}"'],
        ),
        tmp_path,
    )
    assert status["init"] == "run:pt" and status["status"] == "finished"
    # config.toml records the encoder that was trained: the pretraining run's architecture
    # (rotary, pre-LN), not this config's [model] defaults (learned positions, post-LN).
    saved = load_config(tmp_path / "ft" / "config.toml").model
    assert saved["position_embedding"] == "rotary" and saved["norm_first"] is True
    assert saved["hidden_size"] == 32 and saved["num_layers"] == 1


def test_pretraining_never_reads_the_dev_split(tmp_path: Path, sample_tokenizer):
    from squadqa.pretrain import pretrain

    _, tok_path = sample_tokenizer
    config = _tiny(tok_path, "name=nodev", "train.epochs=1", 'data.dev="/nonexistent/dev.json"')
    assert pretrain(config, tmp_path)["status"] == "finished"


def test_init_from_a_missing_pretraining_run_says_how_to_make_it(tmp_path) -> None:
    from squadqa.harness import build_tokenizer

    config = load_config(None, [f'train.init="run:{tmp_path / "pretrain-mlm-e2"}"'])
    expected = r"not a `squadqa pretrain` run.*--name pretrain-mlm-e2"
    with pytest.raises(FileNotFoundError, match=expected):
        build_tokenizer(config, [])


def test_a_checkpoints_architecture_overriding_set_model_keys_is_named() -> None:
    """`--init run:`/`pretrained` trains the checkpoint's architecture; [model] keys the config
    moved away from their defaults and that the checkpoint overrides are listed (they used to
    be dropped silently: a 5M-parameter config trained a 0.7M encoder under its name)."""
    from types import SimpleNamespace

    from squadqa.model import QAConfig
    from squadqa.train import overridden_architecture

    checkpoint = SimpleNamespace(
        config=QAConfig(vocab_size=100, hidden_size=128, num_layers=3, intermediate_size=512)
    )
    asked = load_config(
        None, ["model.num_layers=6", "model.hidden_size=128", "model.hidden_dropout=0.3"]
    )
    # hidden_size agrees, dropout is the fine-tune's to set, the rest are defaults: one key.
    assert overridden_architecture(asked, checkpoint) == ["num_layers = 6 (checkpoint: 3)"]
    assert overridden_architecture(load_config(None, []), checkpoint) == []


def test_electra_generator_of_a_grouped_encoder() -> None:
    """The generator scales the head count (4 -> 1 at a quarter of the width), which the encoder's
    grouping (2 key/value heads) does not divide: the generator keeps a key/value head per head."""
    from squadqa.model import QAConfig
    from squadqa.pretrain import generator_config

    encoder = QAConfig(
        vocab_size=40,
        hidden_size=16,
        num_layers=2,
        num_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        num_key_value_heads=2,
    )
    generator = generator_config(encoder, obj.PretrainConfig(objective="electra"))
    settings = generator.attention_settings()
    assert (settings["num_heads"], settings["num_key_value_heads"]) == (1, 1)
    assert (generator.hidden_size, generator.num_layers) == (4, 2)
