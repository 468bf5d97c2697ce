"""Experiment tracking: Weights & Biases, fed by squadqa's own training loop.

W&B's own Keras callbacks target Keras 2 and import TensorFlow (wandb#7186, #8525), so squadqa
logs from its loop: every 20th line of `steps.jsonl` (a batch's own loss and learning rate, not
the running mean Keras reports) and each epoch's metrics. Local records (run directory) are
always written by `train.py`; tracking is an extra copy, off with `--tracking none` or when wandb
is not installed. `WANDB_MODE=offline` works as usual (runs are synced later with `wandb sync`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from squadqa.config import RunConfig
    from squadqa.data import Example
    from squadqa.postprocess import Predictions


class Tracker:
    """No tracking: the interface, and what runs when tracking is off."""

    def start(self, config: RunConfig, status: dict[str, Any]) -> None:
        pass

    def log_step(self, line: dict[str, Any]) -> None:
        """One training batch: its `epoch`, `step`, own `loss` and `lr` (a `steps.jsonl` line)."""

    def log_epoch(
        self, metrics: dict[str, Any], examples: Sequence[Example], predictions: Predictions
    ) -> None:
        pass

    def finish(self, status: dict[str, Any]) -> None:
        pass


class WandbTracker(Tracker):
    """Config, per-step loss, per-epoch metrics, a dev-example table and the final summary."""

    def __init__(
        self, project: str, run_dir: Path, log_examples: int = 50, log_every_steps: int = 20
    ):
        import wandb

        self.wandb = wandb
        self.project, self.run_dir, self.log_examples = project, run_dir, log_examples
        self.log_every_steps = log_every_steps
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

    def log_step(self, line: dict[str, Any]) -> None:
        if line["step"] % self.log_every_steps == 0:
            self.run.log({"train/loss": line["loss"], "train/lr": line["lr"], "step": line["step"]})

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
