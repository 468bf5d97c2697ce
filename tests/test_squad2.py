"""SQuAD 2.0 through every command: training reports the v2.0 metric, the run keeps the null
threshold it chose on dev, and predict / answer / the API say "no answer" exactly when the null
score beats the best span by more than that threshold."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest
from conftest import TINY_TRAINING

from squadqa.data import sample_path
from squadqa.evaluation import (
    evaluate_v2,
    evaluate_v2_at_best_threshold,
    gold_from_dataset,
    load_dataset_json,
)
from squadqa.postprocess import Candidate, Predictions, SpanConfig


def write_v2_sample(path: Path, every: int = 3) -> Path:
    """The bundled v1.1 sample as a SQuAD 2.0 file: every `every`-th question unanswerable
    (its answers moved to `plausible_answers`, as in the official 2.0 files)."""
    doc = load_dataset_json(sample_path())
    n = 0
    for article in doc["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                impossible = n % every == 0
                qa["is_impossible"] = impossible
                if impossible:
                    qa["plausible_answers"], qa["answers"] = qa["answers"], []
                n += 1
    doc["version"] = "v2.0"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(doc, f)
    return path


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from squadqa.config import load_config
    from squadqa.train import train

    root = tmp_path_factory.mktemp("squad2-runs")
    data = write_v2_sample(root / "squad2-sample.json.gz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SQUADQA_CACHE", str(root / "cache"))
        config = load_config(
            None,
            [
                *TINY_TRAINING,
                f"data.train={data}",
                f"data.dev={data}",
                "data.max_train_samples=60",
                "data.max_dev_samples=30",
                "postprocess.version_2=true",
                "train.epochs=2",
                "name=tiny-squad2",
            ],
        )
        train(config, root)
    return root / "tiny-squad2", data


def test_training_reports_v2_metrics_each_epoch_and_saves_the_threshold(v2_run):
    run_dir, data = v2_run
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        for key in ("dev_HasAns_f1", "dev_HasAns_exact", "dev_NoAns_f1", "dev_NoAns_exact"):
            assert 0.0 <= m[key] <= 100.0, (key, m)
        assert isinstance(m["dev_null_threshold"], float)
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["NoAns_total"] == 10 and saved["HasAns_total"] == 20  # 30 dev questions, 1 in 3
    # The reported F1 is the official v2.0 score of the saved predictions (answers at the chosen
    # threshold, "" meaning no answer), recomputed from the raw files.
    best = next(m for m in lines if m["epoch"] == saved["epoch"])
    dev_ids = [qa["id"] for a in load_dataset_json(data)["data"] for p in a["paragraphs"]
               for qa in p["qas"]][:30]  # fmt: skip
    gold = {qid: answers for qid, answers in gold_from_dataset(load_dataset_json(data)).items()
            if qid in dev_ids}  # fmt: skip
    answers = json.loads((run_dir / "predictions.json").read_text())
    assert set(answers) == set(gold)
    recomputed = evaluate_v2(gold, answers)
    assert recomputed["f1"] == pytest.approx(best["dev_f1"], abs=1e-9)
    assert recomputed["HasAns_f1"] == pytest.approx(best["dev_HasAns_f1"], abs=1e-9)
    assert recomputed["NoAns_f1"] == pytest.approx(best["dev_NoAns_f1"], abs=1e-9)
    assert saved["best_f1_thresh"] == best["dev_null_threshold"]


def test_served_run_says_no_answer_exactly_above_its_threshold(v2_run):
    from squadqa.inference import QAPredictor

    run_dir, _ = v2_run
    saved = json.loads((run_dir / "eval.json").read_text())
    predictor = QAPredictor.from_run_dir(run_dir)
    assert predictor.span_config.version_2
    assert predictor.span_config.null_threshold == saved["best_f1_thresh"]
    context = "The Eiffel Tower is in Paris. It was built for the 1889 World's Fair."
    questions = ["Where is the tower?", "Who painted the Mona Lisa?", "When was it built?"]
    answers = predictor.answer(context, questions, top_k=2)
    for a in answers:
        assert a["no_answer"] == (a["null_score"] > predictor.span_config.null_threshold)
        assert a["alternatives"], "the best spans are listed even for no answer"
        if a["no_answer"]:
            assert (a["text"], a["start"], a["end"], a["score"]) == ("", 0, 0, 0.0)
        else:
            assert a["text"] == context[a["start"] : a["end"]] == a["alternatives"][0]["text"]
    # Moving the threshold just below / above a question's null score flips its answer.
    null = answers[0]["null_score"]
    for threshold, expected in ((null - 1e-3, True), (null + 1e-3, False)):
        shifted = dataclasses.replace(
            predictor,
            span_config=dataclasses.replace(predictor.span_config, null_threshold=threshold),
        )
        assert shifted.answer(context, questions[:1])[0]["no_answer"] is expected


def test_v2_dev_data_needs_version_2(tmp_path, monkeypatch):
    from squadqa.config import load_config
    from squadqa.train import train

    data = write_v2_sample(tmp_path / "v2.json.gz")
    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "cache"))
    config = load_config(None, [*TINY_TRAINING, f"data.train={data}", f"data.dev={data}"])
    with pytest.raises(ValueError, match=r"unanswerable.*postprocess\.version_2=true"):
        train(config, tmp_path / "runs")


def test_best_threshold_metrics_hand_computed():
    # q1 answerable (gold "paris"), q2 unanswerable, q3 answerable (gold "1889").
    gold = {"q1": ["Paris"], "q2": [], "q3": ["1889"]}
    spans = {"q1": "Paris", "q2": "London", "q3": "1890"}
    null = {"q1": -2.0, "q2": 1.0, "q3": 0.5}
    # The official sweep starts from "abstain everywhere" (1 of 3: q2) and answers in increasing
    # null score: q1 right (2 of 3, the best), q3 wrong (still 2), q2 "London" (1). At the chosen
    # threshold -2.0 only q1 is answered: q1 and q2 right, q3 abstained though answerable.
    result = evaluate_v2_at_best_threshold(gold, spans, null)
    assert result["best_f1"] == pytest.approx(200 / 3)
    assert result["best_f1_thresh"] == -2.0
    assert result["f1"] == pytest.approx(200 / 3) and result["exact"] == pytest.approx(200 / 3)
    assert result["HasAns_f1"] == pytest.approx(50.0) and result["HasAns_total"] == 2
    assert result["NoAns_f1"] == pytest.approx(100.0) and result["NoAns_total"] == 1


def test_predictions_at_threshold_and_no_answer_rule():
    span = Candidate("Paris", 0, 5, 3.0, 1.5, 1.5)
    preds = Predictions({"a": "Paris", "b": ""}, {"a": [span], "b": []}, {"a": 0.5, "b": 0.0})
    assert preds.at_threshold(0.4).answers == {"a": "", "b": ""}
    assert preds.at_threshold(0.5).answers == {"a": "Paris", "b": ""}  # strictly above abstains
    v2 = SpanConfig(version_2=True, null_threshold=0.4)
    assert preds.is_no_answer("a", v2) and preds.is_no_answer("b", v2)
    assert not preds.is_no_answer("a", SpanConfig())  # a v1.1 run always answers with a span
    assert preds.is_no_answer("b", SpanConfig())  # ... unless there is none


def test_report_has_hasans_and_noans_slices(v2_run, tmp_path):
    from squadqa.report import write_report

    run_dir, _ = v2_run
    text = write_report([run_dir], tmp_path).read_text()
    assert "HasAns F1" in text and "NoAns F1" in text  # per-epoch table
    section = text.split("answerable (HasAns) and unanswerable (NoAns)")[1]
    eval_json = json.loads((run_dir / "eval.json").read_text())
    rows = [line for line in section.splitlines() if line.startswith(("| HasAns", "| NoAns"))]
    assert [r.split("|")[2].strip() for r in rows[:2]] == [
        str(eval_json["HasAns_total"]),
        str(eval_json["NoAns_total"]),
    ]
    assert f"{eval_json['NoAns_f1']:.2f}" in rows[1]
