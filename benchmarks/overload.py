"""Overload: `squadqa serve` refuses what it cannot take at once (503) instead of queueing it.

The server, started as its own process on 127.0.0.1 with `--max-queue 32`:

* `--model RUN` (e.g. `runs/quickstart` after `squadqa train --config configs/quickstart.toml`):
  `squadqa serve --model RUN --max-queue 32`, with `--batch-requests` unless `--no-batch`;
* without `--model`: the same app (`squadqa.serve.app.run`, the same admission bound) around a
  fake model that takes `--fake-ms` per request, one request at a time behind a lock as
  `QAPredictor` runs the Keras model: no training needed, and the model's time is known.

A load generator (`Connection`: asyncio streams, one kept-alive connection per request in
flight) keeps `--concurrency` (150) POSTs in flight until `--requests` (300) are answered, while
another connection reads `/healthz` every 20 ms. Printed: the count of each status, the p50 and
largest latency of each, the largest `queue_depth` seen and the one after the load. Acceptance
(the issue's): only 200s and 503s, every 503 within `--max-busy-ms` (100), some 503s when more
are in flight than `--max-queue`, the depth never above it and back to 0; else the script exits
1. Before the fix every request waited its turn (300 x 200, the last after about 50 s on a
quickstart run).

The same load first goes to a bare uvicorn app that answers every request at once (no FastAPI,
no model): the floor of the load generator, uvicorn and the machine, to read the 503 latencies
against. 150 requests arriving together are parsed one after the other by one event loop, so the
last one's wait grows with the CPU time per request; on a busy 2-core machine that floor alone
approaches 100 ms.

Run from the repository root: `PYTHONPATH=src python benchmarks/overload.py [--model RUN]
[--requests 300] [--concurrency 150] [--max-queue 32] [--fake-ms 50] [--threads N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from latency import free_port
from machine import load_average, machine_lines, stop, usable_cores, worker_env

SRC = Path(__file__).resolve().parents[1] / "src"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", metavar="RUN_DIR", help="a trained run (default: a fake model)")
    parser.add_argument("--requests", type=int, default=300, help="POSTs in all")
    parser.add_argument("--concurrency", type=int, default=150, help="POSTs in flight")
    parser.add_argument("--max-queue", type=int, default=32, help="the server's --max-queue")
    parser.add_argument("--no-batch", action="store_true", help="with --model: no --batch-requests")
    parser.add_argument("--fake-ms", type=float, default=50.0, help="the fake model's time")
    parser.add_argument("--max-busy-ms", type=float, default=100.0, help="slowest 503 accepted")
    parser.add_argument("--threads", type=int, help="the server's OMP/MKL threads")
    # The server processes this script starts for itself.
    parser.add_argument("--serve", choices=["fake", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.max_queue) < 1:
        parser.error("--requests, --concurrency and --max-queue must be at least 1")
    return args


# --------------------------------------------------------------------------- the servers


class FakeModel:
    """A `Predictor` whose model takes `seconds` per request, one request at a time."""

    name = "fake"

    def __init__(self, seconds: float) -> None:
        self.seconds, self.lock = seconds, threading.Lock()

    def answer(self, context: str, questions: list[str], top_k: int = 3) -> list[dict]:
        with self.lock:
            time.sleep(self.seconds)
        span = {"text": context[:4], "score": 1.0, "start": 0, "end": 4, "probability": 1.0}
        return [
            {
                **span,
                "question": q,
                "no_answer": False,
                "null_score": 0.0,
                "no_answer_probability": None,
                "alternatives": [span],
            }
            for q in questions
        ]


async def bare_app(scope: dict, receive: Any, send: Any) -> None:
    """The floor: answers at once, POST with 503, anything else with a zero `/healthz` depth."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b'{"queue_depth": 0}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    status = 503 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(args: argparse.Namespace) -> int:
    """The child process: the fake-model app (as `squadqa serve` runs it) or the bare one."""
    if args.serve == "bare":
        import uvicorn

        uvicorn.run(bare_app, host="127.0.0.1", port=args.port)
        return 0
    from squadqa.serve.app import run
    from squadqa.serve.limits import Limits

    run(FakeModel(args.fake_ms / 1000), port=args.port, limits=Limits(max_queue=args.max_queue))
    return 0


def server_command(args: argparse.Namespace, port: int, bare: bool = False) -> list[str]:
    """`squadqa serve` on the run, or this script serving the fake model or the bare app."""
    common = ["--port", str(port), "--max-queue", str(args.max_queue)]
    if bare or args.model is None:
        kind = "bare" if bare else "fake"
        return [sys.executable, __file__, "--serve", kind, "--fake-ms", str(args.fake_ms), *common]
    batch = [] if args.no_batch else ["--batch-requests"]
    serve = [sys.executable, "-m", "squadqa.cli", "serve", "--model", args.model, "--host"]
    return [*serve, "127.0.0.1", *common, *batch]


