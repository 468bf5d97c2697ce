"""Keep freed memory for reuse instead of returning it to the OS after every training step.

Why: on CPU, torch (like numpy) gets its tensors from `malloc`. glibc serves every block above its
mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps it on `free`, so each training step
page-faults its large activations and gradients in again: ~430k page faults and 0.75 s of kernel
time per MiniLM training step (batch 32 x 192) on the 2-core CPU of docs/results.md, 10 % of the
wall time. With mmap off and trimming raised, freed blocks stay in the heap and the next step
reuses them. It is the in-process form of running under jemalloc/tcmalloc, which PyTorch's CPU
performance guide recommends. The cost: the process keeps its peak memory until it exits (a
training process reaches that peak in its first steps anyway).

The setting is process-wide and stays for the rest of the process. glibc on Linux only; elsewhere,
or with `SQUADQA_MALLOC_TUNING=0`, nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**30  # mallopt takes a C int; 1 GiB of free heap top before trimming
ENV = "SQUADQA_MALLOC_TUNING"


def reuse_freed_memory() -> bool:
    """Turn glibc's mmap of large blocks off and raise its trim threshold; True if applied."""
    if not sys.platform.startswith("linux") or os.environ.get(ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
