"""The run directory: the name of every file in it, the one atomic writer, the run record.

`squadqa train` and `squadqa pretrain` write, `squadqa runs` / `report` / `predict` / `serve`
read, all through the names below::

    runs/<name>/
      config.toml              the resolved config (what reproduces the run)
      tokenizer.json           the run's tokenizer
      status.json              status, pid, sizes, best epoch (RunRecord)
      metrics.jsonl            one line per epoch (RunRecord)
      eval.json                the best epoch's dev metrics (SQuAD 2.0: with best_f1_thresh)
      predictions.json         the best epoch's dev answers (official format)
      nbest_predictions.json   ... their n-best lists
      null_odds.json           ... their null scores (null minus best span)
      model.keras              the best weights, self-contained, for serving
      model.onnx               `squadqa export`: the same model as ONNX (fp32)
      model.int8.onnx          `squadqa export --quantize int8`: int8 dynamic quantisation
      export.json              what the export checked (largest logit difference vs Keras)
      steps.jsonl              one line per training step: its own loss, the learning rate
      encoder.weights.h5       pretrain only: the encoder `train --init run:DIR` loads
      checkpoints/{last,best}.weights.h5, checkpoints/state.json    what --resume reads
      checkpoints/epoch-N.weights.h5   train.keep_epoch_checkpoints: every epoch's weights,
                                       what `squadqa average` reads
      average.json             `squadqa average` runs only: which epochs were averaged, from where
      calibration.json         `squadqa calibrate`: temperature, ECE / Brier, reliability bins
      probes.json              `squadqa probe`: dev EM / F1 of a linear span head on each layer
      ask_fusion.json          `squadqa fit-ask`: how `ask` weighs retrieval beside the reader

Every write goes through `write_atomic` (a temporary file renamed into place), so a reader, a
crash or a resumed run never meets half a file.

`builtin:NAME` names a trained reader shipped inside the package (`squadqa/readers/NAME/`, the
same files, for asking questions with no training first); `run_path` resolves it.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
PREDICTIONS = "predictions.json"
NBEST = "nbest_predictions.json"
NULL_ODDS = "null_odds.json"
MODEL = "model.keras"
ONNX = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
EXPORT = "export.json"
STEPS = "steps.jsonl"
ENCODER = "encoder.weights.h5"
CHECKPOINTS = "checkpoints"
LAST_WEIGHTS = "last.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
STATE = "state.json"
AVERAGE = "average.json"
CALIBRATION = "calibration.json"
PROBES = "probes.json"
ASK_FUSION = "ask_fusion.json"
BUILTIN = "builtin:"
READERS = Path(__file__).parent / "readers"  # the shipped readers, one run directory each


def builtin_readers() -> list[str]:
    """The names `builtin:NAME` accepts: the run directories shipped in `squadqa/readers/`."""
    if not READERS.is_dir():
        return []
    return sorted(p.name for p in READERS.iterdir() if (p / CONFIG).is_file())


def run_path(path: str | os.PathLike[str]) -> Path:
    """A run directory from a path or from `builtin:NAME` (a reader shipped in the package)."""
    text = os.fspath(path)
    if not text.startswith(BUILTIN):
        return Path(text)
    name = text[len(BUILTIN) :]
    shipped = builtin_readers()
    if name not in shipped:
        raise FileNotFoundError(
            f"no builtin reader {name!r}; this install ships "
            + (", ".join(f"{BUILTIN}{n}" for n in shipped) or "none")
        )
    return READERS / name


def epoch_weights(epoch: int) -> str:
    """File name of epoch `epoch`'s weights (1-based, as metrics.jsonl counts) in CHECKPOINTS."""
    return f"epoch-{epoch}.weights.h5"


_writes = itertools.count()
_writer = [True]  # False on the processes other than 0 of a multi-process run


def set_writer(enabled: bool) -> None:
    """Whether this process writes run files at all (`distributed.join_processes` sets it)."""
    _writer[0] = enabled


def writes() -> bool:
    return _writer[0]


def now() -> str:
    """UTC timestamp, to the second, as status files hold it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` to a sibling temporary file, then rename it to `path` (atomic on POSIX).

    The temporary name is unique to the process and call (two runs filling one feature cache
    never clash), lies in the same folder (so the rename is atomic) and keeps `path`'s suffix
    (`.tmp-812-3-last.weights.h5`: Keras and numpy pick the format from it). A failed write
    leaves nothing behind. A process that does not write (`set_writer`) skips it.
    """
    if not writes():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{next(_writes)}-{path.name}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    """Every line of a JSON-lines file; [] when there is none yet."""
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def append_jsonl(path: Path, *lines: dict) -> None:
    if not writes():
        return
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)


