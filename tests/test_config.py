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
        ("nosuch.key=1", "unknown key 'nosuch'"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_int_accepted_for_float():
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path: Path):
    cfg = load_config(path)
    assert cfg.name == path.stem
