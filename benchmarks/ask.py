"""Seconds per `squadqa ask` question over a collection: p50 / p90, retrieval and reading apart.

What one question costs after start-up: the question's MiniLM sentence vector (dense, hybrid),
the search (BM25 over the inverted lists, a matrix-vector product over the passage vectors,
their reciprocal-rank fusion), then the reader on the K retrieved passages in one batch
(`squadqa.retrieval.ask.ask`, the `squadqa ask` path). The goal of issue 36: p50 <= 1 s over
SQuAD dev's 40 articles with the int8 MiniLM reader on the project's 2-core CPU.

    squadqa index ../shared/data/squad-v1.1/dev.json.gz --out /tmp/dev-index
    PYTHONPATH=src python benchmarks/ask.py --model RUN --index /tmp/dev-index \
        [--runtime onnx-int8] [--retriever hybrid] [--passages 5] [--questions 50]

RUN: a MiniLM reader run directory exported with `squadqa export RUN --quantize int8` for
`--runtime onnx-int8` (`--runtime keras` times `model.keras`). The questions are the first
`--questions` of `--data` (dev by default), one at a time, after one untimed warm-up question;
each is timed twice, once for retrieval alone and once end to end, so the reading time is the
difference of two medians, not measured on its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from machine import machine_lines

REPO_ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True, help="reader run directory")
    parser.add_argument("--index", required=True, help="made by `squadqa index`")
    parser.add_argument("--runtime", default="onnx-int8", help="keras, onnx or onnx-int8")
    parser.add_argument("--retriever", default="hybrid", choices=["bm25", "dense", "hybrid"])
    parser.add_argument("--passages", type=int, default=5, help="passages read per question")
    parser.add_argument("--questions", type=int, default=50, help="questions timed")
    parser.add_argument(
        "--data",
        default=str(REPO_ROOT.parent / "shared/data/squad-v1.1/dev.json.gz"),
        help="SQuAD file the questions come from",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT / "src"))
    import squadqa

    squadqa.import_backend_only()
    from squadqa.data import load_squad
    from squadqa.inference import QAPredictor
    from squadqa.retrieval.ask import ask
    from squadqa.retrieval.index import load_index

    started = time.perf_counter()
    index = load_index(args.index)
    predictor = QAPredictor.from_run_dir(args.model, runtime=args.runtime)
    questions = [e.question for e in load_squad(args.data, max_samples=args.questions).examples]
    ask(predictor, index, questions[:1], args.passages, args.retriever)  # warm-up, loads MiniLM
    load_seconds = time.perf_counter() - started

    def retrieve(question: str) -> None:
        vector = None if args.retriever == "bm25" else index.query_vectors([question])[0]
        index.search(question, args.passages, args.retriever, vector)

    retrieval, total = [], []
    for question in questions:
        t0 = time.perf_counter()
        retrieve(question)
        t1 = time.perf_counter()
        ask(predictor, index, [question], args.passages, args.retriever)
        t2 = time.perf_counter()
        retrieval.append(t1 - t0)
        total.append(t2 - t1)

    for line in machine_lines():
        print(line)
    print(
        f"index {args.index}: {len(index)} passages of {len(index.collection.documents)} "
        f"documents; reader {args.model} ({args.runtime}); {args.retriever}, "
        f"{args.passages} passages read; {len(questions)} questions; start-up {load_seconds:.1f}s"
    )
    print("| part | p50 s | p90 s | mean s |")
    print("|---|---:|---:|---:|")
    for name, values in (("retrieval", retrieval), ("ask (end to end)", total)):
        print(
            f"| {name} | {statistics.median(values):.3f} | {percentile(values, 0.9):.3f} | "
            f"{statistics.fmean(values):.3f} |"
        )
    reading = statistics.median(total) - statistics.median(retrieval)
    print(f"reading (difference of the p50s): {reading:.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
