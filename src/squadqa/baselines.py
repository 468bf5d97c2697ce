"""Non-learned lexical baselines: floors that any trained model must clear.

Both return ``{question id: answer}`` where every answer is an exact substring of its context,
so they go through the same evaluation as a model (:func:`squadqa.evaluation.evaluate_v1`).

``sliding_window_baseline`` follows the sliding-window baseline of Rajpurkar et al. (2016, §5),
which adapts Richardson et al. (2013, MCTest). Without a constituency parser, candidates are short
sentence-internal token spans instead of constituents.
``first_sentence_overlap_baseline`` is the simplest "find the sentence, answer from it" heuristic.

Score one on a dataset with ``squadqa baseline {sliding-window,first-sentence} --data FILE``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from squadqa.stopwords import STOPWORDS

__all__ = [
    "first_sentence_overlap_baseline",
    "sentence_spans",
    "sliding_window_baseline",
    "tokenize",
]


class QAExample(Protocol):
    """What the baselines read: ``squadqa.data.Example`` or anything with these attributes."""

    id: str
    context: str
    question: str


# Words, numbers with internal separators (1,000 / 3.5 / 9-11 / don't), or one punctuation mark.
_TOKEN = re.compile(r"[$£€]?\w+(?:[-'’.,]\w+)*%?|[^\w\s]")
# A sentence ends at . ! ? (maybe closed by a quote or bracket) followed by space and a capital,
# digit or opening quote; good enough for Wikipedia prose.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"“‘(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int

    @property
    def key(self) -> str:
        """Matching form: lower-cased, straight apostrophes."""
        return self.text.lower().replace("’", "'")

    @property
    def is_word(self) -> bool:
        return any(c.isalnum() for c in self.text)


def tokenize(text: str) -> list[_Token]:
    """Tokens with character offsets into ``text`` (so spans map back to exact substrings)."""
    return [_Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of each sentence of ``text``."""
    spans = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start() + 1))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _content_keys(tokens: Iterable[_Token]) -> set[str]:
    return {t.key for t in tokens if t.is_word and t.key not in STOPWORDS}


def _sentence_index(tokens: Sequence[_Token], sentences: Sequence[tuple[int, int]]) -> list[int]:
    """Sentence number of each token."""
    out = []
    s = 0
    for tok in tokens:
        while s + 1 < len(sentences) and tok.start >= sentences[s + 1][0]:
            s += 1
        out.append(s)
    return out


# --------------------------------------------------------------------------- sliding window


def _sentence_overlaps(
    tokens: Sequence[_Token], sent_of: Sequence[int], question_tokens: Sequence[_Token]
) -> list[int]:
    """Per sentence: distinct question unigrams + bigrams it shares (Rajpurkar et al.'s filter)."""
    q_words = [t.key for t in question_tokens if t.is_word]
    q_uni, q_bi = set(q_words), set(itertools.pairwise(q_words))
    n_sent = sent_of[-1] + 1
    uni: list[set[str]] = [set() for _ in range(n_sent)]
    bi: list[set[tuple[str, str]]] = [set() for _ in range(n_sent)]
    for k, tok in enumerate(tokens):
        uni[sent_of[k]].add(tok.key)
        if k + 1 < len(tokens) and sent_of[k + 1] == sent_of[k]:
            bi[sent_of[k]].add((tok.key, tokens[k + 1].key))
    return [len(uni[s] & q_uni) + len(bi[s] & q_bi) for s in range(n_sent)]


