"""Examples → windowed model features, span labels and the offsets post-processing needs.

Layout of one feature: `[CLS] question [SEP] context-window [SEP]`. A context longer than the room
left by the question is split into windows that overlap by `doc_stride` tokens, the semantics of
Hugging Face's `return_overflowing_tokens` + `stride` (what `run_qa.py` uses), so features match
theirs token for token. Each distinct context is tokenized once, however many questions it has:
that, not a faster tokenizer, is where the speed comes from.

Labels follow the BERT convention: the start/end token of the (first) answer when the whole answer
lies inside the window, else both point at CLS (position 0).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from squadqa.data import Example
from squadqa.rundir import write_atomic
from squadqa.settings import setting
from squadqa.tokenization import QATokenizer

CLS_INDEX = 0
CACHE_FORMAT = 1


@dataclass(frozen=True)
class FeatureConfig:
    """Windowing parameters (BERT's SQuAD defaults)."""

    max_seq_length: int = setting(384, "tokens per window: [CLS] question [SEP] context [SEP]")
    doc_stride: int = setting(128, "context tokens shared by consecutive windows of a context")
    max_query_length: int = setting(64, "question tokens kept (longer questions are cut, counted)")

    def __post_init__(self) -> None:
        room = self.max_seq_length - self.max_query_length - 3
        if self.max_query_length < 1:
            raise ValueError(f"max_query_length={self.max_query_length} must be at least 1")
        if room < 1:
            raise ValueError(
                f"max_seq_length={self.max_seq_length} leaves no room for context after a "
                f"question of max_query_length={self.max_query_length} and 3 special tokens: "
                f"raise max_seq_length above {self.max_query_length + 3} or lower max_query_length"
            )
        if not 0 <= self.doc_stride < room:
            raise ValueError(
                f"doc_stride={self.doc_stride} must be >= 0 and smaller than the context room of "
                f"a window ({room} tokens = max_seq_length {self.max_seq_length} - "
                f"max_query_length {self.max_query_length} - 3): lower doc_stride below {room} "
                f"or raise max_seq_length"
            )


@dataclass
class FeatureStats:
    """What featurisation did, so nothing is cut or lost silently."""

    examples: int = 0
    features: int = 0
    windows_per_example: dict[int, int] = field(default_factory=dict)
    truncated_questions: int = 0
    unanswerable: int = 0
    # Answers whose token span (the label) does not decode back to the answer text exactly,
    # e.g. an answer that starts or ends inside a token. Kept with ids for inspection.
    label_mismatches: list[dict] = field(default_factory=list)
    # Features whose window holds no full answer (labelled CLS), for answerable questions.
    windows_without_answer: int = 0

    def summary(self) -> str:
        hist = ", ".join(f"{k}: {v}" for k, v in sorted(self.windows_per_example.items()))
        return (
            f"{self.examples} examples -> {self.features} features "
            f"(windows per example {{{hist}}}); {self.truncated_questions} questions truncated; "
            f"{len(self.label_mismatches)} answers whose token span differs from the answer text; "
            f"{self.windows_without_answer} windows without the answer (labelled CLS); "
            f"{self.unanswerable} unanswerable"
        )


@dataclass
class Features:
    """Unpadded features, one entry per window."""

    input_ids: list[np.ndarray]
    context_start: np.ndarray  # first context token of each feature (after `[CLS] q [SEP]`)
    offsets: list[np.ndarray]  # [len, 2] character span in the context; -1 off the context
    example_index: np.ndarray  # index into the example list of each feature
    start_positions: np.ndarray
    end_positions: np.ndarray
    stats: FeatureStats

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self))


def window_starts(n_tokens: int, room: int, doc_stride: int) -> list[int]:
    """Start of each window over `n_tokens` context tokens (HF overflow semantics)."""
    step = room - doc_stride
    starts = [0]
    while starts[-1] + room < n_tokens:
        starts.append(starts[-1] + step)
    return starts


def answer_token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """First/last token covering [char_start, char_end) by `run_qa.py`'s rule.

    Start = last token starting at or before `char_start`; end = first token ending at or after
    `char_end`. `offsets` are the context tokens' (start, end) character spans.
    """
    start = int(np.searchsorted(offsets[:, 0], char_start, side="right")) - 1
    end = int(np.searchsorted(offsets[:, 1], char_end, side="left"))
    return max(start, 0), min(end, len(offsets) - 1)


