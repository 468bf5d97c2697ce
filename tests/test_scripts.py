"""The campaign scripts' `resumable`: start a run, resume a stopped one, skip a finished one.

A stand-in `squadqa` on PATH records the arguments it was given, so the test checks what the
script asks for without training anything.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_squadqa(tmp_path: Path) -> Path:
    """A `squadqa` that appends its arguments to calls.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "squadqa"
    exe.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.txt"}\n')
    exe.chmod(0o755)
    return bin_dir


def _resumable(bin_dir: Path, runs: Path, name: str) -> list[str]:
    script = f"source {REPO / 'scripts/resumable.sh'}; resumable pretrain {runs} {name} --set x=1"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
    )
    calls = bin_dir.parent / "calls.txt"
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return lines + ([out.stdout.strip()] if out.stdout.strip() else [])


def test_resumable_starts_resumes_and_skips(fake_squadqa: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert _resumable(fake_squadqa, runs, "pt") == [
        f"pretrain --runs-dir {runs} --name pt --set x=1"
    ]

    (runs / "pt").mkdir(parents=True)
    (runs / "pt" / "status.json").write_text(json.dumps({"status": "stopped"}, indent=2))
    assert _resumable(fake_squadqa, runs, "pt") == [
        f"pretrain --runs-dir {runs} --name pt --resume --set x=1"
    ]

    (runs / "pt" / "status.json").write_text(json.dumps({"status": "finished"}, indent=2))
    assert _resumable(fake_squadqa, runs, "pt") == [f"reusing the finished run {runs}/pt"]
