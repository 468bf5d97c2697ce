"""`squadqa export`: ONNX files whose logits match the Keras model's, served by `--runtime onnx`.

The reference is the Keras model itself run on batches the export never saw (other batch sizes
and lengths than its example), so dynamic axes, masking and positions are all exercised.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import keras

from squadqa import rundir
from squadqa.cli import main
from squadqa.config import load_config
from squadqa.data import load_squad, sample_path
from squadqa.features import build_features, pad_batch
from squadqa.inference import QAPredictor, export_run_dir
from squadqa.tokenization import load_tokenizer

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the ONNX exporter is torch.onnx"
)

CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates."
)
QUESTIONS = ["Who gave their name to Normandy?", "Where is Normandy?", "Who were the raiders?"]


def fresh_batches(run_dir: Path) -> list[dict[str, np.ndarray]]:
    """Windows of later sample questions than the export check uses, in other batch shapes."""
    config = load_config(run_dir / rundir.CONFIG)
    tokenizer = load_tokenizer(run_dir / rundir.TOKENIZER)
    examples = load_squad(sample_path(), max_samples=40).examples[20:]
    features = build_features(examples, tokenizer, config.features)
    return [
        pad_batch(features, list(range(0, 7)), tokenizer.pad_id, multiple=32),
        pad_batch(features, [9], tokenizer.pad_id, multiple=1),
    ]


def assert_onnx_matches_keras(run_dir: Path, onnx_file: str, atol: float) -> None:
    from squadqa.onnx_model import OnnxModel

    model = keras.models.load_model(run_dir / rundir.MODEL, safe_mode=True)
    runner = OnnxModel(run_dir / onnx_file)
    for batch in fresh_batches(run_dir):
        expected = model.predict_on_batch(batch)
        got = runner.predict_on_batch(batch)
        for name in ("start_logits", "end_logits"):
            np.testing.assert_allclose(got[name], np.asarray(expected[name]), rtol=0, atol=atol)


@pytest.fixture(scope="module")
def rotary_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained rotary, pre-LN, question-match model (the from-scratch presets' layout)."""
    import squadqa.model as qa_model

    config = load_config(
        tiny_run / rundir.CONFIG,
        ["model.position_embedding=rotary", "model.norm_first=true", "model.question_match=true"],
    )
    tokenizer = load_tokenizer(tiny_run / rundir.TOKENIZER)
    keras.utils.set_random_seed(3)
    model = qa_model.QATransformer(
        qa_model.QAConfig(vocab_size=tokenizer.vocab_size, **config.model)
    )
    model.build()
    return export_run_dir(tmp_path_factory.mktemp("rotary") / "run", model, tokenizer, config)


