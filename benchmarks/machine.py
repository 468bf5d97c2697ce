"""The machine a benchmark ran on, printed beside its numbers (they compare only within a run)."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"


def machine_lines(*extra: str) -> list[str]:
    """Date, CPU, cores, load and Python, then the caller's own lines (library versions)."""
    return [
        f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"cpu: {cpu_model()}; {os.cpu_count()} logical cores ({usable_cores()} usable); "
        f"load avg {load_average()}",
        f"python {platform.python_version()} ({platform.platform()})",
        *extra,
    ]


def worker_env(threads: int | None = None) -> dict[str, str]:
    """Environment for a benchmark's child process: the repo's `src` first on PYTHONPATH, the torch
    backend, and (when given) the OMP/MKL thread counts, so every side runs alike."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.setdefault("KERAS_BACKEND", "torch")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def stop(process: subprocess.Popen) -> None:
    """End a benchmark's server process: SIGTERM, then SIGKILL if it is not gone in 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
