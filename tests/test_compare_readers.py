"""scripts/compare_readers.py: two runs side by side, agreement counted by the official scorer.

Two copies of the tiny run get hand-written predictions, so the agreement cells are known
before the script runs; the gold answers come from the raw official JSON of the sample, not
through the script's loader.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from squadqa import rundir
from squadqa.data import sample_path
from squadqa.evaluation import gold_from_dataset, load_dataset_json

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "compare_readers", ROOT / "scripts" / "compare_readers.py"
)
assert spec is not None and spec.loader is not None
compare_readers = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = compare_readers  # dataclasses look their module up there
spec.loader.exec_module(compare_readers)

DEV_QUESTIONS = 24  # the tiny run's data.max_dev_samples
TINY = ["--examples", "1", "--explain-steps", "4"]
TINY += ["--probe-train-samples", "16", "--probe-dev-samples", "8"]


def dev_gold() -> list[tuple[str, str]]:
    """(id, first gold answer) of the tiny run's dev questions, from the raw JSON."""
    gold = gold_from_dataset(load_dataset_json(sample_path()))
    return [(qid, answers[0]) for qid, answers in list(gold.items())[:DEV_QUESTIONS]]


def copy_run(tiny_run: Path, to: Path, right: set[int]) -> Path:
    """The tiny run with predictions.json exactly right on the dev questions `right` (by
    position), wrong on the others."""
    shutil.copytree(tiny_run, to)
    answers = {}
    for i, (qid, gold) in enumerate(dev_gold()):
        answers[qid] = gold if i in right else "zzzz"
    (to / rundir.PREDICTIONS).write_text(json.dumps(answers))
    return to


def test_agreement_counts_and_every_section(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "cache"))
    run_a = copy_run(tiny_run, tmp_path / "a", set(range(0, 10)))
    run_b = copy_run(tiny_run, tmp_path / "b", set(range(5, 15)) | {20, 21})
    ids = [qid for qid, _ in dev_gold()]
    gold = dict(dev_gold())
    # Exactly right only by the official normalisation (article, case, punctuation): A's first.
    predictions = json.loads((run_a / rundir.PREDICTIONS).read_text())
    predictions[ids[0]] = f"The {gold[ids[0]].upper()}."
    (run_a / rundir.PREDICTIONS).write_text(json.dumps(predictions))
    # A near miss (F1 > 0, EM 0): B's question 21 is not exactly right after all.
    predictions = json.loads((run_b / rundir.PREDICTIONS).read_text())
    predictions[ids[21]] = f"{gold[ids[21]]} and more"
    (run_b / rundir.PREDICTIONS).write_text(json.dumps(predictions))

    out = tmp_path / "out"
    args = [str(run_a), str(run_b), "--labels", "small,large", "--out", str(out), *TINY]
    assert compare_readers.main(args) == 0

    result = json.loads((out / "compare.json").read_text())
    cells = result["agreement"]
    assert cells["both"] == ids[5:10]
    assert cells["only_a"] == ids[0:5]
    assert cells["only_b"] == [*ids[10:15], ids[20]]
    assert cells["neither"] == ids[15:20] + ids[21:]
    assert result["dev"]["questions"] == DEV_QUESTIONS
    # The first question of each kind, in dev order, with the gold answer from the raw file.
    assert result["heads"]["ids"] == [ids[5]]
    assert [e["id"] for e in result["examples"]["only_a"]] == [ids[0]]
    assert [e["id"] for e in result["examples"]["only_b"]] == [ids[10]]
    assert result["examples"]["only_b"][0]["gold"][0] == gold[ids[10]]
    assert result["examples"]["only_b"][0]["runs"]["large"]["exact_match"] == 1.0
    assert result["examples"]["only_b"][0]["runs"]["small"]["exact_match"] == 0.0

    # Head statistics: the mean over heads of the summaries `squadqa explain` computes.
    from squadqa.explain import Explainer
    from squadqa.inference import QAPredictor

    context, question = raw_question(ids[5])
    explainer = Explainer(QAPredictor.from_run_dir(run_a, runtime="keras"))
    summary = explainer.explain(context, question, steps=2)["attention"]["heads_summary"]
    for stat in ("entropy", "cls", "sep", "question"):
        by_layer = [np.mean(heads) for heads in summary[stat]]
        assert result["heads"]["runs"]["small"][stat] == pytest.approx(by_layer, abs=1e-9)

    # Each run fitted its probes and temperature on the asked subsets, in its own folder.
    for run in (run_a, run_b):
        probes = json.loads((run / rundir.PROBES).read_text())
        assert (probes["train_samples"], probes["dev_samples"]) == (16, 8)
        assert (run / rundir.CALIBRATION).is_file()

    md = (out / "compare.md").read_text()
    for section in (
        "## small vs large",
        "### Dev scores and agreement",
        "### Calibration",
        "### Linear span probes by layer",
        "### Attention heads",
        "#### Only small exactly right",
        "#### Only large exactly right",
    ):
        assert section in md
    # both, only A, only B, neither: 5, 5, 6 and 8 of 24 questions.
    assert "| 5 (20.8%) | 5 (20.8%) | 6 (25.0%) | 8 (33.3%) | 24 |" in md
    assert "| 0 (embeddings) |" in md and "| 1 |" in md and "| run's own head |" in md
    assert f"`{ids[0]}`" in md and f"`{ids[10]}`" in md


def raw_question(qid: str) -> tuple[str, str]:
    """(context, question) of a sample question, read from the raw JSON."""
    for article in load_dataset_json(sample_path())["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa["id"] == qid:
                    return paragraph["context"], qa["question"]
    raise KeyError(qid)


def test_different_dev_files_are_refused_by_name(tiny_run: Path, tmp_path: Path) -> None:
    run_a = copy_run(tiny_run, tmp_path / "a", set())
    run_b = copy_run(tiny_run, tmp_path / "b", set())
    other = tmp_path / "other-dev.json.gz"
    shutil.copy(sample_path(), other)
    config = run_b / rundir.CONFIG
    text = config.read_text()
    assert 'dev = "sample"' in text
    config.write_text(text.replace('dev = "sample"', f'dev = "{other}"'))
    with pytest.raises(ValueError, match="different dev files") as error:
        compare_readers.main([str(run_a), str(run_b), "--out", str(tmp_path / "out")])
    assert str(other) in str(error.value) and str(config) in str(error.value)
    assert not (tmp_path / "out").exists()


def test_missing_or_incomplete_predictions_are_named(tiny_run: Path, tmp_path: Path) -> None:
    run_a = copy_run(tiny_run, tmp_path / "a", set())
    run_b = copy_run(tiny_run, tmp_path / "b", set())
    out = ["--out", str(tmp_path / "out")]
    predictions = json.loads((run_b / rundir.PREDICTIONS).read_text())
    lost = next(iter(predictions))
    del predictions[lost]
    (run_b / rundir.PREDICTIONS).write_text(json.dumps(predictions))
    with pytest.raises(ValueError, match=lost) as error:
        compare_readers.main([str(run_a), str(run_b), *out])
    assert str(run_b / rundir.PREDICTIONS) in str(error.value)

    (run_b / rundir.PREDICTIONS).unlink()
    with pytest.raises(FileNotFoundError) as error:
        compare_readers.main([str(run_a), str(run_b), *out])
    assert str(run_b / rundir.PREDICTIONS) in str(error.value)
