import json

import numpy as np

from squadqa.data import Answer, Example
from squadqa.features import FeatureConfig, build_features
from squadqa.postprocess import SpanConfig, extract_answers

CONTEXT = "The Eiffel Tower is in Paris, France; it opened in 1889."


DEFAULT = FeatureConfig(max_seq_length=64, doc_stride=8, max_query_length=16)


def _features(bert_tokenizer, cfg=DEFAULT):
    ex = Example("q1", "t", CONTEXT, "Where is the tower?", (Answer("Paris", 23),))
    return ex, build_features([ex], bert_tokenizer, cfg)


def _tokens(bert_tokenizer, f, i=0):
    return [bert_tokenizer.tokenizer.id_to_token(int(t)) for t in f.input_ids[i]]


def test_best_span_ignores_question_tokens_and_bad_spans(bert_tokenizer):
    ex, f = _features(bert_tokenizer)
    toks = _tokens(bert_tokenizer, f)
    n = len(toks)
    paris = toks.index("paris")
    france = toks.index("france")
    start = np.zeros(n)
    end = np.zeros(n)
    start[1], end[1] = 100, 100  # a question token: never an answer
    start[n - 1] = 90  # final [SEP]: never an answer
    tower = toks.index("tower", f.context_start[0])
    start[toks.index("1889")], end[tower] = 8, 8  # end before start: invalid
    start[paris], end[france] = 5, 5  # the best valid span
    pred = extract_answers([ex], f, [start], [end])
    assert pred.answers["q1"] == "Paris, France"  # exact context substring, original case
    best = pred.nbest["q1"][0]
    assert (best.start, best.end) == (23, 36) and best.score == 10
    assert abs(sum(c.probability for c in pred.nbest["q1"]) - 1) < 1e-9


def test_max_answer_length(bert_tokenizer):
    ex, f = _features(bert_tokenizer)
    toks = _tokens(bert_tokenizer, f)
    start = np.zeros(len(toks))
    end = np.zeros(len(toks))
    first = f.context_start[0]
    start[first], end[len(toks) - 2] = 10, 10  # whole context: too long for a cap of 3
    pred = extract_answers([ex], f, [start], [end], SpanConfig(max_answer_length=3))
    assert len(pred.answers["q1"].split()) <= 3
    pred = extract_answers([ex], f, [start], [end], SpanConfig(max_answer_length=64))
    assert pred.answers["q1"] == CONTEXT


def test_best_over_windows_and_v2_null(bert_tokenizer, tmp_path):
    cfg = FeatureConfig(max_seq_length=18, doc_stride=4, max_query_length=8)
    ex, f = _features(bert_tokenizer, cfg)
    assert len(f) >= 2
    starts, ends = [], []
    for i in range(len(f)):
        toks = _tokens(bert_tokenizer, f, i)
        s, e = np.zeros(len(toks)), np.zeros(len(toks))
        if "1889" in toks:
            k = toks.index("1889")
            s[k], e[k] = 3, 3
        starts.append(s)
        ends.append(e)
    pred = extract_answers([ex], f, starts, ends)
    assert pred.answers["q1"] == "1889"
    # SQuAD 2.0: a CLS score above the best span (by more than the threshold) answers "".
    starts[0][0] = ends[0][0] = 5  # null score 10 > best span 6
    for other in range(1, len(f)):
        starts[other][0] = ends[other][0] = 5
    v2 = extract_answers([ex], f, starts, ends, SpanConfig(version_2=True))
    assert v2.answers["q1"] == "" and v2.null_scores["q1"] == 4
    keep = extract_answers([ex], f, starts, ends, SpanConfig(version_2=True, null_threshold=5))
    assert keep.answers["q1"] == "1889"
    pred.save(tmp_path)
    assert json.loads((tmp_path / "predictions.json").read_text()) == {"q1": "1889"}
    nbest = json.loads((tmp_path / "nbest_predictions.json").read_text())
    assert nbest["q1"][0]["text"] == "1889"


def test_padding_beyond_feature_is_ignored(bert_tokenizer):
    ex, f = _features(bert_tokenizer)
    n = len(f.input_ids[0])
    start = np.zeros(n + 10)
    end = np.zeros(n + 10)
    start[n + 5] = end[n + 5] = 1000  # padded positions of a batch row
    toks = _tokens(bert_tokenizer, f)
    k = toks.index("1889")
    start[k] = end[k] = 1
    assert extract_answers([ex], f, [start], [end]).answers["q1"] == "1889"
