"""What a report reads from a run directory: its row, epoch and step records, its dev predictions
and the dev data they answer, `eval.json` and `calibration.json`.

Nothing here raises for a file that is missing or unreadable (only for a path that is not a run
directory): the report says what it could not read instead, so it can be written for an old
run, a crashed one or one still training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squadqa import rundir
from squadqa.data import Example, data_path, load_squad
from squadqa.evaluation import load_predictions
from squadqa.runs import RunRow, is_run_dir, read_metrics, read_run

# calibration.json's calibrated probabilities: (key in the record, what it is the chance of).
_CALIBRATED = (
    (None, "top answer exactly right"),
    ("no_answer", '"no answer" right'),
)


@dataclass
class RunData:
    """One run as the report draws it: its runs-table row and its per-epoch and per-step lines."""

    row: RunRow
    metrics: list[dict[str, Any]]
    steps: list[dict[str, Any]]  # steps.jsonl: one line per training step (newer runs)

    @property
    def name(self) -> str:
        return self.row.name


def load_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> list[RunData]:
    """Every run directory named, in order; a ValueError for a path that is not one."""
    if not run_dirs:
        raise ValueError("no run directories given")
    paths = [Path(p) for p in run_dirs]
    for p in paths:
        if not is_run_dir(p):
            raise ValueError(f"{p}: not a run directory (no config.toml or status.json)")
    return [_load_run(p) for p in paths]


def _load_run(path: Path) -> RunData:
    return RunData(
        read_run(path), read_metrics(path / rundir.METRICS)[0], read_metrics(path / rundir.STEPS)[0]
    )


def _dev_path(run: RunRow) -> tuple[Path | None, str]:
    """The dev data file the run was evaluated on, or None and why it cannot be found.

    A relative path is tried against the current directory (where `train` usually ran), then the
    run directory and the folder holding `runs/`.
    """
    data = run.config.get("data")
    dev = data.get("dev") if isinstance(data, dict) else None
    if not isinstance(dev, str) or not dev:
        return None, "config.toml names no [data].dev file"
    p = data_path(dev).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [Path.cwd() / p, run.path / p, run.path.parent.parent / p]
    for c in candidates:
        if c.is_file():
            return c, ""
    return None, f"dev data {dev!r} not found (looked in {', '.join(str(c) for c in candidates)})"


def dev_predictions(run: RunRow) -> tuple[list[Example], dict[str, str], Path] | str:
    """The dev examples a run was scored on, its best epoch's predictions and the dev path; or
    the reason they cannot be read."""
    pred_path = run.path / rundir.PREDICTIONS
    if not pred_path.is_file():
        return "no predictions.json (the run has not finished an evaluated epoch)"
    try:
        predictions = load_predictions(pred_path)
    except ValueError as err:
        return str(err)
    dev, why = _dev_path(run)
    if dev is None:
        return why
    data = run.config.get("data", {})
    max_dev = data.get("max_dev_samples", 0) if isinstance(data, dict) else 0
    try:
        examples = load_squad(
            dev, max_samples=max_dev if isinstance(max_dev, int) and max_dev > 0 else None
        ).examples
    except (OSError, ValueError) as err:
        return f"cannot read dev data {dev}: {err}"
    return examples, predictions, dev


def read_record(run: RunRow, name: str) -> dict[str, Any] | None:
    """A JSON object the run keeps (`eval.json`, `calibration.json`); None when it has none or
    it is unreadable."""
    try:
        data = rundir.read_json(run.path / name)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def calibrations(calibration: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """(label, record) of each calibrated probability in calibration.json: the top answer's,
    and on SQuAD 2.0 runs "no answer"'s."""
    if calibration is None:
        return []
    found = [
        (label, calibration if key is None else calibration.get(key)) for key, label in _CALIBRATED
    ]
    return [(label, record) for label, record in found if isinstance(record, dict)]


def best_epoch(run: RunData) -> Any:
    """The epoch whose predictions the run kept: eval.json's, else the runs table's best."""
    ev = read_record(run.row, rundir.EVAL)
    if ev is not None and ev.get("epoch") is not None:
        return ev["epoch"]
    return run.row.best_epoch
