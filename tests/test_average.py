"""`squadqa average`: the averaged model's tensors against means read straight from the files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY_TRAINING

from squadqa import rundir
from squadqa.average import _label, average_run, parse_epochs
from squadqa.runs import read_run


def test_parse_epochs_reads_ranges_lists_and_open_ends():
    assert parse_epochs("2-6", 6) == [2, 3, 4, 5, 6]
    assert parse_epochs("2-", 6) == [2, 3, 4, 5, 6]
    assert parse_epochs("1,3-4", 6) == [1, 3, 4]
    assert parse_epochs("5, 4", 6) == [4, 5]
    assert parse_epochs("1-2,2-3", 3) == [1, 2, 3]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0-2", "outside the run's epochs 1-6"),
        ("5-9", "outside the run's epochs 1-6"),
        ("4-2", "outside"),
        ("two", "is not N, N-M or N-"),
        ("3", "at least two epochs"),
        ("6-", "at least two epochs"),
    ],
)
def test_parse_epochs_rejects_what_it_cannot_average(spec: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_epochs(spec, 6)


def test_label_names_the_epochs_compactly():
    assert _label([2, 3, 4, 5, 6]) == "2-6"
    assert _label([1, 3, 4]) == "1_3-4"
    assert _label([4, 6]) == "4_6"


def _datasets(file: h5py.File) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj[()]

    file.visititems(visit)
    return found


def _model_tensors(model_keras: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(model_keras) as archive:
        data = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as file:
        return _datasets(file)


def test_average_run_writes_the_mean_of_the_epoch_files(tmp_path, monkeypatch, tiny_run):
    from squadqa.config import load_config
    from squadqa.train import train

    assert not list((tiny_run / rundir.CHECKPOINTS).glob("epoch-*")), "kept without the setting"
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "cache"))
    settings = [*TINY_TRAINING, "name=t", "train.epochs=3", "train.keep_epoch_checkpoints=true"]
    train(load_config(None, settings), tmp_path)
    run = tmp_path / "t"
    epoch_files = [run / rundir.CHECKPOINTS / rundir.epoch_weights(e) for e in (1, 2, 3)]
    assert all(path.is_file() for path in epoch_files)

    record = average_run(run, "2-")
    target = tmp_path / "t-avg2-3"
    assert record["epochs"] == [2, 3]

    # The reference: each tensor of epochs 2 and 3 read with h5py, averaged by hand.
    epochs = []
    for path in epoch_files[1:]:
        with h5py.File(path, "r") as file:
            epochs.append(_datasets(file))
    averaged = _model_tensors(target / rundir.MODEL)
    assert len(averaged) > 10
    for name, value in averaged.items():
        expected = (epochs[0][name].astype(np.float64) + epochs[1][name]) / 2
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7, err_msg=name)
    # ... and it is not one of the epochs' own weights.
    changed = [n for n in averaged if not np.array_equal(averaged[n], epochs[1][n])]
    assert changed

    # A run directory like any other: scored on the run's dev split, listed by `squadqa runs`.
    scored = rundir.read_json(target / rundir.EVAL)
    row = read_run(target)
    assert row.status == "finished"
    assert row.best_dev_f1 == pytest.approx(scored["f1"])
    assert len(rundir.read_json(target / rundir.PREDICTIONS)) == 24  # data.max_dev_samples
    assert rundir.read_json(target / rundir.AVERAGE)["epochs"] == [2, 3]

    with pytest.raises(FileExistsError, match="t-avg2-3 exists"):
        average_run(run, "2-3")
    epoch_files[2].unlink()
    with pytest.raises(FileNotFoundError, match=r"epoch-3\.weights\.h5.*keep_epoch_checkpoints"):
        average_run(run, "1-3", out=tmp_path / "other")


def test_average_command_names_what_is_missing(tmp_path, capsys):
    from squadqa.cli import main

    assert main(["average", str(tmp_path), "--epochs", "2-"]) == 2
    assert f"{tmp_path / rundir.STATUS} does not exist" in capsys.readouterr().err
