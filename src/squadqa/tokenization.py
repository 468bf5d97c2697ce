"""WordPiece tokenizers with character offsets, built on Hugging Face `tokenizers`.

Features need the character span of every context token (answers are mapped to tokens and back
through them), so only fast tokenizers are used. Question and context are tokenized on their own,
without special tokens; `features.py` assembles `[CLS] question [SEP] context [SEP]` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from squadqa.rundir import TOKENIZER, write_atomic

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class QATokenizer:
    """A fast WordPiece tokenizer plus the special-token ids the QA features need."""

    tokenizer: Tokenizer

    def __post_init__(self) -> None:
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if self.token_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the special tokens {missing}")
        # The features add special tokens themselves; a post-processor would add them twice.
        self.tokenizer.post_processor = None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.token_to_id("[PAD]")

    @property
    def cls_id(self) -> int:
        return self.tokenizer.token_to_id("[CLS]")

    @property
    def sep_id(self) -> int:
        return self.tokenizer.token_to_id("[SEP]")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: Sequence[str]) -> list:
        """Token ids and character offsets of each text, no special tokens."""
        return self.tokenizer.encode_batch(list(texts), add_special_tokens=False)

    def fingerprint(self) -> str:
        """Stable text that identifies this tokenizer (for feature caches)."""
        return self.tokenizer.to_str()

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER
        write_atomic(path, lambda tmp: self.tokenizer.save(str(tmp)))
        return path


def _bert_pipeline(tokenizer: Tokenizer, lowercase: bool) -> Tokenizer:
    """BERT's normaliser, pre-tokeniser and decoder, as in `BertTokenizerFast`."""
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def from_vocab(vocab_path: str | Path, lowercase: bool = True) -> QATokenizer:
    """A BERT WordPiece tokenizer from a `vocab.txt` (one token per line)."""
    vocab_path = Path(vocab_path)
    if not vocab_path.is_file():
        raise FileNotFoundError(f"vocab file not found: {vocab_path}")
    model = models.WordPiece.from_file(str(vocab_path), unk_token="[UNK]")
    return QATokenizer(_bert_pipeline(Tokenizer(model), lowercase))


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True, min_frequency: int = 2
) -> QATokenizer:
    """Train an uncased WordPiece vocabulary on the given texts (train contexts and questions)."""
    if vocab_size < len(SPECIAL_TOKENS) + 100:
        raise ValueError(f"vocab_size={vocab_size} is too small; use at least 1000")
    tokenizer = _bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")), lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,  # its bars print bare newlines on stdout when it is not a terminal
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return QATokenizer(canonical_ids(tokenizer, lowercase))


def canonical_ids(tokenizer: Tokenizer, lowercase: bool = True) -> Tokenizer:
    """The same WordPiece vocabulary with ids in one fixed order: the special tokens, then the rest
    sorted by string.

    Why: `tokenizers`' WordPiece trainer numbers the `##` tokens in hash-map order, which changes
    from process to process (huggingface/tokenizers#1794), so the same data gave a vocabulary
    with the same tokens but permuted ids, hence different initial embedding rows: a pretraining
    could not be repeated. WordPiece segments by the token set alone (greedy longest match), so
    renumbering changes no segmentation. Ties between merges can still pick a different token
    set on small data; on the full train set three trainings gave the same 8k tokens.
    """
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    rest = sorted(token for token in vocab if token not in SPECIAL_TOKENS)
    ordered = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *rest])}
    canonical = _bert_pipeline(Tokenizer(models.WordPiece(ordered, unk_token="[UNK]")), lowercase)
    canonical.add_special_tokens(list(SPECIAL_TOKENS))  # matched whole, as the trainer does
    return canonical


def load_tokenizer(path: str | Path) -> QATokenizer:
    """Load from a `tokenizer.json`, a `vocab.txt`, or a directory holding either."""
    path = Path(path)
    if path.is_dir():
        for name in (TOKENIZER, "vocab.txt"):
            if (path / name).is_file():
                return load_tokenizer(path / name)
        raise FileNotFoundError(f"no {TOKENIZER} or vocab.txt in {path}")
    if path.suffix == ".txt":
        return from_vocab(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return QATokenizer(Tokenizer.from_file(str(path)))


def training_texts(examples: Iterable) -> Iterable[str]:
    """Each distinct context once, then every question: what a QA tokenizer should cover."""
    examples = list(examples)
    seen: set[str] = set()
    for example in examples:
        if example.context not in seen:
            seen.add(example.context)
            yield example.context
    for example in examples:
        yield example.question
