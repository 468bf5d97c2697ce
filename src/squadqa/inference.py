"""Ask a trained run questions: `QAPredictor` behind `squadqa answer`, `predict` and `serve`.

A predictor is a run directory loaded once (`config.toml`, `tokenizer.json`, `model.keras`). Every
question goes the way evaluation went: `build_features` (same sliding windows), `predict_logits`
(length-bucketed `pad_batch` batches through `predict_on_batch`) and `extract_answers`, the one
span-selection function, so what is served is what was evaluated.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

import squadqa  # noqa: F401  (sets the default Keras backend before keras is imported)
from squadqa import rundir
from squadqa.config import RunConfig, dump_config, load_config
from squadqa.data import Example, load_squad
from squadqa.features import (
    FeatureConfig,
    Features,
    batch_order,
    build_features,
    default_length_multiple,
    pad_batch,
)
from squadqa.postprocess import Candidate, Predictions, SpanConfig, extract_answers
from squadqa.rundir import CONFIG, MODEL, TOKENIZER, write_json
from squadqa.tokenization import QATokenizer, load_tokenizer


def padding_multiple(configured: int) -> int:
    """The batch-length rounding to use (see `TrainConfig.length_multiple`)."""
    import keras

    return configured or default_length_multiple(keras.backend.backend())


def predict_logits(
    model: Any,
    features: Features,
    pad_id: int,
    batch_size: int,
    multiple: int = 32,
    replicas: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start/end logits of every feature (unpadded), batched by length.

    `replicas` > 1 (data parallel): a batch whose size is not a multiple of it is filled up with
    copies of its first row, whose outputs are dropped (inference only: nothing changes).
    """
    starts: list[np.ndarray] = [None] * len(features)  # type: ignore[list-item]
    ends: list[np.ndarray] = [None] * len(features)  # type: ignore[list-item]
    for indices in batch_order(features.lengths, batch_size, shuffle=False):
        filled = np.concatenate([indices, np.repeat(indices[:1], -len(indices) % replicas)])
        outputs = model.predict_on_batch(pad_batch(features, filled, pad_id, multiple))
        s = np.asarray(outputs["start_logits"], dtype=np.float32)
        e = np.asarray(outputs["end_logits"], dtype=np.float32)
        for row, i in enumerate(indices):
            n = len(features.input_ids[i])
            starts[i], ends[i] = s[row, :n], e[row, :n]
    return starts, ends


class Span(TypedDict):
    """One candidate answer: `context[start:end] == text` (character offsets, end exclusive)."""

    text: str
    score: float
    start: int
    end: int
    probability: float


class AnswerDict(Span):
    """The answer to one question, plus the top-k ranked candidate spans (the best first).

    `no_answer` (SQuAD 2.0 runs, or a context without tokens): the span fields are then empty
    (`text == ""`, score and probability 0) and `alternatives` still hold the best spans.
    """

    question: str
    no_answer: bool
    null_score: float  # null (CLS) score minus the best span's; no answer above the threshold
    alternatives: list[Span]


def _span(candidate: Candidate) -> Span:
    return Span(
        text=candidate.text,
        score=candidate.score,
        start=candidate.start,
        end=candidate.end,
        probability=candidate.probability,
    )


class _LockedModel:
    """`predict_on_batch` behind a lock: one Keras model is not safe to call from many threads."""

    def __init__(self, model: Any, lock: threading.Lock, progress: Any = None) -> None:
        self.model, self.lock, self.progress = model, lock, progress

    def predict_on_batch(self, batch: dict[str, Any]) -> Any:
        with self.lock:
            outputs = self.model.predict_on_batch(batch)
        if self.progress is not None:
            self.progress.update(len(batch["input_ids"]))
        return outputs


