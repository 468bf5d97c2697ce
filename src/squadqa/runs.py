"""Experiment records: one row per run directory, read straight from the files `train` writes.

`squadqa train` writes `runs/<name>/{config.toml, status.json, metrics.jsonl, ...}`. This module
turns a folder of those into a table to compare runs. It never trusts a single file: a run killed
with SIGKILL leaves `status.json` saying "running", a crash can leave a stale status behind newer
metrics, and an interrupted write leaves a file half written. So the status is checked against
the process table and the metrics, and a run whose files cannot be read is still listed, as
'broken' with the reason, rather than silently left out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from squadqa import rundir
from squadqa.settings import is_int, is_number

__all__ = [
    "SORT_KEYS",
    "STATUSES",
    "RunRow",
    "collect_runs",
    "format_runs",
    "humanize_count",
    "humanize_duration",
    "is_run_dir",
    "md_cell",
    "read_metrics",
    "read_run",
    "runs_command",
    "sort_runs",
]

# What `train` writes, plus the two this module infers: "running?" (another host's run that
# cannot be checked from here) and "broken" (files that cannot be read).
STATUSES = ("running", "finished", "stopped_early", "stopped", "crashed", "running?", "broken")
_WRITTEN_STATUSES = frozenset({"running", "finished", "stopped_early", "stopped", "crashed"})
# Unfinished: `squadqa runs` shows how far they got; `squadqa continue` resumes those whose
# process is gone (RESUMABLE), never a live one.
UNFINISHED = ("stopped", "crashed", "running", "running?")
RESUMABLE = ("stopped", "crashed")
_RUN_FILES = (rundir.CONFIG, rundir.STATUS)


@dataclass
class RunRow:
    """One run as the table shows it; `None` means the files do not say."""

    name: str
    init: str | None
    backend: str | None
    parameters: int | None
    train_examples: int | None
    epochs_run: int | None
    epochs_planned: int | None
    wall_time_s: float | None
    tokens_per_s: float | None  # last epoch's (steady state: the first includes compilation)
    best_dev_em: float | None
    best_dev_f1: float | None
    best_epoch: int | None
    status: str
    path: Path
    note: str = ""  # why broken / the crash's error / what was inferred
    progress: str = ""  # an unfinished run's last checkpoint, "N/M steps"
    started: str | None = None
    host: str | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- reading


def is_run_dir(path: Path) -> bool:
    """A run directory is one that `train` has started writing: it has a config or a status."""
    return path.is_dir() and any((path / f).is_file() for f in _RUN_FILES)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse `metrics.jsonl`: the readable epoch records and a list of problems (line by line).

    A bad line does not hide the good ones: curves and best epochs come from what is readable.
    """
    if not path.is_file():
        return [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return [], [f"{path.name}: cannot read: {err}"]
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{path.name} line {lineno}: invalid JSON: {err.msg}")
            continue
        if not isinstance(record, dict) or not is_int(record.get("epoch")):
            problems.append(f"{path.name} line {lineno}: not an epoch record")
            continue
        records.append(record)
    records.sort(key=lambda r: r["epoch"])
    return records, problems


def read_run(path: str | os.PathLike[str]) -> RunRow:
    """Read one run directory into a row. Never raises for bad file contents."""
    path = Path(path)
    problems: list[str] = []  # make the run 'broken'
    notes: list[str] = []  # informational

    config: dict[str, Any] = {}
    config_path = path / rundir.CONFIG
    if config_path.is_file():
        try:
            config = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            problems.append(f"config.toml: {_first_line(err)}")

    status: dict[str, Any] = {}
    status_path = path / rundir.STATUS
    if not status_path.is_file():
        problems.append("status.json missing")
    else:
        try:
            loaded = json.loads(status_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"status.json: cannot read: {_first_line(err)}")
        except json.JSONDecodeError as err:
            problems.append(f"status.json: invalid JSON: {err}")
        else:
            if isinstance(loaded, dict):
                status = loaded
            else:
                problems.append(f"status.json: a {type(loaded).__name__}, not an object")

    metrics, metric_problems = read_metrics(path / rundir.METRICS)

    written = status.get("status")
    if status and written not in _WRITTEN_STATUSES:
        problems.append(f"status.json: unknown status {written!r}")

    # A crash or kill can leave metrics newer than the status; the metrics then win.
    status_epochs = _int_or_none(status.get("epochs_run"))
    last_epoch = int(metrics[-1]["epoch"]) if metrics else 0
    stale = bool(metrics) and (status_epochs is None or last_epoch > status_epochs)
    if stale and status_epochs is not None:
        notes.append(
            f"status.json stale (epochs_run {status_epochs}, metrics.jsonl has {last_epoch})"
        )

    best_epoch = _int_or_none(status.get("best_epoch"))
    best_em = _float_or_none(status.get("best_dev_exact_match"))
    best_f1 = _float_or_none(status.get("best_dev_f1"))
    if metrics and (stale or best_epoch is None or best_f1 is None):
        best = _best_record(metrics)
        if best is not None:
            best_epoch = int(best["epoch"])
            best_em = _float_or_none(best.get("dev_exact_match"))
            best_f1 = _float_or_none(best.get("dev_f1"))

    epochs_run = status_epochs
    if metrics:
        epochs_run = max(status_epochs or 0, last_epoch)

    wall = _float_or_none(status.get("wall_time_s"))
    if metrics:
        last_wall = _float_or_none(metrics[-1].get("wall_time_s"))
        if last_wall is not None and (wall is None or last_wall > wall):
            wall = last_wall
    tokens_per_s = _float_or_none(metrics[-1].get("tokens_per_s")) if metrics else None

    train_cfg = config.get("train") if isinstance(config.get("train"), dict) else {}
    init = status.get("init") or train_cfg.get("init")
    if isinstance(init, str) and init.startswith("pretrained:"):
        init = "pretrained"
    epochs_planned = _int_or_none(status.get("epochs_planned"))
    if epochs_planned is None:
        epochs_planned = _int_or_none(train_cfg.get("epochs"))

    # Status: what the file says, checked against reality.
    if problems:
        shown = "broken"
    elif written == "running":
        shown = _check_running(status, notes)
    else:
        shown = str(written)
    if shown == "crashed" and isinstance(status.get("error"), str) and status["error"]:
        notes.insert(0, _error_summary(status["error"]))
    # A half-written last line is what an interrupted run leaves; anything else is damage.
    if metric_problems:
        interrupted = shown in ("crashed", "running", "running?") and len(metric_problems) == 1
        if interrupted and _is_last_line_problem(path / rundir.METRICS):
            notes.append(metric_problems[0] + ", the write was interrupted")
        else:
            shown = "broken"
            problems.extend(metric_problems)

    progress = ""
    if shown in UNFINISHED:
        progress = _progress(path, status, epochs_planned)
        if progress:
            notes.insert(0, f"checkpoint at {progress}")
    return RunRow(
        name=path.name,
        init=init if isinstance(init, str) else None,
        backend=status.get("backend") if isinstance(status.get("backend"), str) else None,
        parameters=_int_or_none(status.get("parameters")),
        train_examples=_int_or_none(status.get("train_examples")),
        epochs_run=epochs_run,
        epochs_planned=epochs_planned,
        wall_time_s=wall,
        tokens_per_s=tokens_per_s,
        best_dev_em=best_em,
        best_dev_f1=best_f1,
        best_epoch=best_epoch,
        status=shown,
        path=path,
        note="; ".join(problems + notes),
        progress=progress,
        started=status.get("started") if isinstance(status.get("started"), str) else None,
        host=status.get("host") if isinstance(status.get("host"), str) else None,
        config=config,
    )


def _progress(path: Path, status: dict[str, Any], epochs_planned: int | None) -> str:
    """ "N/M steps" of the last checkpoint (`checkpoints/state.json`), "" where unknown."""
    per_epoch = _int_or_none(status.get("steps_per_epoch"))
    try:
        state = rundir.read_json(path / rundir.CHECKPOINTS / rundir.STATE)
        done = int(state["epoch"]) * (per_epoch or 0) + int(state.get("step", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if not per_epoch or not epochs_planned:
        return ""
    return f"{done}/{per_epoch * epochs_planned} steps"


def collect_runs(runs_dir: str | os.PathLike[str]) -> list[RunRow]:
    """Every run under `runs_dir` (sorted by name); `runs_dir` may itself be one run."""
    root = Path(runs_dir)
    if is_run_dir(root):
        return [read_run(root)]
    if not root.is_dir():
        return []
    return [read_run(p) for p in sorted(root.iterdir(), key=lambda p: p.name) if is_run_dir(p)]


def _best_record(metrics: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch with the highest dev F1 (the earliest on ties), as training selects it."""
    scored = [r for r in metrics if math.isfinite(_float_or_none(r.get("dev_f1")) or math.nan)]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["dev_f1"], -r["epoch"]))


def _is_last_line_problem(path: Path) -> bool:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        json.loads(lines[-1])
    except (OSError, UnicodeDecodeError, IndexError):
        return False
    except json.JSONDecodeError:
        return True
    return False


# --------------------------------------------------------------------------- liveness


def _same_host(host: Any) -> bool:
    if not isinstance(host, str) or not host:
        return False
    here = socket.gethostname()
    return host == here or host.split(".")[0] == here.split(".")[0]


def _check_running(status: dict[str, Any], notes: list[str]) -> str:
    """'running' only while its process lives; a SIGKILLed run cannot say it crashed."""
    if not _same_host(status.get("host")):
        notes.insert(0, f"on host {status.get('host')!r}: cannot check the process from here")
        return "running?"
    pid = _int_or_none(status.get("pid"))
    if pid is None:
        notes.insert(0, "status.json has no pid to check")
        return "running?"
    # A resumed run keeps its first `started`; `process_started` is when this pid began.
    began = status.get("process_started") or status.get("started")
    if not _pid_alive(pid, _int_or_none(status.get("process_start_ticks")), _parse_time(began)):
        notes.insert(0, f"process {pid} is gone (killed?)")
        return "crashed"
    return "running"


def _pid_alive(pid: int, start_ticks: int | None, started: datetime | None) -> bool:
    """Whether `pid` is still the training process (not dead, a zombie or a reused pid).

    `start_ticks` identifies the process exactly. Status files written before it was recorded
    fall back to comparing the process's start with the run's `started`, by wall clock.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (OverflowError, OSError):
        return False
    stat = rundir.proc_stat(pid)
    if stat is None:
        return True  # no /proc (not Linux): existence is all we can know
    state, ticks = stat
    if state in ("Z", "X"):
        return False
    if start_ticks is not None and ticks is not None:
        return ticks == start_ticks
    # A process that started after the run did is another program that got the same pid.
    began = _ticks_to_time(ticks)
    if started is None or began is None:
        return True
    return began <= started.timestamp() + 2.0


def _ticks_to_time(ticks: int | None) -> float | None:
    """A start time in ticks since boot as a Unix timestamp (None when it cannot be read)."""
    if ticks is None:
        return None
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError, StopIteration):
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.astimezone()  # naive: local time


# --------------------------------------------------------------------------- formatting


def _none_last(value: float | int | None, descending: bool) -> tuple[int, float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0.0)
    return (0, -value if descending else value)


SORT_KEYS: dict[str, tuple[str, Callable[[RunRow], Any]]] = {
    "f1": ("best dev F1, highest first", lambda r: _none_last(r.best_dev_f1, True)),
    "em": ("best dev EM, highest first", lambda r: _none_last(r.best_dev_em, True)),
    "name": ("run name", lambda r: r.name),
    "time": ("wall time, shortest first", lambda r: _none_last(r.wall_time_s, False)),
    "speed": ("tokens/s, fastest first", lambda r: _none_last(r.tokens_per_s, True)),
    "params": ("parameters, fewest first", lambda r: _none_last(r.parameters, False)),
    "started": (
        "start time, newest first",
        lambda r: _none_last(t.timestamp() if (t := _parse_time(r.started)) else None, True),
    ),
    "status": ("status", lambda r: STATUSES.index(r.status) if r.status in STATUSES else 99),
}

_CSV_FIELDS = (
    "name", "status", "init", "backend", "parameters", "train_examples", "epochs_run",
    "epochs_planned", "best_epoch", "best_dev_em", "best_dev_f1", "wall_time_s", "tokens_per_s",
    "started", "host", "path", "note",
)  # fmt: skip


def sort_runs(rows: Sequence[RunRow], sort: str | None = "f1") -> list[RunRow]:
    """Rows in `sort` order (see `SORT_KEYS`; None keeps theirs); ties and unknowns by name."""
    if sort is None:
        return list(rows)
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort {sort!r}; choose from {', '.join(SORT_KEYS)}")
    key = SORT_KEYS[sort][1]
    return sorted(rows, key=lambda r: (key(r), r.name))


def humanize_count(n: int | float | None) -> str:
    """4_213_000 -> '4.2M', 850_000 -> '850k', 999 -> '999'."""
    if n is None:
        return "-"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            value = n / div
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return f"{n:.0f}" if isinstance(n, float) else str(n)


def humanize_duration(seconds: float | None) -> str:
    """42.3 -> '42s', 754 -> '12m 34s', 11_100 -> '3h 05m', 190_000 -> '2d 04h'."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h"


def _fmt_score(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def md_cell(text: str, limit: int = 0) -> str:
    """Text for one Markdown table cell: on one line, cut to `limit` characters, pipes escaped."""
    text = " ".join(text.split())
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|") or " "


def _md_row(row: RunRow) -> list[str]:
    epochs = "-"
    if row.epochs_run is not None or row.epochs_planned is not None:
        run = "-" if row.epochs_run is None else str(row.epochs_run)
        epochs = run if row.epochs_planned is None else f"{run}/{row.epochs_planned}"
    return [
        md_cell(row.name),
        row.status,
        row.init or "-",
        row.backend or "-",
        humanize_count(row.parameters),
        humanize_count(row.train_examples),
        epochs,
        "-" if row.best_epoch is None else str(row.best_epoch),
        _fmt_score(row.best_dev_em),
        _fmt_score(row.best_dev_f1),
        humanize_duration(row.wall_time_s),
        humanize_count(row.tokens_per_s),
        md_cell(row.note, 80),
    ]


_MD_HEADER = (
    "run", "status", "init", "backend", "params", "train ex.", "epochs", "best ep.",
    "dev EM", "dev F1", "wall time", "tokens/s", "note",
)  # fmt: skip
_MD_RIGHT = frozenset({4, 5, 6, 7, 8, 9, 10, 11})  # numeric columns


def format_runs(rows: Sequence[RunRow], fmt: str = "md", sort: str | None = "f1") -> str:
    """The runs as a Markdown table (humanised numbers) or CSV (raw numbers, every field)."""
    ordered = sort_runs(rows, sort)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_CSV_FIELDS)
        for row in ordered:
            values = [getattr(row, f) for f in _CSV_FIELDS]
            writer.writerow(["" if v is None else str(v) for v in values])
        return buf.getvalue()
    if fmt != "md":
        raise ValueError(f"unknown format {fmt!r}; choose md or csv")
    lines = [
        "| " + " | ".join(_MD_HEADER) + " |",
        "|" + "|".join("---:" if i in _MD_RIGHT else "---" for i in range(len(_MD_HEADER))) + "|",
    ]
    lines.extend("| " + " | ".join(_md_row(r)) + " |" for r in ordered)
    return "\n".join(lines) + "\n"


def runs_command(runs_dir: str, sort: str = "f1", fmt: str = "md") -> int:
    """`squadqa runs`: print the table; 0 on success, 2 for a bad argument or missing folder."""
    if sort not in SORT_KEYS:
        print(
            f"error: unknown --sort {sort!r}; choose from {', '.join(SORT_KEYS)}", file=sys.stderr
        )
        return 2
    if fmt not in ("md", "csv"):
        print(f"error: unknown --format {fmt!r}; choose md or csv", file=sys.stderr)
        return 2
    root = Path(runs_dir)
    if not root.is_dir():
        print(f"error: {runs_dir}: no such directory", file=sys.stderr)
        return 2
    rows = collect_runs(root)
    if not rows and fmt == "md":
        print(
            f"no runs in {runs_dir} (a run is a folder with config.toml or status.json)",
            file=sys.stderr,
        )
        return 0
    sys.stdout.write(format_runs(rows, fmt=fmt, sort=sort))
    return 0


# --------------------------------------------------------------------------- helpers


def _int_or_none(x: Any) -> int | None:
    if is_int(x):
        return int(x)
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return None


def _float_or_none(x: Any) -> float | None:
    if is_number(x):
        return float(x)
    return None


def _error_summary(text: str) -> str:
    """The exception line of a traceback (its last line), or the message itself."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
