"""How `ask` weighs the retriever's evidence for a passage beside the reader's spans in it.

A span's score in `ask` is the reader's (its start + end logit minus its passage's null score,
`ask.read_passages`) plus

    bonus(passage) = w_bm25 * BM25(question, passage) + w_dense * cos(question, passage)

the passage's BM25 score (with the statistics of what was searched: an article's own, in
`evaluate-open`'s article setting) and the dot product of the unit sentence vectors of question
and passage (`dense.SentenceEncoder`). BERTserini (Yang et al., 2019) interpolates the
retriever's score with the reader's the same way. Why: a reader trained on single paragraphs
never compares two passages, so which passage holds the answer is better judged with the
retriever's evidence than without it; over all 40 dev articles (`builtin:minilm`, hybrid, 5
passages, all 9,045 dev questions) the weights fitted on train questions took F1 from 68.8 to
71.8, against 79.9 given the paragraph (docs/results.md). Both weights 0: the reader alone.

`squadqa fit-ask RUN DATA` fits the two weights on a grid (`GRID`), for the reader of RUN, by the
F1 of `ask`'s answers to questions of DATA over DATA's own collection, and writes them to RUN's
`ask_fusion.json` (`rundir.fusion_weights` reads them back). DATA is a train-split file, never
the data the reader is evaluated on: the weights are fitted like any other parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

NONE: dict[str, float] = {"bm25": 0.0, "dense": 0.0}
# BM25 scores of SQuAD passages run to about 10-40, cosines to 0.2-0.8, span scores to about 10:
# weights up to those that let the retriever decide alone.
GRID: dict[str, tuple[float, ...]] = {
    "bm25": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "dense": (0.0, 10.0, 20.0, 30.0, 40.0, 60.0),
}


def grid() -> list[dict[str, float]]:
    """Every pair of `GRID`'s weights, (0, 0) first."""
    return [{"bm25": b, "dense": d} for b in GRID["bm25"] for d in GRID["dense"]]


def evidence(
    index: Any,
    question: str,
    passages: Sequence[int],
    query_vector: np.ndarray | None = None,
    subset: np.ndarray | None = None,
) -> np.ndarray:
    """Per passage, [BM25 score, cosine to the question]: shape (len(passages), 2).

    BM25 with `subset`'s statistics where one is given (as `Index.search` ranks it); the cosine
    is 0 where the index has no vectors or `query_vector` is None."""
    rows = np.zeros((len(passages), 2))
    if not passages:
        return rows
    chosen = np.asarray(passages, dtype=np.int64)
    rows[:, 0] = index.bm25.scores(question, subset)[chosen]
    if query_vector is not None and index.collection.vectors is not None:
        rows[:, 1] = index.collection.vectors[chosen] @ np.asarray(query_vector, np.float32)
    return rows


def bonus(weights: dict[str, float] | None, found: np.ndarray) -> list[float]:
    """What `ask` adds to the spans of each passage: `found` is `evidence`'s rows."""
    w = weights or NONE
    return [float(w["bm25"] * bm25 + w["dense"] * cosine) for bm25, cosine in found]


def needs_vectors(weights: dict[str, float] | None) -> bool:
    """Whether the bonus uses the question's sentence vector."""
    return bool(weights) and weights["dense"] != 0.0
