"""The event loop before the model: the server's model threads run at a lower CPU priority.

Refusing overload (503) and answering `/healthz` take the event loop microseconds, but when the
model's threads keep every core busy the event loop waits its turn behind them: on 2 cores a
served reader's slowest 503 took 126-137 ms, and 71-94 ms with the model's threads niced
(`benchmarks/overload.py --model builtin:scratch`, `docs/results.md`). Answers take no longer
when the machine is otherwise idle: niceness only decides who runs first when threads compete.

On Linux, niceness is per thread and a new thread inherits its creator's. So the threads that
exist when the server starts (the model runtime's pools, the request batcher) are lowered once
(`lower_other_threads`), and each thread-pool worker lowers itself before its first model call
(`in_model_thread`); the thread pools torch or ONNX Runtime start later from such a worker are
born lowered. Elsewhere (macOS, Windows) both are no-ops: Python cannot set a thread's niceness.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

# Added to the event loop thread's niceness for every model thread (capped at 19, the lowest).
MODEL_NICENESS = 10
MAX_NICENESS = 19
T = TypeVar("T")


def _supported() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir("/proc/self/task")


def _lower(thread_id: int, niceness: int) -> None:
    """Set `thread_id`'s niceness to at least `niceness` (raising it is always permitted)."""
    try:
        if os.getpriority(os.PRIO_PROCESS, thread_id) < niceness:
            os.setpriority(os.PRIO_PROCESS, thread_id, niceness)
    except ProcessLookupError:  # the thread ended meanwhile
        pass


def model_niceness() -> int:
    """The niceness of model threads: the process's own (its main thread's) plus MODEL_NICENESS."""
    return min(os.getpriority(os.PRIO_PROCESS, os.getpid()) + MODEL_NICENESS, MAX_NICENESS)


def lower_other_threads() -> int:
    """Lower every thread of this process but the calling one (the event loop's, about to start).

    Returns how many threads were looked at (0 where unsupported).
    """
    if not _supported():
        return 0
    me, niceness = threading.get_native_id(), model_niceness()
    others = [int(tid) for tid in os.listdir("/proc/self/task") if int(tid) != me]
    for tid in others:
        _lower(tid, niceness)
    return len(others)


def lower_this_thread() -> None:
    """Lower the calling thread (a worker about to run the model)."""
    if _supported():
        _lower(threading.get_native_id(), model_niceness())


def _lowered(fn: Callable[..., T], *args: object) -> T:
    lower_this_thread()
    return fn(*args)


async def in_model_thread(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in Starlette's thread pool, from a worker lowered below the event loop."""
    return await run_in_threadpool(_lowered, fn, *args)
