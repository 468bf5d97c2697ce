"""A readable record of one run, or a comparison of several: `report.md` plus PNG plots.

The report is built only from the files a run directory keeps (`metrics.jsonl`, `steps.jsonl`,
`status.json`, `predictions.json`, `eval.json`, `config.toml`, `calibration.json`) and the dev
data its config names, so it can be written for an old run, a crashed one or one still
training, on a machine without a GPU. The error analysis says *where* the model fails (question
type, answer length, context length, the worst questions), which the single EM/F1 number cannot;
the reliability diagram whether its probabilities mean what they say. Plots use matplotlib's Agg
canvas directly (no pyplot, no display, no global state), so this works headless and in
threads.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squadqa import rundir
from squadqa.data import Example, load_squad, sample_path
from squadqa.evaluation import load_predictions, question_scores
from squadqa.runs import (
    RunRow,
    format_runs,
    humanize_count,
    humanize_duration,
    is_run_dir,
    read_metrics,
    read_run,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ANSWER_LENGTH_BUCKETS",
    "CONTEXT_LENGTH_BUCKETS",
    "QUESTION_TYPES",
    "answer_length_bucket",
    "context_length_bucket",
    "error_analysis",
    "question_type",
    "report_command",
    "report_figures",
    "write_report",
]

QUESTION_TYPES = ("what", "who", "when", "where", "which", "how", "why", "other")
# "whom"/"whose" ask for a person too; "how many"/"how much" stay under "how".
_WH_WORDS = {w: w for w in QUESTION_TYPES[:-1]} | {"whom": "who", "whose": "who"}
# (label, lowest, highest) in words, both ends included.
ANSWER_LENGTH_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1", 1, 1),
    ("2", 2, 2),
    ("3", 3, 3),
    ("4-5", 4, 5),
    ("6-10", 6, 10),
    (">10", 11, math.inf),
)
CONTEXT_LENGTH_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("<100", 0, 99),
    ("100-149", 100, 149),
    ("150-199", 150, 199),
    ("200-299", 200, 299),
    (">=300", 300, math.inf),
)
_NO_ANSWER = "no answer"  # SQuAD 2.0 unanswerable questions, only listed when present
WORST_N = 20
SHOWN_N = 8  # head to head: questions shown per side
FIGURE_FILES = {
    "loss": "loss.png",
    "dev_metrics": "dev_metrics.png",
    "learning_rate": "learning_rate.png",
    "train_steps": "train_steps.png",
    "error_analysis": "error_analysis.png",
    "reliability": "reliability.png",
}
# calibration.json's calibrated probabilities: (key in the record, what it is the chance of).
_CALIBRATED = (
    (None, "top answer exactly right"),
    ("no_answer", '"no answer" right'),
)


# --------------------------------------------------------------------------- error analysis


def question_type(question: str) -> str:
    """The first wh-word of the question ('In what year...' is a 'what' question), or 'other'."""
    for word in "".join(c if c.isalpha() else " " for c in question.lower()).split():
        if word in _WH_WORDS:
            return _WH_WORDS[word]
    return "other"


def _bucket(n: int, buckets: Sequence[tuple[str, int, float]]) -> str:
    for label, low, high in buckets:
        if low <= n <= high:
            return label
    raise ValueError(f"{n} is in no bucket")


def answer_length_bucket(example: Example) -> str:
    """Bucket of the first gold answer's length in words ('no answer' for unanswerable)."""
    if not example.answers:
        return _NO_ANSWER
    return _bucket(max(1, len(example.answers[0].text.split())), ANSWER_LENGTH_BUCKETS)


def context_length_bucket(example: Example) -> str:
    """Bucket of the context's length in whitespace-separated words."""
    return _bucket(len(example.context.split()), CONTEXT_LENGTH_BUCKETS)


def _table(
    labels: Sequence[str], groups: Mapping[str, list[tuple[float, float]]]
) -> list[dict[str, Any]]:
    rows = []
    for label in labels:
        scores = groups.get(label, [])
        n = len(scores)
        rows.append(
            {
                "bucket": label,
                "count": n,
                "exact_match": 100.0 * sum(s[0] for s in scores) / n if n else None,
                "f1": 100.0 * sum(s[1] for s in scores) / n if n else None,
            }
        )
    return rows


