"""How close training runs to the machine: achieved FLOP/s as a fraction of a measured peak.

Why: a speed-up against Hugging Face says nothing of how much is left. This measures, on the same
machine and in one run:

1. **Peak**: the best of `--repeats` square matmuls (`torch.mm`, `--size` x `--size`, the torch
   threads the training uses) in float32 and in bfloat16: 2 n^3 FLOP per product. That is what
   this CPU's BLAS reaches on the friendliest shape, the ceiling a training step can approach.
2. **Training**: `train_on_batch` of squadqa's compiled model (AdamW, clipping, the span loss:
   `squadqa.train.compile_model` with each model's own config) on one fixed batch of `--batch`
   windows of `--length` tokens, after `--warmup` untimed steps: the median of `--steps` timed
   steps. Its FLOP are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` over one
   more step, forward and backward (matmuls and attention; elementwise work, the optimizer and
   the loss are not FLOP it counts). The model-size estimate 6 N T (+ attention) is printed
   beside it as a cross-check.
   * `minilm`: the installed MiniLM-L6-H384 (`squadqa.pretrained.load_pretrained`), recipe of
     `configs/minilm-full.toml`;
   * `scratch`: `configs/scratch-full-cpu.toml`'s encoder with its 8k vocabulary, random weights.

The fraction is achieved / peak of the training's dtype (float32 unless `--mixed-precision`).

Run from the repository root: `PYTHONPATH=src python benchmarks/flops.py [--models minilm,scratch]
[--batch 32] [--length 192] [--steps 5] [--size 2048] [--mixed-precision] [--json OUT]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from machine import machine_lines

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"minilm": "minilm-full.toml", "scratch": "scratch-full-cpu.toml"}


def matmul_peak(size: int, dtype_name: str, repeats: int) -> float:
    """Best FLOP/s of `size` x `size` matrix products in `dtype_name`."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, packing buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def build(name: str) -> tuple[Any, Any]:
    """The model and its run config."""
    from squadqa.config import load_config
    from squadqa.model import QAConfig, QATransformer

    config = load_config(REPO_ROOT / "configs" / CONFIGS[name])
    if name == "minilm":
        from squadqa.pretrained import load_pretrained

        model, _, _ = load_pretrained()
    else:
        vocab = 8000  # the preset's tokenizer.vocab_size
        model = QATransformer(QAConfig(vocab_size=vocab, **config.model))
        model.build()
    return model, config


def fixed_batch(batch: int, length: int, vocab: int) -> tuple[dict, dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    question = 20
    context = np.concatenate([np.zeros((batch, question)), np.ones((batch, length - question))], 1)
    context = context.astype("int32")
    x = {
        "input_ids": rng.integers(5, vocab, (batch, length)).astype("int32"),
        "token_type_ids": context,
        "attention_mask": np.ones((batch, length), "int32"),
        "span_mask": context.copy(),
        "question_match": np.zeros((batch, length), "int32"),
    }
    y = {
        "start_logits": rng.integers(question, length - 1, (batch,)).astype("int32"),
        "end_logits": rng.integers(question, length - 1, (batch,)).astype("int32"),
    }
    return x, y


def training(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per step, counted FLOP per step and the 6NT estimate for one model."""
    from torch.utils.flop_counter import FlopCounterMode

    from squadqa.train import compile_model

    model, config = build(name)
    compile_model(model, config, 100)
    x, y = fixed_batch(args.batch, args.length, model.config.vocab_size)
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:
        model.train_on_batch(x, y)
    counted = counter.get_total_flops()
    qa = model.config
    embeddings = sum(
        math.prod(w.shape) for w in model.weights if "embeddings" in w.path and "norm" not in w.path
    )
    non_embedding = int(model.count_params()) - embeddings
    tokens = args.batch * args.length
    attention = 12 * qa.num_layers * args.length * qa.hidden_size  # QK^T and AV, fwd + bwd
    estimate = (6 * non_embedding + attention) * tokens
    seconds = statistics.median(times)
    return {
        "model": name,
        "parameters": int(model.count_params()),
        "non_embedding_parameters": non_embedding,
        "seconds_per_step": seconds,
        "tokens_per_s": tokens / seconds,
        "counted_flop_per_step": counted,
        "estimated_flop_per_step": estimate,
        "achieved_flop_s": counted / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", default="minilm,scratch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=192)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=2048, help="matmul side for the peak")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--mixed-precision", action="store_true", help="train in mixed_bfloat16")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import keras
    import torch

    policy = "mixed_bfloat16" if args.mixed_precision else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    for line in machine_lines(f"torch {torch.__version__} ({torch.get_num_threads()} threads)"):
        print(line)
    peaks = {d: matmul_peak(args.size, d, args.repeats) for d in ("float32", "bfloat16")}
    peak = peaks["bfloat16" if args.mixed_precision else "float32"]
    print(
        f"\npeak ({args.size}^2 matmul): float32 {peaks['float32'] / 1e9:.1f} GFLOP/s, "
        f"bfloat16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s"
    )
    rows = [training(name, args) for name in args.models.split(",")]
    print(
        f"\ntraining ({policy}, batch {args.batch} x {args.length} tokens):\n"
        "| model | params | s/step | tokens/s | counted GFLOP/step | 6NT estimate | "
        "achieved GFLOP/s | of peak |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        r["fraction_of_peak"] = r["achieved_flop_s"] / peak
        print(
            f"| {r['model']} | {r['parameters'] / 1e6:.2f}M | {r['seconds_per_step']:.3f} | "
            f"{r['tokens_per_s']:.0f} | {r['counted_flop_per_step'] / 1e9:.1f} | "
            f"{r['estimated_flop_per_step'] / 1e9:.1f} | {r['achieved_flop_s'] / 1e9:.1f} | "
            f"{100 * r['fraction_of_peak']:.0f}% |"
        )
    if args.json:
        record = {"policy": policy, "peak_flop_s": peaks, "args": vars(args), "training": rows}
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
