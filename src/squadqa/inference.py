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
    build_features,
)
from squadqa.postprocess import (
    Candidate,
    Predictions,
    SpanConfig,
    TopProbabilityMap,
    extract_answers,
)
from squadqa.rundir import CONFIG, MODEL, TOKENIZER, write_json
from squadqa.scoring import padding_multiple, predict_logits
from squadqa.tokenization import QATokenizer, load_tokenizer

# What `QAPredictor.from_run_dir(runtime=...)` loads from the run directory.
RUNTIMES = {"keras": MODEL, "onnx": rundir.ONNX, "onnx-int8": rundir.ONNX_INT8}
AUTO = "auto"  # the first runtime of RUNTIMES whose file the run directory holds
# ONNX Runtime on CPU runs any shape without recompiling: round lengths only a little.
ONNX_LENGTH_MULTIPLE = 8


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
    no_answer_probability: float | None  # SQuAD 2.0: P("no answer" is right); v1.1: None
    alternatives: list[Span]


# What each field of `Span` and `AnswerDict` means. The HTTP API's response models
# (`squadqa.serve.app`) are made from these TypedDicts and this text: one definition of an answer.
ANSWER_FIELDS_HELP: dict[str, str] = {
    "text": "exactly context[start:end]",
    "score": "start logit + end logit",
    "start": "character offset in the context where the answer starts",
    "end": "character offset where it ends (exclusive)",
    "probability": "softmax of the score over the n-best candidates, at the temperature "
    "`squadqa calibrate` fitted; in a calibrated run the top answer's is the chance that it is "
    "exactly right (temperature, then its isotonic map when fitted)",
    "question": "the question, as asked",
    "no_answer": "the model finds no answer in the context (SQuAD 2.0 runs: null score above "
    'the threshold chosen on dev); text is then "", score and probability 0, and alternatives '
    "still list the best spans",
    "null_score": "null ([CLS]) score minus the best span's score: the higher, the surer the "
    "model is that the context holds no answer",
    "no_answer_probability": 'SQuAD 2.0 runs: the probability that "no answer" is right '
    "(calibrated by `squadqa calibrate`); null for SQuAD 1.1 runs",
    "alternatives": "top_k candidate spans by score, the best first (the answer itself unless "
    "no_answer)",
}


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

    model: Any  # QATransformer, OnnxModel, or anything with the same predict_on_batch
    tokenizer: QATokenizer
    feature_config: FeatureConfig
    span_config: SpanConfig
    length_multiple: int  # batches padded to a multiple of this many tokens (padding_multiple)
    batch_size: int = 64
    name: str = ""
    top_map: TopProbabilityMap | None = None  # `squadqa calibrate`'s isotonic map, if it fitted one
    # `squadqa fit-ask`'s weights of retrieval evidence in `ask` (`retrieval.fusion`); None: none
    fusion_weights: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._batcher: Any = None  # `batch_requests`; None: one request at a time, behind a lock

    @property
    def batching(self) -> bool:
        """Whether concurrent `answer` calls meet in a batcher (`batch_requests`)."""
        return self._batcher is not None

    def batch_requests(self, batcher: Any) -> None:
        """From now on `answer` hands its windows to `batcher` (`squadqa serve`'s
        `RequestBatcher`, built on `logits`), which runs concurrent requests' windows in one
        model call."""
        self._batcher = batcher

    def logits(
        self, features: Any, batch_size: int | None = None, progress: Any = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Start and end logits of every window (unpadded), the model behind this predictor's
        lock, in batches of `batch_size` sorted by length."""
        return predict_logits(
            _LockedModel(self.model, self._lock, progress),
            features,
            self.tokenizer.pad_id,
            batch_size or self.batch_size,
            self.length_multiple,
        )

    @classmethod
    def from_run_dir(
        cls,
        path: str | Path,
        batch_size: int | None = None,
        runtime: str = AUTO,
    ) -> QAPredictor:
        """Load `config.toml`, `tokenizer.json` and the model file of `runtime` (`RUNTIMES`).

        `path`: a run directory, or `builtin:NAME` for a reader shipped in the package.
        `keras`: `model.keras` (safe mode) on the Keras backend; `onnx` / `onnx-int8`:
        `model.onnx` / `model.int8.onnx` (made by `squadqa export`) on ONNX Runtime, without
        importing Keras; `auto`: the first of those the run holds (a trained run: `keras`; a
        shipped int8 reader: `onnx-int8`). A SQuAD 2.0 run answers "no answer" with the null
        threshold it chose on dev (`eval.json`), else with the configured
        `postprocess.null_threshold`; a calibrated run's probabilities use the temperature (and
        the isotonic map, if fitted) of its `calibration.json`.
        """
        if runtime != AUTO and runtime not in RUNTIMES:
            choices = ", ".join([AUTO, *RUNTIMES])
            raise ValueError(f"runtime must be one of {choices}, got {runtime!r}")
        run_dir = rundir.run_path(path)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {run_dir} does not exist")
        if runtime == AUTO:
            held = [r for r, name in RUNTIMES.items() if (run_dir / name).is_file()]
            runtime = held[0] if held else "keras"  # none: the error below names model.keras
        model_file = RUNTIMES[runtime]
        missing = [n for n in (CONFIG, TOKENIZER, model_file) if not (run_dir / n).is_file()]
        if missing:
            made_by = (
                f"`squadqa train` writes {MODEL} when training ends"
                if model_file == MODEL
                else f"`squadqa export {run_dir}"
                + (" --quantize int8" if model_file == rundir.ONNX_INT8 else "")
                + f"` writes {model_file}"
            )
            raise FileNotFoundError(
                f"{run_dir} is not a finished run directory: it lacks {', '.join(missing)} "
                f"({made_by})"
            )
        config = load_config(run_dir / CONFIG)
        if runtime == "keras":
            import keras

            import squadqa.model  # noqa: F401  (registers QATransformer and its layers)

            model = keras.models.load_model(run_dir / MODEL, safe_mode=True)
            multiple = padding_multiple(config.train.length_multiple)
        else:
            from squadqa.onnx_model import OnnxModel

            model = OnnxModel(run_dir / model_file, row_by_row=model_file == rundir.ONNX_INT8)
            multiple = config.train.length_multiple or ONNX_LENGTH_MULTIPLE
        span_config = config.postprocess
        chosen = rundir.null_threshold(run_dir)
        if span_config.version_2 and chosen is not None:
            span_config = dataclasses.replace(span_config, null_threshold=chosen)
        fitted = rundir.temperature(run_dir)  # `squadqa calibrate`
        if fitted is not None:
            span_config = dataclasses.replace(span_config, temperature=fitted)
        fitted = rundir.temperature(run_dir, of="no_answer")
        if span_config.version_2 and fitted is not None:
            span_config = dataclasses.replace(span_config, no_answer_temperature=fitted)
        knots = rundir.isotonic_knots(run_dir)
        return cls(
            model=model,
            tokenizer=load_tokenizer(run_dir / TOKENIZER),
            feature_config=config.features,
            span_config=span_config,
            length_multiple=multiple,
            batch_size=batch_size or config.train.eval_batch_size,
            name=run_dir.resolve().name,
            top_map=(
                None
                if knots is None
                else TopProbabilityMap(tuple(knots["tempered"]), tuple(knots["calibrated"]))
            ),
            fusion_weights=rundir.fusion_weights(run_dir),
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
        starts, ends = self.logits(features, batch_size, progress)
        return extract_answers(examples, features, starts, ends, self.span_config, self.top_map)

    def features(self, examples: Sequence[Example]) -> Features:
        """The windows evaluation would make of these examples."""
        return build_features(examples, self.tokenizer, self.feature_config)

    def read(self, examples: Sequence[Example]) -> Predictions:
        """Answers to examples with contexts of their own, all windows in one batched pass (the
        evaluation path): how `squadqa ask` reads the passages it retrieved."""
        return self._predict(examples, self.features(examples))

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
        if self._batcher is None:
            predictions = self._predict(examples, self.features(examples))
        else:
            with self._batcher.arrive():
                features = self.features(examples)
                starts, ends = self._batcher.logits(features)
            predictions = extract_answers(
                examples, features, starts, ends, self.span_config, self.top_map
            )
        return self.answers_of(examples, predictions, top_k)

    def answers_of(
        self, examples: Sequence[Example], predictions: Predictions, top_k: int = 3
    ) -> list[AnswerDict]:
        """`answer`'s dicts for predictions already made (`squadqa explain` makes its own, from
        the logits it also attributes)."""
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
                    no_answer_probability=predictions.no_answer_probability(
                        example.id, self.span_config
                    ),
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
        na_prob_path: str | Path | None = None,
    ) -> Predictions:
        """Official-format predictions (`{id: answer}`) for a SQuAD file, and optionally n-best
        and (SQuAD 2.0 runs) the official evaluation's no-answer probabilities (`{id: P("no
        answer" is right)}`, 1 for a question without any span)."""
        from tqdm import tqdm

        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if na_prob_path is not None and not self.span_config.version_2:
            raise ValueError("no-answer probabilities need a SQuAD 2.0 run (postprocess.version_2)")
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
        if na_prob_path is not None:
            na_probs = {}
            for qid in predictions.answers:
                p = predictions.no_answer_probability(qid, self.span_config)
                na_probs[qid] = 1.0 if p is None else p
            write_json(Path(na_prob_path), na_probs)
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