@contextlib.contextmanager
def server(command: list[str], port: int, threads: int | None) -> Iterator[None]:
    """The server process, from when `/healthz` answers until the block ends."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, env=worker_env(threads), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-2000:]
                    raise SystemExit(f"server exited: {output}")
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("server did not answer /healthz within 180 s")
                time.sleep(0.1)
            yield
        finally:
            stop(process)


# --------------------------------------------------------------------------- the load


class Connection:
    """One kept-alive HTTP/1.1 connection over asyncio streams: a load generator that costs
    little CPU per request. httpx costs about 2 ms per request on a 2-core CPU, so with 150
    requests in flight its own queueing, not the server, would be measured."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        status = int((await reader.readline()).split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            close |= name.lower() == "connection" and value.strip().lower() == "close"
        payload = await reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    async def queue_depth(self) -> int:
        return json.loads((await self.request("GET", "/healthz"))[1])["queue_depth"]

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def flood(port: int, body: bytes, requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` POSTs with `concurrency` in flight; each one's status and seconds, the wall
    time, and the `/healthz` queue depths read meanwhile (the last one after the load)."""
    results: list[tuple[int | str, float]] = []
    depths: list[int] = []
    todo = iter(range(requests))

    async def worker() -> None:
        connection = Connection(port)
        for _ in todo:
            started = time.perf_counter()
            try:
                status: int | str = (await connection.request("POST", "/v1/answer", body))[0]
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
                status = type(err).__name__
                connection.close()
            results.append((status, time.perf_counter() - started))
        connection.close()

    async def watch(connection: Connection) -> None:
        while True:
            depths.append(await connection.queue_depth())
            await asyncio.sleep(0.02)

    health = Connection(port)
    started = time.perf_counter()
    watcher = asyncio.create_task(watch(health))
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    depths.append(await health.queue_depth())
    health.close()
    return {"results": results, "wall": wall, "depths": depths}


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(SRC))
    if args.serve:
        return serve(args)
    from squadqa.data import load_squad, sample_path

    print("\n".join(machine_lines()))
    with contextlib.suppress(ValueError, IndexError):
        if float(load_average().split()[0]) > 0.5 * usable_cores():
            print("warning: the machine is busy (load average above half the cores): latencies")
            print("are inflated for the floor and the server alike; compare them within the run")
    example = load_squad(sample_path()).examples[0]
    body = json.dumps({"context": example.context, "question": example.question}).encode()
    name = (
        f"squadqa serve --model {args.model}" + ("" if args.no_batch else " --batch-requests")
        if args.model
        else f"fake model, {args.fake_ms:g} ms per request one at a time"
    )
    runs: dict[str, dict[str, Any]] = {}
    for label, bare in (("floor: bare uvicorn app, all 503", True), (name, False)):
        port = free_port()
        with server(server_command(args, port, bare), port, args.threads):
            runs[label] = asyncio.run(flood(port, body, args.requests, args.concurrency))
    print(
        f"\n{args.requests} requests with {args.concurrency} in flight, --max-queue "
        f"{args.max_queue}:\n"
        "| server | status | count | p50 ms | max ms | wall s | largest depth | depth after |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for label, got in runs.items():
        by_status: dict[Any, list[float]] = collections.defaultdict(list)
        for status, seconds in got["results"]:
            by_status[status].append(seconds)
        for status, seconds in sorted(by_status.items(), key=lambda item: str(item[0])):
            print(
                f"| {label} | {status} | {len(seconds)} | {ms(statistics.median(seconds))} | "
                f"{ms(max(seconds))} | {got['wall']:.1f} | {max(got['depths'])} | "
                f"{got['depths'][-1]} |"
            )
    got = runs[name]
    statuses = collections.Counter(status for status, _ in got["results"])
    busy = [seconds for status, seconds in got["results"] if status == 503]
    slowest = max(busy, default=0.0)
    print(
        f"\n{name}: {statuses[200]} x 200, {statuses[503]} x 503, slowest 503 {ms(slowest)} ms "
        f"(acceptance: only 200 and 503, every 503 within {args.max_busy_ms:g} ms)"
    )
    others = sorted(str(s) for s in statuses if s not in (200, 503))
    if others or 1000 * slowest > args.max_busy_ms:
        print(f"FAILED: {'other statuses ' + ', '.join(others) if others else 'slow 503s'}")
        return 1
    if not busy and args.concurrency > args.max_queue:
        print(f"FAILED: {args.concurrency} in flight, over --max-queue, and nothing refused")
        return 1
    if max(got["depths"]) > args.max_queue or got["depths"][-1] != 0:
        print(
            f"FAILED: /healthz queue_depth {max(got['depths'])} (largest), then {got['depths'][-1]}"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
