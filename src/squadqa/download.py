"""The official SQuAD files: where they live, how to recognise them, and a verified download.

squadqa's own download, only when asked for (`squadqa.data.load_hf_squad` leaves the fetching
to Hugging Face `datasets`). Files land in the data cache (`squadqa.data.default_cache_dir`)
and are read with `squadqa.data.load_squad` like any other path.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from squadqa.data import default_cache_dir, load_squad
from squadqa.rundir import write_atomic

__all__ = ["OFFICIAL_FILES", "DownloadError", "OfficialFile", "download_squad"]


class DownloadError(RuntimeError):
    """An official SQuAD download failed verification (size or SHA-256)."""


@dataclass(frozen=True)
class OfficialFile:
    """Where an official file lives and how to recognise it (None = not known here)."""

    url: str
    size: int | None
    sha256: str | None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_BASE_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"

# Sizes and SHA-256 of the official files as recorded by TensorFlow Datasets
# (tensorflow_datasets/datasets/squad/checksums.tsv), not computed here.
OFFICIAL_FILES: dict[tuple[str, str], OfficialFile] = {
    ("train", "1.1"): OfficialFile(
        _BASE_URL + "train-v1.1.json",
        30288272,
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    ),
    ("dev", "1.1"): OfficialFile(
        _BASE_URL + "dev-v1.1.json",
        4854279,
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    ),
    ("train", "2.0"): OfficialFile(
        _BASE_URL + "train-v2.0.json",
        42123633,
        "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    ),
    ("dev", "2.0"): OfficialFile(
        _BASE_URL + "dev-v2.0.json",
        4370528,
        "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
    ),
}


def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return path.stat().st_size, h.hexdigest()


def _mismatch(spec: OfficialFile, size: int, sha: str) -> str | None:
    """Why a file of this size/digest is not the official one (None when it matches)."""
    if spec.size is not None and size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    if spec.sha256 is not None and sha != spec.sha256:
        return f"SHA-256 {sha}, expected {spec.sha256}"
    return None


def download_squad(
    split: Literal["train", "dev"],
    version: Literal["1.1", "2.0"] = "1.1",
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 60.0,
) -> Path:
    """Path of an official SQuAD file in the cache, downloaded (network) only if missing or bad.

    The download goes to a temporary file in the cache folder, is checked against the known
    size and SHA-256 and only then renamed into place; on a mismatch it is deleted and
    `DownloadError` raised. Where no checksum is known, the file must parse as SQuAD instead.
    """
    key = (split, version.lstrip("vV"))
    if key not in OFFICIAL_FILES:
        raise ValueError(
            f"no official SQuAD file for split={split!r} version={version!r}; "
            f"choose from {sorted(OFFICIAL_FILES)}"
        )
    spec = OFFICIAL_FILES[key]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / spec.filename
    if target.is_file() and _mismatch(spec, *_file_digest(target)) is None:
        return target

    def fetch(tmp: Path) -> None:
        h = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout) as r:
            while chunk := r.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
        why = _mismatch(spec, size, h.hexdigest())
        if why is not None:
            raise DownloadError(f"{spec.url}: downloaded file has {why}; deleted it")
        if spec.sha256 is None:
            load_squad(tmp)  # no checksum known: at least it must be a valid SQuAD file

    write_atomic(target, fetch)
    return target