@dataclass
class QAPredictor:
    """A loaded model with the tokenizer, windowing and span settings it was trained with."""

    model: Any  # keras.Model: QATransformer (or anything with the same predict_on_batch)
    tokenizer: QATokenizer
    feature_config: FeatureConfig
    span_config: SpanConfig
    length_multiple: int = 8
    batch_size: int = 64
    name: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @classmethod
    def from_run_dir(cls, path: str | Path, batch_size: int | None = None) -> QAPredictor:
        """Load `config.toml`, `tokenizer.json` and `model.keras` (safe mode) of a run.

        A SQuAD 2.0 run answers "no answer" with the null threshold it chose on dev
        (`eval.json`), else with the configured `postprocess.null_threshold`.
        """
        run_dir = Path(path)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {run_dir} does not exist")
        missing = [n for n in (CONFIG, TOKENIZER, MODEL) if not (run_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{run_dir} is not a finished run directory: it lacks {', '.join(missing)} "
                f"(`squadqa train` writes {MODEL} when training ends)"
            )
        import keras

        import squadqa.model  # noqa: F401  (registers QATransformer and its layers for loading)

        config = load_config(run_dir / CONFIG)
        model = keras.models.load_model(run_dir / MODEL, safe_mode=True)
        span_config = config.postprocess
        chosen = rundir.null_threshold(run_dir)
        if span_config.version_2 and chosen is not None:
            span_config = dataclasses.replace(span_config, null_threshold=chosen)
        return cls(
            model=model,
            tokenizer=load_tokenizer(run_dir / TOKENIZER),
            feature_config=config.features,
            span_config=span_config,
            length_multiple=padding_multiple(config.train.length_multiple),
            batch_size=batch_size or config.train.eval_batch_size,
            name=run_dir.resolve().name,
        )

    # ----------------------------------------------------------------------------- core path

    def _predict(
        self,
        examples: Sequence[Example],
        features: Features,
        batch_size: int | None = None,
        progress: Any = None,
    ) -> Predictions:
        """Logits of every window → answers: exactly the evaluation path."""
        runner = _LockedModel(self.model, self._lock, progress)
        starts, ends = predict_logits(
            runner,
            features,
            self.tokenizer.pad_id,
            batch_size or self.batch_size,
            self.length_multiple,
        )
        return extract_answers(examples, features, starts, ends, self.span_config)

    def features(self, examples: Sequence[Example]) -> Features:
        """The windows evaluation would make of these examples."""
        return build_features(examples, self.tokenizer, self.feature_config)

    def answer(self, context: str, questions: Sequence[str], top_k: int = 3) -> list[AnswerDict]:
        """Best span of `context` for each question, with its top-k ranked candidates.

        `alternatives` holds up to `top_k` candidates sorted by score, the answer itself first;
        `probability` is the softmax of scores over the n-best list. A context without any
        token gives the empty answer (score 0, probability 0, no alternatives).
        """
        if isinstance(questions, str):
            raise TypeError("questions must be a list of strings, not one string")
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be at least 1")
        examples = [
            Example(id=str(i), title="", context=context, question=q, answers=())
            for i, q in enumerate(questions)
        ]
        if not examples:
            return []
        predictions = self._predict(examples, self.features(examples))
        results: list[AnswerDict] = []
        for example in examples:
            ranked = predictions.nbest[example.id]
            no_answer = predictions.is_no_answer(example.id, self.span_config)
            best = (
                Span(text="", score=0.0, start=0, end=0, probability=0.0)
                if no_answer
                else _span(ranked[0])
            )
            results.append(
                AnswerDict(
                    question=example.question,
                    **best,
                    no_answer=no_answer,
                    null_score=predictions.null_scores[example.id],
                    alternatives=[_span(c) for c in ranked[:top_k]],
                )
            )
        return results

    def predict_file(
        self,
        data_path: str | Path,
        out_path: str | Path,
        nbest_path: str | Path | None = None,
        batch_size: int | None = None,
        progress: bool = True,
    ) -> Predictions:
        """Official-format predictions (`{id: answer}`) for a SQuAD file, and optionally n-best."""
        from tqdm import tqdm

        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        data = load_squad(data_path)
        features = self.features(data.examples)
        with tqdm(
            total=len(features), unit="window", desc="predict", disable=not progress, leave=False
        ) as bar:
            predictions = self._predict(data.examples, features, batch_size, bar)
        write_json(Path(out_path), predictions.answers)
        if nbest_path is not None:
            nbest = {k: [c.to_dict() for c in v] for k, v in predictions.nbest.items()}
            write_json(Path(nbest_path), nbest)
        return predictions

    def warmup(self) -> None:
        """One throw-away question, so the first real request does not pay for tracing."""
        self.answer("Warm-up context for the model.", ["What is this?"], top_k=1)


def export_run_dir(
    path: str | Path, model: Any, tokenizer: QATokenizer, config: RunConfig | None = None
) -> Path:
    """Write the three files `QAPredictor.from_run_dir` reads, for a model not made by `train`.

    E.g. pretrained weights loaded with `squadqa.pretrained.load_pretrained()`, for latency
    measurements or a smoke test without fine-tuning.
    """
    run_dir = Path(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir)
    rundir.write_text(run_dir / CONFIG, dump_config(config or load_config(None)))
    rundir.write_atomic(run_dir / MODEL, model.save)
    return run_dir
