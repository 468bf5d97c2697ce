"""The report's entry points: `write_report` (report.md and its PNGs), `report_figures` (the
figures alone, for W&B) and `report_command` (`squadqa report`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from squadqa import rundir
from squadqa.report.analysis import analyse_run
from squadqa.report.figures import FIGURE_FILES, draw_figures
from squadqa.report.loading import load_runs, read_record
from squadqa.report.markdown import report_markdown

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def report_figures(run_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Figure]:
    """The report's figures by name (`loss`, `dev_metrics`, `learning_rate`; `train_steps` when a
    run has `steps.jsonl`; `error_analysis` when the first run's dev predictions and data are
    readable; `reliability` when it is calibrated), e.g. for W&B logging."""
    runs = load_runs(run_dirs)
    analysis = analyse_run(runs[0].row)[0]
    return draw_figures(runs, analysis, read_record(runs[0].row, rundir.CALIBRATION))


def write_report(
    run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write `report.md` and its PNGs into `out_dir` (default: the first run's directory).

    With several runs the curves are overlaid and the config differences listed; the error
    analysis is of the first run, and the first two are compared question by question (which
    each gets right that the other does not, F1 per slice). Returns the path of `report.md`.
    """
    runs = load_runs(run_dirs)
    out = Path(out_dir) if out_dir is not None else runs[0].row.path
    out.mkdir(parents=True, exist_ok=True)
    analysis, why = analyse_run(runs[0].row)
    calibration = read_record(runs[0].row, rundir.CALIBRATION)
    figures = draw_figures(runs, analysis, calibration)
    for key, fig in figures.items():
        fig.savefig(out / FIGURE_FILES[key])
    for key in ("train_steps", "error_analysis", "reliability"):
        stale = out / FIGURE_FILES[key]
        if key not in figures and stale.is_file():
            stale.unlink()  # from an earlier report; it would no longer match
    report = out / "report.md"
    report.write_text(report_markdown(runs, analysis, why, out, calibration), encoding="utf-8")
    return report


def report_command(run_dirs: Sequence[str], out: str | None = None) -> int:
    """`squadqa report RUN_DIR... [--out DIR]`: write the report, print its path; 2 on errors."""
    try:
        path = write_report(run_dirs, out)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0