@pytest.fixture(scope="module")
def exported_tiny(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained tiny run, exported with int8 through the CLI."""
    run_dir = tmp_path_factory.mktemp("exported") / "tiny-qa"
    shutil.copytree(tiny_run, run_dir)
    assert main(["export", str(run_dir), "--quantize", "int8"]) == 0
    return run_dir


def test_rotary_export_matches_keras_on_unseen_shapes(rotary_run: Path) -> None:
    from squadqa.export import export_onnx

    record = export_onnx(rotary_run)
    assert record["files"][rundir.ONNX]["max_abs_logit_diff"] <= 1e-4
    assert not (rotary_run / rundir.ONNX_INT8).exists()
    assert_onnx_matches_keras(rotary_run, rundir.ONNX, atol=1e-4)


def test_cli_export_writes_both_files_and_a_record(exported_tiny: Path) -> None:
    record = json.loads((exported_tiny / rundir.EXPORT).read_text())
    assert set(record["files"]) == {rundir.ONNX, rundir.ONNX_INT8}
    assert record["files"][rundir.ONNX]["max_abs_logit_diff"] <= 1e-4
    assert_onnx_matches_keras(exported_tiny, rundir.ONNX, atol=1e-4)
    # int8 weights: close to fp32 but not equal (it really is quantised).
    int8_diff = record["files"][rundir.ONNX_INT8]["max_abs_logit_diff"]
    assert 0 < int8_diff < 1.0
    assert (exported_tiny / rundir.ONNX_INT8).stat().st_size < (
        exported_tiny / rundir.ONNX
    ).stat().st_size


def test_onnx_runtime_answers_like_keras(exported_tiny: Path) -> None:
    keras_answers = QAPredictor.from_run_dir(exported_tiny).answer(CONTEXT, QUESTIONS)
    onnx_answers = QAPredictor.from_run_dir(exported_tiny, runtime="onnx").answer(
        CONTEXT, QUESTIONS
    )
    for a, b in zip(keras_answers, onnx_answers, strict=True):
        assert (a["text"], a["start"], a["end"]) == (b["text"], b["start"], b["end"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    for answer in QAPredictor.from_run_dir(exported_tiny, runtime="onnx-int8").answer(
        CONTEXT, QUESTIONS
    ):
        assert CONTEXT[answer["start"] : answer["end"]] == answer["text"]


def test_onnx_predict_file_equals_keras(exported_tiny: Path, tmp_path: Path) -> None:
    keras_out, onnx_out = tmp_path / "keras.json", tmp_path / "onnx.json"
    QAPredictor.from_run_dir(exported_tiny).predict_file(sample_path(), keras_out, progress=False)
    QAPredictor.from_run_dir(exported_tiny, runtime="onnx").predict_file(
        sample_path(), onnx_out, progress=False
    )
    keras_answers = json.loads(keras_out.read_text())
    assert json.loads(onnx_out.read_text()) == keras_answers
    assert len(keras_answers) == len(load_squad(sample_path()).examples)


def test_onnx_process_imports_neither_keras_nor_torch(exported_tiny: Path) -> None:
    script = (
        "import sys, json\n"
        "import squadqa\n"
        "squadqa.import_backend_only()\n"
        "from squadqa.inference import QAPredictor\n"
        f"p = QAPredictor.from_run_dir({str(exported_tiny)!r}, runtime='onnx')\n"
        f"a = p.answer({CONTEXT!r}, ['Where is Normandy?'])\n"
        "names = ('keras', 'torch', 'jax', 'tensorflow')\n"
        "print(json.dumps([sys.modules.get(m) is not None for m in names]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False] * 4


def test_missing_onnx_file_says_how_to_make_it(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / rundir.ONNX).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=r"squadqa export .* --quantize int8"):
        QAPredictor.from_run_dir(run_dir, runtime="onnx-int8")
    with pytest.raises(ValueError, match="runtime must be one of"):
        QAPredictor.from_run_dir(run_dir, runtime="tensorrt")


@pytest.fixture
def shipped_reader(exported_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny run as a shipped reader: int8 ONNX only (no model.keras), in a readers folder."""
    readers = tmp_path / "readers"
    keep = (rundir.CONFIG, rundir.TOKENIZER, rundir.ONNX_INT8, rundir.EVAL)
    (readers / "tiny").mkdir(parents=True)
    for name in keep:
        shutil.copy(exported_tiny / name, readers / "tiny" / name)
    monkeypatch.setattr(rundir, "READERS", readers)
    return readers / "tiny"


def test_builtin_reader_answers_on_the_runtime_it_ships(
    shipped_reader: Path, exported_tiny: Path
) -> None:
    assert rundir.builtin_readers() == ["tiny"]
    builtin = QAPredictor.from_run_dir("builtin:tiny").answer(CONTEXT, QUESTIONS)
    int8 = QAPredictor.from_run_dir(exported_tiny, runtime="onnx-int8").answer(CONTEXT, QUESTIONS)
    assert builtin == int8  # auto: the one model file it holds, int8 ONNX
    with pytest.raises(FileNotFoundError, match="no builtin reader 'nope'; this install ships "):
        QAPredictor.from_run_dir("builtin:nope")


def test_readers_command_lists_dev_scores_and_export_refuses_builtins(
    shipped_reader: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = json.loads((shipped_reader / rundir.EVAL).read_text())
    assert main(["readers"]) == 0
    out = capsys.readouterr().out
    assert f"builtin:tiny  dev EM {scores['exact_match']:.2f} / F1 {scores['f1']:.2f}" in out
    assert "squadqa answer --model builtin:tiny" in out
    with pytest.raises(SystemExit, match="copy it first"):
        main(["export", "builtin:tiny"])
    assert sorted(p.name for p in shipped_reader.iterdir()) == sorted(
        [rundir.CONFIG, rundir.EVAL, rundir.ONNX_INT8, rundir.TOKENIZER]
    )


# The repro (4 sentences; 2-3 windows each with the tiny tokenizer) whose answer must not
# depend on its neighbours.
EIFFEL = (
    "The Eiffel Tower is on the Champ de Mars in Paris. It is named after the engineer Gustave "
    "Eiffel. "
) * 4
NEIGHBOURS = ["x", "Where is the tower?", "What is on the Champ de Mars in Paris, and since when?"]


@pytest.mark.parametrize("runtime", ["keras", "onnx", "onnx-int8"])
def test_answer_does_not_depend_on_other_questions(exported_tiny: Path, runtime: str) -> None:
    """Alone, beside other questions (one model call) and among concurrent requests (request
    batching): the same span and score. int8 was the one that failed (activation scales per
    batch); it must be exact, the float runtimes agree to float noise."""
    from concurrent.futures import ThreadPoolExecutor

    from squadqa.serve.batching import Batching, batch_requests

    question = "Who is it named after?"
    alone = QAPredictor.from_run_dir(exported_tiny, runtime=runtime).answer(EIFFEL, [question])[0]
    predictor = QAPredictor.from_run_dir(exported_tiny, runtime=runtime)
    paired = [predictor.answer(EIFFEL, [question, other])[0] for other in NEIGHBOURS]
    # Room for every request's windows in one call (16 requests, 36 windows): with the default 32
    # the number of calls would depend on how many requests the held call took.
    batched = QAPredictor.from_run_dir(exported_tiny, runtime=runtime)
    batcher = batch_requests(batched, Batching(max_batch_windows=256))
    asks = [[question]] * 4 + [[q] for q in NEIGHBOURS] * 4
    # Hold the model while the requests arrive: each is then either in the batcher's held model
    # call or queued behind it, and the queued ones go through together in the next call,
    # whatever the machine's speed.
    with ThreadPoolExecutor(len(asks)) as pool:
        with batched._lock:
            futures = [pool.submit(batched.answer, EIFFEL, ask) for ask in asks]
            deadline = time.monotonic() + 120
            while batcher.requests + batcher.queue_depth < len(asks):
                assert time.monotonic() < deadline, "the requests did not reach the batcher"
                time.sleep(0.01)
        answers = [f.result()[0] for f in futures]
    concurrent = [a for a, ask in zip(answers, asks, strict=True) if ask == [question]]
    assert batcher.calls <= 2  # the held call, then everything queued behind it at once
    for got in paired + concurrent:
        assert (got["start"], got["end"], got["text"]) == (
            alone["start"],
            alone["end"],
            alone["text"],
        )
        if runtime == "onnx-int8":
            assert got == alone
        else:
            assert got["score"] == pytest.approx(alone["score"], abs=1e-4)


def test_int8_rows_are_run_alone(exported_tiny: Path) -> None:
    """A window's int8 logits are those of the window run by itself at its own length, whatever
    else is in the batch; past its length, the masked logit, as padding gets from the model."""
    from squadqa.architecture import MASKED_LOGIT
    from squadqa.onnx_model import OnnxModel

    runner = OnnxModel(exported_tiny / rundir.ONNX_INT8, row_by_row=True)
    batch = fresh_batches(exported_tiny)[0]  # 7 windows of several lengths, padded to 32
    together = runner.predict_on_batch(batch)
    lengths = batch["attention_mask"].sum(axis=1)
    assert len(set(lengths.tolist())) > 1
    for row, length in enumerate(lengths):
        alone = runner.predict_on_batch({k: v[row : row + 1, :length] for k, v in batch.items()})
        for name in ("start_logits", "end_logits"):
            np.testing.assert_array_equal(together[name][row, :length], alone[name][0])
            assert (together[name][row, length:] == MASKED_LOGIT).all()
