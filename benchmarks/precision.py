"""Training step time of MiniLM in float32 vs bfloat16 mixed precision, side by side.

Why: `train.mixed_precision = true` is on in `configs/scratch-cpu.toml` and halves the step time
on CPUs with AVX512-BF16 or AMX, but costs time on CPUs without bf16 instructions. Run this on
your machine before choosing.

What is measured: `squadqa.pretrained.load_pretrained()` (the installed MiniLM-L6-H384),
compiled by `squadqa.train.compile_model` with `configs/minilm-finetune.toml`'s optimizer
(AdamW, clipping, schedule), `train_on_batch` on one fixed random batch (`--batch` x `--length`
tokens: 20 question tokens, the rest context), after `--warmup` untimed steps: the median of
`--steps` timed steps. Each policy runs in its own subprocess (the Keras dtype policy is
process-global) with the same torch threads; the two alternate `--rounds` times so that load
from other processes hits both alike. The ratio is float32 time / bf16 time (> 1: bf16 faster).

Run from the repository root: `PYTHONPATH=src python benchmarks/precision.py [--batch 32]
[--length 192] [--steps 4] [--rounds 2] [--threads N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_lines, usable_cores, worker_env

REPO_ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("float32", "mixed_bfloat16")


def worker(policy: str, batch: int, length: int, warmup: int, steps: int) -> dict:
    """Median seconds per training step under one dtype policy."""
    import keras
    import numpy as np

    keras.mixed_precision.set_dtype_policy(policy)
    from squadqa.config import load_config
    from squadqa.pretrained import load_pretrained
    from squadqa.train import compile_model

    model, _, _ = load_pretrained()
    compile_model(model, load_config(REPO_ROOT / "configs" / "minilm-finetune.toml"), 100)
    rng = np.random.default_rng(0)
    context = np.concatenate([np.zeros((batch, 20)), np.ones((batch, length - 20))], 1)
    context = context.astype("int32")
    x = {
        "input_ids": rng.integers(1000, 30000, (batch, length)).astype("int32"),
        "token_type_ids": context,
        "attention_mask": np.ones((batch, length), "int32"),
        "span_mask": context.copy(),
        "question_match": np.zeros((batch, length), "int32"),
    }
    y = {
        "start_logits": rng.integers(20, length - 1, (batch,)).astype("int32"),
        "end_logits": rng.integers(20, length - 1, (batch,)).astype("int32"),
    }
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {"policy": policy, "seconds_per_step": statistics.median(times)}


def run_worker(policy: str, args: argparse.Namespace) -> dict:
    env = worker_env(args.threads)
    env["KERAS_BACKEND"] = "torch"
    command = [
        sys.executable,
        __file__,
        "--worker",
        policy,
        *("--batch", str(args.batch), "--length", str(args.length)),
        *("--warmup", str(args.warmup), "--steps", str(args.steps)),
        *("--threads", str(args.threads)),
    ]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=192)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--worker", choices=POLICIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.worker, args.batch, args.length, args.warmup, args.steps)))
        return

    seconds: dict[str, list[float]] = {p: [] for p in POLICIES}
    for round_index in range(args.rounds):
        order = POLICIES if round_index % 2 == 0 else POLICIES[::-1]
        for policy in order:
            seconds[policy].append(run_worker(policy, args)["seconds_per_step"])
    tokens = args.batch * args.length
    print("# MiniLM training step: float32 vs bfloat16 mixed precision (torch backend)\n")
    for line in machine_lines(f"torch threads: {args.threads}"):
        print(f"- {line}")
    print(
        f"- command: `python benchmarks/precision.py --batch {args.batch} --length {args.length} "
        f"--steps {args.steps} --rounds {args.rounds} --threads {args.threads}`\n"
    )
    print("| policy | s/step (median of rounds) | tokens/s |")
    print("|---|---:|---:|")
    median = {p: statistics.median(v) for p, v in seconds.items()}
    for policy in POLICIES:
        print(f"| {policy} | {median[policy]:.2f} | {tokens / median[policy]:,.0f} |")
    print(f"\nfloat32 / bf16 step time: {median['float32'] / median['mixed_bfloat16']:.2f}x")


if __name__ == "__main__":
    main()
