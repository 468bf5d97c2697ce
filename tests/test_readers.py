"""The trained readers shipped in the package (`builtin:NAME`): what a newcomer asks right after
install, with no training. Each is checked as shipped: its files, its size, its recorded dev
scores and where they came from, and that it answers an easy question correctly."""

from __future__ import annotations

import json

import pytest

from squadqa import rundir
from squadqa.inference import QAPredictor

SHIPPED = rundir.builtin_readers()
FILES = {rundir.CONFIG, rundir.TOKENIZER, rundir.ONNX_INT8, rundir.EVAL}
CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It "
    "is named after the engineer Gustave Eiffel, whose company designed and built the tower from "
    "1887 to 1889."
)


def test_the_package_ships_a_from_scratch_reader() -> None:
    assert "scratch" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_reader_holds_what_serving_needs_and_no_more(name: str) -> None:
    reader = rundir.READERS / name
    held = {p.name for p in reader.iterdir()}
    assert FILES <= held <= FILES | {rundir.CALIBRATION, rundir.ASK_FUSION}, held
    assert sum(p.stat().st_size for p in reader.iterdir()) <= 30e6  # the issue's ~30 MB


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_reader_records_its_full_dev_scores_and_their_source(name: str) -> None:
    record = json.loads((rundir.READERS / name / rundir.EVAL).read_text())
    assert record["total"] == 9045  # all 40 shared dev articles, not a sample
    assert record["dev"].endswith("squad-v1.1/dev.json.gz") and record["runtime"] == "onnx-int8"
    assert 0 < record["exact_match"] <= record["f1"] <= 100
    source = record["provenance"]
    assert source["source_max_dev_samples"] == 0  # the source run scored all of dev too
    assert abs(source["source_f1"] - record["f1"]) < 1.0  # int8 keeps the run's accuracy
    assert source["git_commit"] and source["command"].startswith("python scripts/ship_reader.py")


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_readers_ask_weights_were_fitted_on_train_questions(name: str) -> None:
    """`squadqa fit-ask`'s weights are parameters: fitted on the train split, never on dev."""
    path = rundir.READERS / name / rundir.ASK_FUSION
    if not path.is_file():
        pytest.skip(f"builtin:{name} ships no ask weights")
    record = json.loads(path.read_text())
    assert record["data"].endswith("squad-v1.1/train.json.gz")
    assert QAPredictor.from_run_dir(f"builtin:{name}").fusion_weights == {
        "bm25": record["bm25"],
        "dense": record["dense"],
    }


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_reader_answers_a_newcomers_question(name: str) -> None:
    predictor = QAPredictor.from_run_dir(f"builtin:{name}")  # auto: int8, its one model file
    answer = predictor.answer(CONTEXT, ["Who is the tower named after?"])[0]
    assert "Gustave Eiffel" in answer["text"]
    assert CONTEXT[answer["start"] : answer["end"]] == answer["text"]
