"""`squadqa` command line: data, tokenizer, checks, training, evaluation, runs and serving."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import squadqa  # sets the default Keras backend before anything imports keras


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from squadqa.data import load_squad

    data = load_squad(args.file, strict=args.strict, skip_invalid=args.skip_invalid)
    print(data.stats.summary())
    for line in [*data.repairs, *data.problems]:
        print(f"  {line}")
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from squadqa.data import load_squad
    from squadqa.tokenization import train_wordpiece, training_texts

    data = load_squad(args.data)
    from squadqa.config import TokenizerConfig

    vocab_size = args.vocab_size or TokenizerConfig().vocab_size
    tokenizer = train_wordpiece(training_texts(data.examples), vocab_size)
    path = tokenizer.save(args.out)
    print(f"trained a {tokenizer.vocab_size}-token WordPiece vocabulary on {data.stats.summary()}")
    print(f"saved {path}")
    return 0


def _feature_config(args: argparse.Namespace):
    from squadqa.features import FeatureConfig

    return FeatureConfig(args.max_seq_length, args.doc_stride, args.max_query_length)


def _tokenizer(path: str | None):
    from squadqa.tokenization import load_tokenizer

    if path:
        return load_tokenizer(path)
    from squadqa.pretrained import checkpoint_dir

    return load_tokenizer(checkpoint_dir(None))


def _cmd_roundtrip(args: argparse.Namespace) -> int:
    from squadqa.checks import label_round_trip
    from squadqa.data import load_squad
    from squadqa.postprocess import SpanConfig

    examples = load_squad(args.data).examples
    result = label_round_trip(
        examples,
        _tokenizer(args.tokenizer),
        _feature_config(args),
        SpanConfig(max_answer_length=args.max_answer_length),
    )
    print(result.report())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from squadqa.data import data_path
    from squadqa.evaluation import evaluate_files

    result = evaluate_files(
        data_path(args.data), args.predictions, args.na_prob_file, args.na_prob_thresh
    )
    print(json.dumps(result))
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from squadqa import baselines
    from squadqa.data import gold_answers, load_squad
    from squadqa.evaluation import evaluate_v1

    examples = load_squad(args.data).examples
    method = {
        "sliding-window": baselines.sliding_window_baseline,
        "first-sentence": baselines.first_sentence_overlap_baseline,
    }[args.method]
    predictions = method(examples)
    if args.out:
        Path(args.out).write_text(json.dumps(predictions, indent=1, ensure_ascii=False))
    print(json.dumps(evaluate_v1(gold_answers(examples), predictions)))
    return 0


def _run_config(args: argparse.Namespace):
    """The run config of `train` / `pretrain`: file, then --set, then the flag shortcuts."""
    from squadqa.config import format_settings, load_config

    if args.help_config:
        print(format_settings())
        raise SystemExit(0)
    overrides = list(args.set or [])
    if getattr(args, "init", None):
        overrides.append(f'train.init="{args.init}"')
    if getattr(args, "tracking", None):
        overrides.append(f'tracking.backend="{args.tracking}"')
    if args.resume and args.config is None and args.name is None:
        raise SystemExit("--resume needs --name NAME (or --config) to find the run")
    if args.name:
        overrides.append(f'name="{args.name}"')
    return load_config(args.config, overrides)


def _exit_status(status: dict[str, Any]) -> int:
    """0, or `EXIT_STOPPED` for a run a signal stopped with a checkpoint (resume it)."""
    from squadqa.harness import EXIT_STOPPED

    return EXIT_STOPPED if status.get("status") == "stopped" else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from squadqa.train import train

    status = train(_run_config(args), args.runs_dir, resume=args.resume)
    print(
        json.dumps(
            {
                k: status.get(k)
                for k in (
                    "status",
                    "epochs_run",
                    "best_epoch",
                    "best_dev_exact_match",
                    "best_dev_f1",
                    "wall_time_s",
                    "parameters",
                )
            }
        )
    )
    return _exit_status(status)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from squadqa.pretrain import pretrain

    status = pretrain(_run_config(args), args.runs_dir, resume=args.resume)
    keys = ("status", "init", "epochs_run", "wall_time_s", "parameters", "pretrain_tokens")
    print(json.dumps({k: status.get(k) for k in keys}))
    return _exit_status(status)


def _cmd_continue(args: argparse.Namespace) -> int:
    """Resume every stopped or crashed run of a runs directory, oldest first, one at a time."""
    from dataclasses import replace

    from squadqa.config import load_config
    from squadqa.rundir import CONFIG, STATUS, read_json
    from squadqa.runs import RESUMABLE, collect_runs

    rows = [r for r in collect_runs(args.runs_dir) if r.status in RESUMABLE]
    rows.sort(key=lambda r: (r.started or "", r.name))
    if not rows:
        print(f"nothing to continue in {args.runs_dir}: no stopped or crashed run")
        return 0
    for row in rows:
        kind = read_json(row.path / STATUS).get("kind", "train")
        where = f", checkpoint at {row.progress}" if row.progress else ""
        print(f"continue {row.path} ({kind}, {row.status}{where})")
        if args.dry_run:
            continue
        config = replace(load_config(row.path / CONFIG), name=row.path.name)
        if kind == "pretrain":
            from squadqa.pretrain import pretrain as run
        else:
            from squadqa.train import train as run
        status = run(config, row.path.parent, resume=True)
        if status["status"] == "stopped":  # stopped again: the campaign waits for next time
            return _exit_status(status)
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from squadqa.calibration import calibrate_run
    from squadqa.rundir import CALIBRATION

    record = calibrate_run(args.run_dir, args.method)
    for what, r in (("top answer", record), ('"no answer"', record.get("no_answer"))):
        if r is None:  # SQuAD v1.1: no "no answer" to calibrate
            continue
        then = f" -> {r['ece_temperature']:.4f} (temperature)" if "isotonic" in r else ""
        print(
            f"{what}: {r['method']}, temperature {r['temperature']:.3f} (fitted on "
            f"{r['fit_questions']} dev questions); on the other {r['held_out_questions']}: ECE "
            f"{r['ece_before']:.4f}{then} -> {r['ece_after']:.4f}, Brier {r['brier_before']:.4f} "
            f"-> {r['brier_after']:.4f}, "
            f"mean confidence {r['mean_confidence_before']:.3f} -> "
            f"{r['mean_confidence_after']:.3f} vs accuracy {r['held_out_accuracy']:.3f}"
        )
    print(f"wrote {Path(args.run_dir) / CALIBRATION}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from squadqa.probes import ProbeSettings, format_probes, probe_run
    from squadqa.rundir import PROBES

    fit = {"epochs": args.epochs, "learning_rate": args.learning_rate}
    fit["batch_size"] = args.batch_size
    samples = {"train_samples": args.train_samples, "dev_samples": args.dev_samples}
    record = probe_run(
        args.run_dir,
        settings=ProbeSettings(**{k: v for k, v in fit.items() if v is not None}),
        **{k: v for k, v in samples.items() if v is not None},
    )
    print(format_probes(record))
    print(f"wrote {Path(args.run_dir) / PROBES}")
    return 0


def _cmd_sanity(args: argparse.Namespace) -> int:
    from squadqa.checks import overfit_check

    given = {"n_examples": args.examples, "epochs": args.epochs, "data": args.data}
    result = overfit_check(**{k: v for k, v in given.items() if v is not None})
    print(result["message"])
    return 0 if result["passed"] else 1


def _cmd_runs(args: argparse.Namespace) -> int:
    from squadqa.runs import runs_command

    return runs_command(args.runs_dir, args.sort, args.format)


def _cmd_curve(args: argparse.Namespace) -> int:
    from squadqa.curve import curve_command, parse_sizes

    sizes = parse_sizes(args.articles or "")
    return curve_command(args.config, sizes, args.runs_dir, args.set or [], not args.no_train)


def _cmd_report(args: argparse.Namespace) -> int:
    from squadqa.report import report_command

    return report_command(args.run_dirs, args.out)


def _print_answer(answer: dict) -> None:
    print(f"Q: {answer['question']}")
    if not answer["alternatives"]:
        print("A: (no answer: the context has no tokens)")
        return
    if answer["no_answer"]:
        print(
            "A: (no answer in this context: null score "
            f"{answer['null_score']:+.3f} over the best span)"
        )
        print("   best spans:")
    else:
        print(f"A: {answer['text']}")
        print(
            f"   score {answer['score']:.3f}, probability {answer['probability']:.1%}, "
            f"characters {answer['start']}-{answer['end']}"
        )
        print("   alternatives:")
    for rank, alt in enumerate(answer["alternatives"], 1):
        print(
            f"   {rank:>3}. {alt['text']!r}  score {alt['score']:.3f}  "
            f"p {alt['probability']:.1%}  [{alt['start']}:{alt['end']}]"
        )


def _context(args: argparse.Namespace) -> str:
    """`--context` or the text of `--context-file`, not empty."""
    if args.context_file:
        context = Path(args.context_file).read_text(encoding="utf-8")
    else:
        context = args.context
    if not context.strip():
        raise ValueError("the context is empty")
    return context


def _cmd_answer(args: argparse.Namespace) -> int:
    squadqa.import_backend_only()
    from squadqa.inference import QAPredictor

    context = _context(args)
    if args.top_k < 1:
        raise ValueError(f"--top-k {args.top_k} must be at least 1")
    predictor = QAPredictor.from_run_dir(args.model, runtime=args.runtime)

    def ask(questions: list[str]) -> None:
        for answer in predictor.answer(context, questions, args.top_k):
            if args.json:
                print(json.dumps(answer, ensure_ascii=False))
            else:
                _print_answer(answer)
        sys.stdout.flush()

    if args.question:
        ask(args.question)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("One question per line; Ctrl-D to quit.", file=sys.stderr)
    while True:
        if interactive:
            print("question> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        if line.strip():
            ask([line.strip()])
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    squadqa.import_backend_only()
    from squadqa.explain import EXPLANATION, Explainer, draw, summary_lines
    from squadqa.inference import QAPredictor
    from squadqa.rundir import write_text

    context = _context(args)
    explainer = Explainer(QAPredictor.from_run_dir(args.model, runtime="keras"))
    explanation = explainer.explain(
        context, args.question, steps=args.steps, baseline=args.baseline, method=args.method
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / EXPLANATION, json.dumps(explanation, ensure_ascii=False))
    written = [out / EXPLANATION]
    try:
        written += draw(explanation, out)
    except ImportError:
        print("no pictures: matplotlib is not installed (pip install 'squadqa[report]')")
    print("\n".join(summary_lines(explanation)))
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import time

    squadqa.import_backend_only()
    from squadqa.inference import QAPredictor

    predictor = QAPredictor.from_run_dir(args.model, runtime=args.runtime)
    started = time.perf_counter()
    predictions = predictor.predict_file(
        args.data, args.out, args.nbest, args.batch_size, na_prob_path=args.na_prob
    )
    seconds = time.perf_counter() - started
    print(
        f"wrote {len(predictions.answers)} predictions to {args.out}"
        + (f" and n-best lists to {args.nbest}" if args.nbest else "")
        + (f" and no-answer probabilities to {args.na_prob}" if args.na_prob else "")
        + f" in {seconds:.1f}s (score them with: squadqa evaluate {args.data} {args.out}"
        + (f" --na-prob-file {args.na_prob})" if args.na_prob else ")")
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    squadqa.import_backend_only()
    from squadqa.inference import QAPredictor
    from squadqa.serve.app import run
    from squadqa.serve.limits import Limits

    index = None
    if args.index:  # before the model: a path that is no index fails at once, naming the file
        from squadqa.retrieval.index import load_index

        index = load_index(args.index)
    predictor = QAPredictor.from_run_dir(args.model, runtime=args.runtime)
    batching = None
    if args.batch_requests:
        from squadqa.serve.batching import Batching, batch_requests

        batching = Batching(max_batch_windows=args.max_batch_windows, max_wait_ms=args.max_wait_ms)
        batch_requests(predictor, batching)
    predictor.warmup()
    if index is not None and index.has_vectors:
        index.query_vectors(["warm-up"])  # the sentence encoder, loaded before the first ask
    mode = "request batching" if batching else "one request at a time"
    print(
        f"serving {predictor.name} ({args.runtime}, {mode}, at most {args.max_queue} requests in "
        f"flight) on http://{args.host}:{args.port}/ (API docs at /docs)"
        + ("" if index is None else f"; asks {args.index} ({len(index)} passages) at /v1/ask")
    )
    limits = Limits(max_queue=args.max_queue)
    run(predictor, host=args.host, port=args.port, limits=limits, index=index)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from squadqa.export import export_onnx
    from squadqa.rundir import BUILTIN, run_path

    if args.run_dir.startswith(BUILTIN):  # export writes into the run: not into the package
        shipped = run_path(args.run_dir)
        raise SystemExit(
            f"{args.run_dir} ships its ONNX files already ({shipped}); to export it again, copy "
            f"it first: cp -r {shipped} DIR && squadqa export DIR"
        )
    record = export_onnx(args.run_dir, quantize=args.quantize, tolerance=args.tolerance)
    for name, info in record["files"].items():
        print(
            f"wrote {Path(args.run_dir) / name} ({info['bytes'] / 1e6:.1f} MB, "
            f"largest logit difference vs model.keras {info['max_abs_logit_diff']:.2g})"
        )
    print(f"serve it with: squadqa serve --model {args.run_dir} --runtime onnx")
    return 0


def _cmd_readers(args: argparse.Namespace) -> int:
    """The readers shipped in the package, what they score on dev, and how to ask one."""
    from squadqa.rundir import BUILTIN, EVAL, READERS, builtin_readers, read_json

    names = builtin_readers()
    if not names:
        print(f"this install ships no trained readers ({READERS} holds none)")
        return 0
    for name in names:
        scores = read_json(READERS / name / EVAL) if (READERS / name / EVAL).is_file() else {}
        dev = (
            f"dev EM {scores['exact_match']:.2f} / F1 {scores['f1']:.2f}"
            if "f1" in scores
            else "not scored"
        )
        print(f"{BUILTIN}{name}  {dev}  {READERS / name}")
    print(f"ask one: squadqa answer --model {BUILTIN}{names[0]} --context TEXT --question QUESTION")
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from squadqa.train import snapshot

    snapshot(args.run_dir, args.out)
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from squadqa.average import average_run

    average_run(args.run_dir, args.epochs, args.out, evaluate=not args.no_eval)
    return 0


def _add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="RUN_DIR",
        help="a run directory, or builtin:NAME for a reader shipped with squadqa "
        "(`squadqa readers` lists them)",
    )


def _add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    from squadqa.inference import AUTO, RUNTIMES, QAPredictor

    parser.add_argument(
        "--runtime",
        choices=[AUTO, *RUNTIMES],
        default=_default_of(QAPredictor.from_run_dir, "runtime"),
        help="keras: model.keras; onnx / onnx-int8: the files `squadqa export` writes; auto: "
        "the first of these the run holds",
    )


def _add_setting_arguments(
    parser: argparse.ArgumentParser, cls: type, names: tuple[str, ...] = (), when: str = ""
) -> None:
    """`--name` for each `setting` field of `cls` (or those in `names`), with its default and
    help from there."""
    import dataclasses

    from squadqa.settings import help_of

    for field in dataclasses.fields(cls):
        if names and field.name not in names:
            continue
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(field.default),
            default=field.default,
            help=f"{when}{help_of(field)} (default {field.default})",
        )


def _add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    """`--batch-requests` and the `Batching` fields."""
    from squadqa.serve.batching import Batching

    parser.add_argument(
        "--batch-requests",
        action="store_true",
        help="run concurrent requests' windows through the model together",
    )
    _add_setting_arguments(parser, Batching, when="with --batch-requests: ")


def _add_context_arguments(parser: argparse.ArgumentParser) -> None:
    """`--context T` or `--context-file F`, one of them required (read by `_context`)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--context", help="the context text")
    source.add_argument("--context-file", help="read the context from this UTF-8 file")


