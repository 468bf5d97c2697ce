"""scripts/ship_reader.py: a finished run shipped as `builtin:NAME`, its dev numbers reproducible.

The recorded numbers are checked against an independent scoring: the source run's own int8 file
run directly, scored by the official-logic evaluator, on the same dev questions; and against the
two commands the script prints, run as a user would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import keras

from squadqa import rundir
from squadqa.cli import main as squadqa_main
from squadqa.config import dump_config, load_config
from squadqa.data import sample_path
from squadqa.evaluation import evaluate_v1, gold_from_dataset, load_dataset_json
from squadqa.inference import QAPredictor

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="shipping exports ONNX with torch.onnx"
)

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ship_reader", ROOT / "scripts" / "ship_reader.py")
assert spec is not None and spec.loader is not None
ship_reader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ship_reader)

CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates."
)
QUESTIONS = ["Who gave their name to Normandy?", "Where is Normandy?"]


def first_questions(n: int, path: Path) -> Path:
    """The bundled sample cut to its first `n` questions, in the official format."""
    raw = load_dataset_json(sample_path())
    articles, left = [], n
    for article in raw["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = paragraph["qas"][:left]
            left -= len(qas)
            if qas:
                paragraphs.append({**paragraph, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": raw["version"], "data": articles}))
    return path


def ship(*argv: str) -> tuple[int, str, str]:
    """Run the script's main; its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ship_reader.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def shipped(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the tiny run (no ONNX yet) shipped as `tiny` into the package's readers folder,
    monkeypatched to a temporary one, and scored on the tiny run's own dev questions."""
    root = tmp_path_factory.mktemp("ship")
    run_dir = root / "tiny-qa"
    shutil.copytree(tiny_run, run_dir)
    assert not (run_dir / rundir.ONNX_INT8).exists()
    dev = first_questions(
        load_config(run_dir / rundir.CONFIG).data.max_dev_samples, root / "dev.json"
    )
    readers = root / "readers"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rundir, "READERS", readers)
        code, out, err = ship(run_dir, "tiny", "--dev", dev)
    assert code == 0, err
    return {"run": run_dir, "dev": dev, "readers": readers, "reader": readers / "tiny", "out": out}


def test_reader_holds_only_what_serving_needs(shipped: dict) -> None:
    reader, run_dir = shipped["reader"], shipped["run"]
    assert sorted(p.name for p in shipped["readers"].iterdir()) == ["tiny"]  # no staging left
    assert sorted(p.name for p in reader.iterdir()) == sorted(
        [rundir.CONFIG, rundir.TOKENIZER, rundir.ONNX_INT8, rundir.EVAL]
    )
    for name in (rundir.CONFIG, rundir.TOKENIZER, rundir.ONNX_INT8):  # the run's, as exported
        assert (reader / name).read_bytes() == (run_dir / name).read_bytes()
    assert rundir.ONNX_INT8 in json.loads((run_dir / rundir.EXPORT).read_text())["files"]


def test_recorded_scores_equal_an_independent_scoring(shipped: dict, tmp_path: Path) -> None:
    """The run's int8 file run directly, scored by the official logic: the same EM / F1."""
    dev, run_dir = shipped["dev"], shipped["run"]
    answers = tmp_path / "answers.json"
    QAPredictor.from_run_dir(run_dir, runtime="onnx-int8").predict_file(
        dev, answers, progress=False
    )
    expected = evaluate_v1(
        gold_from_dataset(json.loads(dev.read_text())), json.loads(answers.read_text())
    )
    record = json.loads((shipped["reader"] / rundir.EVAL).read_text())
    assert expected["total"] == load_config(run_dir / rundir.CONFIG).data.max_dev_samples
    assert (record["exact_match"], record["f1"], record["total"]) == (
        expected["exact_match"],
        expected["f1"],
        expected["total"],
    )
    assert (record["dev"], record["runtime"]) == (str(dev), "onnx-int8")
    source = json.loads((run_dir / rundir.EVAL).read_text())
    provenance = record["provenance"]
    assert provenance["source"] == str(run_dir.resolve())
    assert (provenance["source_exact_match"], provenance["source_f1"]) == (
        source["exact_match"],
        source["f1"],
    )
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert provenance["git_commit"] == (head or None)
    assert provenance["command"].startswith("python scripts/ship_reader.py ")


