"""reuse_freed_memory: a freed large block is reused, not page-faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# malloc, write and free 256 MiB twice (glibc through ctypes: the allocator the tensors of torch
# and numpy come from); print the page faults of the second round only.
SCRIPT = textwrap.dedent(
    """
    import ctypes, resource, sys
    from squadqa.malloc import reuse_freed_memory
    applied = reuse_freed_memory() if sys.argv[1] == "tuned" else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    def touch():
        block = libc.malloc(2**28)
        ctypes.memset(block, 1, 2**28)  # every page written
        libc.free(block)
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _second_allocation_faults(mode: str, env_value: str | None = None) -> tuple[bool, int]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    )
    env.pop("SQUADQA_MALLOC_TUNING", None)
    if env_value is not None:
        env["SQUADQA_MALLOC_TUNING"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    pages = 2**28 // os.sysconf("SC_PAGE_SIZE")
    applied, faults = _second_allocation_faults("tuned")
    if not applied:
        pytest.skip("not glibc: mallopt unavailable")
    assert faults < pages // 20
    _, untuned = _second_allocation_faults("plain")
    assert untuned > pages // 2  # default glibc: the block was unmapped and faults in again
    applied, opted_out = _second_allocation_faults("tuned", env_value="0")
    assert not applied and opted_out > pages // 2
