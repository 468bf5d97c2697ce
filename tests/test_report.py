"""`squadqa.report`: error analysis numbers worked out by hand, and the written report and plots.

The dev set is 8 questions on 2 contexts, with hand-written predictions:

| id | type  | first gold (words)          | context | prediction       | EM | F1            |
|----|-------|-----------------------------|---------|------------------|----|---------------|
| q1 | who   | Gustave Eiffel (2)          | short   | Gustave Eiffel   | 1  | 1             |
| q2 | when  | 1889 (1)                    | short   | in 1889          | 0  | 2/3           |
| q3 | which | Paris (1)                   | short   | Paris            | 1  | 1             |
| q4 | who   | his company (2)             | short   | Gustave Eiffel   | 0  | 0             |
| q5 | how   | eleven (1)                  | long    | (none)           | 0  | 0             |
| q6 | why   | it brings … year (11)       | long    | water and fertile silt | 0 | 4/7 (R 4/10) |
| q7 | what  | the Mediterranean Sea (3)   | long    | Mediterranean    | 0  | 2/3 (vs 2nd gold) |
| q8 | other | Nile (1)                    | long    | Nile             | 1  | 1             |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from squadqa.data import Answer, Example, load_squad
from squadqa.report import (
    error_analysis,
    question_type,
    report_command,
    report_figures,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SHORT = (
    "The Eiffel Tower was completed in 1889 in Paris. "
    "It was designed by the engineer Gustave Eiffel and his company."
)
_LONG_HEAD = (
    "The Nile flows north through eleven countries and into the Mediterranean Sea. "
    "The longest river is the Nile. Farmers value it because it brings water and fertile silt "
    "to the fields every year."
)
_FILLER = "Boats carry grain and cotton downstream."  # 6 words
LONG = _LONG_HEAD + (" " + _FILLER) * ((160 - len(_LONG_HEAD.split())) // 6)
LONG = LONG + " end" * (160 - len(LONG.split()))  # exactly 160 words: bucket 150-199

QUESTIONS = [  # (id, context, question, gold answers)
    ("q1", SHORT, "Who designed the Eiffel Tower?", ["Gustave Eiffel"]),
    ("q2", SHORT, "When was the Eiffel Tower completed?", ["1889"]),
    ("q3", SHORT, "In which city is the tower?", ["Paris"]),
    ("q4", SHORT, "Who did the engineer work with?", ["his company"]),
    ("q5", LONG, "How many countries does the Nile flow through?", ["eleven"]),
    (
        "q6",
        LONG,
        "Why is the river important to farmers?",
        ["it brings water and fertile silt to the fields every year"],
    ),
    ("q7", LONG, "What does the Nile flow into?", ["the Mediterranean Sea", "Mediterranean Sea"]),
    ("q8", LONG, "Name the longest river.", ["Nile"]),
]
PREDICTIONS = {
    "q1": "Gustave Eiffel",
    "q2": "in 1889",
    "q3": "Paris",
    "q4": "Gustave Eiffel",
    # q5: no prediction
    "q6": "water and fertile silt",
    "q7": "Mediterranean",
    "q8": "Nile",
    "zzz": "not a dev question",
}
EM = 100 * 3 / 8
F1 = 100 * (3 + 2 / 3 + 4 / 7 + 2 / 3) / 8


def squad_json() -> dict[str, Any]:
    paragraphs = []
    for context in (SHORT, LONG):
        qas = [
            {
                "id": qid,
                "question": q,
                "answers": [{"text": a, "answer_start": context.index(a)} for a in golds],
            }
            for qid, c, q, golds in QUESTIONS
            if c == context
        ]
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "1.1", "data": [{"title": "Tiny", "paragraphs": paragraphs}]}


def write_run(
    root: Path,
    name: str,
    dev: str,
    metrics: list[dict[str, Any]],
    *,
    hidden_size: int = 64,
    predictions: dict[str, str] | None = None,
    eval_json: dict[str, Any] | None = None,
) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.toml").write_text(
        f'name = "{name}"\n\n[data]\ntrain = "sample"\ndev = "{dev}"\nmax_dev_samples = 0\n\n'
        f"[model]\nhidden_size = {hidden_size}\nnum_layers = 2\n\n"
        f'[train]\ninit = "scratch"\nepochs = {len(metrics)}\n'
    )
    best = max(metrics, key=lambda m: m["dev_f1"])
    (d / "status.json").write_text(
        json.dumps(
            {
                "status": "finished",
                "host": "h",
                "pid": 1,
                "backend": "torch",
                "init": "scratch",
                "parameters": 1_234_567,
                "train_examples": 100,
                "epochs_planned": len(metrics),
                "epochs_run": len(metrics),
                "best_epoch": best["epoch"],
                "best_dev_exact_match": best["dev_exact_match"],
                "best_dev_f1": best["dev_f1"],
                "wall_time_s": metrics[-1]["wall_time_s"],
            }
        )
    )
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if predictions is not None:
        (d / "predictions.json").write_text(json.dumps(predictions))
    if eval_json is not None:
        (d / "eval.json").write_text(json.dumps(eval_json))
    return d


def epoch(n: int, em: float, f1: float, lr: float) -> dict[str, Any]:
    return {
        "epoch": n,
        "train_loss": 6.0 / n,
        "dev_loss": 5.0 / n + 0.5,
        "dev_exact_match": em,
        "dev_f1": f1,
        "lr": lr,
        "wall_time_s": 30.0 * n,
        "tokens_per_s": 2000.0,
        "train_tokens": 60_000,
    }


@pytest.fixture(scope="module")
def dev_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny-dev.json"
    path.write_text(json.dumps(squad_json()))
    return path


@pytest.fixture(scope="module")
def analysis(dev_path: Path) -> dict[str, Any]:
    return error_analysis(load_squad(dev_path).examples, PREDICTIONS)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, dev_path: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    base = write_run(
        root,
        "base",
        str(dev_path),
        [epoch(1, 12.5, 20.0, 4e-4), epoch(2, 25.0, 50.0, 2e-4), epoch(3, EM, F1, 0.0)],
        predictions=PREDICTIONS,
        eval_json={"exact_match": EM, "f1": F1, "total": 8, "missing_predictions": 1,
                   "predictions_not_in_dataset": 1, "epoch": 3},
    )  # fmt: skip
    wide = write_run(
        root,
        "wide",
        str(dev_path),
        [epoch(1, 25.0, 30.0, 3e-4), epoch(2, 37.5, 55.0, 1e-4)],
        hidden_size=256,
        predictions={},
    )
    return base, wide


def rows_by_bucket(table: list[dict[str, Any]]) -> dict[str, tuple[int, Any, Any]]:
    return {
        r["bucket"]: (
            r["count"],
            None if r["exact_match"] is None else round(r["exact_match"], 2),
            None if r["f1"] is None else round(r["f1"], 2),
        )
        for r in table
    }


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("What is it?", "what"),
        ("In what year did it open?", "what"),
        ("How many people live there?", "how"),
        ("how much did it cost", "how"),
        ("Whose idea was it?", "who"),
        ("The tower was built when?", "when"),
        ("Where's the tower, and why?", "where"),
        ("Name the river.", "other"),
        ("Somewhat whole?", "other"),  # wh-words only as whole words
    ],
)
def test_question_type(question: str, kind: str) -> None:
    assert question_type(question) == kind


def test_overall_matches_hand_computed(analysis: dict[str, Any]) -> None:
    assert analysis["total"] == 8
    assert analysis["missing_predictions"] == 1
    assert analysis["predictions_not_in_dataset"] == 1
    assert analysis["exact_match"] == pytest.approx(37.5)
    assert analysis["f1"] == pytest.approx(F1)  # 61.31


def test_by_question_type(analysis: dict[str, Any]) -> None:
    assert [r["bucket"] for r in analysis["by_question_type"]] == [
        "what", "who", "when", "where", "which", "how", "why", "other",
    ]  # fmt: skip
    assert rows_by_bucket(analysis["by_question_type"]) == {
        "what": (1, 0.0, 66.67),
        "who": (2, 50.0, 50.0),
        "when": (1, 0.0, 66.67),
        "where": (0, None, None),
        "which": (1, 100.0, 100.0),
        "how": (1, 0.0, 0.0),
        "why": (1, 0.0, 57.14),
        "other": (1, 100.0, 100.0),
    }


def test_by_answer_length(analysis: dict[str, Any]) -> None:
    assert rows_by_bucket(analysis["by_answer_length"]) == {
        "1": (4, 50.0, 66.67),  # q2 q3 q5 q8: F1 (2/3 + 1 + 0 + 1) / 4
        "2": (2, 50.0, 50.0),  # q1 q4
        "3": (1, 0.0, 66.67),  # q7: the first gold answer has 3 words
        "4-5": (0, None, None),
        "6-10": (0, None, None),
        ">10": (1, 0.0, 57.14),  # q6: 11 words
    }


def test_by_context_length(analysis: dict[str, Any]) -> None:
    assert len(LONG.split()) == 160
    assert rows_by_bucket(analysis["by_context_length"]) == {
        "<100": (4, 50.0, 66.67),  # q1-q4: F1 (1 + 2/3 + 1 + 0) / 4
        "100-149": (0, None, None),
        "150-199": (4, 25.0, 55.95),  # q5-q8: F1 (0 + 4/7 + 2/3 + 1) / 4
        "200-299": (0, None, None),
        ">=300": (0, None, None),
    }


def test_worst_questions_order(analysis: dict[str, Any]) -> None:
    worst = analysis["worst"]
    # F1 0 (q4, q5 by id), 4/7 (q6), 2/3 (q2, q7 by id), then the three exact matches.
    assert [w["id"] for w in worst] == ["q4", "q5", "q6", "q2", "q7", "q1", "q3", "q8"]
    q5 = worst[1]
    assert (q5["prediction"], q5["missing"], q5["f1"]) == ("", True, 0.0)
    q7 = worst[4]
    assert q7["gold_answers"] == ["the Mediterranean Sea", "Mediterranean Sea"]
    assert q7["f1"] == pytest.approx(200 / 3)


def test_worst_is_capped_at_twenty() -> None:
    examples = [
        Example(f"id{i:02d}", "t", "one two three", "What?", (Answer("two", 4),)) for i in range(25)
    ]
    predictions = {f"id{i:02d}": ("two" if i % 2 else "one") for i in range(25)}
    worst = error_analysis(examples, predictions)["worst"]
    assert len(worst) == 20
    assert [w["id"] for w in worst[:13]] == [f"id{i:02d}" for i in range(0, 25, 2)]
    assert worst[13]["id"] == "id01"


def test_report_of_one_run(two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base, _ = two_runs
    assert report_command([str(base)], None) == 0
    report = base / "report.md"
    assert capsys.readouterr().out.strip() == str(report)
    for name in ("loss.png", "dev_metrics.png", "learning_rate.png", "error_analysis.png"):
        data = (base / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    text = report.read_text()
    assert "![Train and dev loss per epoch](loss.png)" in text
    assert "| who | 2 | 50.00 | 50.00 |" in text
    assert "| where | 0 | - | - |" in text
    assert "EM 37.50, F1 61.31" in text
    assert "not the one the run was evaluated on" not in text  # eval.json agrees
    worst = [line for line in text.splitlines() if line.startswith("| 1 | `q4`")]
    assert worst == [
        "| 1 | `q4` | Who did the engineer work with? | his company | Gustave Eiffel | 0.0 | 0 |"
    ]
    assert "(no prediction)" in text


def test_steps_figure_hand_computed(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """200 steps of loss 1, 2, ..., 200 over 2 epochs: a 2-step trailing mean (1% of the steps)
    gives s - 0.5 at step s, placed at s / 100 epochs."""
    import shutil

    run = tmp_path / "stepped"
    shutil.copytree(two_runs[0], run)
    lines = [
        {"epoch": (s - 1) // 100 + 1, "step": s, "loss": float(s), "lr": 1e-3}
        for s in range(1, 201)
    ]
    (run / "steps.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    figures = report_figures([run])
    assert "train_steps" in figures
    line = figures["train_steps"].axes[0].lines[0]
    assert list(line.get_xdata()) == pytest.approx([s / 100 for s in range(2, 201)])
    assert list(line.get_ydata()) == pytest.approx([s - 0.5 for s in range(2, 201)])

    report = write_report([run], tmp_path / "out")
    assert "![Train loss per step](train_steps.png)" in report.read_text()
    assert (tmp_path / "out" / "train_steps.png").read_bytes().startswith(PNG_MAGIC)
    (run / "steps.jsonl").unlink()  # an older run: no steps, no figure, no stale file
    report = write_report([run], tmp_path / "out")
    assert "train_steps" not in report.read_text()
    assert not (tmp_path / "out" / "train_steps.png").exists()


def test_overlay_of_two_runs(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    base, wide = two_runs
    figures = report_figures([base, wide])
    assert set(figures) == {"loss", "dev_metrics", "learning_rate", "error_analysis"}
    for key in ("loss", "dev_metrics", "learning_rate"):
        fig = figures[key]
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "wide"], key
        ax = fig.axes[0]
        assert ax.get_xlabel() == "epoch"
        assert ax.get_ylabel()
        assert ax.get_title()
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == [1, 2, 3], key  # whole epochs only
    assert figures["dev_metrics"].axes[0].get_ylim() == (0, 100)

    report = write_report([base, wide], tmp_path / "cmp")
    assert report == tmp_path / "cmp" / "report.md"
    assert (tmp_path / "cmp" / "dev_metrics.png").read_bytes().startswith(PNG_MAGIC)
    text = report.read_text()
    assert "# Training report: base, wide" in text
    assert "| `model.hidden_size` | 64 | 256 |" in text
    assert "| `train.epochs` | 3 | 2 |" in text
    assert "### wide" in text
    assert "## Error analysis: base (dev)" in text


def test_report_without_dev_data_or_predictions(tmp_path: Path) -> None:
    lost = write_run(
        tmp_path, "lost", "nowhere/dev.json", [epoch(1, 1.0, 2.0, 1e-4)], predictions={}
    )
    text = write_report([lost]).read_text()
    assert "Not available: dev data 'nowhere/dev.json' not found" in text
    assert not (lost / "error_analysis.png").exists()
    assert (lost / "loss.png").read_bytes().startswith(PNG_MAGIC)
    fresh = write_run(tmp_path, "fresh", "sample", [epoch(1, 1.0, 2.0, 1e-4)])
    assert "Not available: no predictions.json" in write_report([fresh]).read_text()


def test_report_command(
    two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report_command([str(tmp_path / "none")], None) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_unanswerable_questions_get_their_own_bucket() -> None:
    examples = [
        Example("u1", "t", "one two", "What is three?", (), is_impossible=True),
        Example("u2", "t", "one two", "Who is four?", (), is_impossible=True),
        Example("a1", "t", "one two", "What is two?", (Answer("two", 4),)),
    ]
    analysis = error_analysis(examples, {"u1": "", "u2": "one", "a1": "two"})
    assert rows_by_bucket(analysis["by_answer_length"])["no answer"] == (2, 50.0, 50.0)
    assert analysis["exact_match"] == pytest.approx(200 / 3)


def test_report_flags_dev_data_that_does_not_match_eval_json(
    tmp_path: Path, dev_path: Path
) -> None:
    run = write_run(
        tmp_path,
        "other-dev",
        str(dev_path),
        [epoch(1, 90.0, 95.0, 1e-4)],
        predictions=PREDICTIONS,
        eval_json={"exact_match": 90.0, "f1": 95.0, "total": 10570, "epoch": 1},
    )
    text = write_report([run]).read_text()
    assert "`eval.json` says EM 90.00, F1 95.00 on 10570 questions" in text


# --------------------------------------------------------------------------- head to head

# B against the same 8 questions (official EM; "the Nile" normalises to "nile"):
# both right q1 q8; only A q3 (B "Paris, France": F1 2/3); only B q2 q4 q5; neither q6 q7.
PREDICTIONS_B = {
    "q1": "Gustave Eiffel",
    "q2": "1889",
    "q3": "Paris, France",
    "q4": "his company",
    "q5": "eleven",
    "q7": "Mediterranean",
    "q8": "the Nile",
}


def test_head_to_head_hand_computed(dev_path: Path) -> None:
    from squadqa.report import head_to_head

    result = head_to_head(load_squad(dev_path).examples, PREDICTIONS, PREDICTIONS_B, shown=2)
    assert result["counts"] == {"both": 2, "only_a": 1, "only_b": 3, "neither": 2}
    assert result["total"] == 8
    assert [q["id"] for q in result["only_a"]] == ["q3"]
    assert result["only_a"][0]["f1_b"] == pytest.approx(200 / 3)
    # Largest F1 gap first: q4 and q5 (A scores 0) before q2 (A's "in 1889" has F1 2/3); cut at 2.
    assert [q["id"] for q in result["only_b"]] == ["q4", "q5"]
    assert result["only_b"][1]["prediction_a"] == ""  # q5: A has no prediction


def test_report_puts_two_runs_head_to_head(
    tmp_path: Path, dev_path: Path, two_runs: tuple[Path, Path]
) -> None:
    base, _ = two_runs
    other = write_run(
        tmp_path, "other", str(dev_path), [epoch(1, 62.5, 70.0, 0.0)], predictions=PREDICTIONS_B
    )
    text = write_report([base, other], tmp_path / "cmp").read_text()
    assert "## Head to head: base (A) vs other (B), dev" in text
    assert "| only B right | 3 | 37.5% |" in text
    assert "| only A right | 1 | 12.5% |" in text
    # q4 (who): A 0, B 1; q1 (who): both 1 -> A 50.00, B 100.00.
    assert "| who | 2 | 50.00 | 100.00 | +50.00 |" in text
    assert "### Only A right: 1 of 1, largest F1 gap first" in text
    assert "| `q3` | In which city is the tower? | Paris | Paris | Paris, France |" in text
    mismatched = write_run(
        tmp_path, "elsewhere", str(sample_dev(tmp_path)), [epoch(1, 0, 0, 0.0)], predictions={}
    )
    text = write_report([base, mismatched], tmp_path / "cmp2").read_text()
    assert "were scored on different dev questions" in text


def sample_dev(tmp_path: Path) -> Path:
    data = squad_json()
    data["data"][0]["paragraphs"] = data["data"][0]["paragraphs"][:1]
    path = tmp_path / "other-dev.json"
    path.write_text(json.dumps(data))
    return path


def calibrated(ece_before: float, after_bin: int, bins: bool = True) -> dict[str, Any]:
    """A calibration record of 12 held-out questions, half right: all in the bin (0.8, 0.9]
    at mean confidence 0.85 before, all in bin `after_bin` at 0.55 after."""

    def one_bin(k: int, confidence: float) -> list[dict[str, Any]]:
        return [
            {"low": j / 10, "high": (j + 1) / 10, "count": 12 if j == k else 0,
             "confidence": confidence if j == k else None, "accuracy": 0.5 if j == k else None}
            for j in range(10)
        ]  # fmt: skip

    record = {
        "temperature": 1.5, "fit_questions": 10, "held_out_questions": 12,
        "held_out_accuracy": 0.5, "ece_bins": 10, "ece_before": ece_before,
        "ece_after": 0.0125, "brier_before": 0.2, "brier_after": 0.15,
        "mean_confidence_before": 0.85, "mean_confidence_after": 0.55,
    }  # fmt: skip
    if bins:
        record["reliability"] = {"before": one_bin(8, 0.85), "after": one_bin(after_bin, 0.55)}
    return record


def test_report_draws_the_reliability_diagram_with_ece_and_brier(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "base"
    shutil.copytree(two_runs[0], run)
    record = {**calibrated(0.35, 5), "no_answer": calibrated(0.3, 4)}
    (run / "calibration.json").write_text(json.dumps(record))
    text = write_report([run]).read_text()
    data = (run / "reliability.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert "reliability" in report_figures([run])
    assert "![Reliability diagram, held-out dev questions](reliability.png)" in text
    row = (
        "| 10 | 12 | 1.500 | none | {} | 0.0125 | 0.0125 | 0.2000 | 0.1500 | 0.850 -> 0.550 "
        "| 0.500 |"
    )
    assert "| top answer exactly right " + row.format("0.3500") in text
    assert '| "no answer" right ' + row.format("0.3000") in text
    assert text.count("| (0.8, 0.9] | 12 | 0.850 | 0.500 | 0 | - | - |") == 2
    assert "| (0.5, 0.6] | 0 | - | - | 12 | 0.550 | 0.500 |" in text  # the top answer's
    assert "| (0.4, 0.5] | 0 | - | - | 12 | 0.550 | 0.500 |" in text  # "no answer"'s

    # With an isotonic map: the ECE at the temperature alone beside the final one, and a third
    # curve in the diagram.
    mapped = calibrated(0.35, 5)
    mapped["reliability"]["temperature"] = mapped["reliability"]["after"]
    mapped |= {"isotonic": {"tempered": [0.1, 0.9], "calibrated": [0.2, 0.8]}}
    mapped |= {"ece_temperature": 0.05, "brier_temperature": 0.16}
    (run / "calibration.json").write_text(json.dumps(mapped))
    text = write_report([run]).read_text()
    assert "| 10 | 12 | 1.500 | isotonic | 0.3500 | 0.0500 | 0.0125 | 0.2000 |" in text
    assert (run / "reliability.png").read_bytes().startswith(PNG_MAGIC)

    # Without the bins (an older calibration.json): the numbers, no diagram, and what to run.
    (run / "calibration.json").write_text(json.dumps(calibrated(0.35, 5, bins=False)))
    text = write_report([run]).read_text()
    assert "| top answer exactly right " + row.format("0.3500") in text
    assert "reliability.png" not in text and not (run / "reliability.png").exists()
    assert f"rerun `squadqa calibrate {run}`" in text

    (run / "calibration.json").unlink()
    assert f"Not calibrated: `squadqa calibrate {run}` fits it." in write_report([run]).read_text()
