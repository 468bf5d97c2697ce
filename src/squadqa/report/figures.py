"""The report's pictures: loss, dev scores and learning rate per epoch, train loss per step, the
error analysis bars and the reliability diagram.

Plots use matplotlib's Agg canvas directly (`new_figure`: no pyplot, no display, no global
state), so this works headless and in threads; matplotlib is imported only inside the functions
that draw (the `report` extra).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from squadqa.report.loading import RunData, best_epoch, calibrations

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURE_FILES = {
    "loss": "loss.png",
    "dev_metrics": "dev_metrics.png",
    "learning_rate": "learning_rate.png",
    "train_steps": "train_steps.png",
    "error_analysis": "error_analysis.png",
    "reliability": "reliability.png",
}


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(int(r["epoch"]))
            ys.append(float(v))
    return xs, ys


def new_figure(width: float = 8.0, height: float = 4.8) -> Figure:
    """A matplotlib figure drawn without pyplot (no GUI backend, no global state): report and
    explain pictures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _epoch_axis(ax: Axes, runs: Sequence[RunData]) -> None:
    from matplotlib.ticker import MaxNLocator

    last = max((int(r["epoch"]) for run in runs for r in run.metrics), default=1)
    ax.set_xlim(0.5, last + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)


def _title(what: str, runs: Sequence[RunData]) -> str:
    return f"{what} — {runs[0].name}" if len(runs) == 1 else f"{what} — {len(runs)} runs"


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _two_series_figure(
    runs: Sequence[RunData],
    series: Sequence[tuple[str, str, str, str]],  # (metrics key, label, linestyle, marker)
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    best_key: str | None = None,
) -> Figure:
    """Curves of every run: colour = run, line style = series. One legend entry per run name
    (and one per series) when several runs are overlaid; plain series labels for one run."""
    from matplotlib.lines import Line2D

    fig = new_figure()
    ax = fig.add_subplot()
    many = len(runs) > 1
    plotted = False
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        for key, label, style, marker in series:
            xs, ys = _series(run.metrics, key)
            if xs:
                plotted = True
                ax.plot(
                    xs,
                    ys,
                    linestyle=style,
                    marker=marker,
                    color=color,
                    label=None if many else label,
                )
        if best_key and run.row.best_epoch is not None:
            xs, ys = _series(run.metrics, best_key)
            if run.row.best_epoch in xs:
                y = ys[xs.index(run.row.best_epoch)]
                ax.plot(
                    [run.row.best_epoch],
                    [y],
                    marker="*",
                    markersize=15,
                    color=color,
                    markeredgecolor="black",
                    linestyle="none",
                    label=None if many else f"best epoch ({run.row.best_epoch})",
                )
    _epoch_axis(ax, runs)
    ax.set_ylabel(ylabel)
    ax.set_title(_title(title, runs))
    if ylim is not None:
        ax.set_ylim(*ylim)
    if not plotted:
        _no_data(ax, "no finished epoch recorded yet")
        return fig
    if many:
        run_handles = [
            Line2D([], [], color=f"C{i % 10}", linewidth=2.5, label=run.name)
            for i, run in enumerate(runs)
        ]
        style_handles = [
            Line2D([], [], color="0.3", linestyle=style, marker=marker, label=label)
            for _, label, style, marker in series
        ]
        if best_key:
            style_handles.append(
                Line2D(
                    [],
                    [],
                    color="0.3",
                    marker="*",
                    markersize=12,
                    linestyle="none",
                    markeredgecolor="black",
                    label="best epoch",
                )
            )
        # Runs below the plot (names can be long and must not squeeze it); series inside.
        _run_legend(fig, run_handles)
        ax.legend(handles=style_handles, loc="best", fontsize="small")
    else:
        ax.legend(loc="best")
    return fig


def _run_legend(fig: Figure, handles: Sequence[Any]) -> None:
    fig.legend(handles=handles, title="run", loc="outside lower center", ncols=min(len(handles), 3))


