"""`squadqa curve`: dev F1 / EM against train size, one run directory per point.

Each config (a model family: from scratch, pretrained...) is trained on the first N articles of
its train file for every N asked (`data.max_train_articles`: nested subsets, each a superset of
the last), as runs `<runs_dir>/<config name>-a<N>`. A finished point is never redone; an
interrupted one is resumed (`--resume`: from its last epoch checkpoint), so the command can be
killed and rerun. Then `curve.md` (a table) and `curve.png` (F1 and EM vs train questions, log x,
one line per config, finished points only) are written to `runs_dir`, read back from the run
directories. `--no-train` writes them from what is on disk without training anything: a curve
whose points ran in several processes or on several machines, or one still running.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squadqa import rundir
from squadqa.config import RunConfig, load_config
from squadqa.runs import RunRow, humanize_duration, read_run

CURVE_TABLE = "curve.md"
CURVE_PLOT = "curve.png"
DONE = ("finished", "stopped_early")


def point_name(config: RunConfig, articles: int) -> str:
    return f"{config.name}-a{articles}"


def run_point(config: RunConfig, articles: int, runs_dir: Path, train: bool = True) -> RunRow:
    """Train (or resume, or skip when finished) one point of the curve.

    `train=False`: only read it; a point never started is a row with status "not run".
    """
    name = point_name(config, articles)
    run_dir = runs_dir / name
    row = read_run(run_dir) if (run_dir / rundir.STATUS).is_file() else None
    if row is not None and row.status in DONE:
        print(f"curve: {name} already {row.status}, kept")
        return row
    if not train:
        return row or dataclasses.replace(read_run(run_dir), status="not run", note="")
    from squadqa.train import train as train_run

    resume = (run_dir / rundir.CONFIG).is_file()
    data = dataclasses.replace(config.data, max_train_articles=articles)
    point = dataclasses.replace(config, name=name, data=data)
    print(f"curve: {'resuming' if resume else 'training'} {name}")
    train_run(point, runs_dir, resume=resume)
    return read_run(run_dir)


def run_curve(
    configs: Sequence[RunConfig],
    articles: Sequence[int],
    runs_dir: str | os.PathLike[str],
    train: bool = True,
) -> list[tuple[RunConfig, int, RunRow]]:
    """Every (config, size) point, smallest first (read only, with `train=False`); then the
    table and the plot."""
    if not configs or not articles:
        raise ValueError("a curve needs at least one config and one --articles size")
    if any(n < 1 for n in articles):
        raise ValueError(f"--articles sizes must be at least 1, got {list(articles)}")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"configs need distinct names (run names come from them): {names}")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    points = [
        (c, n, run_point(c, n, runs_dir, train)) for c in configs for n in sorted(set(articles))
    ]
    rundir.write_text(runs_dir / CURVE_TABLE, format_curve(points))
    plot_curve(points, runs_dir / CURVE_PLOT)
    return points


def format_curve(points: Sequence[tuple[RunConfig, int, RunRow]]) -> str:
    def num(x: Any) -> str:
        return f"{x:.2f}" if isinstance(x, int | float) else "-"

    lines = [
        "| config | articles | train questions | dev EM | dev F1 | best epoch | wall time | run "
        "| status |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for config, n, row in points:
        lines.append(
            f"| {config.name} | {n} | {row.train_examples or '-'} | {num(row.best_dev_em)} | "
            f"{num(row.best_dev_f1)} | {row.best_epoch or '-'} | "
            f"{humanize_duration(row.wall_time_s)} | {row.name} | {row.status} |"
        )
    return "\n".join(lines) + "\n"


def plot_curve(points: Sequence[tuple[RunConfig, int, RunRow]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True, layout="constrained")
    families = list(dict.fromkeys(c.name for c, _, _ in points))
    for ax, (key, label) in zip(
        axes, (("best_dev_f1", "dev F1"), ("best_dev_em", "dev EM")), strict=True
    ):
        for family in families:
            xy = [
                (row.train_examples, getattr(row, key))
                for c, _, row in points
                if c.name == family
                and row.status in DONE
                and row.train_examples
                and getattr(row, key) is not None
            ]
            if xy:
                xs, ys = zip(*sorted(xy), strict=True)
                ax.plot(xs, ys, marker="o", label=family)
        ax.set_xscale("log")
        ax.set_xlabel("train questions (first N articles, nested)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("dev score vs train size")
    rundir.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def curve_command(
    config_paths: Sequence[str],
    articles: Sequence[int],
    runs_dir: str,
    overrides: Sequence[str] = (),
    train: bool = True,
) -> int:
    configs = [load_config(p, list(overrides)) for p in config_paths]
    points = run_curve(configs, articles, runs_dir, train)
    print(format_curve(points), end="")
    print(f"wrote {Path(runs_dir) / CURVE_TABLE} and {Path(runs_dir) / CURVE_PLOT}")
    return 0
