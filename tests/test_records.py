"""Run records from real tiny trainings: the runs table and the report read what train wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import keras
import pytest
from conftest import TINY_TRAINING as TINY

from squadqa.config import load_config
from squadqa.report import write_report
from squadqa.runs import collect_runs, format_runs
from squadqa.train import train


class CrashMidEpoch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch == 2:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as env:  # module-scoped: no `monkeypatch` fixture here
        env.setenv("SQUADQA_CACHE", str(root / "cache"))
        _train_three_runs(root)
    yield root


def _train_three_runs(root: Path) -> None:
    """A finished run, one stopped early and one that crashed mid-epoch."""
    train(load_config(None, [*TINY, "name=finished", "train.epochs=2"]), root)
    # A learning rate of 0 never improves dev F1 after epoch 1: patience 1 stops after epoch 2.
    train(
        load_config(
            None,
            [
                *TINY,
                "name=early",
                "train.epochs=4",
                "train.learning_rate=0",
                "train.early_stopping_patience=1",
            ],
        ),
        root,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            load_config(None, [*TINY, "name=crashed", "train.epochs=2"]),
            root,
            extra_callbacks=[CrashMidEpoch()],
        )


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def test_runs_table_matches_run_files(runs_dir: Path):
    rows = {row.name: row for row in collect_runs(runs_dir)}
    assert set(rows) == {"finished", "early", "crashed"}
    assert (rows["finished"].status, rows["early"].status, rows["crashed"].status) == (
        "finished",
        "stopped_early",
        "crashed",
    )
    assert "simulated crash" in rows["crashed"].note
    assert rows["crashed"].epochs_run == 0 and rows["crashed"].best_dev_f1 is None
    early = rows["early"]
    assert (early.epochs_run, early.epochs_planned) == (2, 4)
    for name in ("finished", "early"):
        row, metrics = rows[name], _metrics(runs_dir / name)
        best = max(metrics, key=lambda m: m["dev_f1"])
        assert row.best_dev_f1 == best["dev_f1"] and row.best_dev_em == best["dev_exact_match"]
        assert row.best_epoch == best["epoch"]
        assert row.tokens_per_s == metrics[-1]["tokens_per_s"]
        status = json.loads((runs_dir / name / "status.json").read_text())
        assert row.parameters == status["parameters"] and row.init == "scratch"
        assert row.backend == keras.backend.backend()
    table = format_runs(list(rows.values()), "csv", sort="name")
    assert table.splitlines()[0].startswith("name,")
    assert [line.split(",")[0] for line in table.splitlines()[1:]] == [
        "crashed",
        "early",
        "finished",
    ]


def test_report_of_a_real_run(runs_dir: Path):
    run = runs_dir / "finished"
    report = write_report([run])
    text = report.read_text()
    saved = json.loads((run / "eval.json").read_text())
    assert f"{saved['f1']:.2f}" in text
    for png in ("loss.png", "dev_metrics.png", "learning_rate.png", "error_analysis.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    overlay = write_report([run, runs_dir / "early"], runs_dir / "compare")
    assert "early" in overlay.read_text() and "finished" in overlay.read_text()
