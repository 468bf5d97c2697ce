"""Nested article subsets (`data.max_train_articles`); `squadqa curve` resumes point by point."""

from __future__ import annotations

import json

import keras
import pytest
from conftest import TINY_TRAINING

from squadqa.data import load_squad, sample_path


def test_article_subsets_are_nested_and_deterministic():
    ids = [[e.id for e in load_squad(sample_path(), max_articles=n).examples] for n in (1, 2, 3)]
    assert 0 < len(ids[0]) < len(ids[1]) < len(ids[2])
    assert ids[0] == ids[1][: len(ids[0])] and ids[1] == ids[2][: len(ids[1])]  # supersets
    assert ids[1] == [e.id for e in load_squad(sample_path(), max_articles=2).examples]
    titles = {e.title for e in load_squad(sample_path(), max_articles=2).examples}
    assert len(titles) == 2
    with pytest.raises(ValueError, match="max_articles"):
        load_squad(sample_path(), max_articles=-1)


class _Killed(Exception):
    pass


class _KillAfterOneBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise _Killed("killed mid-epoch")


def test_curve_resumes_a_killed_point_without_redoing_finished_ones(tmp_path, monkeypatch):
    import squadqa.train
    from squadqa.config import load_config
    from squadqa.curve import CURVE_PLOT, CURVE_TABLE, run_curve

    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "cache"))
    config = load_config(
        None, [*TINY_TRAINING, "data.max_train_samples=0", "train.epochs=1", "name=tiny"]
    )
    real_train = squadqa.train.train
    calls: list[tuple[str, bool]] = []

    def killing_train(point, runs_dir, resume=False):
        calls.append((point.name, resume))
        extra = [_KillAfterOneBatch()] if point.name == "tiny-a2" else []
        return real_train(point, runs_dir, resume=resume, extra_callbacks=extra)

    monkeypatch.setattr(squadqa.train, "train", killing_train)
    with pytest.raises(_Killed):
        run_curve([config], [2, 1], tmp_path / "curve")
    assert calls == [("tiny-a1", False), ("tiny-a2", False)]  # smallest first
    finished = (tmp_path / "curve" / "tiny-a1" / "metrics.jsonl").read_text()
    status = json.loads((tmp_path / "curve" / "tiny-a2" / "status.json").read_text())
    assert status["status"] == "crashed"
    run_curve([config], [1, 2], tmp_path / "curve", train=False)  # --no-train: says so, trains not
    assert calls == [("tiny-a1", False), ("tiny-a2", False)]
    assert "tiny-a2 | crashed |" in (tmp_path / "curve" / CURVE_TABLE).read_text()

    calls.clear()

    def recording_train(point, runs_dir, resume=False):
        calls.append((point.name, resume))
        return real_train(point, runs_dir, resume=resume)

    monkeypatch.setattr(squadqa.train, "train", recording_train)
    points = run_curve([config], [1, 2], tmp_path / "curve")
    assert calls == [("tiny-a2", True)]  # the finished point is kept, the killed one resumed
    assert (tmp_path / "curve" / "tiny-a1" / "metrics.jsonl").read_text() == finished
    rows = {row.name: row for _, _, row in points}
    assert rows["tiny-a2"].status == "finished"
    assert rows["tiny-a1"].train_examples < rows["tiny-a2"].train_examples  # nested, growing
    assert "max_train_articles = 2" in (tmp_path / "curve" / "tiny-a2" / "config.toml").read_text()
    table = (tmp_path / "curve" / CURVE_TABLE).read_text()
    assert "| tiny | 1 |" in table and "| tiny | 2 |" in table
    assert (tmp_path / "curve" / CURVE_PLOT).stat().st_size > 5_000

    # --no-train: the table of what is on disk; nothing is trained, a missing size says so.
    def no_train(point, runs_dir, resume=False):
        raise AssertionError(f"--no-train trained {point.name}")

    monkeypatch.setattr(squadqa.train, "train", no_train)
    (tmp_path / "curve" / CURVE_PLOT).unlink()
    run_curve([config], [1, 2, 3], tmp_path / "curve", train=False)
    table = (tmp_path / "curve" / CURVE_TABLE).read_text()
    assert "| tiny | 2 |" in table and "tiny-a2 | finished |" in table
    assert "| tiny | 3 | - | - | - |" in table and "tiny-a3 | not run |" in table
    assert not (tmp_path / "curve" / "tiny-a3").exists()
    assert (tmp_path / "curve" / CURVE_PLOT).stat().st_size > 5_000
