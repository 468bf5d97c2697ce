"""Self-supervised objectives on train text, in numpy: what `squadqa pretrain` feeds the encoder.

Text: every distinct context of the train split, tokenized once and cut into windows
`[CLS] tokens [SEP]` of at most `max_seq_length` tokens (no dev text: `squadqa pretrain` reads
`data.train` only). Three objectives, chosen by `pretrain.objective`:

- `mlm`: BERT's masked language modelling, with whole-word masking: a word is chosen with
  probability `mask_rate` and all its pieces are predicted; of the chosen tokens 80 % become
  `[MASK]`, 10 % a random non-special token, 10 % stay (`mask_token_share`, `random_token_share`).
  Special tokens and padding are never chosen.
- `electra`: ELECTRA's replaced-token detection. The same masking feeds a small generator; its
  samples replace the chosen tokens and the encoder labels every real token replaced or not. A
  sample equal to the original is *not* replaced (`replaced_token_labels`).
- `span`: recurring-span selection (Splinter, Ram et al. 2021): a span of words that occurs
  more than once in a window keeps one occurrence; every other occurrence becomes one `[MASK]`
  "question" token, and the encoder points at the kept occurrence's start and end, as a reader
  points at an answer.

Every batch's randomness comes from `seeding.generator(seed, Stream.MASKING, epoch, index)`, so a
resumed run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from squadqa.settings import setting
from squadqa.stopwords import STOPWORDS
from squadqa.tokenization import SPECIAL_TOKENS, QATokenizer

OBJECTIVES = ("mlm", "electra", "span")


@dataclass(frozen=True)
class PretrainConfig:
    """`[pretrain]`: the objective and its rates (optimiser, epochs, batch: from `[train]`)."""

    objective: str = setting("mlm", "mlm | electra | span (see squadqa.objectives)")
    max_seq_length: int = setting(256, "tokens per pretraining window, [CLS] and [SEP] included")
    mask_rate: float = setting(0.15, "mlm / electra: share of words (or tokens) chosen")
    whole_word: bool = setting(True, "mlm / electra: choose whole words, all pieces together")
    mask_token_share: float = setting(0.8, "of the chosen tokens: share replaced by [MASK]")
    random_token_share: float = setting(0.1, "of the chosen tokens: share replaced at random")
    generator_size: float = setting(0.25, "electra: generator width, share of the encoder's")
    discriminator_weight: float = setting(50.0, "electra: weight of the replaced-token loss")
    max_span_words: int = setting(10, "span: longest recurring span, in words")
    max_questions: int = setting(10, "span: most recurring spans asked per window")

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"pretrain.objective={self.objective!r}: use one of {OBJECTIVES}")
        if self.max_seq_length < 8:
            raise ValueError(f"pretrain.max_seq_length={self.max_seq_length} must be at least 8")
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"pretrain.mask_rate={self.mask_rate} must be in (0, 1)")
        shares = (self.mask_token_share, self.random_token_share)
        if min(shares) < 0 or sum(shares) > 1.0:
            raise ValueError(
                "pretrain.mask_token_share and random_token_share must be >= 0 and sum to <= 1, "
                f"got {shares}"
            )
        if not 0.0 < self.generator_size <= 1.0:
            raise ValueError(f"pretrain.generator_size={self.generator_size} must be in (0, 1]")
        for name in ("max_span_words", "max_questions"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretrain.{name}={getattr(self, name)} must be at least 1")


@dataclass
class TextWindows:
    """Tokenized windows `[CLS] tokens [SEP]` and the word index of each token (-1: special)."""

    input_ids: list[np.ndarray]
    word_ids: list[np.ndarray]
    paragraphs: int
    split_paragraphs: int  # paragraphs longer than one window, cut into several (none dropped)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))

    def summary(self) -> str:
        return (
            f"{self.paragraphs} paragraphs -> {len(self)} windows "
            f"({self.split_paragraphs} paragraphs split over several windows, none truncated), "
            f"{int(self.lengths.sum())} tokens"
        )


def build_windows(texts: Iterable[str], tokenizer: QATokenizer, max_seq_length: int) -> TextWindows:
    """Each distinct text once, cut into consecutive windows (every token kept)."""
    unique = list(dict.fromkeys(texts))
    room = max_seq_length - 2
    input_ids: list[np.ndarray] = []
    word_ids: list[np.ndarray] = []
    split = 0
    for encoding in tokenizer.encode_batch(unique):
        ids = np.asarray(encoding.ids, dtype=np.int32)
        words = np.asarray([-1 if w is None else w for w in encoding.word_ids], dtype=np.int32)
        split += len(ids) > room
        for start in range(0, max(len(ids), 1), room):
            piece, piece_words = ids[start : start + room], words[start : start + room]
            input_ids.append(np.concatenate([[tokenizer.cls_id], piece, [tokenizer.sep_id]]))
            # Word indices restart per window, so a word cut by a window edge is two words.
            piece_words = piece_words - (piece_words.min() if len(piece_words) else 0)
            word_ids.append(np.concatenate([[-1], piece_words, [-1]]).astype(np.int32))
    return TextWindows(input_ids, word_ids, len(unique), split)


def choose_positions(
    word_ids: np.ndarray, rate: float, whole_word: bool, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of the tokens to predict; special tokens (word id -1) are never chosen."""
    real = word_ids >= 0
    if whole_word:
        n_words = int(word_ids.max()) + 1 if real.any() else 0
        chosen_words = rng.random(n_words) < rate
        return real & chosen_words[np.where(real, word_ids, 0)] if n_words else real
    return real & (rng.random(len(word_ids)) < rate)


