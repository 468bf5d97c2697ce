"""Okapi BM25 over term counts that only ever grow: adding passages never rescores the old ones.

Why not a library: BM25 libraries such as `bm25s` precompute every (term, passage) score, which
depends on the whole collection (its size, document frequencies and mean length), so adding one
document means indexing everything again (xhluca/bm25s#5: "it is not possible"). Here the index
keeps only what does not change when passages are added (each passage's term counts and length);
the collection statistics are computed at query time from an inverted list: work in proportion
to the postings of the question's terms (0.1 ms a question over SQuAD dev's 1,778 passages), and
the same code whatever subset of passages is searched.

Score of passage d for query q (Robertson's Okapi BM25 with Lucene's non-negative idf):

    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(d) = sum over distinct terms t of q, in d:
               idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * len(d) / avgdl))

N: passages searched; df(t): those holding t; len(d): terms of d; avgdl: their mean.
Terms: lower-cased `\\w+` runs minus `squadqa.stopwords` (the project's one list; no stemming).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from squadqa.stopwords import STOPWORDS

K1 = 1.2
B = 0.75
TERMS = "lower-cased \\w+ runs minus squadqa.stopwords"

_WORD = re.compile(r"\w+")


def terms(text: str) -> list[str]:
    """The terms BM25 counts in `text`."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass
class TermCounts:
    """Term counts of consecutive passages in CSR form over a vocabulary of its own.

    Row i's terms are `vocab[term_ids[row_ptr[i]:row_ptr[i + 1]]]` with `counts` alongside.
    """

    vocab: list[str]
    term_ids: np.ndarray  # int32
    counts: np.ndarray  # int32
    row_ptr: np.ndarray  # int64, len = passages + 1

    def __len__(self) -> int:
        return len(self.row_ptr) - 1

    @classmethod
    def of_texts(cls, texts: Sequence[str]) -> TermCounts:
        vocab: dict[str, int] = {}
        ids: list[int] = []
        counts: list[int] = []
        row_ptr = [0]
        for text in texts:
            for term, count in Counter(terms(text)).items():
                ids.append(vocab.setdefault(term, len(vocab)))
                counts.append(count)
            row_ptr.append(len(ids))
        return cls(
            list(vocab),
            np.asarray(ids, dtype=np.int32),
            np.asarray(counts, dtype=np.int32),
            np.asarray(row_ptr, dtype=np.int64),
        )


class BM25:
    """An inverted list over the term counts of several `TermCounts` (in order), scored with
    Okapi BM25 over all passages or over a subset as if it were the whole collection."""

    def __init__(self, parts: Sequence[TermCounts], k1: float = K1, b: float = B) -> None:
        self.k1, self.b = k1, b
        self.vocab: dict[str, int] = {}
        doc_ids, term_ids, counts, lengths = [], [], [], []
        first = 0
        for part in parts:
            local = np.fromiter(
                (self.vocab.setdefault(t, len(self.vocab)) for t in part.vocab),
                dtype=np.int64,
                count=len(part.vocab),
            )
            rows = np.repeat(np.arange(len(part), dtype=np.int64), np.diff(part.row_ptr))
            doc_ids.append(rows + first)
            term_ids.append(local[part.term_ids])
            counts.append(part.counts)
            lengths.append(_row_sums(part.counts, part.row_ptr))
            first += len(part)
        self.size = first
        all_terms = np.concatenate(term_ids) if term_ids else np.zeros(0, np.int64)
        order = np.argsort(all_terms, kind="stable")
        self.post_doc = (np.concatenate(doc_ids) if doc_ids else np.zeros(0, np.int64))[order]
        self.post_tf = (np.concatenate(counts) if counts else np.zeros(0, np.int32))[order].astype(
            np.float64
        )
        self.term_ptr = np.concatenate(
            [[0], np.cumsum(np.bincount(all_terms, minlength=len(self.vocab)))]
        ).astype(np.int64)
        self.lengths = (np.concatenate(lengths) if lengths else np.zeros(0, np.int64)).astype(
            np.float64
        )

    def scores(self, query: str, subset: np.ndarray | None = None) -> np.ndarray:
        """BM25 score of every passage (0 where no query term occurs); with `subset` (a boolean
        mask), the statistics are the subset's and passages outside it score -inf."""
        out = np.zeros(self.size)
        if subset is None:
            n, avgdl = self.size, self.lengths.mean() if self.size else 0.0
        else:
            n = int(subset.sum())
            avgdl = self.lengths[subset].mean() if n else 0.0
        for term in dict.fromkeys(terms(query)):
            t = self.vocab.get(term)
            if t is None:
                continue
            docs = self.post_doc[self.term_ptr[t] : self.term_ptr[t + 1]]
            tf = self.post_tf[self.term_ptr[t] : self.term_ptr[t + 1]]
            if subset is not None:
                keep = subset[docs]
                docs, tf = docs[keep], tf[keep]
            if not len(docs):
                continue
            idf = np.log(1.0 + (n - len(docs) + 0.5) / (len(docs) + 0.5))
            norm = self.k1 * (1.0 - self.b + self.b * self.lengths[docs] / avgdl)
            out[docs] += idf * tf * (self.k1 + 1.0) / (tf + norm)
        if subset is not None:
            out[~subset] = -np.inf
        return out


def _row_sums(values: np.ndarray, row_ptr: np.ndarray) -> np.ndarray:
    """Sum of each CSR row (0 for an empty row)."""
    cumulative = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return cumulative[row_ptr[1:]] - cumulative[row_ptr[:-1]]
