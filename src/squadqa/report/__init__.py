"""A readable record of one run, or a comparison of several: `report.md` plus PNG plots.

The report is built only from the files a run directory keeps (`metrics.jsonl`, `steps.jsonl`,
`status.json`, `predictions.json`, `eval.json`, `config.toml`, `calibration.json`) and the dev
data its config names, so it can be written for an old run, a crashed one or one still
training, on a machine without a GPU. The error analysis says *where* the model fails (question
type, answer length, context length, the worst questions), which the single EM/F1 number cannot;
the reliability diagram whether its probabilities mean what they say.

One module per concept, each importing only the ones below it:

- `build`: the entry points (`write_report`, `report_figures`, `report_command`);
- `markdown`: `report.md`'s text; `figures`: its pictures (matplotlib's Agg canvas, no pyplot);
- `analysis`: error analysis and head to head, from official per-question scores;
- `loading`: what a run directory holds (runs-table row, records, dev predictions and data).

The names below are the package's public face: import them from `squadqa.report`.
"""

from __future__ import annotations

from squadqa.report.analysis import (
    ANSWER_LENGTH_BUCKETS,
    CONTEXT_LENGTH_BUCKETS,
    QUESTION_TYPES,
    answer_length_bucket,
    context_length_bucket,
    error_analysis,
    head_to_head,
    question_type,
)
from squadqa.report.build import report_command, report_figures, write_report
from squadqa.report.figures import new_figure

__all__ = [
    "ANSWER_LENGTH_BUCKETS",
    "CONTEXT_LENGTH_BUCKETS",
    "QUESTION_TYPES",
    "answer_length_bucket",
    "context_length_bucket",
    "error_analysis",
    "head_to_head",
    "new_figure",
    "question_type",
    "report_command",
    "report_figures",
    "write_report",
]
