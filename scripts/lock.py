"""Resolve `.[dev]` once into `requirements/dev.lock`, the constraints every install uses.

    python scripts/lock.py          # refresh the lock (needs the package index; installs nothing)
    python scripts/lock.py --check  # exit 1 if pyproject.toml changed since the lock was made

pip's own resolver does the work (`pip install --dry-run --ignore-installed --report`), so the
machine's pip configuration applies, torch included: the lock pins `torch==2.13.0`, the CPU build
this project's machines install. The lock records a digest of pyproject.toml's dependency lists;
`tests/test_lock.py` fails when they change and the lock is not refreshed. The lock is resolved
for Linux x86_64 and Python 3.11 (the project's machines and CI); elsewhere, install without
`-c requirements/dev.lock` or refresh it there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "dev.lock"
DIGEST_PREFIX = "# pyproject digest: "


def pyproject_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """sha256 of the dependency lists (order and spacing kept: any edit asks for a new lock)."""
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    spec = {"dependencies": project["dependencies"], "extras": project["optional-dependencies"]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def locked_digest(lock: Path = LOCK) -> str | None:
    for line in lock.read_text("utf-8").splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX) :].strip()
    return None


def resolve() -> list[tuple[str, str]]:
    """(name, version) of everything `pip install -e '.[dev]'` would install on a bare machine."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--report", str(report), "-e", f"{ROOT}[dev]"],
            check=True,
        )  # fmt: skip
        installs = json.loads(report.read_text())["install"]
    pins = []
    for item in installs:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if name.lower() == "squadqa":
            continue
        pins.append((name.lower().replace("_", "-"), version.split("+")[0]))  # 2.13.0+cpu
    return sorted(pins)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only compare the digests")
    args = parser.parse_args()
    if args.check:
        if locked_digest() != pyproject_digest():
            print(f"{LOCK.relative_to(ROOT)} is stale: run `python scripts/lock.py`")
            return 1
        return 0
    pins = resolve()
    header = [
        "# The dev environment, resolved once: `pip install -e '.[dev]' -c requirements/dev.lock`.",
        "# Made by `python scripts/lock.py` (pip's resolver; do not edit by hand) on "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}.",
        f"{DIGEST_PREFIX}{pyproject_digest()}",
    ]
    LOCK.parent.mkdir(exist_ok=True)
    LOCK.write_text("\n".join([*header, *(f"{n}=={v}" for n, v in pins)]) + "\n", "utf-8")
    print(f"wrote {len(pins)} pins to {LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