def _lr_tick(value: float, _pos: Any = None) -> str:
    """5e-4 rather than matplotlib's '5' with a '1e-4' offset in the corner, easy to miss."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _lr_figure(runs: Sequence[RunData]) -> Figure:
    """Learning rate at each epoch's end. Runs whose peaks differ tenfold or more (say scratch
    5e-4 against fine-tuning 3e-5) get a log scale, else the smaller curve lies flat on 0."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    fig = new_figure()
    ax = fig.add_subplot()
    curves = [(i, run, *_series(run.metrics, "lr")) for i, run in enumerate(runs)]
    peaks = [max(ys) for *_, ys in curves if ys and max(ys) > 0]
    log = len(peaks) > 1 and max(peaks) >= 10 * min(peaks)
    hidden = 0
    for i, _run, xs, ys in curves:
        if log:
            hidden += sum(1 for y in ys if y <= 0)
            xs, ys = [x for x, y in zip(xs, ys, strict=True) if y > 0], [y for y in ys if y > 0]
        if xs:
            ax.plot(xs, ys, marker="o", color=f"C{i % 10}")
    _epoch_axis(ax, runs)
    ax.set_title(_title("Learning rate per epoch", runs))
    if log:
        ax.set_yscale("log")
        ax.set_ylabel("learning rate at the epoch's end (log scale)")
        if hidden:
            _no_data(ax, f"{hidden} point(s) at 0 not shown on the log scale")
            ax.texts[-1].set_position((0.98, 0.02))
            ax.texts[-1].set_horizontalalignment("right")
            ax.texts[-1].set_verticalalignment("bottom")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("learning rate at the epoch's end")
        ax.yaxis.set_major_formatter(FuncFormatter(_lr_tick))
    if not any(xs for _, _, xs, _ in curves):
        _no_data(ax, "no finished epoch recorded yet")
    elif len(runs) > 1:
        handles = [
            Line2D([], [], color=f"C{i % 10}", marker="o", label=run.name)
            for i, run in enumerate(runs)
        ]
        _run_legend(fig, handles)
    return fig


def step_curve(steps: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Train loss per step as (x, y): x in epochs (epoch k ends at x = k, as on the epoch plots),
    y the trailing mean of `max(1, steps // 100)` steps (single batches are too noisy to read)."""
    per_epoch = Counter(line["epoch"] for line in steps)
    xs, seen = [], Counter()
    for line in steps:
        seen[line["epoch"]] += 1
        xs.append(line["epoch"] - 1 + seen[line["epoch"]] / per_epoch[line["epoch"]])
    losses = [float(line["loss"]) for line in steps]
    window = max(1, len(steps) // 100)
    sums = [0.0, *itertools.accumulate(losses)]
    ys = [(sums[i + 1] - sums[i + 1 - window]) / window for i in range(window - 1, len(losses))]
    return xs[window - 1 :], ys


def _steps_figure(runs: Sequence[RunData]) -> Figure:
    """Where within the epochs a run's train loss moved: a spike, a stall, a gap between runs
    that the epoch means hide."""
    from matplotlib.lines import Line2D

    fig = new_figure()
    ax = fig.add_subplot()
    handles = []
    for i, run in enumerate(runs):
        xs, ys = step_curve(run.steps)
        if xs:
            ax.plot(xs, ys, color=f"C{i % 10}", linewidth=1.0)
        handles.append(Line2D([], [], color=f"C{i % 10}", label=run.name))
    _epoch_axis(ax, runs)
    ax.set_xlim(left=0)
    ax.set_title(_title("Train loss per step", runs))
    ax.set_ylabel("train loss (trailing mean of 1% of the run's steps)")
    if len(runs) > 1:
        _run_legend(fig, handles)
    return fig


def _error_figure(name: str, analysis: dict[str, Any], epoch: Any) -> Figure:
    """EM and F1 bars per bucket, with each bucket's question count under its label."""
    import numpy as np

    fig = new_figure(13.0, 4.6)
    tables = (
        ("by_question_type", "question type (first wh-word)"),
        ("by_answer_length", "gold answer length (words, first answer)"),
        ("by_context_length", "context length (words)"),
    )
    # Same width per bucket in every panel, so the value labels fit alike.
    widths = [max(len(analysis[key]), 1) for key, _ in tables]
    axes = fig.subplots(1, 3, sharey=True, width_ratios=widths)
    for ax, (key, xlabel) in zip(axes, tables, strict=True):
        rows = analysis[key]
        x = np.arange(len(rows))
        for offset, metric, label, color in ((-0.2, "exact_match", "exact match", "C0"),
                                             (0.2, "f1", "F1", "C1")):  # fmt: skip
            heights = [r[metric] if r["count"] else 0.0 for r in rows]
            bars = ax.bar(x + offset, heights, width=0.4, label=label, color=color)
            # Values on the bars: a score of 0 is otherwise indistinguishable from no bar.
            values = [f"{r[metric]:.0f}" if r["count"] else "" for r in rows]
            ax.bar_label(bars, values, fontsize=7, padding=1)
        for j, r in enumerate(rows):
            if not r["count"]:
                ax.text(j, 2, "no\nquestions", ha="center", va="bottom", fontsize=7, color="0.5")
        ax.set_xticks(x, [f"{r['bucket']}\nn={r['count']}" for r in rows], fontsize="small")
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, 100)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("dev score (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper right", ncols=2)
    at = f", epoch {epoch}" if epoch is not None else ""
    fig.suptitle(f"Dev error analysis — {name}{at} ({analysis['total']} questions)")
    return fig


