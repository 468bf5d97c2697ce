"""Ship a trained run as a reader inside the package: `builtin:NAME`, scored as a user gets it.

    python scripts/ship_reader.py RUN_DIR NAME [--dev DEV] [--readers-dir DIR] [--max-mb 30]

RUN_DIR must be a finished `squadqa train` run (status.json finished or stopped early) with its
eval.json. Without model.int8.onnx it is exported first (`squadqa export --quantize int8`, which
writes model.onnx, model.int8.onnx and export.json into RUN_DIR). NAME/ (in DIR, by default the
package's `squadqa/readers/`) then gets only what serving needs: config.toml, tokenizer.json,
model.int8.onnx and, when the run has them, calibration.json (`squadqa calibrate`) and
ask_fusion.json (`squadqa fit-ask`). The reader is scored as a
user would score it: `squadqa predict` on that folder (int8, its only model file), then the
official evaluation of DEV. Its eval.json holds those numbers, the dev file, and the provenance
(source run and its own dev EM/F1, git commit, date, this command): numbers and their origin in
one record, so no reader ships with scores whose source is lost. A SQuAD 2.0 run's reader also
keeps the run's null threshold (`best_f1_thresh`), which it answers "no answer" with.
NAME/ appears only once scored: it is built in a hidden folder beside it (.NAME.partial-PID),
then renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from squadqa import rundir  # squadqa sets the default Keras backend before keras is imported
from squadqa.cli import main as squadqa_main
from squadqa.config import load_config
from squadqa.curve import DONE
from squadqa.data import data_path
from squadqa.evaluation import evaluate_files
from squadqa.runs import read_run

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEV = "../shared/data/squad-v1.1/dev.json.gz"
DEFAULT_MAX_MB = 30.0
SHIPPED = (rundir.CONFIG, rundir.TOKENIZER, rundir.ONNX_INT8)  # + FITTED where the run has them
FITTED = (rundir.CALIBRATION, rundir.ASK_FUSION)
RUNTIME = "onnx-int8"  # the one model file a reader ships, so what `--runtime auto` picks
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_run(run_dir: Path) -> dict[str, Any]:
    """The source run's eval.json, once the run is known to be finished; else ValueError /
    FileNotFoundError naming the file."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    row = read_run(run_dir)
    if row.status not in DONE:
        why = f" ({row.note})" if row.note else ""
        raise ValueError(
            f"{run_dir / rundir.STATUS}: status {row.status!r}{why}; only a finished training "
            f"run ships (status {' or '.join(DONE)})"
        )
    scores = run_dir / rundir.EVAL
    if not scores.is_file():
        raise FileNotFoundError(f"{scores} does not exist: the run has no dev scores to ship")
    try:
        record = rundir.read_json(scores)
    except ValueError as err:  # invalid JSON or UTF-8
        raise ValueError(f"{scores}: cannot read: {err}") from None
    if not isinstance(record, dict) or not {"exact_match", "f1"} <= set(record):
        raise ValueError(f"{scores}: no exact_match / f1 (not a training run's dev scores)")
    return record


def check_size(files: list[Path], max_mb: float) -> None:
    """ValueError naming the largest file when the reader would be over `max_mb` (1 MB = 1e6 B)."""
    total = sum(p.stat().st_size for p in files)
    if total > max_mb * 1e6:
        largest = max(files, key=lambda p: p.stat().st_size)
        raise ValueError(
            f"{largest} is {largest.stat().st_size / 1e6:.3f} MB: the reader would be "
            f"{total / 1e6:.3f} MB, over --max-mb {max_mb:g}"
        )


