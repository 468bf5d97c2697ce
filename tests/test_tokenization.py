import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from squadqa.tokenization import (
    SPECIAL_TOKENS,
    QATokenizer,
    canonical_ids,
    load_tokenizer,
    train_wordpiece,
    training_texts,
)


def test_bert_vocab_matches_hf_bert_tokenizer(bert_tokenizer, sample_examples):
    """Our tokenizer built from vocab.txt tokenizes exactly like transformers' BertTokenizerFast."""
    transformers = pytest.importorskip("transformers")
    from conftest import bert_vocab_path

    reference = transformers.AutoTokenizer.from_pretrained(
        str(bert_vocab_path().parent), local_files_only=True
    )
    texts = [e.context for e in sample_examples[:40]] + [e.question for e in sample_examples[:40]]
    texts.append("Café au lait, 1,234.5 km² — naïve 北京 test\u00a0nbsp")
    ours = bert_tokenizer.encode_batch(texts)
    for text, enc in zip(texts, ours, strict=True):
        ref = reference(text, add_special_tokens=False, return_offsets_mapping=True)
        assert enc.ids == ref["input_ids"], text
        assert [tuple(o) for o in enc.offsets] == [tuple(o) for o in ref["offset_mapping"]], text


def test_special_ids(bert_tokenizer):
    # BERT uncased vocab: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102.
    assert (bert_tokenizer.pad_id, bert_tokenizer.cls_id, bert_tokenizer.sep_id) == (0, 101, 102)
    assert bert_tokenizer.vocab_size == 30522


def test_train_wordpiece_save_load(tmp_path: Path, sample_examples):
    tok = train_wordpiece(training_texts(sample_examples), vocab_size=1000)
    assert 900 <= tok.vocab_size <= 1000
    assert tok.pad_id == 0  # special tokens come first
    path = tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert path.name == "tokenizer.json"
    text = sample_examples[0].context
    assert again.encode_batch([text])[0].ids == tok.encode_batch([text])[0].ids
    # Uncased, and offsets point back into the original text.
    enc = tok.encode_batch(["Genome GENOME"])[0]
    assert enc.ids[: len(enc.ids) // 2] == enc.ids[len(enc.ids) // 2 :]
    first_start, first_end = enc.offsets[0]
    assert "Genome GENOME"[first_start:first_end].lower().startswith("gen")


def test_training_a_vocabulary_prints_nothing(sample_examples, capfd):
    """The trainer's progress bars printed bare newlines on stdout when it was not a terminal:
    stray blank lines in every `squadqa train` log."""
    train_wordpiece(training_texts(sample_examples), vocab_size=1000)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_training_texts_dedups_contexts(sample_examples):
    texts = list(training_texts(sample_examples))
    contexts = {e.context for e in sample_examples}
    assert len(texts) == len(contexts) + len(sample_examples)


def test_missing_special_tokens_rejected():
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        QATokenizer(
            Tokenizer(models.WordPiece({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
        )


def test_load_tokenizer_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json or vocab\.txt"):
        load_tokenizer(tmp_path)


def test_trained_ids_do_not_depend_on_the_trainers_numbering(sample_examples):
    """tokenizers numbers `##` tokens in hash-map order (tokenizers#1794): the ids squadqa keeps
    must follow from the token set alone, so any numbering of the same tokens maps to one."""
    vocab = train_wordpiece(training_texts(sample_examples), vocab_size=1000).tokenizer.get_vocab()
    for seed in range(3):
        tokens = list(vocab)
        random.Random(seed).shuffle(tokens)
        numbering = {token: i for i, token in enumerate(tokens)}
        renumbered = Tokenizer(models.WordPiece(numbering, unk_token="[UNK]"))
        assert canonical_ids(renumbered).get_vocab() == vocab
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert by_id[5:] == sorted(by_id[5:])


def test_renumbering_keeps_the_trainers_segmentation(sample_examples):
    """Reference: the tokenizer `tokenizers` trains, before squadqa renumbers it."""
    texts = list(training_texts(sample_examples))
    trainer = trainers.WordPieceTrainer(
        vocab_size=1000, min_frequency=2, special_tokens=list(SPECIAL_TOKENS)
    )
    reference = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    reference.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    reference.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    reference.train_from_iterator(texts, trainer=trainer)
    ours = canonical_ids(reference)
    assert ours.get_vocab().keys() == reference.get_vocab().keys()
    for text in [*texts, "[MASK] where is [SEP] Genome\u00a0GENOME?"]:
        want = reference.encode(text, add_special_tokens=False)
        got = ours.encode(text, add_special_tokens=False)
        assert (got.tokens, got.offsets) == (want.tokens, want.offsets), text
