"""`squadqa export RUN`: a run's model as ONNX (optionally int8), checked against Keras on export.

The Keras model of the torch backend is a `torch.nn.Module`, so `torch.onnx.export` with the
dynamo exporter (`torch.export`, then ONNX opset 18) takes it whole, with dynamic batch and
sequence axes. The file then runs under ONNX Runtime (`squadqa.onnx_model.OnnxModel`) through the
same features and span chooser as the Keras path (`QAPredictor.from_run_dir(runtime="onnx")`).

Each exported file is checked before it replaces anything: its logits on real windows of the
bundled sample, the export's example batch and one of another size and length, against the Keras
model's. fp32 must agree within `tolerance`; int8 dynamic quantisation (onnxruntime's
`quantize_dynamic`, int8 weights per output channel, activations quantised per input tensor, so
the int8 file is run one window at a time: `OnnxModel(row_by_row=True)`) is reported, not
bounded: its accuracy cost is a dev-F1 question (docs/results.md).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from squadqa import rundir
from squadqa.config import load_config
from squadqa.data import load_squad, sample_path
from squadqa.features import build_features, pad_batch
from squadqa.tokenization import load_tokenizer

QUANTIZE = ("none", "int8")
OPSET = 18
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask", "span_mask", "question_match")
OUTPUT_NAMES = ("start_logits", "end_logits")


def check_batches(run_dir: Path) -> list[dict[str, np.ndarray]]:
    """Two batches of real windows (3 and 5 rows, unrounded lengths) of the bundled sample."""
    config = load_config(run_dir / rundir.CONFIG)
    tokenizer = load_tokenizer(run_dir / rundir.TOKENIZER)
    examples = load_squad(sample_path(), max_samples=8).examples
    features = build_features(examples, tokenizer, config.features)
    if len(features) < 8:
        raise ValueError(f"the bundled sample gave {len(features)} windows; the check needs 8")
    rows = ([0, 1, 2], [3, 4, 5, 6, 7])
    return [pad_batch(features, r, tokenizer.pad_id, multiple=1) for r in rows]


def max_logit_difference(outputs: dict[str, Any], reference: dict[str, Any]) -> float:
    """Largest |a - b| over both logit tensors; positions masked in one must be masked in both."""
    worst = 0.0
    for name in OUTPUT_NAMES:
        a = np.asarray(outputs[name], dtype=np.float64)
        b = np.asarray(reference[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{name}: shape {a.shape} differs from the Keras model's {b.shape}")
        worst = max(worst, float(np.max(np.abs(a - b))))
    return worst


class _NotThisMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Hide what torch.onnx and onnxruntime.quantization say about themselves on every export
    (torchvision ops it skips, deprecations inside torch, renamed axes, a pre-processing hint):
    nothing the user can act on. Errors, and the check against Keras, are unaffected."""
    torch_onnx = logging.getLogger("torch.onnx")
    level = torch_onnx.level
    hint = _NotThisMessage("Please consider to run pre-processing before quantization")
    torch_onnx.setLevel(logging.ERROR)
    logging.getLogger().addFilter(hint)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            yield
    finally:
        torch_onnx.setLevel(level)
        logging.getLogger().removeFilter(hint)


def _export_fp32(model: Any, example: dict[str, np.ndarray], path: Path) -> None:
    import torch

    class Positional(torch.nn.Module):
        """The Keras model's dict input as positional tensors (what ONNX graph inputs are)."""

        def __init__(self, qa_model: Any) -> None:
            super().__init__()
            self.qa_model = qa_model

        def forward(
            self,
            input_ids: Any,
            token_type_ids: Any,
            attention_mask: Any,
            span_mask: Any,
            question_match: Any,
        ) -> tuple[Any, Any]:
            inputs = {
                "input_ids": input_ids,
                "token_type_ids": token_type_ids,
                "attention_mask": attention_mask,
                "span_mask": span_mask,
                "question_match": question_match,
            }
            outputs = self.qa_model(inputs, training=False)
            return outputs["start_logits"], outputs["end_logits"]

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    program = torch.onnx.export(
        Positional(model).eval(),
        tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES),
        dynamo=True,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={name: {0: batch, 1: seq} for name in INPUT_NAMES},
        opset_version=OPSET,
        verbose=False,
    )
    rundir.write_atomic(path, lambda tmp: program.save(str(tmp)))


