"""Weights & Biases tracking through squadqa's Keras 3 callbacks, offline (no network)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import TINY_TRAINING

from squadqa.config import load_config
from squadqa.tracking import Tracker, WandbTracker, make_tracker
from squadqa.train import train


def test_wandb_offline_run_is_recorded(tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "cache"))
    config = load_config(
        None,
        [
            *TINY_TRAINING,
            "name=tracked",
            "train.epochs=1",
            'tracking.backend="wandb"',
            "tracking.log_examples=5",
        ],
    )
    status = train(config, tmp_path)
    assert status["status"] == "finished"
    offline = list((tmp_path / "tracked" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, "wandb wrote no offline run"
    records = list(offline[0].glob("*.wandb"))
    assert records and records[0].stat().st_size > 0
    # Local records are written whatever the tracking.
    assert (tmp_path / "tracked" / "metrics.jsonl").read_text().strip()


def test_tracking_off_and_wandb_missing(tmp_path: Path, monkeypatch, capsys):
    none = load_config(None, ['tracking.backend="none"'])
    assert type(make_tracker(none, tmp_path)) is Tracker
    wanted = load_config(None, ['tracking.backend="wandb"'])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a),
    )
    tracker = make_tracker(wanted, tmp_path)
    assert type(tracker) is Tracker and not isinstance(tracker, WandbTracker)
    assert "wandb is not installed" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"tracking\.backend"):
        make_tracker(load_config(None, ['tracking.backend="mlflow"']), tmp_path)


def test_trackers_get_every_line_of_the_steps_log(tmp_path: Path, monkeypatch):
    """What a tracker is handed per step is steps.jsonl's line (each batch's own loss, tested in
    test_train); W&B gets every `log_every_steps`-th of them."""
    import json

    import squadqa.train as T

    class Recording(Tracker):
        def __init__(self):
            self.lines: list[dict] = []

        def log_step(self, line: dict) -> None:
            self.lines.append(line)

    recording = Recording()
    monkeypatch.setattr(T, "make_tracker", lambda config, run_dir: recording)
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "cache"))
    train(load_config(None, [*TINY_TRAINING, "name=steps", "train.epochs=2"]), tmp_path)
    on_disk = (tmp_path / "steps" / "steps.jsonl").read_text().splitlines()
    assert recording.lines == [json.loads(line) for line in on_disk]
    assert len(on_disk) >= 6

    logged: list[dict] = []

    class Run:
        def log(self, data: dict) -> None:
            logged.append(data)

    wandb_tracker = object.__new__(WandbTracker)  # no wandb.init: only log_step is exercised
    wandb_tracker.run, wandb_tracker.log_every_steps = Run(), 3
    for line in recording.lines:
        wandb_tracker.log_step(line)
    every_third = [line for line in recording.lines if line["step"] % 3 == 0]
    assert logged == [
        {"train/loss": line["loss"], "train/lr": line["lr"], "step": line["step"]}
        for line in every_third
    ]
