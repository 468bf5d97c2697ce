from pathlib import Path

import pytest

from squadqa.config import dump_config, load_config, parse_override

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_overrides_parse_toml_values():
    assert parse_override("train.learning_rate=3e-4") == (["train", "learning_rate"], 3e-4)
    assert parse_override("train.mixed_precision=true") == (["train", "mixed_precision"], True)
    assert parse_override("data.train=foo.json") == (["data", "train"], "foo.json")
    with pytest.raises(ValueError, match="key=value"):
        parse_override("train.epochs")


def test_load_apply_and_dump_round_trip(tmp_path: Path):
    cfg = load_config(None, ["train.epochs=3", "model.num_layers=2", "name=x", "train.seed=4"])
    assert (cfg.train.epochs, cfg.model["num_layers"], cfg.name) == (3, 2, "x")
    assert cfg.train.learning_rate == 5e-4  # untouched default
    path = tmp_path / "c.toml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown key 'epoch'"),
        ("train.epochs=3.5", "train.epochs must be int"),
        ("model.hidden=3", "unknown key"),
        ("model.num_heads=5", "num_heads"),
        ("model.num_key_value_heads=3", "num_key_value_heads"),
        ("nosuch.key=1", "unknown key 'nosuch'"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_windows_longer_than_the_position_table_fail_at_load():
    with pytest.raises(ValueError, match=r"features.max_seq_length=600 exceeds model.max_pos"):
        load_config(None, ["features.max_seq_length=600"])  # the default table has 512 rows
    sinusoidal = ["model.position_embedding=sinusoidal", "model.max_position_embeddings=256"]
    with pytest.raises(ValueError, match="max_position_embeddings=256"):
        load_config(None, sinusoidal)  # features.max_seq_length's default is 384
    rotary = load_config(None, ["model.position_embedding=rotary", "features.max_seq_length=600"])
    assert rotary.features.max_seq_length == 600  # rotary positions have no table
    short = load_config(None, ["model.max_position_embeddings=300", "features.max_seq_length=300"])
    short.check_window_fits("pretrain.max_seq_length", 300)
    with pytest.raises(ValueError, match=r"pretrain.max_seq_length=301 exceeds"):
        short.check_window_fits("pretrain.max_seq_length", 301)


def test_int_accepted_for_float():
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path: Path):
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_every_setting_has_one_default_read_from_its_dataclass():
    """`--help-config` lists each key with the default of the dataclass that owns it."""
    import dataclasses

    from squadqa.config import describe_settings, format_settings
    from squadqa.features import FeatureConfig
    from squadqa.model import QAConfig
    from squadqa.objectives import PretrainConfig
    from squadqa.postprocess import SpanConfig

    rows = {key: (default, text) for key, default, text in describe_settings()}
    owners = {
        "features": FeatureConfig,
        "postprocess": SpanConfig,
        "model": QAConfig,
        "pretrain": PretrainConfig,
    }
    for section, cls in owners.items():
        for f in dataclasses.fields(cls):
            if f.name == "vocab_size":
                assert f"model.{f.name}" not in rows  # comes from the tokenizer
                continue
            assert rows[f"{section}.{f.name}"][0] == f.default, f"{section}.{f.name}"
    assert all(text for _, text in rows.values()), "every key has a line of help"
    defaults = load_config(None)
    assert defaults.model == {
        k[len("model.") :]: v for k, (v, _) in rows.items() if k[:6] == "model."
    }
    listing = format_settings()
    assert "features.doc_stride = 128" in listing and 'pretrain.objective = "mlm"' in listing


def test_the_cli_restates_no_config_default():
    """No `add_argument(..., default=<literal>)` for an option that is also a config key or a
    parameter of a function the CLI calls: the CLI reads those defaults from their modules."""
    import ast
    import inspect

    import squadqa.cli
    from squadqa.config import describe_settings
    from squadqa.evaluation import evaluate_files
    from squadqa.export import export_onnx
    from squadqa.inference import QAPredictor

    keys = {key.rsplit(".", 1)[-1] for key, _, _ in describe_settings()}
    for function in (evaluate_files, export_onnx, QAPredictor.answer, QAPredictor.from_run_dir):
        keys |= set(inspect.signature(function).parameters)
    tree = ast.parse(Path(squadqa.cli.__file__).read_text())
    literal_defaults = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            dest = names[0].lstrip("-").replace("-", "_") if names else ""
            for kw in node.keywords:
                if kw.arg == "default" and isinstance(kw.value, ast.Constant) and dest in keys:
                    literal_defaults.append(dest)
    assert literal_defaults == []