def corrupt(
    input_ids: np.ndarray,
    chosen: np.ndarray,
    config: PretrainConfig,
    mask_id: int,
    random_ids: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """BERT's 80/10/10: chosen tokens become [MASK], a random non-special token, or stay."""
    out = input_ids.copy()
    where = np.flatnonzero(chosen)
    draw = rng.random(len(where))
    to_mask = draw < config.mask_token_share
    to_random = ~to_mask & (draw < config.mask_token_share + config.random_token_share)
    out[where[to_mask]] = mask_id
    out[where[to_random]] = rng.choice(random_ids, size=int(to_random.sum()))
    return out


def replaced_token_labels(original: np.ndarray, corrupted: np.ndarray, real: np.ndarray):
    """ELECTRA's labels: 1 where the corrupted token differs from the original, on real tokens.

    Written with operators that numpy arrays and Keras tensors share, so the model computes its
    labels with this very function.
    """
    return (original != corrupted) & real


def recurring_spans(
    word_ids: np.ndarray, input_ids: np.ndarray, content: np.ndarray, max_words: int
) -> list[list[tuple[int, int]]]:
    """Groups of non-overlapping occurrences (token start, token end inclusive) of word n-grams
    that occur at least twice, longest first; each must hold a content (non-stopword) token."""
    starts = [i for i, w in enumerate(word_ids) if w >= 0 and (i == 0 or w != word_ids[i - 1])]
    bounds = [(s, _word_end(word_ids, s)) for s in starts]
    used = np.zeros(len(input_ids), dtype=bool)
    groups: list[list[tuple[int, int]]] = []
    for n in range(min(max_words, len(bounds) // 2), 0, -1):
        seen: dict[tuple, list[tuple[int, int]]] = {}
        for w in range(len(bounds) - n + 1):
            first, last = bounds[w][0], bounds[w + n - 1][1]
            seen.setdefault(tuple(input_ids[first : last + 1]), []).append((first, last))
        for span in seen.values():
            free = [(a, b) for a, b in span if not used[a : b + 1].any()]
            kept: list[tuple[int, int]] = []
            for a, b in free:  # occurrences of one n-gram may overlap each other ("a a a")
                if not kept or a > kept[-1][1]:
                    kept.append((a, b))
            if len(kept) < 2 or not content[input_ids[kept[0][0] : kept[0][1] + 1]].any():
                continue
            for a, b in kept:
                used[a : b + 1] = True
            groups.append(kept)
    return groups


def _word_end(word_ids: np.ndarray, start: int) -> int:
    end = start
    while end + 1 < len(word_ids) and word_ids[end + 1] == word_ids[start]:
        end += 1
    return end


def span_questions(
    input_ids: np.ndarray,
    word_ids: np.ndarray,
    content: np.ndarray,
    question_id: int,
    config: PretrainConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Recurring-span selection on one window: (new ids, [(question pos, answer start, end)]).

    Each chosen group keeps one random occurrence (the answer); every other occurrence is
    replaced by a single `question_id` token that asks for it.
    """
    groups = recurring_spans(word_ids, input_ids, content, config.max_span_words)
    if len(groups) > config.max_questions:
        pick = rng.choice(len(groups), size=config.max_questions, replace=False)
        groups = [groups[i] for i in sorted(pick)]
    answer_of: dict[int, tuple[int, int]] = {}
    replaced: dict[int, tuple[int, tuple[int, int]]] = {}  # occurrence start -> (end, answer)
    for group in groups:
        answer = group[int(rng.integers(len(group)))]
        for a, b in group:
            if (a, b) != answer:
                replaced[a] = (b, answer)
        answer_of[answer[0]] = answer
    new_ids: list[int] = []
    new_index = np.zeros(len(input_ids), dtype=np.int64)  # old token -> new position
    asks: list[tuple[int, tuple[int, int]]] = []
    i = 0
    while i < len(input_ids):
        if i in replaced:
            end, answer = replaced[i]
            asks.append((len(new_ids), answer))
            new_ids.append(question_id)
            i = end + 1
            continue
        new_index[i] = len(new_ids)
        new_ids.append(int(input_ids[i]))
        i += 1
    questions = [(q, int(new_index[a]), int(new_index[b])) for q, (a, b) in asks]
    return np.asarray(new_ids, dtype=np.int32), questions


def content_tokens(tokenizer: QATokenizer) -> np.ndarray:
    """Per vocabulary id: does the token carry content (not special, punctuation or stopword)?"""
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    content = np.zeros(tokenizer.vocab_size, dtype=bool)
    for token, index in vocab.items():
        text = token[2:] if token.startswith("##") else token
        content[index] = (
            token not in SPECIAL_TOKENS and text.isalnum() and text.lower() not in STOPWORDS
        )
    return content


def special_ids(tokenizer: QATokenizer) -> np.ndarray:
    ids = [tokenizer.token_id(t) for t in SPECIAL_TOKENS]
    return np.asarray(sorted(i for i in ids if i is not None), dtype=np.int32)


def non_special_ids(tokenizer: QATokenizer) -> np.ndarray:
    """Ids a random replacement may take: every id but the special tokens."""
    return np.setdiff1d(np.arange(tokenizer.vocab_size, dtype=np.int32), special_ids(tokenizer))


def bucket(n: int, multiple: int) -> int:
    return max(-(-n // multiple) * multiple, multiple)


def pad_rows(rows: Sequence[np.ndarray], pad: int, multiple: int) -> np.ndarray:
    """Rows padded into one [batch, length] int32 array, length a multiple of `multiple`."""
    out = np.full((len(rows), bucket(max(len(r) for r in rows), multiple)), pad, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