def _default_of(function: Any, parameter: str) -> Any:
    """The default of `function`'s `parameter`: the module is its one home, the CLI reads it."""
    import inspect

    return inspect.signature(function).parameters[parameter].default


def _add_queue_argument(parser: argparse.ArgumentParser) -> None:
    """`--max-queue`, from `Limits`, whose module imports without FastAPI (so `--help` works
    without the `serve` extra)."""
    from squadqa.serve.limits import Limits

    _add_setting_arguments(parser, Limits, ("max_queue",))


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config (configs/*.toml)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    parser.add_argument("--name", help="run name (= --set name=...)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument(
        "--help-config",
        action="store_true",
        help="list every config key with its default and help, then exit",
    )


def build_parser() -> argparse.ArgumentParser:
    from squadqa.calibration import ISOTONIC_MIN_QUESTIONS, METHODS
    from squadqa.evaluation import evaluate_files  # these import no keras: --help stays quick
    from squadqa.export import export_onnx
    from squadqa.features import FeatureConfig
    from squadqa.inference import QAPredictor
    from squadqa.postprocess import SpanConfig

    features, spans = FeatureConfig(), SpanConfig()
    parser = argparse.ArgumentParser(prog="squadqa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect SQuAD files").add_subparsers(
        dest="data_command", required=True
    )
    stats = data.add_parser("stats", help="validate a SQuAD JSON file and print its summary")
    stats.add_argument("file", help="SQuAD v1.1/v2.0 JSON (plain or .gz), or 'sample'")
    stats.add_argument("--strict", action="store_true", help="misplaced answers are errors")
    stats.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop (and count) invalid questions instead of failing",
    )
    stats.set_defaults(func=_cmd_data_stats)

    tok = sub.add_parser("tokenizer", help="tokenizers").add_subparsers(
        dest="tokenizer_command", required=True
    )
    tok_train = tok.add_parser("train", help="train a WordPiece vocabulary on a data file")
    tok_train.add_argument("--data", required=True)
    tok_train.add_argument("--vocab-size", type=int, help="default: tokenizer.vocab_size's")
    tok_train.add_argument("--out", required=True, help="directory for tokenizer.json")
    tok_train.set_defaults(func=_cmd_tokenizer_train)

    rt = sub.add_parser("roundtrip", help="gold labels -> post-processing -> EM: the label check")
    rt.add_argument("data")
    rt.add_argument("--tokenizer", help="tokenizer.json / vocab.txt (default: MiniLM's BERT vocab)")
    rt.add_argument("--max-seq-length", type=int, default=features.max_seq_length)
    rt.add_argument("--doc-stride", type=int, default=features.doc_stride)
    rt.add_argument("--max-query-length", type=int, default=features.max_query_length)
    rt.add_argument("--max-answer-length", type=int, default=spans.max_answer_length)
    rt.set_defaults(func=_cmd_roundtrip)

    ev = sub.add_parser("evaluate", help="official SQuAD v1.1/v2.0 evaluation")
    ev.add_argument("data", help="SQuAD v1.1/v2.0 JSON (plain or gzipped), or 'sample'")
    ev.add_argument("predictions", help="JSON object: question id -> answer text")
    ev.add_argument("--na-prob-file", help="SQuAD 2.0: id -> no-answer probability")
    ev.add_argument(
        "--na-prob-thresh", type=float, default=_default_of(evaluate_files, "na_prob_thresh")
    )
    ev.set_defaults(func=_cmd_evaluate)

    bl = sub.add_parser("baseline", help="score a non-learned baseline")
    bl.add_argument("method", choices=["sliding-window", "first-sentence"])
    bl.add_argument("--data", required=True)
    bl.add_argument("--out", help="write predictions.json here")
    bl.set_defaults(func=_cmd_baseline)

    tr = sub.add_parser("train", help="train and evaluate a model; writes runs/NAME/")
    _add_run_arguments(tr)
    tr.add_argument(
        "--init", help="scratch | pretrained | pretrained:PATH | run:RUN_DIR (a pretrain run)"
    )
    tr.add_argument("--tracking", choices=["none", "wandb"])
    tr.set_defaults(func=_cmd_train)

    pt = sub.add_parser("pretrain", help="self-supervised pretraining of the encoder on train text")
    _add_run_arguments(pt)
    pt.set_defaults(func=_cmd_pretrain)

    sa = sub.add_parser("sanity", help="overfit a few examples: proves the model can learn")
    # Defaults: overfit_check's own (32 examples, 60 epochs, the bundled sample).
    sa.add_argument("--examples", type=int, help="train examples to overfit")
    sa.add_argument("--epochs", type=int, help="epochs over them")
    sa.add_argument("--data", help="SQuAD file, or 'sample'")
    sa.set_defaults(func=_cmd_sanity)

    ru = sub.add_parser("runs", help="table of runs")
    ru.add_argument("runs_dir", nargs="?", default="runs")
    ru.add_argument("--sort", default="f1")
    ru.add_argument("--format", choices=["md", "csv"], default="md")
    ru.set_defaults(func=_cmd_runs)

    rd = sub.add_parser("readers", help="the trained readers shipped with squadqa (builtin:NAME)")
    rd.set_defaults(func=_cmd_readers)

    ca = sub.add_parser(
        "calibrate",
        help="fit the temperature (and isotonic map) that makes the top answer's probability its "
        "chance of being exactly right (half the dev questions; ECE and Brier on the other half)",
    )
    ca.add_argument("run_dir")
    ca.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="temperature: one number; isotonic: the temperature, then an isotonic map of the top "
        f"answer's probability; auto: isotonic from {ISOTONIC_MIN_QUESTIONS} fitting questions on "
        "(default: %(default)s)",
    )
    ca.set_defaults(func=_cmd_calibrate)

    pb = sub.add_parser(
        "probe",
        help="per-layer span probes: a linear span head fitted on each layer's hidden states "
        "(train subset), dev EM/F1 by layer in RUN/probes.json",
    )
    pb.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    pb.add_argument("--train-samples", type=int, help="N train questions at an even stride (1000)")
    pb.add_argument("--dev-samples", type=int, help="M dev questions at an even stride (500)")
    pb.add_argument("--epochs", type=int, help="passes over the train windows (10)")
    pb.add_argument("--learning-rate", type=float, help="Adam's step size (0.01)")
    pb.add_argument("--batch-size", type=int, help="windows per step (32)")
    pb.set_defaults(func=_cmd_probe)

    co = sub.add_parser(
        "continue",
        help="resume every stopped or crashed run of a runs directory, oldest first (a "
        "campaign of long runs, carried on in pieces)",
    )
    co.add_argument("runs_dir", nargs="?", default="runs")
    co.add_argument("--dry-run", action="store_true", help="only list what would be resumed")
    co.set_defaults(func=_cmd_continue)

    cu = sub.add_parser(
        "curve", help="dev F1 / EM vs train size: one run per (config, first N articles)"
    )
    cu.add_argument(
        "--config",
        action="append",
        required=True,
        help="a config per model family (repeatable); PATH@N,N gives it its own sizes",
    )
    cu.add_argument(
        "--articles", help="comma-separated train sizes in articles, e.g. 4,11,44 (every config)"
    )
    cu.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run")
    cu.add_argument("--runs-dir", default="runs/curve")
    cu.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: the table and plot of the points already in --runs-dir",
    )
    cu.set_defaults(func=_cmd_curve)

    rp = sub.add_parser("report", help="report.md + plots + error analysis of runs")
    rp.add_argument("run_dirs", nargs="+")
    rp.add_argument("--out", help="output directory (default: the first run's)")
    rp.set_defaults(func=_cmd_report)

    an = sub.add_parser("answer", help="ask a trained run questions about a context")
    _add_model_argument(an)
    _add_context_arguments(an)
    an.add_argument(
        "--question",
        action="append",
        help="a question (repeatable); without it, questions are read from stdin, one per line",
    )
    an.add_argument(
        "--top-k",
        type=int,
        default=_default_of(QAPredictor.answer, "top_k"),
        help="ranked candidates to show",
    )
    an.add_argument("--json", action="store_true", help="one JSON object per answer")
    _add_runtime_argument(an)
    an.set_defaults(func=_cmd_answer)

    from squadqa.explain import BASELINES, METHODS, Explainer

    xp = sub.add_parser(
        "explain",
        help="why a run gives its answer: integrated-gradients attributions of the start and "
        "end logits, attention per layer and head (explain.json and pictures)",
    )
    _add_model_argument(xp)
    _add_context_arguments(xp)
    xp.add_argument("--question", required=True, help="the question")
    xp.add_argument("--out", default="explain", help="folder for explain.json and the pictures")
    xp.add_argument(
        "--steps",
        type=int,
        default=_default_of(Explainer.explain, "steps"),
        help="points on the integrated-gradients path (default %(default)s)",
    )
    xp.add_argument(
        "--baseline",
        choices=BASELINES,
        default=_default_of(Explainer.explain, "baseline"),
        help="what question and context tokens start from: the [PAD] embedding or zeros "
        "(default %(default)s)",
    )
    xp.add_argument(
        "--method",
        choices=METHODS,
        default=_default_of(Explainer.explain, "method"),
        help="quadrature rule along the path (default %(default)s)",
    )
    xp.set_defaults(func=_cmd_explain)

    pr = sub.add_parser("predict", help="official-format predictions for a SQuAD file")
    _add_model_argument(pr)
    pr.add_argument("--data", required=True, help="SQuAD JSON (plain or .gz), or 'sample'")
    pr.add_argument("--out", required=True, help="predictions.json to write ({id: answer})")
    pr.add_argument("--nbest", help="also write the n-best candidates per id here")
    pr.add_argument(
        "--na-prob",
        help='SQuAD 2.0 runs: also write {id: P("no answer" is right)} here, calibrated by '
        "`squadqa calibrate` (evaluate's --na-prob-file)",
    )
    pr.add_argument("--batch-size", type=int, help="windows per batch (default: the run's)")
    _add_runtime_argument(pr)
    pr.set_defaults(func=_cmd_predict)

    se = sub.add_parser("serve", help="HTTP API and web page for a trained run")
    _add_model_argument(se)
    se.add_argument("--host", default="127.0.0.1")
    se.add_argument("--port", type=int, default=8000)
    se.add_argument(
        "--index",
        metavar="INDEX",
        help="made by `squadqa index`: loaded once, asked at POST /v1/ask and the page's "
        "collection mode",
    )
    _add_runtime_argument(se)
    _add_batching_arguments(se)
    _add_queue_argument(se)
    se.set_defaults(func=_cmd_serve)

    sn = sub.add_parser(
        "snapshot",
        help="the best epoch so far of a run still training (or stopped) as a finished run "
        "directory beside it, for predict, serve, export, calibrate and probe",
    )
    sn.add_argument("run_dir", metavar="RUN_DIR", help="a training run with a finished epoch")
    sn.add_argument("--out", help="run directory to write (default: RUN_DIR-eN beside it)")
    sn.set_defaults(func=_cmd_snapshot)

    av = sub.add_parser(
        "average", help="a run's epoch checkpoints averaged into a new run directory, scored on dev"
    )
    av.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run trained with train.keep_epoch_checkpoints=true"
    )
    av.add_argument(
        "--epochs", required=True, help='epochs to average: "2-6", "4,5", "2-" (2 to the last)'
    )
    av.add_argument("--out", help="run directory to write (default: RUN_DIR-avgEPOCHS beside it)")
    av.add_argument("--no-eval", action="store_true", help="write the model only, not scored")
    av.set_defaults(func=_cmd_average)

    ex = sub.add_parser("export", help="a run's model as ONNX (model.onnx), checked against Keras")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    ex.add_argument("--format", choices=["onnx"], default="onnx")
    ex.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default=_default_of(export_onnx, "quantize"),
        help="int8: also model.int8.onnx (ONNX Runtime dynamic quantisation)",
    )
    ex.add_argument(
        "--tolerance",
        type=float,
        default=_default_of(export_onnx, "tolerance"),
        help="largest logit difference vs model.keras that the fp32 file may have",
    )
    ex.set_defaults(func=_cmd_export)

    from squadqa.retrieval.cli import add_commands  # index, ask, evaluate-open, fit-ask

    add_commands(sub, _add_runtime_argument)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"squadqa {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
