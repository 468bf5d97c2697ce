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

from squadqa.architecture import QAConfig
from squadqa.features import FeatureConfig
from squadqa.objectives import PretrainConfig
from squadqa.postprocess import SpanConfig
from squadqa.settings import help_of, is_int, setting

# The [model] section's keys: every QAConfig field except vocab_size (from the tokenizer).
MODEL_FIELDS = tuple(f for f in dataclasses.fields(QAConfig) if f.name != "vocab_size")


def model_defaults() -> dict[str, Any]:
    """QAConfig's own defaults, as a [model] section."""
    return {f.name: f.default for f in MODEL_FIELDS}


def architecture_settings(architecture: QAConfig) -> dict[str, Any]:
    """`architecture` as a [model] section (what a run built from a checkpoint records)."""
    return {f.name: getattr(architecture, f.name) for f in MODEL_FIELDS}


@dataclass
class DataConfig:
    train: str = setting("sample", "train split: a SQuAD JSON path (plain or .gz), or 'sample'")
    dev: str = setting("sample", "dev split, evaluated every epoch (never trained on)")
    max_train_samples: int = setting(0, "keep the first N train questions; 0 = all")
    max_train_articles: int = setting(
        0, "keep the first N train articles; 0 = all (nested subsets for `squadqa curve`)"
    )
    max_dev_samples: int = setting(0, "keep the first N dev questions; 0 = all")
    strict: bool = setting(False, "a misplaced answer_start is an error instead of a repair")


@dataclass
class TokenizerConfig:
    kind: str = setting(
        "train",
        "train: WordPiece trained on the train split; vocab: from `path`; "
        "pretrained: the checkpoint's own vocabulary",
    )
    vocab_size: int = setting(8000, "vocabulary size when kind = train")
    path: str = setting("", "vocab.txt or tokenizer.json when kind = vocab")


@dataclass
class TrainConfig:
    init: str = setting(
        "scratch",
        "scratch | pretrained | pretrained:PATH (a Hugging Face BERT checkpoint directory) | "
        "run:RUN_DIR (the encoder of a `squadqa pretrain` run)",
    )
    epochs: int = setting(2, "passes over the train features")
    decay_epochs: int = setting(
        0,
        "epochs the warmup and decay are laid out over; 0 = train.epochs. More than train.epochs "
        "stops before the decay ends (nanoGPT's lr_decay_iters): epochs=4, decay_epochs=6 trains "
        "the first 4 epochs of a 6-epoch run",
    )
    batch_size: int = setting(32, "train features per step")
    eval_batch_size: int = setting(64, "dev features per forward pass")
    learning_rate: float = setting(5e-4, "peak learning rate (after warmup)")
    weight_decay: float = setting(0.01, "AdamW decoupled weight decay (not on biases and norms)")
    warmup_ratio: float = setting(0.1, "fraction of all updates spent warming up linearly")
    schedule: str = setting("linear", "decay after warmup: linear | cosine | polynomial | constant")
    clip_norm: float = setting(1.0, "global gradient-norm clip; 0 = off")
    label_smoothing: float = setting(0.0, "span label smoothing over the allowed positions")
    mixed_precision: bool = setting(
        False, "bfloat16 compute, float32 weights (fast only with bf16 hardware)"
    )
    grad_accum: int = setting(1, "batches accumulated per optimizer update")
    seed: int = setting(0, "seed of initialisation, batch order and dropout")
    early_stopping_patience: int = setting(0, "epochs without dev F1 gain before stopping; 0 = off")
    save_every_steps: int = setting(
        500,
        "also checkpoint every N steps within an epoch (weights, optimizer, step), for "
        "--resume after a kill; 0 = only at epoch ends. SIGTERM, SIGINT and SIGUSR1 always "
        "checkpoint at the end of the current step, then stop the run as `stopped`",
    )
    keep_epoch_checkpoints: bool = setting(
        False,
        "also keep every epoch's weights (checkpoints/epoch-N.weights.h5, one model's size "
        "each) for `squadqa average`",
    )
    distribution: str = setting(
        "none",
        "none | data_parallel: the global batch split across train.devices (JAX only: "
        "keras.distribution.DataParallel; docs/distributed.md)",
    )
    devices: int = setting(0, "data_parallel: how many local devices to use; 0 = all")
    length_multiple: int = setting(
        0,
        "pad batches to a multiple of this many tokens; 0 = by backend (8 on torch, 64 on jax / "
        "tensorflow, which compile each new shape)",
    )

    def __post_init__(self) -> None:
        if self.save_every_steps < 0:
            raise ValueError(f"train.save_every_steps={self.save_every_steps} must be >= 0")
        if self.seed < 0:  # seeding derives every stream from it with numpy's SeedSequence
            raise ValueError(f"train.seed={self.seed} must be >= 0")
        # Checked when the config loads, so a bad pair fails before featurisation, not after.
        if self.decay_epochs and self.decay_epochs < self.epochs:
            raise ValueError(
                f"train.decay_epochs={self.decay_epochs} is below train.epochs={self.epochs}: the "
                "last epochs would train at learning rate 0 (use 0 to decay over train.epochs)"
            )


