"""Calibrated confidence: ECE and Brier against hand-computed cases, a temperature fitted to scores
of known miscalibration recovers it, and a calibrated run serves its probabilities."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from squadqa import rundir
from squadqa.calibration import (
    brier_score,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    held_out,
    top_probability,
)


def test_ece_hand_computed() -> None:
    # Bins of width 0.1: 0.05 -> (0, .1], 0.15 -> (.1, .2], both 0.95 -> (.9, 1].
    # |0 - .05| / 4 + |1 - .15| / 4 + |.5 - .95| * 2/4 = .0125 + .2125 + .225
    ece = expected_calibration_error([0.05, 0.15, 0.95, 0.95], [False, True, True, False])
    assert ece == pytest.approx(0.45)
    # A bin's upper edge belongs to it; 0 goes to the first bin: one bin, |.5 - .05| = .45.
    assert expected_calibration_error([0.0, 0.1], [True, False]) == pytest.approx(0.45)
    assert expected_calibration_error([0.7] * 10, [True] * 7 + [False] * 3) == pytest.approx(0.0)


def test_brier_hand_computed() -> None:
    assert brier_score([0.8, 0.3], [True, False]) == pytest.approx((0.2**2 + 0.3**2) / 2)


def test_top_probability_hand_computed() -> None:
    assert top_probability(np.array([2.0, 0.0]), 1.0) == pytest.approx(1 / (1 + math.exp(-2)))
    assert top_probability(np.array([0.0, 2.0]), 2.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert top_probability(np.array([5.0]), 0.3) == pytest.approx(1.0)


def test_a_known_temperature_is_recovered() -> None:
    """Outcomes drawn with the top probability at T = 2.5: scores that are 2.5x too confident."""
    rng = np.random.default_rng(0)
    scores = [rng.normal(0.0, 3.0, size=8) for _ in range(4000)]
    correct = [rng.random() < top_probability(s, 2.5) for s in scores]
    fitted = fit_temperature(scores, correct)
    assert fitted == pytest.approx(2.5, rel=0.1)
    # And it calibrates: ECE at the fitted T is far below ECE at T = 1.
    before = expected_calibration_error([top_probability(s, 1.0) for s in scores], correct)
    after = expected_calibration_error([top_probability(s, fitted) for s in scores], correct)
    assert after < 0.03 < before


def test_the_split_is_half_and_half_and_the_same_in_every_process() -> None:
    """Half each, and not drawn from Python's per-process string hash: another process with
    another PYTHONHASHSEED puts every question on the same side."""
    import os
    import subprocess
    import sys

    ids = [f"q{i}" for i in range(2000)]
    share = sum(map(held_out, ids)) / len(ids)
    assert 0.45 < share < 0.55
    script = (
        "from squadqa.calibration import held_out\n"
        "print(''.join('1' if held_out(f'q{i}') else '0' for i in range(2000)))"
    )
    there = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert there == "".join("1" if held_out(i) else "0" for i in ids)


def test_calibrate_skips_questions_without_a_span_or_a_gold_answer() -> None:
    ids = [f"q{i}" for i in range(200)]
    nbest = {q: [{"text": "a", "score": 1.0}, {"text": "b", "score": 0.0}] for q in ids}
    gold = {q: ["a"] if i % 2 else ["b"] for i, q in enumerate(ids)}
    nbest["empty"], gold["empty"] = [], ["x"]
    nbest["unanswerable"], gold["unanswerable"] = [{"text": "a", "score": 1.0}], []
    record = calibrate(nbest, gold)
    assert record["fit_questions"] + record["held_out_questions"] == 200
    # Right half of the time with the same two scores: the fitted probability is 1/2, which
    # needs T -> infinity; the search stops at the edge of its range.
    assert record["temperature"] > 10
    assert record["mean_confidence_after"] == pytest.approx(0.5, abs=0.05)


def test_a_calibrated_run_serves_probabilities_at_its_temperature(
    tiny_run: Path, tmp_path: Path
) -> None:
    from squadqa.cli import main
    from squadqa.inference import QAPredictor

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    assert main(["calibrate", str(run_dir)]) == 0
    record = json.loads((run_dir / rundir.CALIBRATION).read_text())
    t = record["temperature"]
    assert record["fit_questions"] > 0 and record["held_out_questions"] > 0
    assert t != 1.0
    context = "The Normans gave their name to Normandy, a region in France, in the 10th century."
    answer = QAPredictor.from_run_dir(run_dir).answer(context, ["Who gave their name?"], 20)[0]
    scores = np.array([c["score"] for c in answer["alternatives"]])
    by_hand = np.exp((scores - scores.max()) / t)
    by_hand /= by_hand.sum()
    assert [c["probability"] for c in answer["alternatives"]] == pytest.approx(by_hand.tolist())
    assert answer["probability"] == pytest.approx(by_hand[0])
