from pathlib import Path

import pytest

from squadqa.tokenization import QATokenizer, load_tokenizer, train_wordpiece, training_texts


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


def test_training_texts_dedups_contexts(sample_examples):
    texts = list(training_texts(sample_examples))
    contexts = {e.context for e in sample_examples}
    assert len(texts) == len(contexts) + len(sample_examples)


def test_missing_special_tokens_rejected():
    from tokenizers import Tokenizer, models

    with pytest.raises(ValueError, match=r"\[CLS\]"):
        QATokenizer(
            Tokenizer(models.WordPiece({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
        )


def test_load_tokenizer_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json or vocab\.txt"):
        load_tokenizer(tmp_path)
