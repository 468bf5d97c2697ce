"""`report.md`: the runs table, config differences, the curves' pictures, per-epoch metrics, the
error analysis of the first run, its calibration and the first two runs head to head."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from squadqa import rundir
from squadqa.report.analysis import compare_runs
from squadqa.report.loading import RunData, best_epoch, calibrations, read_record
from squadqa.runs import format_runs, humanize_count, humanize_duration, md_cell


def _md(text: Any, limit: int = 0) -> str:
    """A table cell (`md_cell`) with `*` escaped too: questions and answers may hold one."""
    return md_cell(str(text), limit).replace("*", "\\*")


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


def _config_differences(runs: Sequence[RunData]) -> list[tuple[str, list[str]]]:
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


def _metrics_table(run: RunData) -> list[str]:
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


def _error_section(run: RunData, analysis: dict[str, Any] | None, why: str) -> list[str]:
    lines = [f"## Error analysis: {_md(run.name)} (dev)", ""]
    if analysis is None:
        return [*lines, f"Not available: {_md(why)}.", ""]
    ev = read_record(run.row, rundir.EVAL)
    epoch = best_epoch(run)
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


def _calibration_section(run: RunData, calibration: dict[str, Any] | None) -> list[str]:
    lines = [f"## Calibration: {_md(run.name)} (dev)", ""]
    found = calibrations(calibration)
    if not found:
        return [*lines, f"Not calibrated: `squadqa calibrate {_md(run.row.path)}` fits it.", ""]
    lines.append(
        "Temperature (then, with enough questions, an isotonic map of the tempered probability) "
        "fitted on half the dev questions, judged on the other (held-out) half: expected "
        f"calibration error (ECE, {found[0][1].get('ece_bins', '?')} equal-width bins) and "
        "Brier score of the probability, before (T = 1), at the temperature alone and after."
    )
    lines.append("")
    rows = [
        [
            label,
            str(r["fit_questions"]),
            str(r["held_out_questions"]),
            _num(r["temperature"], 3),
            "isotonic" if "isotonic" in r else "none",
            _num(r["ece_before"], 4),
            _num(r.get("ece_temperature", r["ece_after"]), 4),
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
        "map",
        "ECE before",
        "ECE at T",
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


def _head_to_head_section(
    a: RunData, b: RunData, result: dict[str, Any] | None, why: str
) -> list[str]:
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


def report_markdown(
    runs: Sequence[RunData],
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
        lines += _head_to_head_section(runs[0], runs[1], *compare_runs(runs[0].row, runs[1].row))
    return "\n".join(lines).rstrip("\n") + "\n"


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        return str(path)
