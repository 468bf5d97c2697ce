from pathlib import Path

import numpy as np
import pytest

from squadqa.data import Answer, Example
from squadqa.features import (
    FeatureConfig,
    batch_order,
    build_features,
    cache_key,
    pad_batch,
    window_starts,
)

SMALL = FeatureConfig(max_seq_length=32, doc_stride=4, max_query_length=8)


def _example(context: str, question: str, answer: str, qid: str = "q1") -> Example:
    start = context.index(answer)
    return Example(qid, "t", context, question, (Answer(answer, start),))


def test_window_starts_hand_computed():
    # 10 tokens, room 4, overlap 2 -> step 2: [0:4] [2:6] [4:8] [6:10]
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(4, 4, 2) == [0]
    assert window_starts(5, 4, 0) == [0, 4]


def test_labels_hand_computed(bert_tokenizer):
    ex = _example("The cat sat on the mat.", "Where did it sit?", "the mat")
    f = build_features([ex], bert_tokenizer, SMALL)
    ids = f.input_ids[0]
    tokens = [bert_tokenizer.tokenizer.id_to_token(int(i)) for i in ids]
    assert tokens == [
        "[CLS]",
        "where",
        "did",
        "it",
        "sit",
        "?",
        "[SEP]",
        "the",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        ".",
        "[SEP]",
    ]
    assert (f.start_positions[0], f.end_positions[0]) == (11, 12)
    assert f.context_start[0] == 7
    s, e = f.offsets[0][11, 0], f.offsets[0][12, 1]
    assert ex.context[s:e] == "the mat"
    assert (f.offsets[0][:7] == -1).all() and (f.offsets[0][-1] == -1).all()


def test_answer_outside_window_is_labelled_cls(bert_tokenizer):
    context = " ".join(f"w{i}" for i in range(40)) + " answer here."
    ex = _example(context, "q?", "answer")
    cfg = FeatureConfig(max_seq_length=24, doc_stride=8, max_query_length=4)
    f = build_features([ex], bert_tokenizer, cfg)
    assert len(f) > 2
    labelled = [(s, e) for s, e in zip(f.start_positions, f.end_positions, strict=True)]
    assert labelled[0] == (0, 0)  # first window holds no answer
    with_answer = [i for i, (s, _) in enumerate(labelled) if s != 0]
    assert with_answer
    for i in with_answer:
        s, e = labelled[i]
        assert context[f.offsets[i][s, 0] : f.offsets[i][e, 1]] == "answer"
    assert f.stats.windows_without_answer == len(f) - len(with_answer)
    assert all(len(ids) <= 24 for ids in f.input_ids)


def test_question_truncated_and_counted(bert_tokenizer):
    ex = _example("Paris is in France.", "word " * 50 + "?", "France")
    f = build_features(
        [ex], bert_tokenizer, FeatureConfig(max_seq_length=64, doc_stride=8, max_query_length=10)
    )
    assert f.stats.truncated_questions == 1
    assert f.context_start[0] == 12  # [CLS] + 10 question tokens + [SEP]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"max_seq_length": 384, "doc_stride": 400}, "doc_stride"),
        ({"max_seq_length": 60, "max_query_length": 64}, "max_seq_length"),
        ({"max_query_length": 0}, "max_query_length"),
    ],
)
def test_impossible_parameters_say_what_to_change(kwargs, names):
    with pytest.raises(ValueError, match=names):
        FeatureConfig(**kwargs)


def _run_qa_labels(encoding, answer_start: int, answer_text: str, cls_index: int = 0):
    """Hugging Face run_qa.py `prepare_train_features` labelling, restated for one window."""
    sequence_ids = encoding.sequence_ids
    offsets = encoding.offsets
    start_char, end_char = answer_start, answer_start + len(answer_text)
    token_start_index = 0
    while sequence_ids[token_start_index] != 1:
        token_start_index += 1
    token_end_index = len(encoding.ids) - 1
    while sequence_ids[token_end_index] != 1:
        token_end_index -= 1
    if not (
        offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char
    ):
        return cls_index, cls_index
    while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
        token_start_index += 1
    while offsets[token_end_index][1] >= end_char:
        token_end_index -= 1
    return token_start_index - 1, token_end_index + 1