def error_analysis(
    examples: Sequence[Example], predictions: Mapping[str, str], *, worst: int = WORST_N
) -> dict[str, Any]:
    """EM / F1 (x100) overall and by question type, answer length and context length, plus the
    `worst` lowest-scored questions (lowest F1, then EM, then id).

    Scores are the official ones per question; a question without a prediction scores 0, as in
    the official evaluation. Every bucket is listed, in a fixed order (empty ones with count 0
    and None scores), so tables of different runs line up.
    """
    by_type: dict[str, list[tuple[float, float]]] = {}
    by_answer: dict[str, list[tuple[float, float]]] = {}
    by_context: dict[str, list[tuple[float, float]]] = {}
    by_answerability: dict[str, list[tuple[float, float]]] = {}
    scored = []
    missing = 0
    for ex in examples:
        if ex.id not in predictions:
            missing += 1
        prediction = predictions.get(ex.id, "")
        em, f1 = question_scores(prediction, [a.text for a in ex.answers])
        by_type.setdefault(question_type(ex.question), []).append((em, f1))
        by_answer.setdefault(answer_length_bucket(ex), []).append((em, f1))
        by_context.setdefault(context_length_bucket(ex), []).append((em, f1))
        by_answerability.setdefault("NoAns" if ex.is_impossible else "HasAns", []).append((em, f1))
        scored.append((f1, em, ex, prediction))
    answer_labels = [b[0] for b in ANSWER_LENGTH_BUCKETS]
    if _NO_ANSWER in by_answer:
        answer_labels.append(_NO_ANSWER)
    scored.sort(key=lambda t: (t[0], t[1], t[2].id))
    ids = {ex.id for ex in examples}
    n = len(examples)
    return {
        "total": n,
        "missing_predictions": missing,
        "predictions_not_in_dataset": sum(1 for qid in predictions if qid not in ids),
        "exact_match": 100.0 * sum(t[1] for t in scored) / n if n else 0.0,
        "f1": 100.0 * sum(t[0] for t in scored) / n if n else 0.0,
        "by_question_type": _table(QUESTION_TYPES, by_type),
        "by_answer_length": _table(answer_labels, by_answer),
        "by_context_length": _table([b[0] for b in CONTEXT_LENGTH_BUCKETS], by_context),
        # SQuAD 2.0's two slices; only when the dev data has unanswerable questions.
        "by_answerability": (
            _table(["HasAns", "NoAns"], by_answerability) if "NoAns" in by_answerability else []
        ),
        "worst": [
            {
                "id": ex.id,
                "question": ex.question,
                "gold_answers": list(dict.fromkeys(a.text for a in ex.answers)),
                "prediction": prediction,
                "exact_match": 100.0 * em,
                "f1": 100.0 * f1,
                "missing": ex.id not in predictions,
            }
            for f1, em, ex, prediction in scored[:worst]
        ],
    }


def head_to_head(
    examples: Sequence[Example],
    predictions_a: Mapping[str, str],
    predictions_b: Mapping[str, str],
    *,
    shown: int = SHOWN_N,
) -> dict[str, Any]:
    """Which questions each of two runs answers exactly (official EM) and the other does not.

    `counts`: both / only_a / only_b / neither (they sum to the question count); `only_a` and
    `only_b`: up to `shown` such questions each, the largest F1 gap first (then id).
    """
    groups: dict[str, list[dict[str, Any]]] = {
        "both": [],
        "only_a": [],
        "only_b": [],
        "neither": [],
    }
    for ex in examples:
        golds = [a.text for a in ex.answers]
        a, b = predictions_a.get(ex.id, ""), predictions_b.get(ex.id, "")
        em_a, f1_a = question_scores(a, golds)
        em_b, f1_b = question_scores(b, golds)
        key = {(1, 1): "both", (1, 0): "only_a", (0, 1): "only_b", (0, 0): "neither"}[
            (int(em_a), int(em_b))
        ]
        groups[key].append(
            {
                "id": ex.id,
                "question": ex.question,
                "gold_answers": list(dict.fromkeys(golds)),
                "prediction_a": a,
                "prediction_b": b,
                "f1_a": 100.0 * f1_a,
                "f1_b": 100.0 * f1_b,
            }
        )
    groups["only_a"].sort(key=lambda q: (q["f1_b"] - q["f1_a"], q["id"]))
    groups["only_b"].sort(key=lambda q: (q["f1_a"] - q["f1_b"], q["id"]))
    return {
        "total": len(examples),
        "counts": {key: len(value) for key, value in groups.items()},
        "only_a": groups["only_a"][:shown],
        "only_b": groups["only_b"][:shown],
    }


