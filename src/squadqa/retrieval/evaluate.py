"""`squadqa evaluate-open`: a SQuAD file as an open collection, in two settings.

- `article`: each question against every passage of its own article (an index of that article
  alone: BM25 statistics are the article's);
- `collection`: each question against every passage of every article of the file.

Retrieval recall@k: the share of questions with a passage of their gold paragraph among the
first k retrieved. With a reader, EM / F1 of the answer `ask` gives (official v1.1 metric), beside
the reader on the gold paragraph itself (the ceiling), and seconds per question. Questions are
encoded for dense retrieval all at once (batches of 64), so their share of the time per question
is the batch's average, less than `benchmarks/ask.py`'s one question at a time.

The reader reads each distinct (question, passage) pair once for all rows (the settings and
retrievers mostly retrieve the same passages; a question's own paragraph is usually one of them),
through `ask`'s `read_passages`, and each row aggregates its own passages with `ask`'s
`answer_from`: the rows `ask` would give, row by row (a pair's spans do not depend on the other
pairs of its batch; see `read_passages`). A row's seconds per question are its retrieval's plus
its pairs' reading time (each pair's share of its batch's), as if it had read them alone.
`cache`: the readings are appended to a reads file as they are made (`reads.ReadsFile`), so a
killed evaluation resumes and a finished one re-aggregates without reading.
`fusions`: the weights of retrieval evidence (`fusion`) each reader row is scored with, one row
per weights (default: the reader's own, as `ask` uses them); `squadqa fit-ask` scores its grid
this way, on one reading of each pair.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squadqa.data import gold_answers, load_squad, spread
from squadqa.evaluation import evaluate_v1
from squadqa.retrieval.ask import answer_from, read_passages
from squadqa.retrieval.documents import DEFAULT_MAX_CHARS, squad_documents
from squadqa.retrieval.fusion import NONE, bonus, evidence, needs_vectors
from squadqa.retrieval.index import RETRIEVERS, Index, build_collection, new_settings
from squadqa.retrieval.reads import OWN_PARAGRAPH, Reading, ReadsFile, reader_digest, sha256_of

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
    cache: str | Path | None = None,
    read_batch: int = 128,
    fusions: Sequence[dict[str, float] | None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (setting, retriever): recall@1/5/20, and EM / F1 with a `predictor`.

    `index`: one `squadqa index DATA` built (its passages and vectors are used, not rebuilt);
    without it the collection is built in memory. `cache`: the reads file (`reads.ReadsFile`)
    that keeps the reader's readings; `read_batch`: pairs read per `read_passages` call (and
    appended to `cache` at once). `fusions`: see the module docstring.
    """
    from tqdm import tqdm

    for name in retrievers:
        if name not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}, not {name!r}")
    for name in settings:
        if name not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, not {name!r}")
    if passages < 1:
        raise ValueError(f"--passages {passages} must be at least 1")
    if read_batch < 1:
        raise ValueError(f"read_batch={read_batch} must be at least 1")
    path = Path(data)
    documents = squad_documents(path)
    squad = load_squad(path)
    if squad.version != "1.1":
        raise ValueError(f"{path}: SQuAD {squad.version}; evaluate-open scores v1.1 files")
    examples = squad.examples if max_questions is None else spread(squad.examples, max_questions)
    if fusions is None:
        fusions = [None if predictor is None else predictor.fusion_weights]
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
    wanted = predictor is not None and index.has_vectors and any(map(needs_vectors, fusions))
    vectors = index.query_vectors(questions) if dense or wanted else None
    encode_seconds = (time.perf_counter() - started) / max(len(questions), 1)
    depth = max(*RECALL_AT, passages)
    rows: list[dict[str, Any]] = []
    hits_of_rows: list[list[list[tuple[int, float]]]] = []
    evidence_of_rows: list[list[np.ndarray]] = []  # per row, per question: its read passages'
    for setting in settings:
        subsets = [masks[a] for a in articles] if setting == "article" else None
        for retriever in retrievers:
            started = time.perf_counter()
            hits = [
                index.search(
                    question,
                    depth,
                    retriever,
                    None if vectors is None else vectors[q],
                    None if subsets is None else subsets[q],
                )
                for q, question in enumerate(
                    tqdm(questions, desc=f"{setting} {retriever}", disable=not progress)
                )
            ]
            seconds = (time.perf_counter() - started) / max(len(questions), 1)
            if retriever != "bm25" or wanted:  # the question's vector: for search or evidence
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
                    np.mean(
                        [
                            bool(gold & {p for p, _ in h[:k]})
                            for gold, h in zip(golds, hits, strict=True)
                        ]
                    )
                )
            rows.append(row)
            hits_of_rows.append(hits)
            evidence_of_rows.append(
                [
                    evidence(
                        index,
                        question,
                        [p for p, _ in h[:passages]],
                        None if vectors is None else vectors[q],
                        None if subsets is None else subsets[q],
                    )
                    for q, (question, h) in enumerate(zip(questions, hits, strict=True))
                ]
                if predictor is not None
                else []
            )
    if predictor is not None:
        # `search(question, passages)` is the first `passages` of `search(question, depth)`
        # (ranks are stable; hybrid fuses max(depth, FUSION_DEPTH) of each): what `ask` reads.
        read = [[h[:passages] for h in hits] for hits in hits_of_rows]
        rows = _with_reader(
            predictor,
            index,
            path,
            examples,
            golds,
            rows,
            read,
            evidence_of_rows,
            fusions,
            passages,
            cache,
            read_batch,
            progress,
        )
    for row in rows:
        row["index_s"] = index_seconds
    return rows