def git_commit() -> dict[str, Any]:
    """The repository's HEAD and whether tracked files differ from it (None without git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    head = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": head, "git_dirty": None if changes is None else bool(changes)}


def reproduce_commands(model: str, dev: str) -> list[str]:
    """What a user runs to get the recorded numbers (the CLI's predict and evaluate)."""
    return [
        f"squadqa predict --model {shlex.quote(model)} --data {shlex.quote(dev)} --out P.json",
        f"squadqa evaluate {shlex.quote(dev)} P.json",
    ]


def score_reader(reader: Path, dev: str) -> dict[str, Any]:
    """`squadqa predict` with the reader folder, then the official evaluation of `dev`."""
    with tempfile.TemporaryDirectory() as scratch:
        predictions = Path(scratch) / rundir.PREDICTIONS
        argv = shlex.split(reproduce_commands(str(reader), dev)[0])[1:]
        argv[argv.index("--out") + 1] = str(predictions)  # the printed command, but for P.json
        if squadqa_main(argv) != 0:
            raise ValueError(f"squadqa predict failed on {reader} (its error is above)")
        return evaluate_files(data_path(dev), predictions)


def ship(
    run_dir: Path, name: str, dev: str, readers_dir: Path, max_mb: float, command: str
) -> dict[str, Any]:
    """Write `readers_dir/name/` from `run_dir`, scored on `dev`; return its eval.json record."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"reader name {name!r}: letters, digits, '.', '_', '-', not first '.'")
    target = readers_dir / name
    if target.exists():
        raise FileExistsError(f"{target} exists: remove it to ship {name} again")
    if not data_path(dev).is_file():
        raise FileNotFoundError(f"dev file {dev} does not exist")
    source_scores = check_run(run_dir)
    if not (run_dir / rundir.ONNX_INT8).is_file():
        from squadqa.export import export_onnx

        print(f"{run_dir} has no {rundir.ONNX_INT8}: exporting it (squadqa export --quantize int8)")
        export_onnx(run_dir, quantize="int8")
    names = list(SHIPPED)
    names += [name for name in FITTED if (run_dir / name).is_file()]
    check_size([run_dir / n for n in names], max_mb)

    readers_dir.mkdir(parents=True, exist_ok=True)
    staging = readers_dir / f".{name}.partial-{os.getpid()}"  # hidden: not a builtin reader
    staging.mkdir()
    try:
        for file in names:
            shutil.copyfile(run_dir / file, staging / file)
        threshold = rundir.null_threshold(run_dir)  # SQuAD 2.0: what "no answer" is decided by
        carried = {} if threshold is None else {"best_f1_thresh": threshold}
        if carried:  # the predictor reads it from eval.json: in place before the reader answers
            rundir.write_json(staging / rundir.EVAL, carried)
        scores = score_reader(staging, dev)
        config = load_config(run_dir / rundir.CONFIG)
        record = {
            "exact_match": scores["exact_match" if "exact_match" in scores else "exact"],  # v2.0
            "f1": scores["f1"],
            "total": scores["total"],
            **carried,
            "dev": dev,
            "dev_sha256": hashlib.sha256(data_path(dev).read_bytes()).hexdigest(),
            "runtime": RUNTIME,
            "provenance": {
                "source": str(run_dir.resolve()),
                "source_exact_match": source_scores["exact_match"],
                "source_f1": source_scores["f1"],
                "source_dev": config.data.dev,
                "source_max_dev_samples": config.data.max_dev_samples,
                **git_commit(),
                "date": rundir.now(),
                "command": command,
            },
        }
        rundir.write_json(staging / rundir.EVAL, record)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished `squadqa train` run")
    parser.add_argument("name", metavar="NAME", help="the reader's name: builtin:NAME")
    parser.add_argument("--dev", default=DEFAULT_DEV, help="SQuAD dev file the reader is scored on")
    parser.add_argument(
        "--readers-dir", help=f"where NAME/ is written (default: the package's, {rundir.READERS})"
    )
    parser.add_argument(
        "--max-mb", type=float, default=DEFAULT_MAX_MB, help="refuse a reader larger than this"
    )
    args = parser.parse_args(argv)
    readers_dir = Path(args.readers_dir) if args.readers_dir else rundir.READERS
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "scripts/ship_reader.py", *given])
    try:
        record = ship(Path(args.run_dir), args.name, args.dev, readers_dir, args.max_mb, command)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"ship_reader: error: {err}", file=sys.stderr)
        return 2
    target = readers_dir / args.name
    packaged = readers_dir.resolve() == rundir.READERS.resolve()
    source = record["provenance"]
    print(
        f"shipped {target}: dev EM {record['exact_match']:.2f} / F1 {record['f1']:.2f} on "
        f"{args.dev} ({record['total']} questions, {RUNTIME}); the source run's own: "
        f"EM {source['source_exact_match']:.2f} / F1 {source['source_f1']:.2f}"
    )
    print("reproduce the recorded numbers with:")
    model = f"{rundir.BUILTIN}{args.name}" if packaged else str(target)
    for line in reproduce_commands(model, args.dev):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