def save_weights(model: Any, path: Path) -> None:
    """A Keras model's weights, atomically.

    A process that does not write still reads the weights out, into a file it throws away:
    on a multi-process run they are global arrays, and reading them is a step every process
    must take together (process 0 alone would wait for the others for ever).
    """
    if writes():
        write_atomic(path, model.save_weights)
        return
    with tempfile.TemporaryDirectory() as scratch:
        model.save_weights(Path(scratch) / Path(path).name)


def temperature(run_dir: Path, of: str = "answer") -> float | None:
    """A temperature `squadqa calibrate` fitted (`calibration.json`): of the top `answer`, or
    of `no_answer` (SQuAD 2.0 runs); None before it ran (or no such temperature)."""
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        return None
    record = read_json(path)
    if of == "no_answer":
        record = record.get("no_answer") or {}
    return float(record["temperature"]) if "temperature" in record else None


def isotonic_knots(run_dir: Path) -> dict[str, list[float]] | None:
    """The knots of the isotonic map `squadqa calibrate` fitted after the temperature (of the top
    answer: `tempered`, `calibrated`); None when it fitted none."""
    path = Path(run_dir) / CALIBRATION
    return read_json(path).get("isotonic") if path.is_file() else None


def fusion_weights(run_dir: Path) -> dict[str, float] | None:
    """The weights `squadqa fit-ask` fitted (`ask_fusion.json`): of a passage's BM25 score and
    of its dense similarity to the question, added to its spans' scores in `ask`; None before
    it ran."""
    path = Path(run_dir) / ASK_FUSION
    if not path.is_file():
        return None
    record = read_json(path)
    return {"bm25": float(record["bm25"]), "dense": float(record["dense"])}


def null_threshold(run_dir: Path) -> float | None:
    """The null-score threshold chosen on dev (SQuAD 2.0 runs; `eval.json`'s best_f1_thresh)."""
    path = Path(run_dir) / EVAL
    if not path.is_file():
        return None
    value = read_json(path).get("best_f1_thresh")
    return float(value) if value is not None else None


class RunRecord:
    """status.json and a JSON-lines log (metrics.jsonl, steps.jsonl) of one run directory.

    `squadqa.runs.read_run` is the reader of what this writes.
    """

    def __init__(self, run_dir: Path, fields: dict[str, Any], log: str = METRICS):
        self.run_dir = Path(run_dir)
        self.status: dict[str, Any] = fields
        self.log_path = self.run_dir / log

    def write_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=now())
        write_json(self.run_dir / STATUS, self.status)

    def previous_status(self) -> dict[str, Any]:
        """The status a resumed run finds on disk ({} for a new run)."""
        path = self.run_dir / STATUS
        return read_json(path) if path.is_file() else {}

    def lines(self) -> list[dict]:
        return read_jsonl(self.log_path)

    def keep(self, keep: Callable[[dict], bool]) -> None:
        """Drop log lines past the checkpoint we resume from (work that will be redone)."""
        kept = [line for line in self.lines() if keep(line)]
        write_text(self.log_path, "".join(json.dumps(line) + "\n" for line in kept))

    def append(self, *lines: dict) -> None:
        append_jsonl(self.log_path, *lines)


# --------------------------------------------------------------------------- the process


def process_status(previous: dict[str, Any]) -> dict[str, Any]:
    """The status.json fields that let `squadqa runs` tell this process from a dead or reused pid.

    `previous` is the status a resumed run left: it keeps its first `started`.
    """
    pid = os.getpid()
    return {
        "started": previous.get("started", now()),
        "process_started": now(),
        "host": socket.gethostname(),
        "pid": pid,
        "process_start_ticks": process_start_ticks(pid),
    }


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (None without /proc).

    With the pid it names one process exactly: no wall clock is compared, so a clock stepped
    or a boot time that drifted cannot make a live run look reused.
    """
    stat = proc_stat(pid)
    return None if stat is None else stat[1]


def proc_stat(pid: int) -> tuple[str, int | None] | None:
    """(state, start time in clock ticks since boot) from /proc, or None where there is no /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    state = fields[0] if fields else "?"
    try:
        return state, int(fields[19])  # field 22 of stat, counted after "pid (comm)"
    except (IndexError, ValueError):
        return state, None