def build_features(
    examples: Sequence[Example],
    tokenizer: QATokenizer,
    config: FeatureConfig = FeatureConfig(),
    cache_dir: str | Path | None = None,
) -> Features:
    """Featurise examples, reading/writing an on-disk cache when `cache_dir` is given."""
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"features-{cache_key(examples, tokenizer, config)}.npz"
        if cache_path.is_file():
            return _load_cache(cache_path)
    features = _featurize(examples, tokenizer, config)
    if cache_path is not None:
        _save_cache(features, cache_path)
    return features


def _featurize(
    examples: Sequence[Example], tokenizer: QATokenizer, config: FeatureConfig
) -> Features:
    context_index: dict[str, int] = {}
    for example in examples:
        context_index.setdefault(example.context, len(context_index))
    contexts = list(context_index)
    context_encodings = tokenizer.encode_batch(contexts)
    context_ids = [np.asarray(e.ids, dtype=np.int32) for e in context_encodings]
    context_offsets = [
        np.asarray(e.offsets, dtype=np.int32).reshape(-1, 2) for e in context_encodings
    ]
    question_encodings = tokenizer.encode_batch([e.question for e in examples])

    cls = np.array([tokenizer.cls_id], dtype=np.int32)
    sep = np.array([tokenizer.sep_id], dtype=np.int32)
    stats = FeatureStats(examples=len(examples))
    windows: Counter[int] = Counter()
    input_ids: list[np.ndarray] = []
    offsets_out: list[np.ndarray] = []
    context_start: list[int] = []
    example_index: list[int] = []
    start_positions: list[int] = []
    end_positions: list[int] = []

    for i, (example, q_enc) in enumerate(zip(examples, question_encodings, strict=True)):
        q_ids = q_enc.ids
        if len(q_ids) > config.max_query_length:
            q_ids = q_ids[: config.max_query_length]
            stats.truncated_questions += 1
        c = context_index[example.context]
        c_ids, c_off = context_ids[c], context_offsets[c]
        room = config.max_seq_length - len(q_ids) - 3
        prefix = np.concatenate([cls, np.asarray(q_ids, dtype=np.int32), sep])
        first = len(prefix)

        answer_span = None
        if example.answers:
            answer = example.answers[0]
            char_start, char_end = answer.answer_start, answer.answer_start + len(answer.text)
            answer_span = answer_token_span(c_off, char_start, char_end)
            tok_s, tok_e = answer_span
            decoded = example.context[c_off[tok_s, 0] : c_off[tok_e, 1]]
            if decoded != answer.text:
                stats.label_mismatches.append(
                    {"id": example.id, "answer": answer.text, "token_span_text": decoded}
                )
        else:
            stats.unanswerable += 1

        starts = window_starts(len(c_ids), room, config.doc_stride)
        windows[len(starts)] += 1
        for w_start in starts:
            w_stop = min(w_start + room, len(c_ids))
            ids = np.concatenate([prefix, c_ids[w_start:w_stop], sep])
            offsets = np.full((len(ids), 2), -1, dtype=np.int32)
            offsets[first : first + w_stop - w_start] = c_off[w_start:w_stop]
            label = (CLS_INDEX, CLS_INDEX)
            if answer_span is not None:
                tok_s, tok_e = answer_span
                if w_start <= tok_s and tok_e < w_stop:
                    label = (first + tok_s - w_start, first + tok_e - w_start)
                else:
                    stats.windows_without_answer += 1
            input_ids.append(ids)
            offsets_out.append(offsets)
            context_start.append(first)
            example_index.append(i)
            start_positions.append(label[0])
            end_positions.append(label[1])

    stats.features = len(input_ids)
    stats.windows_per_example = dict(windows)
    return Features(
        input_ids=input_ids,
        context_start=np.asarray(context_start, dtype=np.int32),
        offsets=offsets_out,
        example_index=np.asarray(example_index, dtype=np.int64),
        start_positions=np.asarray(start_positions, dtype=np.int32),
        end_positions=np.asarray(end_positions, dtype=np.int32),
        stats=stats,
    )


