"""The evaluation must reproduce the official SQuAD scripts exactly."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from squadqa.evaluation import (
    evaluate_files,
    evaluate_v1,
    evaluate_v2,
    exact_match_score,
    f1_score,
    gold_from_dataset,
    is_v2_dataset,
    metric_max_over_ground_truths,
    normalize_answer,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
V1_DEV = SHARED_DATA / "squad-v1.1" / "dev.json.gz"
REFERENCE_DIR = SHARED_DATA / "squad-v1.1" / "reference-predictions"
REFERENCE_FILES = [
    "bert.json",
    "logistic-regression-baseline.json",
    "match-lstm-with-ans-ptr.json",
    "r-netplus.json",
    "slqaplus.json",
]
needs_shared = pytest.mark.skipif(
    not (V1_DEV.is_file() and (REFERENCE_DIR / "expected.json").is_file()),
    reason=f"shared SQuAD data not found at {SHARED_DATA} (CI provides it at ../shared)",
)


# --------------------------------------------------------------------------- reference numbers


@needs_shared
@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_reference_predictions_match_official_numbers(name: str) -> None:
    expected = json.loads((REFERENCE_DIR / "expected.json").read_text())[name]
    result = evaluate_files(V1_DEV, REFERENCE_DIR / name)
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key] == value, key  # bit-for-bit, as the official script


@needs_shared
def test_reference_files_all_covered() -> None:
    on_disk = {p.name for p in REFERENCE_DIR.glob("*.json")} - {"expected.json"}
    assert on_disk == set(REFERENCE_FILES)


# --------------------------------------------------------------------------- v1.1 metric


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Denver Broncos", "denver broncos"),  # case + leading article
        ("an apple a day", "apple day"),  # every article, mid-sentence too
        ("Theatre and anatomy", "theatre and anatomy"),  # articles only as whole words
        ("U.S.A., (1999)!", "usa 1999"),  # ASCII punctuation deleted, not spaced
        ("re-entry", "reentry"),
        ("  lots\tof \n space  ", "lots of space"),
        ("A", ""),
        ("café – naïve", "café – naïve"),  # non-ASCII punctuation is kept, as officially
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_exact_match() -> None:
    assert exact_match_score("the Denver Broncos", "Denver Broncos!") == 1.0
    assert exact_match_score("Denver", "Denver Broncos") == 0.0


def test_f1_partial_overlap() -> None:
    # pred {denver, broncos, won}, gold {denver, broncos}: P = 2/3, R = 1, F1 = 2PR/(P+R) = 0.8
    assert f1_score("Denver Broncos won", "the Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count with multiplicity: common {y: 2}, P = R = 2/3
    assert f1_score("x y y", "y y z") == pytest.approx(2 / 3)


def test_f1_no_overlap_and_empty() -> None:
    assert f1_score("Carolina Panthers", "Denver Broncos") == 0.0
    assert f1_score("the", "Denver") == 0.0  # prediction normalises to nothing
    assert f1_score("", "") == 0.0  # v1.1: no common token means 0, even for two empties


def test_max_over_ground_truths() -> None:
    gts = ["Denver Broncos", "Broncos team", "the Broncos"]
    assert metric_max_over_ground_truths(exact_match_score, "Broncos", gts) == 1.0
    # vs "Denver Broncos": P = 1, R = 1/2 -> 2/3; vs "Panthers": 0
    f1 = metric_max_over_ground_truths(f1_score, "Broncos", ["Panthers", "Denver Broncos"])
    assert f1 == pytest.approx(2 / 3)


def test_evaluate_v1_missing_and_extra_predictions() -> None:
    gold = {
        "q1": ["Denver Broncos"],
        "q2": ["Carolina Panthers", "Panthers"],
        "q3": ["gold"],
    }
    predictions = {"q1": "Denver Broncos", "q2": "the Panthers team", "extra": "whatever"}
    result = evaluate_v1(gold, predictions)
    # q1: EM 1, F1 1. q2: EM 0; F1 vs "carolina panthers" = 1/2, vs "panthers" = P 1/2, R 1 ->
    # 2/3. q3: missing -> 0 on both, still counted in the total.
    assert result == {
        "exact_match": pytest.approx(100 * 1 / 3),
        "f1": pytest.approx(100 * (1 + 2 / 3) / 3),
        "total": 3,
        "missing_predictions": 1,
        "predictions_not_in_dataset": 1,
    }
    assert set(result) == {
        "exact_match",
        "f1",
        "total",
        "missing_predictions",
        "predictions_not_in_dataset",
    }


def test_evaluate_v1_rejects_unanswerable_gold() -> None:
    with pytest.raises(ValueError, match="evaluate_v2"):
        evaluate_v1({"q": []}, {"q": ""})


# --------------------------------------------------------------------------- gold + files


def _dataset(version: str, qas: list[dict]) -> dict:
    return {
        "version": version,
        "data": [{"title": "T", "paragraphs": [{"context": "ctx", "qas": qas}]}],
    }


def _qa(qid: str, answers: list[str], impossible: bool | None = None) -> dict:
    qa: dict = {
        "id": qid,
        "question": "?",
        "answers": [{"text": a, "answer_start": 0} for a in answers],
    }
    if impossible is not None:
        qa["is_impossible"] = impossible
    return qa


def test_gold_from_dataset_keeps_order_and_duplicates_fail() -> None:
    data = _dataset("1.1", [_qa("b", ["x", "y"]), _qa("a", ["z"])])
    gold = gold_from_dataset(data)
    assert gold == {"b": ["x", "y"], "a": ["z"]}
    assert list(gold) == ["b", "a"]
    with pytest.raises(ValueError, match="duplicate"):
        gold_from_dataset(_dataset("1.1", [_qa("a", ["x"]), _qa("a", ["y"])]))


def test_version_detection() -> None:
    assert not is_v2_dataset(_dataset("1.1", [_qa("a", ["x"])]))
    assert is_v2_dataset(_dataset("v2.0", [_qa("a", ["x"])]))  # the official 2.0 spelling
    assert is_v2_dataset(_dataset("2.0", [_qa("a", ["x"])]))
    assert is_v2_dataset(_dataset("1.1", [_qa("a", [], impossible=True)]))


def test_evaluate_files_gz_and_plain(tmp_path: Path) -> None:
    data = _dataset("1.1", [_qa("q1", ["Denver Broncos"]), _qa("q2", ["Panthers"])])
    gz = tmp_path / "d.json.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        json.dump(data, f)
    plain = tmp_path / "d.json"
    plain.write_text(json.dumps(data))
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"q1": "Broncos", "q2": "Panthers"}))
    expected = {
        "exact_match": 50.0,
        "f1": pytest.approx(100 * (2 / 3 + 1) / 2),
        "total": 2,
        "missing_predictions": 0,
        "predictions_not_in_dataset": 0,
    }
    assert evaluate_files(gz, preds) == expected
    assert evaluate_files(plain, preds) == expected
    # gzip is told by its content, as `squadqa data stats` tells it: names say nothing
    unnamed, misnamed = tmp_path / "gzipped.json", tmp_path / "plain.json.gz"
    unnamed.write_bytes(gz.read_bytes())
    misnamed.write_text(plain.read_text())
    assert evaluate_files(unnamed, preds) == expected
    assert evaluate_files(misnamed, preds) == expected


def test_cli_evaluate_takes_sample_as_predict_suggests(tmp_path: Path, capsys) -> None:
    """`squadqa predict --data sample` ends with `squadqa evaluate sample OUT`: that must work.
    The gold answers themselves as predictions score 100 (every question has its first answer)."""
    from squadqa.cli import main
    from squadqa.data import gold_answers, load_squad

    preds = tmp_path / "p.json"
    gold = gold_answers(load_squad("sample").examples)
    preds.write_text(json.dumps({qid: answers[0] for qid, answers in gold.items()}))
    assert main(["evaluate", "sample", str(preds)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["exact_match"] == 100.0 and result["total"] == len(gold)


@pytest.mark.parametrize(
    "content",
    ['["not", "an", "object"]', '{"q1": 3}', '{"q1": null}', "{not json"],
)
def test_bad_prediction_file_error_names_file(tmp_path: Path, content: str) -> None:
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_dataset("1.1", [_qa("q1", ["x"])])))
    preds = tmp_path / "my-preds.json"
    preds.write_text(content)
    with pytest.raises(ValueError, match=re.escape("my-preds.json")):
        evaluate_files(data, preds)


def test_missing_prediction_file_error_names_file(tmp_path: Path) -> None:
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_dataset("1.1", [_qa("q1", ["x"])])))
    with pytest.raises(ValueError, match=re.escape("nowhere.json")):
        evaluate_files(data, tmp_path / "nowhere.json")


# --------------------------------------------------------------------------- v2.0

# q1, q2 answerable; q3, q4 unanswerable.
V2_GOLD = {
    "q1": ["Denver Broncos"],
    "q2": ["the Carolina Panthers", "Panthers"],
    "q3": [],
    "q4": [],
}
V2_PREDS = {"q1": "Denver Broncos", "q2": "Carolina", "q3": "", "q4": "Santa Clara"}
V2_NA = {"q1": 0.1, "q2": 0.6, "q3": 0.9, "q4": 0.7}
# Per question (EM, F1): q1 (1, 1); q2 (0, 2/3: vs "carolina panthers" P 1, R 1/2);
# q3 (1, 1: "" is the only right answer); q4 (0, 0).


def test_v2_without_na_probs() -> None:
    result = evaluate_v2(V2_GOLD, V2_PREDS)
    assert result == {
        "exact": 100 * 2 / 4,
        "f1": pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4),
        "total": 4,
        "HasAns_exact": 100 * 1 / 2,
        "HasAns_f1": pytest.approx(100 * (1 + 2 / 3) / 2),
        "HasAns_total": 2,
        "NoAns_exact": 100 * 1 / 2,
        "NoAns_f1": 100 * 1 / 2,
        "NoAns_total": 2,
    }


def test_v2_threshold_and_best_threshold() -> None:
    result = evaluate_v2(V2_GOLD, V2_PREDS, V2_NA, na_prob_thresh=0.5)
    # Above 0.5: q2 (0.6) becomes "no answer" -> 0 (it has one); q3 (0.9) -> 1; q4 (0.7) -> 1.
    assert result["exact"] == 100 * 3 / 4
    assert result["f1"] == 100 * 3 / 4
    assert (result["HasAns_exact"], result["HasAns_f1"]) == (50.0, 50.0)
    assert (result["NoAns_exact"], result["NoAns_f1"]) == (100.0, 100.0)
    # Sweep: start abstaining everywhere = 2 right (q3, q4). By na prob: q1 (0.1) +1 -> 3;
    # q2 (0.6) +0 EM / +2/3 F1; q4 (0.7) answered wrongly -1; q3 (0.9) answered "" +0.
    assert result["best_exact"] == 100 * 3 / 4
    assert result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert result["best_f1_thresh"] == 0.6


def test_v2_empty_blocks_omitted_and_empty_rule() -> None:
    only_no_answer = evaluate_v2({"a": [], "b": []}, {"a": "", "b": "x"})
    assert only_no_answer == {
        "exact": 50.0,
        "f1": 50.0,
        "total": 2,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
    }
    # v2 F1 on an answerable question with an empty prediction is 0; gold answers that
    # normalise to nothing count as "no answer".
    only_answerable = evaluate_v2({"a": ["x"], "b": ["the"]}, {"a": "", "b": ""})
    assert only_answerable["f1"] == 50.0
    assert "NoAns_total" not in only_answerable
    assert only_answerable["HasAns_total"] == 2


def test_v2_missing_predictions_score_zero() -> None:
    preds = {k: v for k, v in V2_PREDS.items() if k != "q3"}
    result = evaluate_v2(V2_GOLD, preds)
    assert result["total"] == 4
    assert result["exact"] == 100 * 1 / 4
    assert result["NoAns_exact"] == 0.0


def test_v2_na_probs_must_cover_predictions() -> None:
    with pytest.raises(ValueError, match="na_probs"):
        evaluate_v2(V2_GOLD, V2_PREDS, {"q1": 0.5})


def test_evaluate_files_v2(tmp_path: Path) -> None:
    qas = [_qa(q, a, impossible=not a) for q, a in V2_GOLD.items()]
    data = tmp_path / "v2.json"
    data.write_text(json.dumps(_dataset("v2.0", qas)))
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps(V2_PREDS))
    na = tmp_path / "na.json"
    na.write_text(json.dumps(V2_NA))
    assert evaluate_files(data, preds, na, 0.5) == evaluate_v2(V2_GOLD, V2_PREDS, V2_NA, 0.5)
    assert evaluate_files(data, preds) == evaluate_v2(V2_GOLD, V2_PREDS)
