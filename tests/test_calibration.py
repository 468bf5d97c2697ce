"""Calibrated confidence: ECE and Brier against hand-computed cases, a temperature fitted to scores
of known miscalibration recovers it, the isotonic map against hand-computed pooling and
scikit-learn, and a calibrated run serves its probabilities."""

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
    calibrate_run,
    expected_calibration_error,
    fit_isotonic,
    fit_temperature,
    held_out,
    reliability_bins,
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


def bins_by_hand(confidences: list[float], outcomes: list[bool]) -> list[tuple]:
    """(count, mean confidence, accuracy) of each bin (k/10, (k+1)/10], 0 in the first: a plain
    loop over the intervals, not the index arithmetic of `reliability_bins`."""
    rows = []
    for k in range(10):
        low, high = k / 10, (k + 1) / 10
        members = [
            (c, y)
            for c, y in zip(confidences, outcomes, strict=True)
            if low < c <= high or (k == 0 and c == 0)
        ]
        if not members:
            rows.append((0, None, None))
            continue
        rows.append(
            (
                len(members),
                sum(c for c, _ in members) / len(members),
                sum(y for _, y in members) / len(members),
            )
        )
    return rows


def as_tuples(bins: list[dict]) -> list[tuple]:
    return [(b["count"], b["confidence"], b["accuracy"]) for b in bins]


def share_by_hand(scores: list[float], index: int, t: float) -> float:
    top = max(scores)
    weights = [math.exp((s - top) / t) for s in scores]
    return weights[index] / sum(weights)


def test_reliability_bins_hand_computed() -> None:
    bins = reliability_bins([0.05, 0.15, 0.95, 0.95, 0.1, 0.0], [0, 1, 1, 0, 1, 1])
    assert [(b["low"], b["high"]) for b in bins] == pytest.approx(
        [(k / 10, (k + 1) / 10) for k in range(10)]
    )
    # 0.05, 0.1 (an upper edge belongs to its bin) and 0 (the first bin) share bin 0.
    assert bins[0]["count"] == 3
    assert bins[0]["confidence"] == pytest.approx(0.05)
    assert bins[0]["accuracy"] == pytest.approx(2 / 3)
    assert (bins[1]["count"], bins[1]["accuracy"]) == (1, 1.0)
    assert bins[1]["confidence"] == pytest.approx(0.15)
    assert (bins[9]["count"], bins[9]["accuracy"]) == (2, 0.5)
    assert all(b["count"] == 0 and b["confidence"] is None for b in bins[2:9])


def check_bins(record: dict, scores: list, outcomes: list, probability) -> None:
    """calibration.json's held-out bins and numbers against a plain recomputation."""
    for when, t in (("before", 1.0), ("after", record["temperature"])):
        conf = [probability(s, t) for s in scores]
        got = as_tuples(record["reliability"][when])
        want = bins_by_hand(conf, outcomes)
        assert [g[0] for g in got] == [w[0] for w in want], when
        for g, w in zip(got, want, strict=True):
            if w[0]:
                assert g[1:] == pytest.approx(w[1:]), when
        n = len(conf)
        ece = sum(c / n * abs(a - m) for c, m, a in want if c)
        assert record[f"ece_{when}"] == pytest.approx(ece)
        brier = sum((c - y) ** 2 for c, y in zip(conf, outcomes, strict=True)) / n
        assert record[f"brier_{when}"] == pytest.approx(brier)


def test_calibration_json_bins_recomputed_by_hand(tiny_run: Path, tmp_path: Path) -> None:
    from squadqa.config import load_config
    from squadqa.data import gold_answers
    from squadqa.evaluation import exact_match_score
    from squadqa.scoring import load_dev

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    calibrate_run(run_dir)
    record = json.loads((run_dir / rundir.CALIBRATION).read_text())
    assert "no_answer" not in record  # SQuAD v1.1: every question has an answer
    nbest = json.loads((run_dir / rundir.NBEST).read_text())
    gold = gold_answers(load_dev(load_config(run_dir / rundir.CONFIG)).examples)
    held = [q for q in nbest if held_out(q) and nbest[q]]
    scores = [[c["score"] for c in nbest[q]] for q in held]
    right = [any(exact_match_score(nbest[q][0]["text"], g) for g in gold[q]) for q in held]
    # The tiny run (one epoch, not bit-reproducible across sessions) may get none of its 14 or
    # so held-out questions right: the bins are checked against the outcomes either way.
    assert record["held_out_questions"] == len(held)
    check_bins(record, scores, right, lambda s, t: share_by_hand(s, 0, t))


