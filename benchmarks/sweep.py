"""Fine-tuning sweep: several `vs_hf.py --mode full` runs side by side on one machine (a GPU).

Each run is one side of `benchmarks/vs_hf.py` (squadqa's trainer or HF `Trainer`) with its own
learning rate, epochs and train size, in its own process; all start together (on a GPU each run is
bound by its Python loop, so several share the card well) and any still running at `--deadline`
seconds are stopped, keeping the epochs they finished (squadqa writes `metrics.jsonl` after every
epoch). Wall-clock rates of runs that shared a machine are not speed measurements: use
`vs_hf.py --mode short` alone for those.

Writes to `--out`: `summary.md` (one row per run: recipe, dev EM/F1 per epoch, final, status),
`summary.json` (plans, results, per-epoch metrics), `logs.txt` (each run's last lines) and the
dev `predictions.json` of the best finished squadqa run, so `squadqa evaluate` can re-score it.

    PYTHONPATH=src python benchmarks/sweep.py --device cuda --bf16 --out sweep-out
    PYTHONPATH=src python benchmarks/sweep.py --only sq-lr1e-4-ep3 --max-train-samples 40 \\
        --max-dev-samples 20 --out /tmp/sweep        # a CPU try of the same code path
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from machine import machine_lines, worker_env
from vs_hf import SQUADQA_RUN

BENCH_DIR = Path(__file__).resolve().parent
VS_HF = BENCH_DIR / "vs_hf.py"


@dataclass(frozen=True)
class Recipe:
    """One run: which side, and the hyperparameters that differ from the config."""

    name: str
    side: str  # squadqa | hf-grouped | ...
    lr: float
    epochs: int
    max_train_samples: int = 0  # first N train questions; 0 = all
    seed: int = 0
    batch_size: int = 32


# "lr": the config's recipe (lr 1e-4, 3 epochs) and its neighbours; two train sizes for the data
# curve; HF Trainer on two of the same recipes for the squadqa-vs-HF accuracy check.
# "seeds": the best "lr" recipe again with two more seeds on both sides (how far apart two runs of
# one recipe land), and batch 16 (twice the updates per epoch).
LR_GRID = (
    Recipe("sq-lr1e-4-ep3", "squadqa", 1e-4, 3),
    Recipe("sq-lr2e-4-ep3", "squadqa", 2e-4, 3),
    Recipe("sq-lr1e-4-ep5", "squadqa", 1e-4, 5),
    Recipe("sq-lr2e-4-ep5", "squadqa", 2e-4, 5),
    Recipe("sq-lr3e-4-ep5", "squadqa", 3e-4, 5),
    Recipe("sq-lr2e-4-ep5-n6000", "squadqa", 2e-4, 5, 6000),
    Recipe("sq-lr2e-4-ep5-n3000", "squadqa", 2e-4, 5, 3000),
    Recipe("hf-lr1e-4-ep3", "hf-grouped", 1e-4, 3),
    Recipe("hf-lr2e-4-ep5", "hf-grouped", 2e-4, 5),
)
SEED_GRID = (
    Recipe("sq-lr2e-4-ep5-s1", "squadqa", 2e-4, 5, seed=1),
    Recipe("hf-lr2e-4-ep5-s1", "hf-grouped", 2e-4, 5, seed=1),
    Recipe("sq-lr2e-4-ep5-s2", "squadqa", 2e-4, 5, seed=2),
    Recipe("hf-lr2e-4-ep5-s2", "hf-grouped", 2e-4, 5, seed=2),
    Recipe("sq-lr1e-4-ep3-b16", "squadqa", 1e-4, 3, batch_size=16),
    Recipe("sq-lr5e-5-ep3-b16", "squadqa", 5e-5, 3, batch_size=16),
)
GRIDS = {"lr": LR_GRID, "seeds": SEED_GRID}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="summary, logs, best predictions")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="lr", help="default: lr")
    parser.add_argument("--only", help="comma list of run names (default: the whole grid)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision, every run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (1)")
    parser.add_argument("--deadline", type=float, default=0, help="seconds; 0 = none")
    parser.add_argument("--checkpoint", type=Path, help="default: the installed MiniLM")
    parser.add_argument("--train", type=Path, help="default: vs_hf.py's (shared v1.1 train)")
    parser.add_argument("--dev", type=Path, help="default: vs_hf.py's (shared v1.1 dev)")
    parser.add_argument(
        "--max-train-samples", type=int, default=0, help="cap every run's train questions (try)"
    )
    parser.add_argument("--max-dev-samples", type=int, default=0, help="first N dev questions")
    args = parser.parse_args(argv)
    grid = GRIDS[args.grid]
    names = {r.name for r in grid}
    chosen = [n.strip() for n in args.only.split(",")] if args.only else [r.name for r in grid]
    unknown = sorted(set(chosen) - names)
    if unknown:
        parser.error(f"--only: unknown runs {unknown}; the grid has {sorted(names)}")
    args.recipes = [r for r in grid if r.name in chosen]
    return args


def train_cap(recipe: Recipe, args: argparse.Namespace) -> int:
    """The run's train questions cap (0 = all): its own, or the sweep-wide one if smaller."""
    return min((x for x in (recipe.max_train_samples, args.max_train_samples) if x), default=0)