def cache_key(examples: Sequence[Example], tokenizer: QATokenizer, config: FeatureConfig) -> str:
    """Hash of everything features depend on: data, tokenizer and parameters."""
    digest = hashlib.sha256()
    digest.update(f"format={CACHE_FORMAT};{json.dumps(asdict(config), sort_keys=True)}".encode())
    digest.update(tokenizer.fingerprint().encode())
    for e in examples:
        answers = "\x1e".join(f"{a.answer_start}\x1f{a.text}" for a in e.answers)
        digest.update(f"\x1d{e.id}\x1f{e.question}\x1f{e.context}\x1f{answers}".encode())
    return digest.hexdigest()[:24]


def _save_cache(features: Features, path: Path) -> None:
    # Atomic: a crash never leaves a half-written cache behind, nor do two runs clash.
    write_atomic(
        path,
        lambda tmp: np.savez(
            tmp,
            lengths=features.lengths,
            input_ids=np.concatenate(features.input_ids),
            offsets=np.concatenate(features.offsets),
            context_start=features.context_start,
            example_index=features.example_index,
            start_positions=features.start_positions,
            end_positions=features.end_positions,
            stats=np.array(json.dumps(asdict(features.stats))),
        ),
    )


def _load_cache(path: Path) -> Features:
    with np.load(path) as data:
        bounds = np.cumsum(data["lengths"])[:-1]
        stats = json.loads(str(data["stats"]))
        stats["windows_per_example"] = {int(k): v for k, v in stats["windows_per_example"].items()}
        return Features(
            input_ids=np.split(data["input_ids"], bounds),
            context_start=data["context_start"],
            offsets=np.split(data["offsets"], bounds),
            example_index=data["example_index"],
            start_positions=data["start_positions"],
            end_positions=data["end_positions"],
            stats=FeatureStats(**stats),
        )


def default_length_multiple(backend: str) -> int:
    """Batch-length rounding per Keras backend: torch runs any shape eagerly at no cost, jax and
    tensorflow compile each new shape, so they get fewer, coarser lengths."""
    return 8 if backend == "torch" else 64


def bucket_length(length: int, multiple: int) -> int:
    """Pad lengths up to a multiple, so a backend that compiles per shape sees few shapes."""
    if multiple < 1:
        raise ValueError(f"length multiple {multiple} must be at least 1")
    return -(-length // multiple) * multiple


def pad_batch(
    features: Features, indices: Sequence[int], pad_id: int, multiple: int
) -> dict[str, np.ndarray]:
    """Model inputs for the given features, padded to the batch's own bucketed length."""
    length = bucket_length(max(len(features.input_ids[i]) for i in indices), multiple)
    batch = len(indices)
    input_ids = np.full((batch, length), pad_id, dtype=np.int32)
    token_type_ids = np.zeros((batch, length), dtype=np.int32)
    attention_mask = np.zeros((batch, length), dtype=np.int32)
    span_mask = np.zeros((batch, length), dtype=np.int32)
    question_match = np.zeros((batch, length), dtype=np.int32)
    for row, i in enumerate(indices):
        ids = features.input_ids[i]
        n, first = len(ids), features.context_start[i]
        input_ids[row, :n] = ids
        question_match[row, first : n - 1] = np.isin(ids[first : n - 1], ids[1 : first - 1])
        token_type_ids[row, first:n] = 1
        attention_mask[row, :n] = 1
        span_mask[row, first : n - 1] = 1  # context tokens, not the final [SEP]
        span_mask[row, CLS_INDEX] = 1
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "span_mask": span_mask,
        "question_match": question_match,
    }


def split_evenly(order: Sequence[np.ndarray], replicas: int) -> list[np.ndarray]:
    """Each batch cut to a multiple of `replicas` (data parallel: every device gets as many
    rows); batches left empty are dropped. The caller counts what was cut."""
    cut = [batch[: len(batch) - len(batch) % replicas] for batch in order]
    return [batch for batch in cut if len(batch)]


def batch_order(
    lengths: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int | np.random.SeedSequence = 0,
    bucket_batches: int = 50,
) -> list[np.ndarray]:
    """Batches of feature indices grouped by similar length.

    Training (`shuffle=True`): shuffle, sort within chunks of `bucket_batches` batches by length,
    cut into batches, shuffle the batches: random order, little padding. Evaluation: sorted by
    length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_batches
    batches = []
    for c in range(0, len(order), chunk):
        part = order[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
