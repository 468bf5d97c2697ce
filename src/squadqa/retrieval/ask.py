"""`squadqa ask`: retrieve K passages, read them in one batch, answer with the span it cites.

Every retrieved passage becomes one reader example (the question on the passage's text) and all
of them go through `QAPredictor.read`: the windows, logits and span chooser of evaluation. The
candidates of all passages are then ranked together by their raw span score (start + end
logit). Why raw: a softmax per passage would give every passage's best span a high probability
whether or not the passage holds the answer, so those probabilities do not compare between
passages; unnormalised logits do (Clark and Gardner, 2018, "Simple and Effective
Multi-Paragraph Reading Comprehension"). Each candidate's `probability` is the softmax of the
scores over all passages' candidates at the run's temperature (`squadqa calibrate`; 1 without
it), which leaves the ranking unchanged. An answer's `start` / `end` index its document's text:
`document.text[start:end] == text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from squadqa.data import Example
from squadqa.postprocess import Candidate, with_probabilities
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
    if query_vectors is None and retriever != "bm25":
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
    collection = index.collection
    examples = [
        Example(
            id=f"{q}:{rank}",
            title="",
            context=collection.passage_text(p),
            question=questions[q],
            answers=(),
        )
        for q, hits in enumerate(hits_per_question)
        for rank, (p, _) in enumerate(hits)
    ]
    predictions = predictor.read(examples) if examples else None
    temperature = predictor.span_config.temperature
    answers = []
    for q, hits in enumerate(hits_per_question):
        found: list[tuple[float, int, int, Candidate]] = []  # score, rank, passage, candidate
        for rank, (p, _) in enumerate(hits):
            qid = f"{q}:{rank}"
            assert predictions is not None
            if predictions.is_no_answer(qid, predictor.span_config):
                continue
            found.extend((c.score, rank, p, c) for c in predictions.nbest[qid])
        found.sort(key=lambda item: (-item[0], item[1], item[3].start))
        # One softmax over every passage's candidates (postprocess's, at the run's temperature).
        ranked = with_probabilities([c for *_, c in found], temperature)
        cited = [_citation(index, p, c) for (_, _, p, _), c in zip(found, ranked, strict=True)]
        best = cited[0] if cited else _empty()
        answers.append(
            OpenAnswer(
                question=questions[q],
                **best,
                no_answer=not cited,
                retrieved=[{"passage": p, "score": s} for p, s in hits],
                alternatives=cited[:top_k],
            )
        )
    return answers


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
