"""Request batching of `squadqa serve`: concurrent requests' windows in one model call.

`RequestBatcher` runs on `QAPredictor.logits`; `QAPredictor.batch_requests` hands it the
windows of every `answer`. It lives with the server because only a server has concurrent
requests; `answer`, `predict` and evaluation run one batch of their own at a time.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from squadqa.features import Features
from squadqa.settings import is_int, setting

__all__ = ["Batching", "RequestBatcher", "batch_requests"]


@dataclass(frozen=True)
class Batching:
    """Request batching of `squadqa serve`: concurrent requests' windows in one model call.

    How many requests may wait is not bounded here but where they arrive, by the server
    (`squadqa.serve.limits.Limits.max_queue`): most of them wait for a worker thread before they
    reach this queue, and an unbatched server needs the same bound.
    """

    max_batch_windows: int = setting(32, "most windows (of all waiting requests) in one call")
    max_wait_ms: float = setting(
        5.0, "how long a call waits for more requests while others are on their way"
    )

    def __post_init__(self) -> None:
        value = self.max_batch_windows
        if not is_int(value) or value < 1:
            raise ValueError(f"Batching.max_batch_windows={value!r} must be a positive integer")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"Batching.max_wait_ms={self.max_wait_ms!r} must be >= 0")


@dataclass
class _Windows:
    """The windows of several requests, as `predict_logits` reads them."""

    input_ids: list[np.ndarray]
    context_start: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self))


@dataclass
class _Job:
    features: Features
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    logits: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    error: BaseException | None = None


class RequestBatcher:
    """One thread runs the model; requests queue their windows and wait for their logits.

    The thread takes the oldest request, then, while other requests are on their way
    (tokenising, or queued), gathers theirs for up to `max_wait_ms` or until
    `max_batch_windows`, and runs them all through `predict_logits` (which sorts by length).
    A lone request goes straight through, as on the unbatched path. If a combined call fails,
    each request is retried alone, so only the request that breaks the model gets the error.
    """

    def __init__(self, run: Callable[[Any], tuple[list, list]], options: Batching) -> None:
        self._run, self.options = run, options
        self._queue: queue.Queue[_Job] = queue.Queue()  # bounded by the server's admission
        self._arriving = 0  # requests between `arrive()` and `logits()` returning
        self._count_lock = threading.Lock()
        self.calls = 0  # model calls made (a batch of several requests counts once)
        self.requests = 0
        threading.Thread(target=self._loop, daemon=True, name="squadqa-batcher").start()

    @property
    def queue_depth(self) -> int:
        """Requests queued here for the next model call (not those waiting for a thread)."""
        return self._queue.qsize()

    @contextmanager
    def arrive(self) -> Iterator[None]:
        """Mark a request in flight from before its tokenisation until it has its logits."""
        with self._count_lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._arriving -= 1

    def logits(self, features: Features) -> tuple[list[np.ndarray], list[np.ndarray]]:
        job = _Job(features)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.logits is not None
        return job.logits

    def _loop(self) -> None:
        while True:
            jobs = [self._queue.get()]
            windows = len(jobs[0].features)
            deadline = time.monotonic() + self.options.max_wait_ms / 1000
            while windows < self.options.max_batch_windows:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._arriving <= len(jobs):
                        break  # nobody else is on the way: do not wait for nothing
                    try:
                        job = self._queue.get(timeout=min(left, 0.0005))
                    except queue.Empty:
                        continue
                jobs.append(job)
                windows += len(job.features)
            self._answer(jobs)

    def _answer(self, jobs: list[_Job]) -> None:
        self.calls += 1
        self.requests += len(jobs)
        try:
            if len(jobs) == 1:
                jobs[0].logits = self._run(jobs[0].features)
            else:
                windows = _Windows(
                    [ids for job in jobs for ids in job.features.input_ids],
                    np.concatenate([job.features.context_start for job in jobs]),
                )
                starts, ends = self._run(windows)
                first = 0
                for job in jobs:
                    last = first + len(job.features)
                    job.logits = (starts[first:last], ends[first:last])
                    first = last
        except Exception as err:  # handed to the waiting request(s)
            if len(jobs) == 1:
                jobs[0].error = err
            else:
                for job in jobs:  # find the request that breaks the model; the others pass
                    self._answer([job])
                return
        for job in jobs:
            job.done.set()


def batch_requests(predictor: Any, options: Batching) -> RequestBatcher:
    """Make `predictor` (a `QAPredictor`) answer through a new `RequestBatcher`."""
    batcher = RequestBatcher(predictor.logits, options)
    predictor.batch_requests(batcher)
    return batcher