def _quantize_int8(source: Path, path: Path) -> None:
    """int8 weights with one scale per output channel: per-tensor scales cost the full-data MiniLM
    2.4 dev F1 (78.25 vs fp32 80.61 on a quarter of dev's articles), per-channel 0.24 (80.38), at
    the same file size (docs/results.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rundir.write_atomic(
        path,
        lambda tmp: quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=True),
    )


def export_onnx(
    run_dir: str | Path, quantize: str = "none", tolerance: float = 1e-4
) -> dict[str, Any]:
    """Write `model.onnx` (and `model.int8.onnx`) and `export.json` in the run; return the record.

    Raises ValueError when the backend is not torch or the fp32 file disagrees with Keras by
    more than `tolerance` (the file is then not kept).
    """
    import keras

    if keras.backend.backend() != "torch":
        raise ValueError(
            f"squadqa export needs the torch backend (KERAS_BACKEND=torch), not "
            f"{keras.backend.backend()!r}: the weights are the same, only the exporter differs"
        )
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as err:
        raise ValueError(f"ONNX export needs `pip install 'squadqa[onnx]'` ({err})") from None
    import torch

    import squadqa.model  # registers QATransformer and its layers for loading
    from squadqa.onnx_model import OnnxModel

    run_dir = Path(run_dir)
    if not (run_dir / rundir.MODEL).is_file():
        raise FileNotFoundError(f"{run_dir} has no {rundir.MODEL} (a finished `squadqa train` run)")
    saved = keras.models.load_model(run_dir / rundir.MODEL, safe_mode=True)
    model = squadqa.model.float32_model(saved.get_config())  # a model trained in bf16 too
    model.set_weights(saved.get_weights())
    batches = check_batches(run_dir)
    with torch.no_grad():
        references = [model.predict_on_batch(batch) for batch in batches]
    files: dict[str, Any] = {}

    def check(path: Path) -> float:
        runner = OnnxModel(path, row_by_row=path == int8)
        return max(
            max_logit_difference(runner.predict_on_batch(batch), reference)
            for batch, reference in zip(batches, references, strict=True)
        )

    started = time.perf_counter()
    fp32, int8 = run_dir / rundir.ONNX, run_dir / rundir.ONNX_INT8
    candidate = run_dir / f".unchecked-{os.getpid()}-{rundir.ONNX}"
    try:
        with torch.no_grad(), _quiet_exporters():
            _export_fp32(model, batches[0], candidate)
        difference = check(candidate)
        if difference > tolerance:
            raise ValueError(
                f"the ONNX logits differ from the Keras model's by {difference:.3g} "
                f"(> tolerance {tolerance:g}); {fp32.name} not written"
            )
        candidate.replace(fp32)
    finally:
        candidate.unlink(missing_ok=True)
    files[rundir.ONNX] = {
        "bytes": fp32.stat().st_size,
        "max_abs_logit_diff": difference,
        "seconds": round(time.perf_counter() - started, 2),
    }
    int8.unlink(missing_ok=True)  # made from the file just replaced: never serve a stale one
    if quantize == "int8":
        started = time.perf_counter()
        with _quiet_exporters():
            _quantize_int8(fp32, int8)
        files[rundir.ONNX_INT8] = {
            "bytes": int8.stat().st_size,
            "max_abs_logit_diff": check(int8),
            "seconds": round(time.perf_counter() - started, 2),
        }
    record = {
        "format": "onnx",
        "opset": OPSET,
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "dynamic_axes": ["batch", "sequence"],
        "tolerance": tolerance,
        "check": "logits on 8 windows of the bundled sample (batches of 3 and 5) vs model.keras",
        "files": files,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "created": rundir.now(),
    }
    rundir.write_json(run_dir / rundir.EXPORT, record)
    return record