def test_builtin_name_answers_and_printed_commands_reproduce(
    shipped: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(rundir, "READERS", shipped["readers"])
    assert rundir.builtin_readers() == ["tiny"]
    builtin = QAPredictor.from_run_dir("builtin:tiny").answer(CONTEXT, QUESTIONS)
    direct = QAPredictor.from_run_dir(shipped["run"], runtime="onnx-int8").answer(
        CONTEXT, QUESTIONS
    )
    assert builtin == direct
    lines = shipped["out"].splitlines()
    commands = lines[lines.index("reproduce the recorded numbers with:") + 1 :]
    dev = shlex.quote(str(shipped["dev"]))
    assert commands == [
        f"  squadqa predict --model builtin:tiny --data {dev} --out P.json",
        f"  squadqa evaluate {dev} P.json",
    ]
    monkeypatch.chdir(tmp_path)  # P.json lands here
    for command in commands:
        assert squadqa_main(shlex.split(command)[1:]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    record = json.loads((shipped["reader"] / rundir.EVAL).read_text())
    assert (scores["exact_match"], scores["f1"]) == (record["exact_match"], record["f1"])


def test_squad2_reader_keeps_the_runs_null_threshold_and_calibration(
    shipped: dict, tmp_path: Path
) -> None:
    """A SQuAD 2.0 run answers "no answer" by the threshold in its eval.json: the reader must
    keep it. Here one under which "no answer" never wins, so the reader scores as the v1.1 one
    (same model, same spans), where the default threshold (0) would answer "no answer". A
    calibrated run's calibration.json ships with it, and `fit-ask`'s ask_fusion.json."""
    run_dir = tmp_path / "v2-run"
    shutil.copytree(shipped["run"], run_dir)
    config = load_config(run_dir / rundir.CONFIG, ["postprocess.version_2=true"])
    (run_dir / rundir.CONFIG).write_text(dump_config(config))
    scores = json.loads((run_dir / rundir.EVAL).read_text())
    (run_dir / rundir.EVAL).write_text(json.dumps({**scores, "best_f1_thresh": 1e9}))
    (run_dir / rundir.CALIBRATION).write_text(json.dumps({"temperature": 2.0}))  # ships too
    (run_dir / rundir.ASK_FUSION).write_text(json.dumps({"bm25": 0.5, "dense": 30.0}))  # too
    code, _, err = ship(run_dir, "v2", "--dev", shipped["dev"], "--readers-dir", tmp_path / "r")
    assert code == 0, err
    record = json.loads((tmp_path / "r" / "v2" / rundir.EVAL).read_text())
    v1 = json.loads((shipped["reader"] / rundir.EVAL).read_text())
    assert record["best_f1_thresh"] == 1e9
    shipped_calibration = tmp_path / "r" / "v2" / rundir.CALIBRATION
    assert shipped_calibration.read_bytes() == (run_dir / rundir.CALIBRATION).read_bytes()
    shipped_fusion = tmp_path / "r" / "v2" / rundir.ASK_FUSION
    assert shipped_fusion.read_bytes() == (run_dir / rundir.ASK_FUSION).read_bytes()
    assert (record["exact_match"], record["f1"]) == (v1["exact_match"], v1["f1"])
    reader = QAPredictor.from_run_dir(tmp_path / "r" / "v2")
    assert reader.fusion_weights == {"bm25": 0.5, "dense": 30.0}
    assert not any(a["no_answer"] for a in reader.answer(CONTEXT, QUESTIONS))
    reader.span_config = dataclasses.replace(reader.span_config, null_threshold=0.0)
    assert any(a["no_answer"] for a in reader.answer(CONTEXT, QUESTIONS))  # what was at stake


def test_refusals_name_the_file(shipped: dict, tmp_path: Path) -> None:
    readers = tmp_path / "readers"
    dev = shipped["dev"]
    run_dir = shipped["run"]  # finished, scored, exported

    code, _, err = ship(run_dir, "big", "--dev", dev, "--readers-dir", readers, "--max-mb", 0.0001)
    size = (run_dir / rundir.ONNX_INT8).stat().st_size / 1e6
    assert code == 2
    assert f"{run_dir / rundir.ONNX_INT8} is {size:.3f} MB" in err
    assert "over --max-mb 0.0001" in err

    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    status = json.loads((unfinished / rundir.STATUS).read_text())
    (unfinished / rundir.STATUS).write_text(json.dumps({**status, "status": "stopped"}))
    code, _, err = ship(unfinished, "x", "--dev", dev, "--readers-dir", readers)
    assert code == 2
    assert f"{unfinished / rundir.STATUS}: status 'stopped'" in err

    unscored = tmp_path / "unscored"
    shutil.copytree(run_dir, unscored)
    (unscored / rundir.EVAL).unlink()
    code, _, err = ship(unscored, "x", "--dev", dev, "--readers-dir", readers)
    assert code == 2
    assert f"{unscored / rundir.EVAL} does not exist" in err

    code, _, err = ship(run_dir, "tiny", "--dev", dev, "--readers-dir", shipped["readers"])
    assert code == 2
    assert f"{shipped['reader']} exists" in err
    assert not readers.exists()  # nothing written by a refusal
