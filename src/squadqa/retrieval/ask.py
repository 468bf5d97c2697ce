"""`squadqa ask`: retrieve K passages, read them in one batch, answer with the span it cites.

Every retrieved passage becomes one reader example (the question on the passage's text) and all
of them go through `QAPredictor.read` (`read_passages`): the windows, logits and span chooser of
evaluation. `answer_from` aggregates one question's readings, for `ask`, `POST /v1/ask` and
`squadqa evaluate-open` (which reads each question's passages once for all its rows). The
candidates of all passages are then ranked together by their span score (start + end logit)
minus their passage's null score (the [CLS] start + end logit, least over its windows). Why: a
softmax per passage would give every passage's best span a high probability whether or not the
passage holds the answer (Clark and Gardner, 2018, "Simple and Effective Multi-Paragraph Reading
Comprehension"), and raw logits shift from passage to passage; but training labels a window
without the answer at [CLS], so the null score is the reader's own "not in this passage", and
the difference compares between passages. On 200 dev questions over all 40 dev articles (hybrid,
5 passages, `builtin:minilm`) it gave F1 66.4 against 62.0 for raw scores
(`scripts/open_aggregation.py`, docs/results.md). To that each passage's spans get the
retriever's evidence for the passage, weighted as `squadqa fit-ask` fitted for the reader
(`fusion`; nothing where it has not run).
Each candidate's `probability` is the softmax of these scores over all passages' candidates at
the run's temperature and map (`squadqa calibrate`), which leaves the ranking unchanged. An
answer's `start` / `end` index its document's text: `document.text[start:end] == text`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from squadqa.data import Example
from squadqa.postprocess import Candidate, TopProbabilityMap, with_probabilities
from squadqa.retrieval.fusion import bonus, evidence, needs_vectors
from squadqa.retrieval.index import Index


class Citation(TypedDict):
    """A span of a document: `documents[document].text[start:end] == text`."""

    text: str
    score: float
    probability: float
    document: int
    source: str
    title: str
    passage: int
    passage_start: int
    passage_end: int
    start: int
    end: int


class OpenAnswer(Citation):
    """The best span over the retrieved passages, the runners-up and what was retrieved."""

    question: str
    no_answer: bool  # no passage gave a span (nothing retrieved, or a SQuAD 2.0 null)
    retrieved: list[dict[str, float]]  # {"passage": i, "score": s}, best first
    alternatives: list[Citation]


def ask(
    predictor: Any,
    index: Index,
    questions: Sequence[str],
    passages: int = 5,
    retriever: str = "hybrid",
    top_k: int = 3,
    query_vectors: np.ndarray | None = None,
    subsets: Sequence[np.ndarray | None] | None = None,
) -> list[OpenAnswer]:
    """Answer each question from the `passages` best passages of `index`.

    `predictor`: a `QAPredictor`. `query_vectors` (dense / hybrid) and `subsets` (boolean
    passage masks, e.g. one article) let an evaluation encode all questions at once and restrict
    each to its own documents.
    """
    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, not one string")
    if passages < 1:
        raise ValueError(f"--passages {passages} must be at least 1")
    weights = predictor.fusion_weights
    if query_vectors is None and (
        retriever != "bm25" or (needs_vectors(weights) and index.has_vectors)
    ):
        query_vectors = index.query_vectors(list(questions))
    hits_per_question = [
        index.search(
            question,
            passages,
            retriever,
            None if query_vectors is None else query_vectors[q],
            None if subsets is None else subsets[q],
        )
        for q, question in enumerate(questions)
    ]
    readings = iter(
        read_passages(
            predictor,
            [
                (questions[q], index.collection.passage_text(p))
                for q, hits in enumerate(hits_per_question)
                for p, _ in hits
            ],
        )
    )
    return [
        answer_from(
            index,
            questions[q],
            hits,
            [next(readings) for _ in hits],
            predictor.span_config.temperature,
            predictor.top_map,
            top_k,
            bonus(
                weights,
                evidence(
                    index,
                    questions[q],
                    [p for p, _ in hits],
                    None if query_vectors is None else query_vectors[q],
                    None if subsets is None else subsets[q],
                ),
            ),
        )
        for q, hits in enumerate(hits_per_question)
    ]


def read_passages(predictor: Any, pairs: Sequence[tuple[str, str]]) -> list[list[Candidate]]:
    """The reader's n-best spans of each (question, passage text) pair, best first, each scored
    relative to its passage (`score` minus the passage's null score: module docstring), or []
    where it answers "no answer" (no span, or a SQuAD 2.0 null above the threshold).

    All pairs' windows go through one `QAPredictor.read` (the windows and span chooser of
    evaluation). A pair's spans depend on its own question and text only: windows are built per
    pair, and a batch's padding changes the float runtimes' logits by float noise at most
    (masked), the int8 one's not at all (each window runs alone, `OnnxModel.row_by_row`).
    """
    examples = [
        Example(id=str(i), title="", context=text, question=question, answers=())
        for i, (question, text) in enumerate(pairs)
    ]
    if not examples:
        return []
    predictions = predictor.read(examples)
    found: list[list[Candidate]] = []
    for example in examples:
        ranked = predictions.nbest[example.id]
        if predictions.is_no_answer(example.id, predictor.span_config):
            found.append([])
            continue
        null = predictions.null_scores[example.id] + ranked[0].score  # its [CLS] score
        found.append([dataclasses.replace(c, score=c.score - null) for c in ranked])
    return found


def answer_from(
    index: Index,
    question: str,
    hits: Sequence[tuple[int, float]],
    readings: Sequence[Sequence[Candidate]],
    temperature: float,
    top_map: TopProbabilityMap | None,
    top_k: int,
    bonuses: Sequence[float] | None = None,
) -> OpenAnswer:
    """One question's answer from the readings (`read_passages`) of its retrieved passages
    (`hits`: passage, retrieval score; best first): every passage's spans ranked together by
    their score relative to their passage (`read_passages`) plus the passage's `bonuses`
    (`fusion.bonus`; none: 0), ties by retrieval rank then position, probabilities by one
    softmax over them all."""
    found: list[tuple[float, int, int, Candidate]] = []  # score, rank, passage, candidate
    extra = [0.0] * len(hits) if bonuses is None else bonuses
    for rank, ((p, _), candidates, add) in enumerate(zip(hits, readings, extra, strict=True)):
        found.extend(
            (c.score + add, rank, p, dataclasses.replace(c, score=c.score + add))
            for c in candidates
        )
    found.sort(key=lambda item: (-item[0], item[1], item[3].start))
    # One softmax over every passage's candidates (postprocess's: the run's calibration).
    ranked = with_probabilities([c for *_, c in found], temperature, top_map)
    # Only the answer and its alternatives are cited (a question can have 100 candidates).
    shown = max(top_k, 1)
    cited = [
        _citation(index, p, c)
        for (_, _, p, _), c in zip(found[:shown], ranked[:shown], strict=True)
    ]
    best = cited[0] if cited else _empty()
    return OpenAnswer(
        question=question,
        **best,
        no_answer=not cited,
        retrieved=[{"passage": p, "score": s} for p, s in hits],
        alternatives=cited[:top_k],
    )


def _citation(index: Index, p: int, candidate: Candidate) -> Citation:
    passage = index.collection.passages[p]
    document = index.collection.documents[passage.document]
    return Citation(
        text=candidate.text,
        score=candidate.score,
        probability=candidate.probability,
        document=passage.document,
        source=document.source,
        title=document.title,
        passage=p,
        passage_start=passage.start,
        passage_end=passage.end,
        start=passage.start + candidate.start,
        end=passage.start + candidate.end,
    )


def _empty() -> Citation:
    return Citation(
        text="",
        score=0.0,
        probability=0.0,
        document=-1,
        source="",
        title="",
        passage=-1,
        passage_start=0,
        passage_end=0,
        start=0,
        end=0,
    )
