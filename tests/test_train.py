"""Training loop: learning, run records, and resume after a kill (tiny configs, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAINING

from squadqa import rundir
from squadqa.config import load_config
from squadqa.evaluation import evaluate_files

TINY = TINY_TRAINING


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _metrics(run_dir: Path) -> list[dict]:
    return rundir.read_jsonl(run_dir / rundir.METRICS)


def _shared_vocab(tmp_path: Path) -> list[str]:
    """Settings that give two runs one trained vocabulary. HF's WordPiece trainer breaks ties
    between merges in hash order (tokenizers#1794): on small data two trainings can keep
    different tokens (ids are canonical, the token set is not)."""
    from squadqa.data import load_squad
    from squadqa.tokenization import train_wordpiece, training_texts

    vocab = train_wordpiece(training_texts(load_squad("sample").examples), 1500).save(tmp_path)
    return ['tokenizer.kind="vocab"', f'tokenizer.path="{vocab}"']


def test_training_writes_a_complete_run_record(tmp_path: Path):
    import keras

    from squadqa.train import train

    config = load_config(None, [*TINY, "name=rec", "train.epochs=3"])
    status = train(config, tmp_path)
    run = tmp_path / "rec"
    assert status["status"] == "finished" and status["epochs_run"] == 3
    for name in (
        "config.toml",
        "tokenizer.json",
        "status.json",
        "metrics.jsonl",
        "eval.json",
        "predictions.json",
        "nbest_predictions.json",
        "model.keras",
    ):
        assert (run / name).is_file(), name
    metrics = _metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]  # it learns
    assert all(m["tokens_per_s"] > 0 and m["train_tokens"] > 0 for m in metrics)
    # eval.json is what the official evaluation says of the saved predictions.
    saved = json.loads((run / "eval.json").read_text())
    dev = load_config(run / "config.toml").data
    from squadqa.data import load_squad, write_squad

    subset = write_squad(
        load_squad("sample", max_samples=dev.max_dev_samples).examples, tmp_path / "dev.json"
    )
    official = evaluate_files(subset, run / "predictions.json")
    assert saved["exact_match"] == official["exact_match"] and saved["f1"] == official["f1"]
    best = max(metrics, key=lambda m: m["dev_f1"])
    assert saved["epoch"] == best["epoch"] and status["best_dev_f1"] == best["dev_f1"]
    # The exported model loads in safe mode and is the best checkpoint.
    loaded = keras.models.load_model(run / "model.keras", safe_mode=True)
    batch = {
        k: np.ones((1, 16), "int32")
        for k in ("input_ids", "token_type_ids", "attention_mask", "span_mask")
    }
    out = keras.ops.convert_to_numpy(loaded(batch)["start_logits"])
    assert np.isfinite(out).all()
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path)


def _dropout_run(runs_dir: Path, name: str, epochs: int) -> list[str]:
    return [*TINY, f"name={name}", f"train.epochs={epochs}", "model.hidden_dropout=0.1"]


def _weights(run_dir: Path) -> list[np.ndarray]:
    """Every tensor of the run's last checkpoint (weights and optimizer), read with h5py."""
    import h5py

    arrays: list[np.ndarray] = []
    with h5py.File(run_dir / rundir.CHECKPOINTS / rundir.LAST_WEIGHTS) as f:
        f.visititems(lambda n, v: arrays.append(v[()]) if isinstance(v, h5py.Dataset) else None)
    return arrays


def _assert_same_run(a: Path, b: Path) -> None:
    """Interrupted and resumed `b` ended where uninterrupted `a` did: the final weights and
    optimizer state bit for bit, the predictions and dev metrics exactly, every step's lr.
    Train losses agree to float32 rounding: a step's own loss is recovered from Keras' running
    mean over the `fit` call, which a resumed epoch restarts."""
    steps_a, steps_b = (rundir.read_jsonl(r / rundir.STEPS) for r in (a, b))
    loss = ("loss", "train_loss")
    assert [{k: v for k, v in x.items() if k not in loss} for x in steps_b] == [
        {k: v for k, v in x.items() if k not in loss} for x in steps_a
    ]
    assert [x["loss"] for x in steps_b] == pytest.approx([x["loss"] for x in steps_a], rel=1e-5)
    skip = ("wall_time_s", "tokens_per_s", *loss)
    metrics_a, metrics_b = (
        [{k: v for k, v in m.items() if k not in skip} for m in _metrics(r)] for r in (a, b)
    )
    assert metrics_b == metrics_a
    assert [m["train_loss"] for m in _metrics(b)] == pytest.approx(
        [m["train_loss"] for m in _metrics(a)], rel=1e-6
    )
    weights_a, weights_b = _weights(a), _weights(b)
    assert len(weights_a) == len(weights_b) > 0
    for x, y in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert json.loads((b / "predictions.json").read_text()) == json.loads(
        (a / "predictions.json").read_text()
    )


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """An uninterrupted 3-epoch run with dropout (so the RNG matters), and its shared settings."""
    from squadqa.train import train

    root = tmp_path_factory.mktemp("straight")
    shared = ["data.max_train_samples=160", "train.save_every_steps=3", *_shared_vocab(root)]
    train(load_config(None, [*_dropout_run(root, "straight", 3), *shared]), root)
    return root / "straight", shared


def test_kill_after_a_step_checkpoint_then_resume_matches_uninterrupted(
    tmp_path: Path, straight_run: tuple[Path, list[str]]
):
    from squadqa.train import train

    straight, shared = straight_run
    overrides = [*_dropout_run(tmp_path, "killed", 3), *shared]
    cmd = [sys.executable, "-m", "squadqa.cli", "train", "--runs-dir", str(tmp_path)]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "killed" / rundir.CHECKPOINTS / rundir.STATE
    deadline = time.time() + 300
    state: dict = {}
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if state["epoch"] == 1 and state["step"] > 0:  # within epoch 2
                break
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads((tmp_path / "killed" / "status.json").read_text())
    assert status["status"] == "running"  # a SIGKILL leaves no chance to write 'crashed'
    assert status["epochs_run"] < 3

    resumed = train(load_config(None, overrides), tmp_path, resume=True)
    assert resumed["status"] == "finished" and resumed["epochs_run"] == 3
    _assert_same_run(straight, tmp_path / "killed")


def _signal_at(epoch: int, batch: int, signum: int):
    """A callback that sends this process `signum` after a given step of a given epoch
    (both 0-based)."""
    import keras

    class SignalAt(keras.callbacks.Callback):
        current = -1

        def on_epoch_begin(self, e: int, logs: dict | None = None) -> None:
            self.current = e

        def on_train_batch_end(self, b: int, logs: dict | None = None) -> None:
            if (self.current, b) == (epoch, batch):
                os.kill(os.getpid(), signum)

    return SignalAt()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_stops_with_a_checkpoint_and_resume_matches_uninterrupted(
    tmp_path: Path, straight_run: tuple[Path, list[str]], signum: int
):
    """A scheduler's notice mid-epoch: the run checkpoints at the end of that step, says
    `stopped`, exits cleanly, and --resume ends exactly where the uninterrupted run did."""
    from squadqa.runs import read_run
    from squadqa.train import train

    straight, shared = straight_run
    config = load_config(None, [*_dropout_run(tmp_path, "stopped", 3), *shared])
    before = signal.getsignal(signum)
    stopped = train(config, tmp_path, extra_callbacks=[_signal_at(1, 4, signum)])
    assert signal.getsignal(signum) is before  # handlers restored
    assert stopped["status"] == "stopped" and stopped["epochs_run"] == 1
    state = json.loads((tmp_path / "stopped" / rundir.CHECKPOINTS / rundir.STATE).read_text())
    # Sent after step 5's checkpoint test had run: the step then in progress (6) is finished.
    assert (state["epoch"], state["step"]) == (1, 6)
    per_epoch = stopped["steps_per_epoch"]
    assert len(rundir.read_jsonl(tmp_path / "stopped" / rundir.STEPS)) == per_epoch + 6
    row = read_run(tmp_path / "stopped")
    assert row.status == "stopped" and row.progress == f"{per_epoch + 6}/{3 * per_epoch} steps"
    if signum == signal.SIGTERM:
        resumed = train(config, tmp_path, resume=True)
        assert resumed["status"] == "finished" and resumed["epochs_run"] == 3
    else:  # the campaign command: resumes every stopped or crashed run of the folder
        from squadqa.cli import main

        assert main(["continue", str(tmp_path)]) == 0
        assert read_run(tmp_path / "stopped").status == "finished"
        assert main(["continue", str(tmp_path)]) == 0  # nothing left: a no-op
    _assert_same_run(straight, tmp_path / "stopped")


def test_steps_log_holds_each_batchs_own_loss_and_learning_rate(tmp_path: Path, monkeypatch):
    """steps.jsonl against references: each batch's loss recomputed from the weights just before
    its update (no dropout, so the same forward), and the schedule's values by hand."""
    import keras

    import squadqa.train as T

    made: list[T.TrainBatches] = []

    class Recorded(T.TrainBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    class LossBeforeUpdate(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses: list[float] = []

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            x, y = made[0][batch]
            y_pred = self.model(x, training=False)
            loss = self.model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
            self.losses.append(float(keras.ops.convert_to_numpy(loss)))

    monkeypatch.setattr(T, "TrainBatches", Recorded)
    reference = LossBeforeUpdate()
    overrides = [*TINY, "name=steps", "train.epochs=2", "train.warmup_ratio=0.25"]
    overrides += ["model.hidden_dropout=0.0", "model.attention_dropout=0.0"]
    T.train(load_config(None, overrides), tmp_path, extra_callbacks=[reference])

    lines = [json.loads(x) for x in (tmp_path / "steps" / "steps.jsonl").read_text().splitlines()]
    per_epoch = len(made[0])
    total = 2 * per_epoch
    assert [line["step"] for line in lines] == list(range(1, total + 1))
    assert [line["epoch"] for line in lines] == [1] * per_epoch + [2] * per_epoch
    assert [line["loss"] for line in lines] == pytest.approx(reference.losses, rel=1e-4)
    warmup, peak = int(0.25 * total), 0.003
    by_hand = [
        peak * (s + 1) / warmup if s < warmup else peak * (total - s) / (total - warmup)
        for s in range(total)
    ]
    assert [line["lr"] for line in lines] == pytest.approx(by_hand, rel=1e-5)
    assert len(set(reference.losses)) == total  # the weights moved: every batch's loss differs


def test_resume_without_a_run_is_an_error(tmp_path: Path):
    from squadqa.train import train

    with pytest.raises(FileNotFoundError, match="no run to resume"):
        train(load_config(None, [*TINY, "name=nothing"]), tmp_path, resume=True)


def test_learning_rate_schedule_hand_computed():
    from keras import ops

    from squadqa.optim import WarmupDecay

    lr = WarmupDecay(1.0, total_steps=10, warmup_steps=2, kind="linear")
    values = [float(ops.convert_to_numpy(lr(step))) for step in range(11)]
    assert values[:2] == pytest.approx([0.5, 1.0])
    assert values[2:] == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])
    cos = WarmupDecay(1.0, total_steps=10, warmup_steps=0, kind="cosine")
    assert float(ops.convert_to_numpy(cos(5))) == pytest.approx(0.5)


def test_decay_epochs_stops_before_the_decay_ends():
    """epochs=4, decay_epochs=6: warmup and linear decay of a 6-epoch run, cut after 4 epochs."""
    from keras import ops

    from squadqa.config import TrainConfig
    from squadqa.optim import make_optimizer

    t = TrainConfig(epochs=4, decay_epochs=6, learning_rate=1.0, warmup_ratio=0.05)
    _, schedule = make_optimizer(t, updates_per_epoch=10)
    # 60 updates in the layout: int(0.05 * 60) = 3 of warmup, then 1 - (step - 3) / 57.
    assert (schedule.total_steps, schedule.warmup_steps) == (60, 3)
    lr_at = {s: float(ops.convert_to_numpy(schedule(s))) for s in (0, 2, 3, 39, 59)}
    assert lr_at == pytest.approx({0: 1 / 3, 2: 1.0, 3: 1.0, 39: 1 - 36 / 57, 59: 1 / 57})
    _, own = make_optimizer(TrainConfig(epochs=4, learning_rate=1.0, warmup_ratio=0.05), 10)
    assert (own.total_steps, own.warmup_steps) == (40, 2)  # 0 = over train.epochs
    with pytest.raises(ValueError, match="decay_epochs=3 is below"):
        TrainConfig(epochs=4, decay_epochs=3)
    # From a config file and --set the pair fails as it loads, before any data is read.
    with pytest.raises(ValueError, match=r"train\.decay_epochs=3 is below train\.epochs=4"):
        load_config(None, ["train.epochs=4", "train.decay_epochs=3"])


def test_decay_epochs_trains_the_first_epochs_of_the_longer_run(tmp_path: Path):
    """epochs=1, decay_epochs=2 repeats epoch 1 of a 2-epoch run: the same lr and loss each step."""
    from squadqa.train import train

    shared = [*TINY, *_shared_vocab(tmp_path), "train.warmup_ratio=0.2"]
    train(load_config(None, [*shared, "name=long", "train.epochs=2"]), tmp_path)
    train(
        load_config(None, [*shared, "name=cut", "train.epochs=1", "train.decay_epochs=2"]), tmp_path
    )
    long, cut = (rundir.read_jsonl(tmp_path / name / rundir.STEPS) for name in ("long", "cut"))
    first = [s for s in long if s["epoch"] == 1]
    assert len(cut) == len(first) > 1
    assert [s["lr"] for s in cut] == pytest.approx([s["lr"] for s in first], rel=1e-6)
    assert [s["loss"] for s in cut] == pytest.approx([s["loss"] for s in first], rel=1e-5)
    assert cut[-1]["lr"] > 0.0  # stopped before the decay ended
    assert _metrics(tmp_path / "cut")[0]["dev_f1"] == pytest.approx(
        _metrics(tmp_path / "long")[0]["dev_f1"]
    )


def test_span_loss_hand_computed():
    from keras import ops

    from squadqa.model import span_loss

    logits = np.array([[0.0, np.log(3.0), -1e9]], dtype="float32")  # p = [1/4, 3/4, 0]
    nll = float(ops.convert_to_numpy(span_loss(np.array([1]), logits))[0])
    assert nll == pytest.approx(-np.log(0.75), rel=1e-5)
    # Smoothing 0.2 over the 2 allowed positions: 0.8 * nll + 0.2 * mean(-log p) over allowed.
    smooth = float(ops.convert_to_numpy(span_loss(np.array([1]), logits, 0.2))[0])
    expected = 0.8 * -np.log(0.75) + 0.2 * (-np.log(0.25) - np.log(0.75)) / 2
    assert smooth == pytest.approx(expected, rel=1e-5)


def test_overfit_sanity_torch(tmp_path: Path):
    """`squadqa sanity`, small: a small model memorises 16 examples to >= 95 EM."""
    from squadqa.checks import overfit_check

    result = overfit_check(n_examples=16, epochs=30, runs_dir=str(tmp_path))
    assert result["passed"], result["message"]


def test_bf16_warning_follows_the_cpu_flags():
    from squadqa.harness import slow_bf16_warning

    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU computes bf16 natively")
    has_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    warning = slow_bf16_warning()
    assert (warning is None) == has_bf16
    if warning:
        assert "train.mixed_precision=false" in warning


def test_a_bf16_run_saves_a_float32_model_with_its_best_weights(tmp_path: Path):
    """Mixed precision is a training setting: model.keras computes in float32 (served on CPUs
    without bf16 and by ONNX Runtime), holding the best checkpoint's weights exactly."""
    import h5py
    import keras

    from squadqa.train import train

    overrides = [*TINY, "name=bf16", "train.epochs=1", "train.mixed_precision=true"]
    try:
        train(load_config(None, overrides), tmp_path)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    run = tmp_path / "bf16"
    model = keras.saving.load_model(run / "model.keras")
    policies = {layer.dtype_policy.name for layer in model._flatten_layers(include_self=True)}
    assert policies == {"float32"}
    with h5py.File(run / "checkpoints" / "best.weights.h5") as f:
        saved = []
        f.visititems(
            lambda name, obj: saved.append(obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    # Every weight of the served model is one of the checkpoint's arrays, bit for bit.
    for weight in model.get_weights():
        assert any(w.shape == weight.shape and np.array_equal(w, weight) for w in saved)


def test_snapshot_is_the_best_epoch_as_a_finished_run_of_its_own(tmp_path: Path, tiny_run):
    """A run without model.keras yet (as mid-training): the snapshot's model holds, tensor by
    tensor, what training wrote into model.keras from the same best checkpoint; the scores and
    predictions are the run's; `squadqa runs` reads it as finished; the run itself is untouched."""
    import shutil

    from test_average import _model_tensors

    from squadqa.runs import read_run
    from squadqa.train import snapshot

    source = tmp_path / "run"
    shutil.copytree(tiny_run, source)
    trained = tmp_path / "trained.keras"
    (source / rundir.MODEL).rename(trained)
    # The best epoch's weights, not the latest step's: without them a snapshot could not be built.
    (source / rundir.CHECKPOINTS / rundir.LAST_WEIGHTS).unlink(missing_ok=True)
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    status = rundir.read_json(source / rundir.STATUS)

    target = snapshot(source)

    assert target == tmp_path / f"run-e{status['best_epoch']}"
    expected, got = _model_tensors(trained), _model_tensors(target / rundir.MODEL)
    assert expected.keys() == got.keys() and expected
    for name, tensor in expected.items():
        np.testing.assert_array_equal(got[name], tensor, err_msg=name)
    for name in (rundir.CONFIG, rundir.TOKENIZER, rundir.EVAL, rundir.PREDICTIONS, rundir.NBEST):
        assert (target / name).read_bytes() == before[name], name
    record = rundir.read_json(target / rundir.STATUS)
    assert record["status"] == "finished" and record["snapshot_of"] == str(source)
    assert record["epochs_run"] == status["best_epoch"]
    assert read_run(target).status == "finished"
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before

    with pytest.raises(FileExistsError, match="run-e1 exists"):
        snapshot(source)
    (source / rundir.CHECKPOINTS / rundir.BEST_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"best\.weights\.h5 does not exist"):
        snapshot(source, tmp_path / "other")
