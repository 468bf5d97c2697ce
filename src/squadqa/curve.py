"""`squadqa curve`: dev F1 / EM against train size, one run directory per point.

Each config (a model family: from scratch, pretrained...) is trained on the first N articles of
its train file for every N asked (`data.max_train_articles`: nested subsets, each a superset of
the last), as runs `<runs_dir>/<config name>-a<N>`. A finished point is never redone; an
interrupted one is resumed (`--resume`: from its last checkpoint), so the command can be
killed and rerun. Then `curve.md` (a table) and `curve.png` (F1 and EM vs train questions, log x,
one line per config through its finished points; a point not finished is a hollow marker at its
best epoch so far) are written to `runs_dir`, read back from the run
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
    families: Sequence[tuple[RunConfig, Sequence[int]]],
    runs_dir: str | os.PathLike[str],
    train: bool = True,
) -> list[tuple[RunConfig, int, RunRow]]:
    """Every (config, size) point, each config's sizes smallest first (read only, with
    `train=False`); then the table and the plot."""
    if not families or not all(sizes for _, sizes in families):
        raise ValueError("a curve needs at least one config and one --articles size for each")
    sizes = [n for _, family_sizes in families for n in family_sizes]
    if any(n < 1 for n in sizes):
        raise ValueError(f"--articles sizes must be at least 1, got {sizes}")
    names = [c.name for c, _ in families]
    if len(set(names)) != len(names):
        raise ValueError(f"configs need distinct names (run names come from them): {names}")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    points = [
        (c, n, run_point(c, n, runs_dir, train)) for c, ns in families for n in sorted(set(ns))
    ]
    rundir.write_text(runs_dir / CURVE_TABLE, format_curve(points))
    plot_curve(points, runs_dir / CURVE_PLOT)
    return points


def format_curve(points: Sequence[tuple[RunConfig, int, RunRow]]) -> str:
    def num(x: Any) -> str:
        return f"{x:.2f}" if isinstance(x, int | float) else "-"

    lines = [
        "| config | articles | train questions | dev EM | dev F1 | best epoch | epochs run "
        "| wall time | run | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for config, n, row in points:
        run = f"{row.epochs_run or 0}/{row.epochs_planned}" if row.epochs_planned else "-"
        lines.append(
            f"| {config.name} | {n} | {row.train_examples or '-'} | {num(row.best_dev_em)} | "
            f"{num(row.best_dev_f1)} | {row.best_epoch or '-'} | {run} | "
            f"{humanize_duration(row.wall_time_s)} | {row.name} | {row.status} |"
        )
    return "\n".join(lines) + "\n"


Series = dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]]


def curve_series(points: Sequence[tuple[RunConfig, int, RunRow]], key: str) -> Series:
    """Per config, (finished points, unfinished points) as (train questions, `key`), x ascending.

    A point stopped (or crashed, or still running) before its last epoch has a score, its best
    epoch so far, but not the one the recipe gives: the plot shows it apart, never on the line.
    """
    series: Series = {}
    for config, _, row in points:
        finished, partial = series.setdefault(config.name, ([], []))
        score = getattr(row, key)
        if row.train_examples and score is not None:
            (finished if row.status in DONE else partial).append((row.train_examples, score))
    for finished, partial in series.values():
        finished.sort()
        partial.sort()
    return series


def plot_curve(points: Sequence[tuple[RunConfig, int, RunRow]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True, layout="constrained")
    for ax, (key, label) in zip(
        axes, (("best_dev_f1", "dev F1"), ("best_dev_em", "dev EM")), strict=True
    ):
        for family, (finished, partial) in curve_series(points, key).items():
            xs, ys = zip(*finished, strict=True) if finished else ((), ())
            # An underscore keeps a family with no finished point out of the legend.
            (line,) = ax.plot(xs, ys, marker="o", label=family if finished else f"_{family}")
            if partial:
                ax.plot(
                    *zip(*partial, strict=True),
                    linestyle="none",
                    marker="o",
                    markerfacecolor="none",
                    color=line.get_color(),
                    label=f"{family} (unfinished: best epoch so far)",
                )
        ax.set_xscale("log")
        ax.set_xlabel("train questions (first N articles, nested)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("dev score vs train size")
    rundir.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def parse_sizes(text: str, where: str = "--articles") -> list[int]:
    """Sizes as the command line gives them: "9,46,110" -> [9, 46, 110]."""
    try:
        return [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise ValueError(f"{where}: comma-separated whole numbers, got {text!r}") from None


def curve_command(
    config_paths: Sequence[str],
    articles: Sequence[int],
    runs_dir: str,
    overrides: Sequence[str] = (),
    train: bool = True,
) -> int:
    """`PATH@9,46` gives that config its own sizes (a family measured at some sizes only, such as
    a recipe for the whole train set); a plain PATH takes `articles`."""
    families = []
    for spec in config_paths:
        path, at, own = spec.rpartition("@") if "@" in spec else (spec, "", "")
        sizes = parse_sizes(own, f"--config {spec}") if at else list(articles)
        if not sizes:
            raise ValueError(f"--config {spec}: no sizes; give --articles or {spec}@N,N")
        families.append((load_config(path, list(overrides)), sizes))
    points = run_curve(families, runs_dir, train)
    print(format_curve(points), end="")
    print(f"wrote {Path(runs_dir) / CURVE_TABLE} and {Path(runs_dir) / CURVE_PLOT}")
    return 0