def _with_reader(
    predictor: Any,
    index: Index,
    path: Path,
    examples: Sequence[Any],
    golds: Sequence[set[int]],
    rows: list[dict[str, Any]],
    hits_of_rows: Sequence[Sequence[Sequence[tuple[int, float]]]],
    evidence_of_rows: Sequence[Sequence[np.ndarray]],
    fusions: Sequence[dict[str, float] | None],
    passages: int,
    cache: str | Path | None,
    read_batch: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """The given-paragraph row, then `rows` with EM / F1 of the answers `ask` gives from the
    passages of `hits_of_rows` (each question's first `passages` hits, per row; their
    `evidence_of_rows`), one row per weights of `fusions`, every distinct (question, passage)
    pair read once."""
    collection = index.collection
    # A question's own paragraph is read as the passage that is all of it, where there is one.
    own = [
        next(
            (p for p in sorted(gold) if collection.passage_text(p) == example.context),
            OWN_PARAGRAPH,
        )
        for example, gold in zip(examples, golds, strict=True)
    ]
    at = {example.id: q for q, example in enumerate(examples)}

    def text_of(key: tuple[str, int]) -> str:
        qid, p = key
        return examples[at[qid]].context if p == OWN_PARAGRAPH else collection.passage_text(p)

    needed = {(e.id, p) for e, p in zip(examples, own, strict=True)}
    for hits in hits_of_rows:
        needed.update((e.id, p) for e, h in zip(examples, hits, strict=True) for p, _ in h)
    file = None
    if cache is not None:
        file = ReadsFile(
            cache,
            {
                "reader": predictor.name,
                "reader_sha256": reader_digest(predictor),
                "data": str(path),
                "data_sha256": sha256_of([path.read_bytes()]),
                "passages": f"{len(collection.passages)} passages",
                "passages_sha256": sha256_of(
                    collection.passage_text(i).encode() for i in range(len(collection.passages))
                ),
            },
        )
    order = sorted(needed, key=lambda key: (at[key[0]], key[1]))  # a question's pairs together
    readings, cached = _read(predictor, examples, at, order, text_of, file, read_batch, progress)

    def spans(key: tuple[str, int]) -> list[Any]:
        return readings[key].candidates(text_of(key))

    n = max(len(examples), 1)
    given = {
        e.id: next((c.text for c in spans((e.id, p))), "")
        for e, p in zip(examples, own, strict=True)
    }
    reader_rows = [
        {
            "setting": "given paragraph",
            "retriever": "",
            "questions": len(examples),
            **_scores(examples, given),
            "s_per_question": sum(
                readings[(e.id, p)].seconds for e, p in zip(examples, own, strict=True)
            )
            / n,
        }
    ]
    temperature, top_map = predictor.span_config.temperature, predictor.top_map
    for row, hits, found in zip(rows, hits_of_rows, evidence_of_rows, strict=True):
        for weights in fusions:
            answers, seconds = {}, 0.0
            for example, h, rows_of_passages in zip(examples, hits, found, strict=True):
                keys = [(example.id, p) for p, _ in h]
                answer = answer_from(
                    index,
                    example.question,
                    h,
                    [spans(k) for k in keys],
                    temperature,
                    top_map,
                    top_k=1,
                    bonuses=bonus(weights, rows_of_passages),
                )
                answers[example.id] = answer["text"]
                seconds += sum(readings[k].seconds for k in keys)
            reader_rows.append(
                {
                    **row,
                    "reader_passages": passages,
                    "bm25_weight": (weights or NONE)["bm25"],
                    "dense_weight": (weights or NONE)["dense"],
                    **_scores(examples, answers),
                    "s_per_question": row["retrieval_s_per_question"] + seconds / n,
                    "reads": sum(len(h) for h in hits),
                }
            )
    for row in reader_rows:
        row["distinct_reads"], row["cached_reads"] = len(order), cached
    return reader_rows


def _read(
    predictor: Any,
    examples: Sequence[Any],
    at: dict[str, int],
    keys: Sequence[tuple[str, int]],
    text_of: Callable[[tuple[str, int]], str],
    file: ReadsFile | None,
    batch: int,
    progress: bool,
) -> tuple[dict[tuple[str, int], Reading], int]:
    """The readings of `keys` ((question id, passage) pairs), those `file` holds taken from it,
    the others read `batch` at a time and appended to it; and how many came from `file`."""
    from tqdm import tqdm

    held = {} if file is None else file.readings
    readings = {key: held[key] for key in keys if key in held}
    todo = [key for key in keys if key not in held]
    with tqdm(
        total=len(keys),
        initial=len(readings),
        unit="read",
        desc="read passages",
        disable=not progress,
    ) as bar:
        for first in range(0, len(todo), batch):
            part = todo[first : first + batch]
            started = time.perf_counter()
            found = read_passages(
                predictor, [(examples[at[key[0]]].question, text_of(key)) for key in part]
            )
            share = (time.perf_counter() - started) / len(part)
            new = {key: Reading.of(spans, share) for key, spans in zip(part, found, strict=True)}
            if file is not None:
                file.add(new)
            readings.update(new)
            bar.update(len(part))
    return readings, len(keys) - len(todo)


def _scores(examples: Sequence[Any], answers: dict[str, str]) -> dict[str, float]:
    scores = evaluate_v1(gold_answers(examples), answers)
    return {"em": scores["exact_match"], "f1": scores["f1"]}
