"""`squadqa evaluate-open`: a SQuAD file as an open collection, in two settings.

- `article`: each question against every passage of its own article (an index of that article
  alone: BM25 statistics are the article's);
- `collection`: each question against every passage of every article of the file.

Retrieval recall@k: the share of questions with a passage of their gold paragraph among the
first k retrieved. With a reader, EM / F1 of the answer `ask` gives (official v1.1 metric), beside
the reader on the gold paragraph itself (the ceiling), and seconds per question. Questions are
encoded for dense retrieval all at once (batches of 64), so their share of the time per question
is the batch's average, less than `benchmarks/ask.py`'s one question at a time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squadqa.data import gold_answers, load_squad
from squadqa.evaluation import evaluate_v1
from squadqa.retrieval.ask import ask
from squadqa.retrieval.documents import DEFAULT_MAX_CHARS, squad_documents
from squadqa.retrieval.index import RETRIEVERS, Index, build_collection, new_settings

SETTINGS = ("article", "collection")
RECALL_AT = (1, 5, 20)


def evaluate_open(
    data: str | Path,
    retrievers: Sequence[str] = RETRIEVERS,
    settings: Sequence[str] = SETTINGS,
    predictor: Any = None,
    passages: int = 5,
    max_questions: int | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    progress: bool = True,
    index: Index | None = None,
) -> list[dict[str, Any]]:
    """One row per (setting, retriever): recall@1/5/20, and EM / F1 with a `predictor`.

    `index`: one `squadqa index DATA` built (its passages and vectors are used, not rebuilt);
    without it the collection is built in memory.
    """
    from tqdm import tqdm

    for name in retrievers:
        if name not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}, not {name!r}")
    for name in settings:
        if name not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, not {name!r}")
    path = Path(data)
    documents = squad_documents(path)
    squad = load_squad(path, max_samples=max_questions)
    if squad.version != "1.1":
        raise ValueError(f"{path}: SQuAD {squad.version}; evaluate-open scores v1.1 files")
    examples = squad.examples
    dense = any(r != "bm25" for r in retrievers)
    started = time.perf_counter()
    if index is None:
        encoder = None
        if dense:
            from squadqa.retrieval.dense import SentenceEncoder

            encoder = SentenceEncoder()
        collection = build_collection(documents, max_chars, encoder, progress)
        index = Index(collection, new_settings(max_chars, dense, encoder), encoder)
    elif [(d.title, d.text) for d in index.collection.documents] != [
        (d.title, d.text) for d in documents
    ]:
        raise ValueError(f"{index.path}: not an index of {path} alone (`squadqa index {path}`)")
    collection = index.collection
    index_seconds = time.perf_counter() - started

    where: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for d, document in enumerate(documents):
        for b, (start, end) in enumerate(document.blocks):
            where.setdefault((document.title, document.text[start:end]), []).append((d, b))
    passages_of: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(collection.passages):
        passages_of.setdefault((p.document, p.block), []).append(i)
    golds: list[set[int]] = []
    articles = []
    for example in examples:
        blocks = where[(example.title, example.context)]
        golds.append({i for block in blocks for i in passages_of.get(block, [])})
        articles.append(blocks[0][0])
    document_of = np.asarray([p.document for p in collection.passages])
    masks = {d: document_of == d for d in set(articles)}

    questions = [e.question for e in examples]
    started = time.perf_counter()
    vectors = index.query_vectors(questions) if dense else None
    encode_seconds = (time.perf_counter() - started) / max(len(questions), 1)
    depth = max(*RECALL_AT, passages)
    rows = [] if predictor is None else [_given_paragraph(predictor, examples)]
    for setting in settings:
        subsets = [masks[a] for a in articles] if setting == "article" else None
        for retriever in retrievers:
            started = time.perf_counter()
            hits = [
                [
                    p
                    for p, _ in index.search(
                        question,
                        depth,
                        retriever,
                        None if vectors is None else vectors[q],
                        None if subsets is None else subsets[q],
                    )
                ]
                for q, question in enumerate(
                    tqdm(questions, desc=f"{setting} {retriever}", disable=not progress)
                )
            ]
            seconds = (time.perf_counter() - started) / max(len(questions), 1)
            if retriever != "bm25":
                seconds += encode_seconds
            row: dict[str, Any] = {
                "setting": setting,
                "retriever": retriever,
                "questions": len(questions),
                "passages": len(index) if subsets is None else None,
                "retrieval_s_per_question": seconds,
            }
            for k in RECALL_AT:
                row[f"recall@{k}"] = 100.0 * float(
                    np.mean([bool(gold & set(h[:k])) for gold, h in zip(golds, hits, strict=True)])
                )
            if predictor is not None:
                row.update(_read(predictor, index, examples, passages, retriever, vectors, subsets))
                row["s_per_question"] += encode_seconds if retriever != "bm25" else 0.0
            rows.append(row)
    for row in rows:
        row["index_s"] = index_seconds
    return rows


def _read(
    predictor: Any,
    index: Index,
    examples: Sequence[Any],
    passages: int,
    retriever: str,
    vectors: np.ndarray | None,
    subsets: Sequence[np.ndarray] | None,
    chunk: int = 32,
) -> dict[str, Any]:
    """EM / F1 of `ask` over the examples, in chunks of questions, and its seconds per question
    (retrieval and reading; the questions were encoded before)."""
    predictions: dict[str, str] = {}
    started = time.perf_counter()
    for first in range(0, len(examples), chunk):
        part = examples[first : first + chunk]
        answers = ask(
            predictor,
            index,
            [e.question for e in part],
            passages,
            retriever,
            query_vectors=None if vectors is None else vectors[first : first + chunk],
            subsets=None if subsets is None else subsets[first : first + chunk],
        )
        predictions.update({e.id: a["text"] for e, a in zip(part, answers, strict=True)})
    seconds = (time.perf_counter() - started) / max(len(examples), 1)
    scores = evaluate_v1(gold_answers(examples), predictions)
    return {
        "reader_passages": passages,
        "em": scores["exact_match"],
        "f1": scores["f1"],
        "s_per_question": seconds,
    }


def _given_paragraph(predictor: Any, examples: Sequence[Any]) -> dict[str, Any]:
    """The reader on each question's own paragraph: the ceiling of the open settings."""
    started = time.perf_counter()
    predictions = predictor.read(examples)
    seconds = (time.perf_counter() - started) / max(len(examples), 1)
    scores = evaluate_v1(gold_answers(examples), predictions.answers)
    return {
        "setting": "given paragraph",
        "retriever": "",
        "questions": len(examples),
        "em": scores["exact_match"],
        "f1": scores["f1"],
        "s_per_question": seconds,
    }