def _sliding_window_answer(context: str, question: str, max_len: int) -> str:
    tokens = tokenize(context)
    if not tokens:
        return context.strip()
    question_tokens = tokenize(question)
    q_keys = _content_keys(question_tokens)
    n = len(tokens)
    sent_of = _sentence_index(tokens, sentence_spans(context))
    sent_overlap = _sentence_overlaps(tokens, sent_of, question_tokens)

    # Richardson et al.: a question word found in the passage counts log(1 + 1/count), so words
    # that are frequent in the passage say little about where the answer is.
    counts = Counter(t.key for t in tokens)
    prefix = [0.0]
    for tok in tokens:
        weight = math.log(1.0 + 1.0 / counts[tok.key]) if tok.key in q_keys else 0.0
        prefix.append(prefix[-1] + weight)
    window = max(len(q_keys), 1)

    def answer_word(k: int) -> bool:  # may appear in a candidate
        return tokens[k].is_word and tokens[k].key not in q_keys

    def content(k: int, sent: int) -> bool:  # would extend a candidate (see docstring)
        return (
            0 <= k < n and sent_of[k] == sent and answer_word(k) and tokens[k].key not in STOPWORDS
        )

    best_key: tuple[int, float, int] | None = None
    best_span = (0, 0)
    for i in range(n):
        sent = sent_of[i]
        if not content(i, sent) or content(i - 1, sent):
            continue
        for j in range(i, min(n, i + max_len)):
            if not answer_word(j) or sent_of[j] != sent:
                break
            if not content(j, sent) or content(j + 1, sent):
                continue
            length = j - i + 1
            # Windows of |question words| + |candidate| tokens that contain the candidate.
            sw = max(
                prefix[min(n, a + window + length)] - prefix[a]
                for a in range(max(0, i - window), i + 1)
            )
            key = (sent_overlap[sent], sw, length)
            if best_key is None or key > best_key:  # strict: the earliest candidate wins ties
                best_key, best_span = key, (tokens[i].start, tokens[j].end)
    if best_key is None:
        return context.strip()
    return context[best_span[0] : best_span[1]]


def sliding_window_baseline(examples: Iterable[QAExample], *, max_len: int = 3) -> dict[str, str]:
    """Rajpurkar et al.'s sliding-window baseline, with token spans standing in for constituents.

    Candidates: spans of at most ``max_len`` tokens inside one sentence, made of words (no
    punctuation) that are not question words (Rajpurkar et al. drop candidates that repeat the
    question), beginning and ending with a non-stopword, and not cutting a run of such words
    (a crude stand-in for constituent boundaries: in "Bank of America", the whole, "Bank" and
    "America" are candidates; in "Notre Dame", "Notre" is not).

    Ranking, as in the paper: first the sentence's unigram + bigram overlap with the question
    (all words, lower-cased),
    then the sliding-window score (the best inverse-count-weighted sum of question words over
    windows of ``|question words| + |candidate|`` tokens that contain the candidate), then the
    longer candidate, then the earlier one.

    ``max_len=3`` and every rule above were chosen on the train split only.
    """
    return {ex.id: _sliding_window_answer(ex.context, ex.question, max_len) for ex in examples}


# --------------------------------------------------------------------------- sentence overlap


def _sentence_overlap_answer(context: str, question: str) -> str:
    q_keys = _content_keys(tokenize(question))
    best_sentence = None
    best_overlap = -1
    for start, end in sentence_spans(context):
        overlap = len(_content_keys(tokenize(context[start:end])) & q_keys)
        if overlap > best_overlap:  # strict: the first sentence wins ties
            best_overlap, best_sentence = overlap, (start, end)
    if best_sentence is None:
        return context.strip()
    start, end = best_sentence
    tokens = tokenize(context[start:end])

    def answer_word(t: _Token) -> bool:
        return t.is_word and t.key not in q_keys and t.key not in STOPWORDS

    # Longest run of non-question, non-stopword words (punctuation breaks a run).
    best = (0, 0, 0)  # (length, first, last)
    i = 0
    while i < len(tokens):
        if not answer_word(tokens[i]):
            i += 1
            continue
        j = i
        while j + 1 < len(tokens) and answer_word(tokens[j + 1]):
            j += 1
        if j - i + 1 > best[0]:
            best = (j - i + 1, i, j)
        i = j + 1
    if best[0] == 0:
        return context[start:end].strip()
    return context[start + tokens[best[1]].start : start + tokens[best[2]].end]


def first_sentence_overlap_baseline(examples: Iterable[QAExample]) -> dict[str, str]:
    """Answer from the sentence sharing most question words (lower-cased, stopwords removed;
    the first such sentence on ties): its longest run of words that are neither question words
    nor stopwords (the first on ties; the whole sentence if there is none).

    Chosen on the train split over three alternatives (EM / F1 on train): the longest run
    6.8 / 16.1; the sentence trimmed of leading and trailing question words and stopwords
    0.7 / 16.7; the run nearest a question word 8.3 / 15.2. The longest run has the best F1 among
    short answers and keeps the EM of a span answer.
    """
    return {ex.id: _sentence_overlap_answer(ex.context, ex.question) for ex in examples}