@dataclass
class TrackingConfig:
    backend: str = setting("none", "none | wandb")
    project: str = setting("squadqa", "W&B project")
    log_examples: int = setting(50, "dev examples in the W&B table")


@dataclass
class RunConfig:
    name: str = setting("run", "run directory name under --runs-dir")
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # QAConfig's fields except vocab_size; a dict because vocab_size comes from the tokenizer.
    model: dict[str, Any] = field(default_factory=model_defaults)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: SpanConfig = field(default_factory=SpanConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        # Checked when the config loads, not in the first forward pass after featurisation.
        self.check_window_fits("features.max_seq_length", self.features.max_seq_length)

    def check_window_fits(self, key: str, length: int) -> None:
        """Raise unless windows of `length` tokens fit the position table (learned or
        sinusoidal; rotary has none). `pretrain` checks its own window length with it."""
        table = self.model.get("max_position_embeddings")
        rotary = self.model.get("position_embedding") == "rotary"
        if not rotary and table is not None and length > table:
            raise ValueError(
                f"{key}={length} exceeds model.max_position_embeddings={table} (the position "
                "table): shorten the windows or enlarge the table"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def describe_settings() -> list[tuple[str, Any, str]]:
    """(key, default, help) of every config key, read from the dataclasses themselves."""
    rows: list[tuple[str, Any, str]] = []
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        value = getattr(defaults, f.name)
        if f.name == "model":
            rows.extend((f"model.{m.name}", m.default, help_of(m)) for m in MODEL_FIELDS)
        elif dataclasses.is_dataclass(value):
            rows.extend(
                (f"{f.name}.{s.name}", getattr(value, s.name), help_of(s))
                for s in dataclasses.fields(value)
            )
        else:
            rows.append((f.name, value, help_of(f)))
    return rows


def format_settings() -> str:
    """`--help-config`: every key, its default and its help, one per line."""
    rows = describe_settings()
    width = max(len(key) + len(_toml_value(default)) for key, default, _ in rows) + 4
    return "\n".join(
        f"{key} = {_toml_value(default)}".ljust(width) + text for key, default, text in rows
    )


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
    known = {f.name for f in MODEL_FIELDS}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (known: {', '.join(sorted(known))})")
    resolved = QAConfig(vocab_size=1000, **values)  # validates values, naming the bad field
    return {key: getattr(resolved, key) for key in model_defaults()}


def _coerce(value: Any, default: Any, where: str) -> Any:
    if default is None or isinstance(value, type(default)):
        return value
    if isinstance(default, float) and is_int(value):
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
    # Pretraining runs recorded before the setting moved to [train] (2026-12-07) name it there.
    legacy = values.get("pretrain", {})
    if isinstance(legacy, dict) and "save_every_steps" in legacy:
        every = legacy.pop("save_every_steps")
        values.setdefault("train", {}).setdefault("save_every_steps", every)
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
