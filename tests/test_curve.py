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
        run_curve([(config, [2, 1])], tmp_path / "curve")
    assert calls == [("tiny-a1", False), ("tiny-a2", False)]  # smallest first
    finished = (tmp_path / "curve" / "tiny-a1" / "metrics.jsonl").read_text()
    status = json.loads((tmp_path / "curve" / "tiny-a2" / "status.json").read_text())
    assert status["status"] == "crashed"
    # --no-train: says so, trains not
    run_curve([(config, [1, 2])], tmp_path / "curve", train=False)
    assert calls == [("tiny-a1", False), ("tiny-a2", False)]
    assert "tiny-a2 | crashed |" in (tmp_path / "curve" / CURVE_TABLE).read_text()

    calls.clear()

    def recording_train(point, runs_dir, resume=False):
        calls.append((point.name, resume))
        return real_train(point, runs_dir, resume=resume)

    monkeypatch.setattr(squadqa.train, "train", recording_train)
    points = run_curve([(config, [1, 2])], tmp_path / "curve")
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
    run_curve([(config, [1, 2, 3])], tmp_path / "curve", train=False)
    table = (tmp_path / "curve" / CURVE_TABLE).read_text()
    assert "| tiny | 2 |" in table and "tiny-a2 | finished |" in table
    assert "| tiny | 3 | - | - | - |" in table and "tiny-a3 | not run |" in table
    assert "| 1 | 1/1 |" in table  # best epoch, epochs run of planned
    assert not (tmp_path / "curve" / "tiny-a3").exists()
    assert (tmp_path / "curve" / CURVE_PLOT).stat().st_size > 5_000


def _record(run_dir, status: str, questions: int, f1s: list[float], planned: int) -> None:
    """A run directory's records as `train` writes them, by hand: status and per-epoch metrics."""
    run_dir.mkdir(parents=True)
    best = max(range(len(f1s)), key=f1s.__getitem__)
    (run_dir / "status.json").write_text(
        json.dumps(
            {
                "status": status,
                "train_examples": questions,
                "epochs_planned": planned,
                "epochs_run": len(f1s),
                "best_epoch": best + 1,
                "best_dev_exact_match": f1s[best] - 10,
                "best_dev_f1": f1s[best],
            }
        )
    )
    lines = [
        {"epoch": i + 1, "dev_exact_match": f1 - 10, "dev_f1": f1, "wall_time_s": 60.0}
        for i, f1 in enumerate(f1s)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_curve_gives_each_config_its_sizes_and_sets_unfinished_points_apart(tmp_path, capsys):
    """`--config PATH@N` measures a family at its own sizes; a point stopped after epoch 1 of 3
    is in the table as such and off the line in the plot (its score is not the recipe's)."""
    from squadqa.config import load_config
    from squadqa.curve import CURVE_PLOT, curve_command, curve_series, run_curve

    runs = tmp_path / "curve"
    _record(runs / "small-a1", "finished", 100, [20.0, 30.0], 2)
    _record(runs / "small-a2", "finished", 200, [35.0, 40.0], 2)
    _record(runs / "small-a4", "stopped", 400, [45.0], 3)
    _record(runs / "big-a4", "stopped", 400, [70.0, 71.5], 2)
    configs = []
    for name in ("small", "big"):
        path = tmp_path / f"{name}.toml"
        path.write_text(f'name = "{name}"\n')
        configs.append(str(path))

    assert curve_command([configs[0], configs[1] + "@4"], [1, 2, 4], str(runs), train=False) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| small") or "| big" in line]
    assert len(rows) == 4  # small at 1, 2, 4; big only at 4
    assert "| big | 4 | 400 | 61.50 | 71.50 | 2 | 2/2 |" in table
    assert "| small | 4 | 400 | 35.00 | 45.00 | 1 | 1/3 |" in table
    assert "small-a4 | stopped |" in table
    assert (runs / CURVE_PLOT).stat().st_size > 5_000

    small, big = (load_config(path) for path in configs)
    points = run_curve([(small, [1, 2, 4]), (big, [4])], runs, train=False)
    f1 = curve_series(points, "best_dev_f1")
    assert f1["small"] == ([(100, 30.0), (200, 40.0)], [(400, 45.0)])
    assert f1["big"] == ([], [(400, 71.5)])
    assert curve_series(points, "best_dev_em")["small"][0] == [(100, 20.0), (200, 30.0)]

    with pytest.raises(ValueError, match="no sizes"):
        curve_command([configs[0]], [], str(runs), train=False)
    with pytest.raises(ValueError, match=r"--config .*small\.toml@4,x: comma-separated whole"):
        curve_command([configs[0] + "@4,x"], [], str(runs), train=False)