def command(recipe: Recipe, args: argparse.Namespace, workdir: Path) -> list[str]:
    cmd = [sys.executable, str(VS_HF), "--mode", "full", "--sides", recipe.side]
    cmd += ["--lr", str(recipe.lr), "--epochs", str(recipe.epochs), "--device", args.device]
    cmd += ["--seed", str(recipe.seed), "--batch-size", str(recipe.batch_size)]
    cmd += ["--threads", str(args.threads), "--workdir", str(workdir), "--keep"]
    cmd += ["--json", str(workdir / "result.json")]
    cmd += ["--max-dev-samples", str(args.max_dev_samples)]
    if train_cap(recipe, args):
        cmd += ["--max-train-samples", str(train_cap(recipe, args))]
    if args.bf16:
        cmd.append("--bf16")
    for flag in ("checkpoint", "train", "dev"):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag}", str(value.resolve())]
    return cmd


def run_all(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """Start every run, wait for them (or the deadline), return status per run."""
    started = time.monotonic()
    procs: dict[str, tuple[subprocess.Popen, Any]] = {}
    for recipe in args.recipes:
        workdir = work / recipe.name
        workdir.mkdir(parents=True, exist_ok=True)
        log = (workdir / "log.txt").open("w")
        procs[recipe.name] = (
            subprocess.Popen(
                command(recipe, args, workdir),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=worker_env(args.threads),
                cwd=BENCH_DIR.parent,
                start_new_session=True,  # its own group: the deadline stops its workers too
            ),
            log,
        )
        print(f"started {recipe.name}", flush=True)
    status: dict[str, dict[str, Any]] = {}
    while len(status) < len(procs):
        time.sleep(2)
        elapsed = time.monotonic() - started
        for name, (proc, log) in procs.items():
            if name in status:
                continue
            code = proc.poll()
            if code is None and args.deadline and elapsed > args.deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                status[name] = {"state": "stopped at deadline", "seconds": elapsed}
            elif code is not None:
                state = "finished" if code == 0 else f"failed (exit {code})"
                status[name] = {"state": state, "seconds": elapsed}
            if name in status:
                log.close()
                print(f"{name}: {status[name]['state']} after {elapsed:.0f} s", flush=True)
    return status


def epoch_metrics(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "runs" / SQUADQA_RUN / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(args: argparse.Namespace, work: Path, status: dict[str, dict]) -> list[dict]:
    rows = []
    for recipe in args.recipes:
        workdir = work / recipe.name
        result_path = workdir / "result.json"
        results = json.loads(result_path.read_text())["results"] if result_path.is_file() else []
        rows.append(
            {
                **asdict(recipe),
                "max_train_samples": train_cap(recipe, args),
                **status[recipe.name],
                "result": results[0] if results else None,
                "epochs_done": epoch_metrics(workdir),
            }
        )
    return rows


def table(rows: list[dict], header: list[str]) -> str:
    out = [f"- {line}" for line in header]
    out += ["", "| run | side | lr | epochs | batch | seed | train questions | dev F1 per epoch |"]
    out[-1] += " EM | F1 | status |"
    out.append("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for row in rows:
        result = row["result"] or {}
        per_epoch = " / ".join(f"{m['dev_f1']:.2f}" for m in row["epochs_done"]) or "-"
        em, f1 = result.get("dev_exact_match"), result.get("dev_f1")
        questions = result.get("train_examples", row["max_train_samples"] or "all")
        out.append(
            f"| {row['name']} | {row['side']} | {row['lr']:g} | {row['epochs']} | "
            f"{row['batch_size']} | {row['seed']} | {questions} | "
            f"{per_epoch} | {'-' if em is None else f'{em:.2f}'} | "
            f"{'-' if f1 is None else f'{f1:.2f}'} | {row['state']}, {row['seconds']:.0f} s |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    status = run_all(args, work)
    rows = collect(args, work, status)
    import torch  # after the runs: the parent never touches the GPU while they train

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    header = machine_lines(f"gpu: {gpu}; device {args.device}; bf16 {args.bf16}")
    header.append(f"command: python benchmarks/sweep.py {' '.join(sys.argv[1:])}")
    text = table(rows, header)
    print(text)
    (args.out / "summary.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps({"header": header, "runs": rows}, indent=2))
    with (args.out / "logs.txt").open("w") as logs:
        for recipe in args.recipes:
            lines = (work / recipe.name / "log.txt").read_text(errors="replace").splitlines()
            logs.write(f"===== {recipe.name}\n" + "\n".join(lines[-40:]) + "\n")
    finished = [
        r for r in rows if r["side"] == "squadqa" and r["result"] and r["state"] == "finished"
    ]
    if finished:
        best = max(finished, key=lambda r: r["result"]["dev_f1"])
        predictions = work / best["name"] / "runs" / SQUADQA_RUN / "predictions.json"
        if predictions.is_file():
            shutil.copy(predictions, args.out / f"predictions-{best['name']}.json")
    return 0 if all(s["state"] == "finished" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
