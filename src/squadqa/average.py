"""Checkpoint averaging: one model whose weights are the element-wise mean of several epochs'.

Late in training the optimiser wanders around a wide basin rather than settling in it; the mean
of the points it passed lies nearer the basin's centre and generalises better than any one of
them (Vaswani et al. 2017 average the last checkpoints of the Transformer; Izmailov et al. 2018,
stochastic weight averaging). It costs no training: a run trained with
`train.keep_epoch_checkpoints = true` keeps `checkpoints/epoch-N.weights.h5` for every epoch, and
`squadqa average RUN_DIR --epochs 2-6` writes a run directory beside it that `predict`, `serve`,
`export` and `runs` take like any other::

    runs/<name>-avg2-6/
      config.toml, tokenizer.json   the source run's
      model.keras                   the averaged weights
      average.json                  the source run and the epochs averaged
      predictions.json, eval.json   scored as the run scored its epochs (unless --no-eval;
      nbest_predictions.json, ...   SQuAD 2.0: at the null threshold best on dev)
      status.json                   the source run's, with the averaged dev EM/F1 (so `squadqa
                                    runs` lists it)

Which epochs to average is a choice: made by looking at dev, it is tuned on dev, as picking the
best epoch is; fix it before the run (e.g. `--epochs 2-`, all but the first) to report it clean.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from squadqa import rundir

__all__ = ["average_run", "average_weights", "parse_epochs"]

_PART = re.compile(r"^(\d+)(?:-(\d*))?$")


def parse_epochs(spec: str, epochs_run: int) -> list[int]:
    """`--epochs`: "2-6", "4,5", "1,3-4" or "2-" (from 2 to the last epoch) -> sorted epochs.

    Epochs count from 1, as metrics.jsonl does; each must be one the run finished.
    """
    chosen: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        match = _PART.match(part)
        if not match:
            raise ValueError(f"--epochs {spec!r}: {part!r} is not N, N-M or N-")
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2) or epochs_run)
        if not 1 <= first <= last <= epochs_run:
            raise ValueError(
                f"--epochs {spec!r}: {part!r} is outside the run's epochs 1-{epochs_run}"
            )
        chosen.update(range(first, last + 1))
    if len(chosen) < 2:
        raise ValueError(f"--epochs {spec!r}: averaging needs at least two epochs")
    return sorted(chosen)


def average_weights(model, paths: Sequence[Path]) -> None:
    """Set `model`'s weights to the element-wise mean of the weight files `paths`.

    Floating-point variables are averaged in float64; any other variable (a counter, an RNG
    state) is taken from the last file, since a mean of those means nothing.
    """
    from keras import ops

    total: list[np.ndarray] = []
    for i, path in enumerate(paths):
        model.load_weights(path)
        values = [ops.convert_to_numpy(w.value) for w in model.weights]
        if i == 0:
            total = [v.astype(np.float64) if _is_float(v) else v for v in values]
            continue
        total = [t + v if _is_float(v) else v for t, v in zip(total, values, strict=True)]
    for weight, value in zip(model.weights, total, strict=True):
        weight.assign(value / len(paths) if _is_float(value) else value)


def _is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


def average_run(
    run_dir: str | Path, epochs: str, out: str | Path | None = None, evaluate: bool = True
) -> dict:
    """Write the averaged run directory (module docstring) and return its average.json record.

    Scored as the source run scored its epochs (`scoring.evaluate_dev` on data.dev, the first
    data.max_dev_samples; SQuAD 2.0: at the null threshold best on dev), so the numbers compare.
    """
    from squadqa.config import load_config
    from squadqa.features import build_features
    from squadqa.inference import QAPredictor
    from squadqa.scoring import evaluate_dev, load_dev
    from squadqa.train import feature_cache_dir

    source = Path(run_dir)
    status_path = source / rundir.STATUS
    if not status_path.is_file():
        raise FileNotFoundError(f"{status_path} does not exist: {source} is not a training run")
    status = rundir.read_json(status_path)
    chosen = parse_epochs(epochs, int(status.get("epochs_run") or 0))
    checkpoints = source / rundir.CHECKPOINTS
    paths = [checkpoints / rundir.epoch_weights(epoch) for epoch in chosen]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{checkpoints}: no {', '.join(missing)}; train with "
            "`--set train.keep_epoch_checkpoints=true` to keep every epoch's weights"
        )
    # The one loader of a run directory (checks config, tokenizer and model.keras are there),
    # before anything is written.
    source_run = QAPredictor.from_run_dir(source, runtime="keras")
    model = source_run.model
    target = Path(out) if out else source.with_name(f"{source.name}-avg{_label(chosen)}")
    if target.exists():
        raise FileExistsError(f"{target} exists: remove it or pass another --out")
    target.mkdir(parents=True)
    for name in (rundir.CONFIG, rundir.TOKENIZER):
        shutil.copyfile(source / name, target / name)

    average_weights(model, paths)
    rundir.write_atomic(target / rundir.MODEL, model.save)
    record: dict = {"source": str(source), "epochs": chosen, "files": [str(p) for p in paths]}
    print(f"averaged epochs {chosen} of {source} into {target / rundir.MODEL}")
    if evaluate:
        config = load_config(source / rundir.CONFIG)
        tokenizer = source_run.tokenizer
        dev = load_dev(config)
        features = build_features(dev.examples, tokenizer, config.features, feature_cache_dir())
        metrics, predictions, dev_loss = evaluate_dev(
            model, config, dev.examples, features, tokenizer.pad_id
        )
        predictions.save(target)
        record.update(dev_loss=dev_loss, dev=dev.stats.summary())
        rundir.write_json(target / rundir.EVAL, {**metrics, "epochs": chosen})
        rundir.write_json(
            target / rundir.STATUS,
            {
                **status,
                "status": "finished",
                "best_epoch": None,
                "best_dev_exact_match": metrics["exact_match"],
                "best_dev_f1": metrics["f1"],
                "averaged_epochs": chosen,
                "averaged_from": str(source),
                "updated": rundir.now(),
            },
        )
        print(
            f"averaged: dev EM {metrics['exact_match']:.2f} F1 {metrics['f1']:.2f}, dev loss "
            f"{dev_loss:.4f}; best single epoch ({status.get('best_epoch')}): "
            f"EM {status.get('best_dev_exact_match')} F1 {status.get('best_dev_f1')}"
        )
    rundir.write_json(target / rundir.AVERAGE, record)
    return record


def _label(epochs: Sequence[int]) -> str:
    """2,3,4,5,6 -> "2-6"; 1,3,4 -> "1_3-4": the run directory's suffix."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and epoch == runs[-1][-1] + 1:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    return "_".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
