"""An exported model (`squadqa export`) under ONNX Runtime, behind the `predict_on_batch` that
`QAPredictor` calls: the features, span chooser and server stay the same; Keras and its backend
are not imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from squadqa.architecture import MASKED_LOGIT

# ORT fuses each residual Add + LayerNormalization into one SkipLayerNormalization node, whose CPU
# kernel (onnxruntime 1.32) took 0.4 ms on a [1, 189, 384] tensor, a fifth of MiniLM's int8
# forward; the unfused pair is faster: int8 14.3 -> 12.2-12.5 ms, fp32 26.2 -> 24.1-24.5 ms (2
# threads, docs/results.md). Logits are unchanged (fp32 within 1e-6).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


class OnnxModel:
    """`predict_on_batch(batch) -> {"start_logits", "end_logits"}` of an ONNX file.

    Args:
        path: `model.onnx` or `model.int8.onnx` of a run directory.
        threads: ONNX Runtime intra-op threads (0: its default, one per core).
        row_by_row: run each row alone, cut to its own length (`attention_mask`). Needed for
            dynamically quantised files (`model.int8.onnx`): their activation scales are computed
            over the whole input tensor, so a window's logits would otherwise depend on the other
            windows of the batch and on their padding, and a user's answer on who else asked at
            the same moment. Positions past a row's length get `MASKED_LOGIT`, as padding does.

    Example:
        >>> model = OnnxModel("runs/quickstart/model.onnx")  # doctest: +SKIP
        >>> model.predict_on_batch(pad_batch(features, [0], pad_id, 8))["start_logits"].shape
    """

    def __init__(self, path: str | Path, threads: int = 0, row_by_row: bool = False) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ValueError(
                "the onnx runtime needs onnxruntime: pip install 'squadqa[onnx]'"
            ) from None
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        self.path = Path(path)
        self.row_by_row = row_by_row
        self.session = onnxruntime.InferenceSession(
            str(self.path),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(DISABLED_OPTIMIZERS),
        )
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]

    def predict_on_batch(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in batch]
        if missing:
            raise ValueError(f"{self.path.name} needs input(s) {', '.join(missing)}")
        feed = {name: np.asarray(batch[name], dtype=np.int32) for name in self.input_names}
        if not self.row_by_row:
            return dict(zip(self.output_names, self._run(feed), strict=True))
        rows, width = feed["attention_mask"].shape
        outputs = [np.full((rows, width), MASKED_LOGIT, np.float32) for _ in self.output_names]
        for row, length in enumerate(feed["attention_mask"].sum(axis=1)):
            alone = {name: value[row : row + 1, :length] for name, value in feed.items()}
            for output, logits in zip(outputs, self._run(alone), strict=True):
                output[row, :length] = logits[0]
        return dict(zip(self.output_names, outputs, strict=True))

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feed)