def test_a_known_no_answer_temperature_is_recovered() -> None:
    """ "No answer" drawn with its share of the softmax at T = 2.5 among the null score (less
    the threshold) and the spans: the fitted no-answer temperature recovers 2.5."""
    rng = np.random.default_rng(1)
    threshold = 1.5
    nbest, gold, null_odds = {}, {}, {}
    for i in range(3000):
        spans = sorted(rng.normal(0.0, 3.0, size=5), reverse=True)
        null = rng.normal(0.0, 3.0)  # the no-answer candidate's score, threshold included
        qid = f"q{i}"
        nbest[qid] = [{"text": f"s{j}", "score": float(s)} for j, s in enumerate(spans)]
        null_odds[qid] = float(null - spans[0] + threshold)
        unanswerable = rng.random() < share_by_hand([null, *spans], 0, 2.5)
        gold[qid] = [] if unanswerable else ["s0" if rng.random() < 0.5 else "s1"]
    record = calibrate(nbest, gold, null_odds, threshold)["no_answer"]
    assert record["temperature"] == pytest.approx(2.5, rel=0.1)
    assert record["null_threshold"] == threshold
    assert record["fit_questions"] + record["held_out_questions"] == 3000
    assert record["ece_after"] < 0.03 < record["ece_before"]