def test_features_match_hf_overflowing_windows(bert_tokenizer, sample_examples):
    """Same windows, ids and labels as HF tokenizers' pair encoding with overflow + run_qa.py."""
    from conftest import bert_vocab_path
    from tokenizers.processors import TemplateProcessing

    from squadqa.tokenization import from_vocab

    cfg = FeatureConfig(max_seq_length=64, doc_stride=16, max_query_length=40)
    f = build_features(sample_examples, bert_tokenizer, cfg)
    ref = from_vocab(bert_vocab_path()).tokenizer
    cls, sep = bert_tokenizer.cls_id, bert_tokenizer.sep_id
    ref.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    ref.enable_truncation(max_length=64, stride=16, strategy="only_second")
    checked = hf_edge_cases = 0
    for i, ex in enumerate(sample_examples):
        enc = ref.encode(ex.question, ex.context)
        windows = [enc, *enc.overflowing]
        mine = np.flatnonzero(f.example_index == i)
        assert len(windows) == len(mine), ex.id
        for w, j in zip(windows, mine, strict=True):
            assert list(w.ids) == f.input_ids[j].tolist(), ex.id
            assert list(w.type_ids)[: f.context_start[j]] == [0] * f.context_start[j]
            answer = ex.answers[0]
            ref_start, ref_end = _run_qa_labels(w, answer.answer_start, answer.text)
            ours = (f.start_positions[j], f.end_positions[j])
            if ref_start == len(w.ids) - 1 and ref_end < ref_start:
                # run_qa.py's start loop walks onto the final [SEP] (offsets (0, 0)) when the
                # answer starts at the window's last context token: start > end, an invalid
                # label. Ours keeps the token itself.
                assert ours == (ref_end, ref_end), ex.id
                hf_edge_cases += 1
            else:
                assert (ref_start, ref_end) == ours, ex.id
            checked += 1
    assert checked == len(f) > len(sample_examples)
    assert hf_edge_cases < 0.01 * checked


def test_cache_round_trip(tmp_path: Path, bert_tokenizer, sample_examples):
    examples = sample_examples[:30]
    cfg = FeatureConfig(max_seq_length=96, doc_stride=16, max_query_length=32)
    first = build_features(examples, bert_tokenizer, cfg, cache_dir=tmp_path)
    files = list(tmp_path.glob("features-*.npz"))
    assert len(files) == 1
    second = build_features(examples, bert_tokenizer, cfg, cache_dir=tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first.input_ids, second.input_ids, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(first.offsets, second.offsets, strict=True))
    assert np.array_equal(first.start_positions, second.start_positions)
    assert first.stats == second.stats
    # Any change of data or parameters is a different key.
    other = FeatureConfig(max_seq_length=96, doc_stride=8, max_query_length=32)
    assert cache_key(examples, bert_tokenizer, other) != cache_key(examples, bert_tokenizer, cfg)
    assert cache_key(examples[:29], bert_tokenizer, cfg) != cache_key(examples, bert_tokenizer, cfg)


def test_pad_batch_masks(bert_tokenizer):
    ex = _example("The cat sat on the mat.", "Where?", "the mat")
    f = build_features([ex, ex], bert_tokenizer, SMALL)
    batch = pad_batch(f, [0, 1], bert_tokenizer.pad_id, multiple=16)
    n = len(f.input_ids[0])  # [CLS] where ? [SEP] + 7 context + [SEP] = 12
    assert n == 12 and batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"][0].tolist() == [1] * 12 + [0] * 4
    assert batch["token_type_ids"][0].tolist() == [0] * 4 + [1] * 8 + [0] * 4
    assert batch["span_mask"][0].tolist() == [1, 0, 0, 0] + [1] * 7 + [0] * 5
    assert (batch["input_ids"][0, 12:] == bert_tokenizer.pad_id).all()
    assert batch["question_match"][0].tolist() == [0] * 16  # "where?" shares no token


def test_question_match_flags_context_tokens_seen_in_question(bert_tokenizer):
    ex = _example("The cat sat on the mat.", "Where is the mat?", "the mat")
    f = build_features([ex], bert_tokenizer, SMALL)
    batch = pad_batch(f, [0], bert_tokenizer.pad_id, multiple=8)
    # [CLS] where is the mat ? [SEP] | the cat sat on the mat . [SEP]
    assert batch["question_match"][0, :15].tolist() == [0] * 7 + [1, 0, 0, 0, 1, 1, 0, 0]


def test_batch_order_covers_all_and_buckets():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 384, size=1000)
    batches = batch_order(lengths, 16, shuffle=True, seed=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert not np.array_equal(flat, np.concatenate(batch_order(lengths, 16, shuffle=True, seed=2)))
    # Sorted within chunks: batches hold similar lengths, far less padding than random batches.
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(16 * lengths[rng.permutation(1000)[:16]].max() for _ in range(63))
    assert padded < 0.8 * random_padded
    eval_batches = batch_order(lengths, 16, shuffle=False)
    assert np.all(np.diff(lengths[np.concatenate(eval_batches)]) >= 0)


def test_bucket_length_and_backend_multiples():
    from squadqa.features import bucket_length, default_length_multiple

    assert [bucket_length(n, 8) for n in (1, 8, 9, 383)] == [8, 8, 16, 384]
    assert default_length_multiple("torch") == 8 and default_length_multiple("jax") == 64
    with pytest.raises(ValueError, match="at least 1"):
        bucket_length(10, 0)