# --------------------------------------------------------------------------- run data


@dataclass
class _Run:
    row: RunRow
    metrics: list[dict[str, Any]]
    steps: list[dict[str, Any]]  # steps.jsonl: one line per training step (newer runs)

    @property
    def name(self) -> str:
        return self.row.name


def _load_run(path: Path) -> _Run:
    return _Run(
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
    if dev == "sample":
        return sample_path(), ""
    p = Path(dev).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [Path.cwd() / p, run.path / p, run.path.parent.parent / p]
    for c in candidates:
        if c.is_file():
            return c, ""
    return None, f"dev data {dev!r} not found (looked in {', '.join(str(c) for c in candidates)})"


def _dev_predictions(run: RunRow) -> tuple[list[Example], dict[str, str], Path] | str:
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


def _analyse_run(run: RunRow) -> tuple[dict[str, Any] | None, str]:
    """Error analysis of a run's dev predictions, or None and the reason it cannot be done."""
    read = _dev_predictions(run)
    if isinstance(read, str):
        return None, read
    examples, predictions, dev = read
    analysis = error_analysis(examples, predictions)
    analysis["dev_path"] = str(dev)
    return analysis, ""


def _head_to_head(a: RunRow, b: RunRow) -> tuple[dict[str, Any] | None, str]:
    """Both runs' slices and `head_to_head`, when they were scored on the same dev questions."""
    read_a, read_b = _dev_predictions(a), _dev_predictions(b)
    for run, read in ((a, read_a), (b, read_b)):
        if isinstance(read, str):
            return None, f"{run.name}: {read}"
    examples_a, predictions_a, dev_a = read_a  # type: ignore[misc]
    examples_b, predictions_b, _ = read_b  # type: ignore[misc]
    if [e.id for e in examples_a] != [e.id for e in examples_b]:
        return None, f"{a.name} and {b.name} were scored on different dev questions"
    result = head_to_head(examples_a, predictions_a, predictions_b)
    result["analysis_a"] = error_analysis(examples_a, predictions_a)
    result["analysis_b"] = error_analysis(examples_b, predictions_b)
    result["dev_path"] = str(dev_a)
    return result, ""


def _read_calibration(run: RunRow) -> dict[str, Any] | None:
    """calibration.json (`squadqa calibrate`), None when the run has none or it is unreadable."""
    try:
        data = rundir.read_json(run.path / rundir.CALIBRATION)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_eval(run: RunRow) -> dict[str, Any] | None:
    try:
        data = json.loads((run.path / rundir.EVAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- figures


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


def _epoch_axis(ax: Axes, runs: Sequence[_Run]) -> None:
    from matplotlib.ticker import MaxNLocator

    last = max((int(r["epoch"]) for run in runs for r in run.metrics), default=1)
    ax.set_xlim(0.5, last + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)


def _title(what: str, runs: Sequence[_Run]) -> str:
    return f"{what} — {runs[0].name}" if len(runs) == 1 else f"{what} — {len(runs)} runs"


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _two_series_figure(
    runs: Sequence[_Run],
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


def _lr_figure(runs: Sequence[_Run]) -> Figure:
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


def _steps_figure(runs: Sequence[_Run]) -> Figure:
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


def _calibrations(calibration: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """(label, record) of each calibrated probability in calibration.json: the top answer's,
    and on SQuAD 2.0 runs "no answer"'s."""
    if calibration is None:
        return []
    found = [
        (label, calibration if key is None else calibration.get(key)) for key, label in _CALIBRATED
    ]
    return [(label, record) for label, record in found if isinstance(record, dict)]


def _reliability_figure(name: str, calibration: dict[str, Any]) -> Figure:
    """Reliability diagram of the held-out dev questions: per confidence bin, accuracy against
    mean confidence, before and after the temperature; on the diagonal is calibrated. Each point
    is labelled with its bin's question count."""
    panels = [(label, r) for label, r in _calibrations(calibration) if r.get("reliability")]
    fig = new_figure(5.2 * len(panels), 5.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, record) in zip(axes, panels, strict=True):
        ax.plot([0, 1], [0, 1], linestyle=":", color="0.5", label="calibrated")
        for i, when in enumerate(("before", "after")):
            bins = [b for b in record["reliability"][when] if b["count"]]
            xs = [b["confidence"] for b in bins]
            ys = [b["accuracy"] for b in bins]
            t = 1.0 if when == "before" else record["temperature"]
            ax.plot(
                xs,
                ys,
                marker="os"[i],
                linestyle="-",
                color=f"C{i}",
                label=f"{when}: T = {t:.2f}, ECE {record[f'ece_{when}']:.3f}",
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


def _figures(
    runs: Sequence[_Run], analysis: dict[str, Any] | None, calibration: dict[str, Any] | None
) -> dict[str, Figure]:
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
        figures["error_analysis"] = _error_figure(runs[0].name, analysis, _best_epoch(runs[0]))
    if calibration is not None and any(r.get("reliability") for _, r in _calibrations(calibration)):
        figures["reliability"] = _reliability_figure(runs[0].name, calibration)
    return figures


def _best_epoch(run: _Run) -> Any:
    ev = _read_eval(run.row)
    if ev is not None and ev.get("epoch") is not None:
        return ev["epoch"]
    return run.row.best_epoch


def report_figures(run_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Figure]:
    """The report's figures by name (`loss`, `dev_metrics`, `learning_rate`; `train_steps` when a
    run has `steps.jsonl`; `error_analysis` when the first run's dev predictions and data are
    readable; `reliability` when it is calibrated), e.g. for W&B logging."""
    runs = _load_runs(run_dirs)
    return _figures(runs, _analyse_run(runs[0].row)[0], _read_calibration(runs[0].row))


def _load_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> list[_Run]:
    if not run_dirs:
        raise ValueError("no run directories given")
    paths = [Path(p) for p in run_dirs]
    for p in paths:
        if not is_run_dir(p):
            raise ValueError(f"{p}: not a run directory (no config.toml or status.json)")
    return [_load_run(p) for p in paths]


# --------------------------------------------------------------------------- markdown


def _md(text: Any, limit: int = 0) -> str:
    s = " ".join(str(text).split())
    if limit and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("|", "\\|").replace("*", "\\*") or " "


def _code(text: Any) -> str:
    """Inline code in a table cell: only the pipe needs escaping there."""
    return "`" + " ".join(str(text).split()).replace("|", "\\|") + "`"


def _num(x: Any, digits: int = 2) -> str:
    if isinstance(x, int | float) and not isinstance(x, bool):
        return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
    return "-"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    return [*lines, ""]


def _config_differences(runs: Sequence[_Run]) -> list[tuple[str, list[str]]]:
    """Config keys (`section.key`) whose values differ between runs, except the run name."""

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out |= flat(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v
        return out

    flats = [flat(r.row.config) for r in runs]
    keys = sorted(set().union(*flats) - {"name"})
    return [
        (k, ["-" if k not in f else str(f[k]) for f in flats])
        for k in keys
        if len({repr(f.get(k)) for f in flats}) > 1
    ]


def _metrics_table(run: _Run) -> list[str]:
    v2 = any("dev_NoAns_f1" in r for r in run.metrics)  # SQuAD 2.0 runs: the two slices too
    rows = []
    for r in run.metrics:
        slices = [_num(r.get("dev_HasAns_f1")), _num(r.get("dev_NoAns_f1"))] if v2 else []
        rows.append(
            [
                str(r["epoch"]),
                _num(r.get("train_loss"), 4),
                _num(r.get("dev_loss"), 4),
                _num(r.get("dev_exact_match")),
                _num(r.get("dev_f1")),
                *slices,
                f"{r['lr']:.3g}" if isinstance(r.get("lr"), int | float) else "-",
                humanize_duration(r.get("wall_time_s")),
                humanize_count(r.get("tokens_per_s")),
            ]
        )
    header = (
        "epoch",
        "train loss",
        "dev loss",
        "dev EM",
        "dev F1",
        *(("HasAns F1", "NoAns F1") if v2 else ()),
        "lr",
        "wall time",
        "tokens/s",
    )
    return _md_table(header, rows, set(range(len(header))))


def _bucket_table(title: str, column: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    body = [
        [_md(r["bucket"]), str(r["count"]), _num(r["exact_match"]), _num(r["f1"])] for r in rows
    ]
    return [f"### {title}", "", *_md_table((column, "questions", "EM", "F1"), body, {1, 2, 3})]


def _error_section(run: _Run, analysis: dict[str, Any] | None, why: str) -> list[str]:
    lines = [f"## Error analysis: {_md(run.name)} (dev)", ""]
    if analysis is None:
        return [*lines, f"Not available: {_md(why)}.", ""]
    ev = _read_eval(run.row)
    epoch = _best_epoch(run)
    lines.append(
        f"Dev predictions of {'epoch ' + str(epoch) if epoch is not None else 'the best epoch'} "
        f"(`predictions.json`) against `{analysis['dev_path']}`: {analysis['total']} questions, "
        f"EM {analysis['exact_match']:.2f}, F1 {analysis['f1']:.2f} "
        "(official per-question scores, x100; a question without a prediction scores 0)."
    )
    if analysis["missing_predictions"] or analysis["predictions_not_in_dataset"]:
        lines.append(
            f"**Questions without a prediction: {analysis['missing_predictions']}; predictions "
            f"for questions not in this dev data: {analysis['predictions_not_in_dataset']}.**"
        )
    if ev is not None and isinstance(ev.get("f1"), int | float):
        same = (
            abs(ev["f1"] - analysis["f1"]) < 1e-6
            and abs(ev.get("exact_match", math.nan) - analysis["exact_match"]) < 1e-6
        )
        if not same:
            lines.append(
                f"**`eval.json` says EM {_num(ev.get('exact_match'))}, F1 {_num(ev['f1'])} on "
                f"{ev.get('total', '?')} questions: the dev data read here is not the one the "
                "run was evaluated on.**"
            )
    lines.append("")
    lines += ["![Dev error analysis](error_analysis.png)", ""]
    lines += _bucket_table("By question type", "first wh-word", analysis["by_question_type"])
    lines += _bucket_table(
        "By gold answer length", "words (first answer)", analysis["by_answer_length"]
    )
    lines += _bucket_table("By context length", "words", analysis["by_context_length"])
    if analysis["by_answerability"]:
        lines += _bucket_table(
            "SQuAD 2.0: answerable (HasAns) and unanswerable (NoAns) questions",
            "slice",
            analysis["by_answerability"],
        )
    lines += [f"### The {len(analysis['worst'])} worst-scored questions", ""]
    lines.append("Lowest F1 first, then lowest EM, then id.")
    lines.append("")
    rows = [
        [
            str(i),
            _code(w["id"]),
            _md(w["question"], 120),
            " / ".join(_md(a, 60) for a in w["gold_answers"]) or "(no answer)",
            "(no prediction)" if w["missing"] else (_md(w["prediction"], 80) or "(empty)"),
            _num(w["f1"], 1),
            _num(w["exact_match"], 0),
        ]
        for i, w in enumerate(analysis["worst"], 1)
    ]
    lines += _md_table(
        ("#", "id", "question", "gold answers", "prediction", "F1", "EM"), rows, {0, 5, 6}
    )
    return lines


def _calibration_section(run: _Run, calibration: dict[str, Any] | None) -> list[str]:
    lines = [f"## Calibration: {_md(run.name)} (dev)", ""]
    found = _calibrations(calibration)
    if not found:
        return [*lines, f"Not calibrated: `squadqa calibrate {_md(run.row.path)}` fits it.", ""]
    lines.append(
        "Temperature fitted on half the dev questions, judged on the other (held-out) half: "
        f"expected calibration error (ECE, {found[0][1].get('ece_bins', '?')} equal-width "
        "bins) and Brier score of the probability, before (T = 1) and after."
    )
    lines.append("")
    rows = [
        [
            label,
            str(r["fit_questions"]),
            str(r["held_out_questions"]),
            _num(r["temperature"], 3),
            _num(r["ece_before"], 4),
            _num(r["ece_after"], 4),
            _num(r["brier_before"], 4),
            _num(r["brier_after"], 4),
            f"{_num(r['mean_confidence_before'], 3)} -> {_num(r['mean_confidence_after'], 3)}",
            _num(r["held_out_accuracy"], 3),
        ]
        for label, r in found
    ]
    header = (
        "probability of",
        "fitted on",
        "held out",
        "T",
        "ECE before",
        "ECE after",
        "Brier before",
        "Brier after",
        "mean confidence",
        "accuracy",
    )
    lines += _md_table(header, rows, set(range(1, len(header))))
    if not any(r.get("reliability") for _, r in found):
        return [
            *lines,
            "calibration.json keeps no reliability bins (written by an older `squadqa "
            f"calibrate`): rerun `squadqa calibrate {_md(run.row.path)}` for the diagram.",
            "",
        ]
    lines += ["![Reliability diagram, held-out dev questions](reliability.png)", ""]
    for label, r in found:
        bins = zip(r["reliability"]["before"], r["reliability"]["after"], strict=True)
        body = [
            [
                f"({b['low']:.1f}, {b['high']:.1f}]",
                str(b["count"]),
                _num(b["confidence"], 3),
                _num(b["accuracy"], 3),
                str(a["count"]),
                _num(a["confidence"], 3),
                _num(a["accuracy"], 3),
            ]
            for b, a in bins
        ]
        lines += [f"### Reliability bins: {label}", ""]
        lines += _md_table(
            (
                "confidence bin",
                "before: n",
                "confidence",
                "accuracy",
                "after: n",
                "confidence",
                "accuracy",
            ),
            body,
            set(range(1, 7)),
        )
    return lines


def _head_to_head_section(a: _Run, b: _Run, result: dict[str, Any] | None, why: str) -> list[str]:
    lines = [f"## Head to head: {_md(a.name)} (A) vs {_md(b.name)} (B), dev", ""]
    if result is None:
        return [*lines, f"Not available: {_md(why)}.", ""]
    counts, n = result["counts"], result["total"]
    lines.append(
        f"{n} questions of `{result['dev_path']}`, each run's best-epoch predictions; "
        '"right" = official exact match. F1 per slice, x100; B - A > 0: B is better there.'
    )
    lines.append("")
    outcome = [
        ("both right", counts["both"]),
        ("only A right", counts["only_a"]),
        ("only B right", counts["only_b"]),
        ("both wrong", counts["neither"]),
    ]
    lines += _md_table(
        ("outcome", "questions", "share"),
        [[label, str(k), f"{100 * k / n:.1f}%" if n else "-"] for label, k in outcome],
        {1, 2},
    )
    for title, key in (
        ("question type", "by_question_type"),
        ("gold answer length (words)", "by_answer_length"),
        ("context length (words)", "by_context_length"),
        ("answerability", "by_answerability"),
    ):
        rows_a, rows_b = result["analysis_a"][key], result["analysis_b"][key]
        if not rows_a:
            continue
        body = []
        for ra, rb in zip(rows_a, rows_b, strict=True):
            gap = "-" if ra["f1"] is None else f"{rb['f1'] - ra['f1']:+.2f}"
            body.append([_md(ra["bucket"]), str(ra["count"]), _num(ra["f1"]), _num(rb["f1"]), gap])
        lines += [f"### F1 by {title}", ""]
        lines += _md_table((title, "questions", "A", "B", "B - A"), body, {1, 2, 3, 4})
    for side, label in (("only_a", "A"), ("only_b", "B")):
        shown = result[side]
        lines += [
            f"### Only {label} right: {len(shown)} of {counts[side]}, largest F1 gap first",
            "",
        ]
        if not shown:
            lines += ["None.", ""]
            continue
        rows = [
            [
                _code(q["id"]),
                _md(q["question"], 100),
                " / ".join(_md(g, 50) for g in q["gold_answers"]) or "(no answer)",
                _md(q["prediction_a"], 60) or "(empty)",
                _md(q["prediction_b"], 60) or "(empty)",
            ]
            for q in shown
        ]
        lines += _md_table(("id", "question", "gold answers", "A says", "B says"), rows, set())
    return lines


def _report_markdown(
    runs: Sequence[_Run],
    analysis: dict[str, Any] | None,
    why: str,
    out_dir: Path,
    calibration: dict[str, Any] | None = None,
) -> str:
    """The report; with two runs or more, also the first two head to head."""
    names = ", ".join(r.name for r in runs)
    lines = [f"# Training report: {_md(names)}", ""]
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    lines.append(f"Written {stamp} from:")
    lines.append("")
    for r in runs:
        lines.append(f"- {_code(_relative(r.row.path, out_dir))}")
    lines += ["", "## Runs", "", format_runs([r.row for r in runs], "md", sort=None)]
    unfinished = [r.name for r in runs if r.row.status not in ("finished", "stopped_early")]
    if unfinished:
        lines.append(
            f"Not finished: {_md(', '.join(unfinished))} — their numbers are as far as they got."
        )
        lines.append("")
    if len(runs) > 1:
        diffs = _config_differences(runs)
        lines += ["## Config differences", ""]
        if diffs:
            lines += _md_table(
                ("key", *(_md(r.name) for r in runs)),
                [[_code(k), *(_md(v) for v in vals)] for k, vals in diffs],
                set(),
            )
        else:
            lines += ["The configs are identical apart from the name.", ""]
    lines += ["## Curves", ""]
    lines += ["![Train and dev loss per epoch](loss.png)", ""]
    lines += ["![Dev exact match and F1 per epoch](dev_metrics.png)", ""]
    lines += ["![Learning rate per epoch](learning_rate.png)", ""]
    if any(run.steps for run in runs):
        lines += ["![Train loss per step](train_steps.png)", ""]
    lines += ["## Per-epoch metrics", ""]
    for r in runs:
        lines += [f"### {_md(r.name)}", ""]
        if r.metrics:
            lines += _metrics_table(r)
        else:
            lines += ["No finished epoch recorded.", ""]
    lines += _error_section(runs[0], analysis, why)
    lines += _calibration_section(runs[0], calibration)
    if len(runs) > 1:
        lines += _head_to_head_section(runs[0], runs[1], *_head_to_head(runs[0].row, runs[1].row))
    return "\n".join(lines).rstrip("\n") + "\n"


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        return str(path)


def write_report(
    run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write `report.md` and its PNGs into `out_dir` (default: the first run's directory).

    With several runs the curves are overlaid and the config differences listed; the error
    analysis is of the first run, and the first two are compared question by question (which
    each gets right that the other does not, F1 per slice). Returns the path of `report.md`.
    """
    runs = _load_runs(run_dirs)
    out = Path(out_dir) if out_dir is not None else runs[0].row.path
    out.mkdir(parents=True, exist_ok=True)
    analysis, why = _analyse_run(runs[0].row)
    calibration = _read_calibration(runs[0].row)
    figures = _figures(runs, analysis, calibration)
    for key, fig in figures.items():
        fig.savefig(out / FIGURE_FILES[key])
    for key in ("train_steps", "error_analysis", "reliability"):
        stale = out / FIGURE_FILES[key]
        if key not in figures and stale.is_file():
            stale.unlink()  # from an earlier report; it would no longer match
    report = out / "report.md"
    report.write_text(_report_markdown(runs, analysis, why, out, calibration), encoding="utf-8")
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