@pytest.fixture(scope="module")
def squad2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SQuAD 2.0 run (every third question unanswerable), as tests/test_squad2.py makes."""
    from conftest import TINY_TRAINING
    from test_squad2 import write_v2_sample

    from squadqa.config import load_config
    from squadqa.train import train

    root = tmp_path_factory.mktemp("squad2-calibration")
    data = write_v2_sample(root / "squad2-sample.json.gz")
    overrides = [f"data.train={data}", f"data.dev={data}", "data.max_dev_samples=60"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SQUADQA_CACHE", str(root / "cache"))
        config = load_config(
            None,
            [*TINY_TRAINING, *overrides, "postprocess.version_2=true", "name=q2", "train.epochs=1"],
        )
        train(config, root)
    return root / "q2"


def test_a_squad2_run_calibrates_no_answer(squad2_run: Path) -> None:
    """On a SQuAD 2.0 run `calibrate` also fits "no answer": its held-out bins and numbers
    recomputed from null_odds.json, the n-best lists and the served threshold."""
    from squadqa.cli import main
    from squadqa.evaluation import load_dataset_json

    assert main(["calibrate", str(squad2_run)]) == 0
    record = json.loads((squad2_run / rundir.CALIBRATION).read_text())["no_answer"]
    nbest = json.loads((squad2_run / rundir.NBEST).read_text())
    odds = json.loads((squad2_run / rundir.NULL_ODDS).read_text())
    threshold = json.loads((squad2_run / rundir.EVAL).read_text())["best_f1_thresh"]
    assert record["null_threshold"] == pytest.approx(threshold)
    dev = load_dataset_json(squad2_run.parent / "squad2-sample.json.gz")
    unanswerable = {
        qa["id"]: qa["is_impossible"]
        for article in dev["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }
    held = [q for q in nbest if held_out(q) and nbest[q]]
    assert record["held_out_questions"] == len(held)
    # "No answer" first: the null score (best span + null odds) less the threshold, then spans.
    scores = [
        [nbest[q][0]["score"] + odds[q] - threshold, *(c["score"] for c in nbest[q])] for q in held
    ]
    outcomes = [unanswerable[q] for q in held]
    assert 0 < sum(outcomes) < len(outcomes)
    check_bins(record, scores, outcomes, lambda s, t: share_by_hand(s, 0, t))
    # The top answer's calibration is there as before, on the answerable questions only.
    top = json.loads((squad2_run / rundir.CALIBRATION).read_text())
    assert top["fit_questions"] + top["held_out_questions"] < len(nbest)


def test_a_calibrated_squad2_run_serves_the_no_answer_probability(
    squad2_run: Path, tiny_run: Path
) -> None:
    """`answer` reports P("no answer" is right): the softmax share of "no answer" (best span +
    null score - threshold) beside every span candidate, at the fitted no-answer temperature,
    computed here by hand; v1.1 runs report None."""
    from squadqa.cli import main
    from squadqa.data import load_squad
    from squadqa.inference import QAPredictor

    assert main(["calibrate", str(squad2_run)]) == 0
    record = json.loads((squad2_run / rundir.CALIBRATION).read_text())["no_answer"]
    t_na, threshold = record["temperature"], record["null_threshold"]
    predictor = QAPredictor.from_run_dir(squad2_run)
    assert predictor.span_config.no_answer_temperature == t_na != 1.0
    example = load_squad(squad2_run.parent / "squad2-sample.json.gz").examples[0]
    (got,) = predictor.answer(example.context, [example.question], top_k=1000)
    scores = [a["score"] for a in got["alternatives"]]  # every candidate, the best first
    assert len(scores) > 1
    z = [(scores[0] + got["null_score"] - threshold) / t_na] + [s / t_na for s in scores]
    by_hand = math.exp(z[0]) / sum(math.exp(v) for v in z)
    assert got["no_answer_probability"] == pytest.approx(by_hand, rel=1e-9)
    assert got["no_answer"] == (got["null_score"] > threshold)
    (v1,) = QAPredictor.from_run_dir(tiny_run).answer(example.context, [example.question])
    assert v1["no_answer_probability"] is None

    # `predict --na-prob`: the same probabilities per id, in the official evaluation's format.
    data, out = squad2_run.parent / "squad2-sample.json.gz", squad2_run.parent / "pred.json"
    na_prob = squad2_run.parent / "na_prob.json"
    args = ["predict", "--model", str(squad2_run), "--data", str(data), "--out", str(out)]
    assert main([*args, "--na-prob", str(na_prob)]) == 0
    probs = json.loads(na_prob.read_text())
    assert set(probs) == set(json.loads(out.read_text()))
    # `predict` reads the example's windows in batches padded to other lengths than `answer`'s
    # one request, which moves the Keras model's logits by float noise (~1e-7), amplified by a
    # small fitted temperature: equal to 1e-4, where a wrong temperature or formula is far off.
    assert probs[example.id] == pytest.approx(by_hand, abs=1e-4)
    assert main(["evaluate", str(data), str(out), "--na-prob-file", str(na_prob)]) == 0
    assert main([*args[:2], str(tiny_run), *args[3:], "--na-prob", str(na_prob)]) == 2  # v1.1


def test_calibrate_names_a_question_missing_from_the_dev_data_or_the_null_odds() -> None:
    nbest = {"q1": [{"text": "a", "score": 1.0}]}
    with pytest.raises(ValueError, match=r"nbest_predictions.json: question 'q1' is not in"):
        calibrate(nbest, {})
    with pytest.raises(ValueError, match=r"null_odds.json: no entry for question 'q1'"):
        calibrate(nbest, {"q1": ["a"]}, {})


def test_isotonic_map_hand_computed() -> None:
    # Outcomes 0 1 0 1: the middle pair violates and pools to 1/2. End blocks of one question
    # each are clipped to the rule of succession: 1/(1+2) and 1 - 1/(1+2).
    m = fit_isotonic([0.4, 0.1, 0.3, 0.2], [True, False, False, True])
    assert m.tempered == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert m.calibrated == pytest.approx((1 / 3, 0.5, 0.5, 2 / 3))
    assert m(0.25) == pytest.approx(0.5) and m(0.15) == pytest.approx((1 / 3 + 0.5) / 2)
    assert m(0.0) == pytest.approx(1 / 3) and m(1.0) == pytest.approx(2 / 3)  # flat beyond
    # Equal confidences are one point: 0.5 twice, right once, is one knot at 1/2.
    tied = fit_isotonic([0.5, 0.5], [False, True])
    assert (tied.tempered, tied.calibrated) == ((0.5,), (0.5,))


def test_isotonic_map_equals_scikit_learn() -> None:
    """Random confidences (rounded, so some tie) and outcomes, against scikit-learn's
    IsotonicRegression. The lowest confidence is right and the highest wrong, so neither end
    block is 0 or 1 and the rule-of-succession clip does not apply."""
    isotonic = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(2, 400))
        x = np.round(rng.random(n), int(rng.integers(1, 4)))
        y = rng.random(n) < x**2
        y[x == x.min()], y[x == x.max()] = True, False
        ours = fit_isotonic(x, y)
        theirs = isotonic.IsotonicRegression(out_of_bounds="clip").fit(x, y.astype(float))
        grid = np.linspace(-0.1, 1.1, 301)
        assert [ours(v) for v in grid] == pytest.approx(theirs.predict(grid).tolist(), abs=1e-12)


def test_isotonic_map_fixes_what_one_temperature_cannot() -> None:
    """Top answers right with chance sqrt(p) where their probability p (at T = 1) is below 1/2
    and p^3 above: underconfident low, overconfident high. No one temperature fits both sides;
    the map (auto: >= 1000 fitting questions) brings held-out ECE under 0.02."""
    rng = np.random.default_rng(5)
    nbest, gold = {}, {}
    for i in range(6000):
        scores = rng.normal(0.0, 2.0, size=6)
        p = top_probability(scores, 1.0)
        right = rng.random() < (math.sqrt(p) if p < 0.5 else p**3)
        order = np.argsort(-scores)
        nbest[f"q{i}"] = [{"text": f"t{k}", "score": float(scores[k])} for k in order]
        gold[f"q{i}"] = [f"t{order[0]}" if right else "elsewhere"]
    record = calibrate(nbest, gold)
    assert record["method"] == "temperature+isotonic"
    assert record["ece_temperature"] > 0.04
    assert record["ece_after"] < 0.02
    assert calibrate(nbest, gold, method="temperature")["method"] == "temperature"
    small = dict(list(nbest.items())[:400])
    assert "isotonic" not in calibrate(small, gold)  # auto: too few fitting questions
    assert "isotonic" in calibrate(small, gold, method="isotonic")
    with pytest.raises(ValueError, match="platt"):
        calibrate(nbest, gold, method="platt")


def test_the_map_sets_the_top_probability_and_the_rest_share_the_remainder() -> None:
    from squadqa.postprocess import Candidate, TopProbabilityMap, with_probabilities

    def candidates(scores: list[float]) -> list[Candidate]:
        return [Candidate(f"t{i}", i, i + 1, s, s, 0.0) for i, s in enumerate(scores)]

    # Two candidates, T = 1: the top has 1/(1 + e^-2) = 0.881, mapped to 0.7 by the line
    # through (0.5, 0.5) and (1, 0.5 + 0.5 * 0.4); the other takes exactly the remaining 0.3.
    line = TopProbabilityMap((0.5, 1.0), (0.5, 0.7))
    p = with_probabilities(candidates([2.0, 0.0]), 1.0, line)
    top = 0.5 + 0.2 * (1 / (1 + math.exp(-2)) - 0.5) / 0.5
    assert [c.probability for c in p] == pytest.approx([top, 1 - top])
    # Five candidates: the rest are one softmax (their ratios are e^(score difference / T') for
    # one T'), they sum to 1 with the top, and the ranking holds.
    scores = [3.0, 2.0, 1.5, 0.0, -1.0]
    p = [c.probability for c in with_probabilities(candidates(scores), 1.0, line)]
    assert sum(p) == pytest.approx(1.0) and p == sorted(p, reverse=True)
    t_prime = (scores[1] - scores[2]) / math.log(p[1] / p[2])
    assert p == pytest.approx([share_by_hand(scores, i, t_prime) for i in range(5)], abs=1e-9)
    # Below 1/n no temperature reaches it: the others are capped so none outranks the answer.
    low = TopProbabilityMap((0.0, 1.0), (0.1, 0.1))
    p = [c.probability for c in with_probabilities(candidates(scores), 1.0, low)]
    assert p[0] == pytest.approx(0.1) and max(p[1:]) <= 0.1 + 1e-12


def test_a_run_calibrated_with_the_map_serves_it(tiny_run: Path, tmp_path: Path) -> None:
    from squadqa.cli import main
    from squadqa.inference import QAPredictor

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    assert main(["calibrate", str(run_dir), "--method", "isotonic"]) == 0
    record = json.loads((run_dir / rundir.CALIBRATION).read_text())
    knots = record["isotonic"]
    assert record["method"] == "temperature+isotonic" and knots["tempered"]
    context = "The Normans gave their name to Normandy, a region in France, in the 10th century."
    answer = QAPredictor.from_run_dir(run_dir).answer(context, ["Who gave their name?"], 20)[0]
    scores = [c["score"] for c in answer["alternatives"]]
    tempered = share_by_hand(scores, 0, record["temperature"])
    by_hand = float(np.interp(tempered, knots["tempered"], knots["calibrated"]))
    assert answer["probability"] == pytest.approx(by_hand)
    assert answer["alternatives"][0]["probability"] == pytest.approx(by_hand)
