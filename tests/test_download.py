"""Tests for squadqa.download: the official table, verified and cached downloads (no network:
`urllib.request.urlopen` is replaced)."""

from __future__ import annotations

import gzip
import hashlib
import io
import urllib.request
from pathlib import Path

import pytest

from squadqa import data, download
from squadqa.data import SquadFormatError, load_squad, sample_path
from squadqa.download import DownloadError, download_squad


class _FakeUrlopen:
    """Stands in for urllib.request.urlopen: serves fixed bytes, records the URLs asked for."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float | None = None) -> io.BytesIO:
        self.urls.append(url)
        return io.BytesIO(self.payload)


@pytest.fixture
def sample_bytes() -> bytes:
    return gzip.decompress(sample_path().read_bytes())


def test_official_table() -> None:
    assert set(download.OFFICIAL_FILES) == {
        ("train", "1.1"),
        ("dev", "1.1"),
        ("train", "2.0"),
        ("dev", "2.0"),
    }
    spec = download.OFFICIAL_FILES[("dev", "1.1")]
    assert spec.url == "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"
    assert spec.filename == "dev-v1.1.json"
    for spec in download.OFFICIAL_FILES.values():
        assert spec.sha256 is None or len(spec.sha256) == 64


def test_download_verifies_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_bytes: bytes
) -> None:
    url = download.OFFICIAL_FILES[("dev", "1.1")].url
    sha = hashlib.sha256(sample_bytes).hexdigest()
    monkeypatch.setitem(
        download.OFFICIAL_FILES, ("dev", "1.1"), download.OfficialFile(url, len(sample_bytes), sha)
    )
    fake = _FakeUrlopen(sample_bytes)
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    path = download_squad("dev", cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "dev-v1.1.json"
    assert fake.urls == [url]
    assert path.read_bytes() == sample_bytes
    assert load_squad(path).stats.questions == 220
    assert [p.name for p in path.parent.iterdir()] == ["dev-v1.1.json"]
    # second call: served from the cache, no network
    assert download_squad("dev", "1.1", tmp_path / "cache") == path
    assert fake.urls == [url]
    # a corrupted cached file is downloaded again
    path.write_bytes(b"{}")
    assert download_squad("dev", cache_dir=tmp_path / "cache").read_bytes() == sample_bytes
    assert len(fake.urls) == 2


def test_download_checksum_mismatch_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_bytes: bytes
) -> None:
    spec = download.OFFICIAL_FILES[("dev", "1.1")]
    # right size, wrong content: the SHA-256 check must catch it
    monkeypatch.setitem(
        download.OFFICIAL_FILES,
        ("dev", "1.1"),
        download.OfficialFile(spec.url, len(sample_bytes), spec.sha256),
    )
    monkeypatch.setattr(urllib.request, "urlopen", _FakeUrlopen(sample_bytes))
    with pytest.raises(DownloadError, match="SHA-256"):
        download_squad("dev", "1.1", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_size_mismatch_with_official_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_bytes: bytes
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _FakeUrlopen(sample_bytes))
    with pytest.raises(DownloadError, match="size"):
        download_squad("train", "2.0", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_without_checksum_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_bytes: bytes
) -> None:
    url = download.OFFICIAL_FILES[("dev", "2.0")].url
    monkeypatch.setitem(
        download.OFFICIAL_FILES, ("dev", "2.0"), download.OfficialFile(url, None, None)
    )
    monkeypatch.setattr(urllib.request, "urlopen", _FakeUrlopen(b"<html>not found</html>"))
    with pytest.raises(SquadFormatError):
        download_squad("dev", "2.0", tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(urllib.request, "urlopen", _FakeUrlopen(sample_bytes))
    assert download_squad("dev", "2.0", tmp_path).name == "dev-v2.0.json"


def test_download_cache_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_bytes: bytes
) -> None:
    url = download.OFFICIAL_FILES[("train", "1.1")].url
    sha = hashlib.sha256(sample_bytes).hexdigest()
    monkeypatch.setitem(
        download.OFFICIAL_FILES,
        ("train", "1.1"),
        download.OfficialFile(url, len(sample_bytes), sha),
    )
    monkeypatch.setattr(urllib.request, "urlopen", _FakeUrlopen(sample_bytes))
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "envcache"))
    assert download_squad("train") == tmp_path / "envcache" / "train-v1.1.json"
    monkeypatch.delenv("SQUADQA_CACHE")
    assert data.default_cache_dir() == Path.home() / ".cache" / "squadqa"


def test_download_bad_split() -> None:
    with pytest.raises(ValueError, match="split"):
        download_squad("test")  # type: ignore[arg-type]
