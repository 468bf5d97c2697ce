"""Request batching: concurrent requests share model calls, get the unbatched answers, fail alone.

The batcher's model call is replaced by a fake that can be held, so which requests end up in one
call is decided by the test, not by thread timing.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from squadqa.data import Example
from squadqa.inference import QAPredictor
from squadqa.serve.batching import Batching, RequestBatcher, batch_requests

CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower."
)
QUESTIONS = [
    "Who is it named after?",
    "Where is the tower?",
    "What is it made of?",
    "Who built the tower?",
    "In which city is it?",
    "What kind of tower is it?",
]


def features_of(predictor: QAPredictor, question: str):
    return predictor.features([Example("q", "", CONTEXT, question, ())])


class HeldModel:
    """A fake model call: records each call's window count; the first call waits for `release`."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, windows):
        self.calls.append(len(windows))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        if any(int(ids[1]) == -7 for ids in windows.input_ids):  # a poisoned request
            raise RuntimeError("this window breaks the model")
        # Logit = the window's first question token, so each request can check it got its own.
        return [np.full(len(ids), float(ids[1])) for ids in windows.input_ids], [
            np.full(len(ids), -float(ids[1])) for ids in windows.input_ids
        ]


def test_waiting_requests_share_one_call_and_get_their_own_logits(predictor) -> None:
    model = HeldModel()
    batcher = RequestBatcher(model, Batching(max_batch_windows=64, max_wait_ms=0))
    features = [features_of(predictor, q) for q in QUESTIONS]
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        first = pool.submit(batcher.logits, features[0])
        assert model.entered.wait(30)  # the first request holds the model ...
        rest = [pool.submit(batcher.logits, f) for f in features[1:]]
        while batcher.queue_depth < len(rest):  # ... while the others queue up
            threading.Event().wait(0.01)
        model.release.set()
        results = [first.result(30)] + [r.result(30) for r in rest]
    assert model.calls == [len(features[0]), sum(len(f) for f in features[1:])]
    for feats, (starts, ends) in zip(features, results, strict=True):
        assert len(starts) == len(feats)
        for ids, s, e in zip(feats.input_ids, starts, ends, strict=True):
            assert s[0] == ids[1] and e[0] == -ids[1] and len(s) == len(ids)


def test_one_failing_request_does_not_fail_the_others(predictor) -> None:
    model = HeldModel()
    batcher = RequestBatcher(model, Batching(max_batch_windows=64, max_wait_ms=0))
    good = [features_of(predictor, q) for q in QUESTIONS[:3]]
    bad = features_of(predictor, "Poisoned?")
    bad.input_ids[0] = bad.input_ids[0].copy()
    bad.input_ids[0][1] = -7
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.logits, good[0])
        assert model.entered.wait(30)
        later = [pool.submit(batcher.logits, f) for f in (good[1], bad, good[2])]
        while batcher.queue_depth < 3:
            threading.Event().wait(0.01)
        model.release.set()
        first.result(30)
        assert later[0].result(30)[0][0][0] == good[1].input_ids[0][1]
        with pytest.raises(RuntimeError, match="breaks the model"):
            later[1].result(30)
        assert later[2].result(30)[0][0][0] == good[2].input_ids[0][1]


def test_batched_predictor_answers_like_the_unbatched_one(tiny_run, predictor) -> None:
    # A long max_wait: concurrent requests are gathered; a lone one must still not wait for it.
    batched = QAPredictor.from_run_dir(tiny_run)
    batch_requests(batched, Batching(max_wait_ms=60_000))
    lone = threading.Thread(target=batched.answer, args=(CONTEXT, QUESTIONS[:1]))
    lone.start()
    lone.join(30)
    assert not lone.is_alive(), "a lone request waited for others that never came"
    expected = [predictor.answer(CONTEXT, [q])[0] for q in QUESTIONS]
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        got = list(pool.map(lambda q: batched.answer(CONTEXT, [q])[0], QUESTIONS))
    for a, b in zip(expected, got, strict=True):
        assert (a["text"], a["start"], a["end"]) == (b["text"], b["start"], b["end"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_batch_windows", 0), ("max_batch_windows", True), ("max_wait_ms", -1.0)],
)
def test_batching_options_are_checked(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"Batching.{field}"):
        Batching(**{field: value})