def _reliability_figure(name: str, calibration: dict[str, Any]) -> Figure:
    """Reliability diagram of the held-out dev questions: per confidence bin, accuracy against
    mean confidence, before, at the temperature alone (when an isotonic map follows it) and
    after; on the diagonal is calibrated. Each point is labelled with its bin's question count."""
    panels = [(label, r) for label, r in calibrations(calibration) if r.get("reliability")]
    fig = new_figure(5.2 * len(panels), 5.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, record) in zip(axes, panels, strict=True):
        ax.plot([0, 1], [0, 1], linestyle=":", color="0.5", label="calibrated")
        stages = [w for w in ("before", "temperature", "after") if w in record["reliability"]]
        for i, when in enumerate(stages):
            bins = [b for b in record["reliability"][when] if b["count"]]
            xs = [b["confidence"] for b in bins]
            ys = [b["accuracy"] for b in bins]
            t = 1.0 if when == "before" else record["temperature"]
            then = " + isotonic" if when == "after" and "isotonic" in record else ""
            ax.plot(
                xs,
                ys,
                marker="os^"[i],
                linestyle="-",
                color=f"C{i}",
                label=f"{when}: T = {t:.2f}{then}, ECE {record[f'ece_{when}']:.3f}",
            )
            for b in bins:
                ax.annotate(
                    str(b["count"]),
                    (b["confidence"], b["accuracy"]),
                    textcoords="offset points",
                    xytext=(4, -10 if i else 4),
                    fontsize=7,
                    color=f"C{i}",
                )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("mean confidence in the bin")
        ax.set_ylabel("accuracy in the bin")
        ax.set_title(f"{label}\n{record['held_out_questions']} held-out dev questions", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle(f"Reliability — {name}")
    return fig


def draw_figures(
    runs: Sequence[RunData], analysis: dict[str, Any] | None, calibration: dict[str, Any] | None
) -> dict[str, Figure]:
    """Every figure the runs have data for, by `FIGURE_FILES` key (see `report_figures`)."""
    figures = {
        "loss": _two_series_figure(
            runs,
            [("train_loss", "train", "-", "o"), ("dev_loss", "dev", "--", "s")],
            "Loss per epoch",
            "loss (span cross-entropy)",
        ),
        "dev_metrics": _two_series_figure(
            runs,
            [("dev_f1", "dev F1", "-", "o"), ("dev_exact_match", "dev exact match", "--", "s")],
            "Dev exact match and F1 per epoch",
            "dev score (%)",
            ylim=(0, 100),
            best_key="dev_f1",
        ),
        "learning_rate": _lr_figure(runs),
    }
    if any(run.steps for run in runs):
        figures["train_steps"] = _steps_figure(runs)
    if analysis is not None:
        figures["error_analysis"] = _error_figure(runs[0].name, analysis, best_epoch(runs[0]))
    if calibration is not None and any(r.get("reliability") for _, r in calibrations(calibration)):
        figures["reliability"] = _reliability_figure(runs[0].name, calibration)
    return figures
