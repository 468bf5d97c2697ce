"""Experiment tracking: Weights & Biases through callbacks written for Keras 3.

W&B's own Keras callbacks target Keras 2 and import TensorFlow (wandb#7186, #8525), so squadqa
logs through its own. Local records (run directory) are always written by `train.py`; tracking is
an extra copy, off with `--tracking none` or when wandb is not installed. `WANDB_MODE=offline`
works as usual (runs are synced later with `wandb sync`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from squadqa.config import RunConfig
    from squadqa.data import Example
    from squadqa.postprocess import Predictions


class Tracker:
    """No tracking: the interface, and what runs when tracking is off."""

    def start(self, config: RunConfig, status: dict[str, Any]) -> None:
        pass

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return []

    def log_epoch(
        self, metrics: dict[str, Any], examples: Sequence[Example], predictions: Predictions
    ) -> None:
        pass

    def finish(self, status: dict[str, Any]) -> None:
        pass


class BatchLogger(keras.callbacks.Callback):
    """Logs training loss and learning rate every `every` optimizer steps."""

    def __init__(self, log: Any, every: int = 20):
        super().__init__()
        self.log, self.every = log, every

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every == 0 and logs:
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.log({"train/batch_loss": float(logs["loss"]), "train/lr": lr, "step": step})


class WandbTracker(Tracker):
    """Config, per-batch loss, per-epoch metrics, a dev-example table and the final summary."""

    def __init__(self, project: str, run_dir: Path, log_examples: int = 50):
        import wandb

        self.wandb = wandb
        self.project, self.run_dir, self.log_examples = project, run_dir, log_examples
        self.run: Any = None

    def start(self, config: RunConfig, status: dict[str, Any]) -> None:
        self.run = self.wandb.init(
            project=self.project,
            name=config.name,
            dir=str(self.run_dir),
            config={
                **config.to_dict(),
                "parameters": status.get("parameters"),
                "backend": status.get("backend"),
                "init": status.get("init"),
            },
            resume="allow",
        )
        self.run.define_metric("epoch")
        self.run.define_metric("dev/*", step_metric="epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return [BatchLogger(self.run.log)]

    def log_epoch(
        self, metrics: dict[str, Any], examples: Sequence[Example], predictions: Predictions
    ) -> None:
        from squadqa.evaluation import question_scores

        rows = []
        for example in examples[: self.log_examples]:
            gold = [a.text for a in example.answers]
            predicted = predictions.answers.get(example.id, "")
            f1 = question_scores(predicted, gold)[1]
            rows.append([example.id, example.question, " | ".join(gold), predicted, 100 * f1])
        table = self.wandb.Table(columns=["id", "question", "gold", "prediction", "f1"], data=rows)
        self.run.log(
            {
                "epoch": metrics["epoch"],
                "dev/exact_match": metrics["dev_exact_match"],
                "dev/f1": metrics["dev_f1"],
                "dev/loss": metrics["dev_loss"],
                "epoch/train_loss": metrics["train_loss"],
                "epoch/lr": metrics["lr"],
                "epoch/tokens_per_s": metrics["tokens_per_s"],
                "dev/examples": table,
            }
        )

    def finish(self, status: dict[str, Any]) -> None:
        if self.run is None:
            return
        for key in (
            "status",
            "best_epoch",
            "best_dev_exact_match",
            "best_dev_f1",
            "wall_time_s",
            "parameters",
        ):
            self.run.summary[key] = status.get(key)
        if importlib.util.find_spec("matplotlib") and status.get("best_epoch"):
            from squadqa.report import report_figures

            figures = report_figures([self.run_dir])
            self.run.log({f"report/{name}": self.wandb.Image(fig) for name, fig in figures.items()})
        self.run.finish()


def make_tracker(config: RunConfig, run_dir: Path) -> Tracker:
    backend = config.tracking.backend
    if backend == "none":
        return Tracker()
    if backend != "wandb":
        raise ValueError(f"tracking.backend={backend!r}: use none or wandb")
    if importlib.util.find_spec("wandb") is None:
        print(
            "tracking: wandb is not installed (pip install 'squadqa[tracking]'); local records only"
        )
        return Tracker()
    return WandbTracker(config.tracking.project, run_dir, config.tracking.log_examples)
