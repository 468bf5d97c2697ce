"""Run configuration: a TOML file plus `--set section.key=value` overrides, as dataclasses.

Every run directory keeps the resolved configuration (`config.toml`), so any result can be rerun
with `squadqa train --config runs/NAME/config.toml`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squadqa.model import QAConfig

DEFAULT_MODEL = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024}


@dataclass
class DataConfig:
    train: str = "sample"  # a SQuAD JSON path (plain or .gz), or "sample" for the bundled one
    dev: str = "sample"
    max_train_samples: int = 0  # 0 = all
    max_dev_samples: int = 0
    strict: bool = False


@dataclass
class TokenizerConfig:
    # "train": WordPiece trained on the train split; "vocab": from `path` (vocab.txt or
    # tokenizer.json); "pretrained": the checkpoint's own vocabulary.
    kind: str = "train"
    vocab_size: int = 8000
    path: str = ""


@dataclass
class FeaturesSection:
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64


@dataclass
class TrainConfig:
    init: str = "scratch"  # "scratch", "pretrained" or "pretrained:PATH"
    epochs: int = 2
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # linear | cosine | polynomial | constant
    clip_norm: float = 1.0
    label_smoothing: float = 0.0
    mixed_precision: bool = False
    grad_accum: int = 1
    seed: int = 0
    early_stopping_patience: int = 0  # epochs without dev F1 gain before stopping; 0 = off
    # Batches are padded to a multiple of this many tokens. 0 = by backend: 8 on torch (eager,
    # any shape is free), 64 on jax / tensorflow (each new shape compiles).
    length_multiple: int = 0


@dataclass
class PostprocessConfig:
    n_best: int = 20
    max_answer_length: int = 30


@dataclass
class TrackingConfig:
    backend: str = "none"  # none | wandb
    project: str = "squadqa"
    log_examples: int = 50  # dev examples in the W&B table


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    features: FeaturesSection = field(default_factory=FeaturesSection)
    # QAConfig fields except vocab_size, which comes from the tokenizer.
    model: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL))
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a (nested) dataclass, naming any unknown key or wrongly typed value."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where}: unknown key '{key}' (known: {', '.join(known)})")
        default = getattr(cls(), key)
        if key == "model" and cls is RunConfig:
            kwargs[key] = _model_section(value, f"{where}.model")
        elif dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: '{key}' must be a table, got {value!r}")
            kwargs[key] = _build(type(default), value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, default, f"{where}.{key}")
    return cls(**kwargs)


def _model_section(values: Any, where: str) -> dict[str, Any]:
    """Architecture keys, checked against QAConfig (vocab_size comes from the tokenizer)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a table, got {values!r}")
    known = {f.name for f in dataclasses.fields(QAConfig)} - {"vocab_size"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
    merged = {**DEFAULT_MODEL, **values}
    QAConfig(vocab_size=1000, **merged)  # validates values, naming the bad field
    return merged


def _coerce(value: Any, default: Any, where: str) -> Any:
    if default is None or isinstance(value, type(default)):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{where} must be {type(default).__name__} (like {default!r}), got {value!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.learning_rate=3e-4` → (["train", "learning_rate"], 0.0003); bare words are strings."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML config (defaults when `path` is None) and apply `--set` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from err
    for text in overrides or []:
        keys, value = parse_override(text)
        table = values
        for key in keys[:-1]:
            table = table.setdefault(key, {})
        table[keys[-1]] = value
    return _build(RunConfig, values, str(path) if path else "config")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    raise TypeError(f"cannot write {value!r} to TOML")


def dump_config(config: RunConfig) -> str:
    """The resolved config as TOML (top-level scalars, then one table per section)."""
    data = config.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"
