"""The committed lock (`requirements/dev.lock`) agrees with pyproject.toml and the installed
environment: a fresh install resolves the tested versions, not whatever is newest that day."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
assert spec is not None and spec.loader is not None
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)


def pins() -> dict[str, str]:
    found = {}
    for line in lock.LOCK.read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line).groups()
            found[canonicalize_name(name)] = version
    return found


def dev_requirements() -> list[Requirement]:
    """Every requirement `.[dev]` names directly: the core list and each extra it pulls in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    extras, todo, seen = project["optional-dependencies"], ["dev"], set()
    found = [Requirement(r) for r in project["dependencies"]]
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for requirement in map(Requirement, extras[extra]):
            if requirement.name == "squadqa":
                todo.extend(e for e in requirement.extras if e not in seen)
            else:
                found.append(requirement)
    return found


def test_lock_was_made_from_this_pyproject() -> None:
    assert lock.locked_digest() == lock.pyproject_digest(), (
        "pyproject.toml's dependencies changed: run `python scripts/lock.py` and commit "
        "requirements/dev.lock"
    )


def test_digest_changes_with_any_dependency_edit(tmp_path: Path) -> None:
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    edited = tmp_path / "pyproject.toml"
    edited.write_text(text.replace('"numpy>=1.26"', '"numpy>=1.27"'), "utf-8")
    assert lock.pyproject_digest(edited) != lock.pyproject_digest()


def test_every_direct_requirement_is_pinned_within_its_range() -> None:
    locked = pins()
    requirements = dev_requirements()
    assert {"torch", "pytest", "schemathesis", "keras"} <= {r.name for r in requirements}
    bad = [
        f"{r} (locked: {locked.get(canonicalize_name(r.name))})"
        for r in requirements
        if locked.get(canonicalize_name(r.name)) is None
        or not r.specifier.contains(locked[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not bad, f"pins outside pyproject.toml's ranges: {bad}"
    assert locked["torch"] == "2.13.0"  # the CPU build on disk, never a CUDA download


def test_installed_versions_are_the_locked_ones() -> None:
    """Installed with the README's command, every locked package has its locked version."""
    wrong = []
    for name, version in pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional extra not installed here
        if installed.split("+")[0] != version:
            wrong.append(f"{name} {installed} (locked {version})")
    assert not wrong, (
        f"installed versions differ from requirements/dev.lock: {wrong}; install with "
        "`pip install -e '.[dev]' -c requirements/dev.lock`"
    )
