"""The `squadqa index`, `ask`, `evaluate-open` and `fit-ask` commands (added to `squadqa.cli`'s
parser)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import squadqa
from squadqa.retrieval.index import (  # numpy only: --help stays quick
    RETRIEVERS,
    Index,
    add_documents,
    load_index,
)


def _cmd_index(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    documents, passages, appended = add_documents(
        args.docs, args.out, dense=not args.no_dense, max_chars=args.max_chars
    )
    seconds = time.perf_counter() - started
    print(
        f"{'appended' if appended else 'indexed'} {documents} documents, {passages} passages "
        f"{'to' if appended else 'into'} {args.out} in {seconds:.1f}s"
    )
    return 0


def _print_open_answer(answer: dict, index: Index) -> None:
    print(f"Q: {answer['question']}")
    if answer["no_answer"]:
        print("A: (no answer: no retrieved passage gave a span)")
        return
    print(f"A: {answer['text']}")
    print(
        f"   from {answer['source']} ({answer['title']}), characters "
        f"{answer['start']}-{answer['end']}, passage {answer['passage']} "
        f"[{answer['passage_start']}:{answer['passage_end']}]; score {answer['score']:.3f}, "
        f"probability {answer['probability']:.1%}"
    )
    text = index.collection.passage_text(answer["passage"])
    at = answer["start"] - answer["passage_start"]
    length = answer["end"] - answer["start"]
    print(
        f"   passage: ...{text[max(at - 150, 0) : at]}[[{text[at : at + length]}]]"
        f"{text[at + length : at + length + 150]}..."
    )
    print("   alternatives:")
    for rank, alt in enumerate(answer["alternatives"], 1):
        print(
            f"   {rank:>3}. {alt['text']!r}  score {alt['score']:.3f}  p {alt['probability']:.1%}"
            f"  {alt['title']} [{alt['start']}:{alt['end']}]"
        )


def _cmd_ask(args: argparse.Namespace) -> int:
    squadqa.import_backend_only()
    from squadqa.inference import QAPredictor
    from squadqa.retrieval.ask import ask

    index = load_index(args.index)
    predictor = QAPredictor.from_run_dir(args.model, runtime=args.runtime)
    answers = ask(predictor, index, args.question, args.passages, args.retriever, args.top_k)
    for answer in answers:
        if args.json:
            print(json.dumps(answer, ensure_ascii=False))
        else:
            _print_open_answer(answer, index)
    return 0


def _cmd_evaluate_open(args: argparse.Namespace) -> int:
    from squadqa.retrieval.evaluate import evaluate_open

    if args.cache and not args.model:
        raise ValueError("--cache keeps the reader's readings: it needs --model")
    predictor = None
    if args.model:
        squadqa.import_backend_only()
        from squadqa.inference import QAPredictor

        predictor = QAPredictor.from_run_dir(args.model, runtime=args.runtime)
    fusions = None
    if args.fusion:
        if predictor is None:
            raise ValueError("--fusion weighs retrieval beside the reader: it needs --model")
        fusions = [predictor.fusion_weights if f == "run" else _weights(f) for f in args.fusion]
    rows = evaluate_open(
        args.data,
        retrievers=args.retriever or RETRIEVERS,
        settings=args.setting or ("article", "collection"),
        predictor=predictor,
        passages=args.passages,
        max_questions=args.max_questions,
        index=load_index(args.index) if args.index else None,
        cache=args.cache,
        fusions=fusions,
    )
    _print_rows(rows, predictor is not None)
    if predictor is not None and rows:
        print(
            f"{rows[0]['distinct_reads']} distinct (question, passage) pairs read for "
            f"{sum(row.get('reads', row['questions']) for row in rows)} reads in the rows"
            + (f"; {rows[0]['cached_reads']} of them from {args.cache}" if args.cache else "")
        )
    if args.out:
        from squadqa.rundir import write_json

        write_json(Path(args.out), rows)
    return 0


def _weights(text: str) -> dict[str, float]:
    """--fusion's "BM25,DENSE" weights."""
    try:
        bm25, dense = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"--fusion {text!r}: give the BM25 and dense weights as BM25,DENSE (e.g. 1,30) or `run`"
        ) from None
    return {"bm25": bm25, "dense": dense}


def _print_rows(rows: list[dict], with_reader: bool) -> None:
    columns = ["setting", "retriever", "recall@1", "recall@5", "recall@20"]
    columns += ["bm25_weight", "dense_weight", "em", "f1", "s_per_question"] if with_reader else []
    columns += ["retrieval_s_per_question"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [row.get(c) for c in columns]
        print(
            "| "
            + " | ".join(
                ""
                if v is None
                else f"{v:.4f}"
                if "s_per" in c
                else f"{v:.2f}"
                if isinstance(v, float)
                else str(v)
                for c, v in zip(columns, cells, strict=True)
            )
            + " |"
        )
    if rows:
        print(f"{rows[-1]['questions']} questions; collection ready in {rows[-1]['index_s']:.1f}s")


def _cmd_fit_ask(args: argparse.Namespace) -> int:
    squadqa.import_backend_only()
    from squadqa.inference import QAPredictor
    from squadqa.retrieval.evaluate import evaluate_open
    from squadqa.retrieval.fusion import grid
    from squadqa.retrieval.reads import sha256_of
    from squadqa.rundir import ASK_FUSION, run_path, write_json

    predictor = QAPredictor.from_run_dir(args.model, runtime=args.runtime)
    rows = evaluate_open(
        args.data,
        retrievers=(args.retriever,),
        settings=("collection",),
        predictor=predictor,
        passages=args.passages,
        max_questions=args.max_questions,
        index=load_index(args.index) if args.index else None,
        cache=args.cache,
        fusions=grid(),
    )
    _print_rows(rows, True)
    fitted = rows[1:]  # after the given-paragraph row
    best = max(fitted, key=lambda row: row["f1"])  # the first of equals: the smaller weights
    out = Path(args.out) if args.out else run_path(args.model) / ASK_FUSION
    record = {
        "bm25": best["bm25_weight"],
        "dense": best["dense_weight"],
        "f1": best["f1"],
        "em": best["em"],
        "f1_reader_alone": fitted[0]["f1"],
        "f1_given_paragraph": rows[0]["f1"],
        "data": str(args.data),
        "data_sha256": sha256_of([Path(args.data).read_bytes()]),
        "questions": best["questions"],
        "retriever": args.retriever,
        "passages": args.passages,
        "grid": [[r["bm25_weight"], r["dense_weight"], r["em"], r["f1"]] for r in fitted],
    }
    write_json(out, record)
    print(
        f"fitted on {best['questions']} questions of {args.data}: "
        f"bm25 weight {best['bm25_weight']:g}, dense weight {best['dense_weight']:g}: "
        f"F1 {best['f1']:.2f} (reader alone "
        f"{fitted[0]['f1']:.2f}, given the paragraph {rows[0]['f1']:.2f}) -> {out}"
    )
    return 0


def add_commands(
    sub: argparse._SubParsersAction, add_runtime_argument: Callable[[argparse.ArgumentParser], None]
) -> None:
    """`index`, `ask` and `evaluate-open` on the `squadqa` parser."""
    ix = sub.add_parser(
        "index", help="index documents (text, Markdown, HTML, SQuAD JSON) for `squadqa ask`"
    )
    ix.add_argument("docs", nargs="+", metavar="DOCS", help="files or folders (searched deeply)")
    ix.add_argument(
        "--out", required=True, metavar="INDEX", help="index directory; an existing one is added to"
    )
    ix.add_argument(
        "--max-chars", type=int, help="longest passage in characters (default 2000; new index only)"
    )
    ix.add_argument(
        "--no-dense", action="store_true", help="BM25 only: no MiniLM vectors (new index only)"
    )
    ix.set_defaults(func=_cmd_index)

    ak = sub.add_parser("ask", help="answer a question from an index: retrieve, then read")
    ak.add_argument(
        "--model",
        required=True,
        metavar="RUN_DIR",
        help="the reader: a run directory or builtin:NAME",
    )
    ak.add_argument("--index", required=True, metavar="INDEX", help="made by `squadqa index`")
    ak.add_argument("question", nargs="+", help="one or more questions")
    ak.add_argument("--passages", type=int, default=5, help="passages retrieved and read (K)")
    ak.add_argument("--retriever", choices=RETRIEVERS, default="hybrid")
    ak.add_argument("--top-k", type=int, default=3, help="ranked candidates to show")
    ak.add_argument("--json", action="store_true", help="one JSON object per answer")
    add_runtime_argument(ak)
    ak.set_defaults(func=_cmd_ask)

    eo = sub.add_parser(
        "evaluate-open",
        help="a SQuAD file as an open collection: retrieval recall@k (and EM/F1 with --model)",
    )
    eo.add_argument("data", metavar="DATA", help="SQuAD v1.1 JSON (plain or .gz)")
    eo.add_argument(
        "--retriever", action="append", choices=RETRIEVERS, help="repeatable (default all)"
    )
    eo.add_argument(
        "--setting",
        action="append",
        choices=("article", "collection"),
        help="article: each question against its own article's passages; collection: against "
        "all of them (repeatable; default both)",
    )
    eo.add_argument(
        "--index", metavar="INDEX", help="`squadqa index DATA`'s index (default: built in memory)"
    )
    eo.add_argument("--model", metavar="RUN_DIR", help="also read the passages: EM/F1, time")
    eo.add_argument("--passages", type=int, default=5, help="passages read per question (K)")
    eo.add_argument(
        "--max-questions",
        type=int,
        help="N questions at an even stride over the file, so they span its articles",
    )
    eo.add_argument("--out", help="write the rows as JSON here")
    eo.add_argument(
        "--cache",
        metavar="FILE",
        help="with --model: keep the reader's readings in FILE (JSON lines, appended as they are "
        "read): a rerun resumes where it stopped and a finished one re-aggregates at once",
    )
    eo.add_argument(
        "--fusion",
        action="append",
        metavar="W",
        help="with --model: weights of retrieval evidence beside the reader, BM25,DENSE (0,0: the "
        "reader alone) or `run` (the reader's `squadqa fit-ask` weights, the default); repeatable, "
        "one row each",
    )
    add_runtime_argument(eo)
    eo.set_defaults(func=_cmd_evaluate_open)

    fa = sub.add_parser(
        "fit-ask",
        help="fit how `ask` weighs retrieval beside a reader, on a train-split SQuAD file",
    )
    fa.add_argument("model", metavar="RUN_DIR", help="the reader: a run directory or builtin:NAME")
    fa.add_argument(
        "data",
        metavar="DATA",
        help="SQuAD v1.1 JSON of the train split (never the data you evaluate on), as a collection",
    )
    fa.add_argument(
        "--index", metavar="INDEX", help="`squadqa index DATA`'s index (default: built in memory)"
    )
    fa.add_argument("--max-questions", type=int, default=1000, help="at an even stride")
    fa.add_argument("--passages", type=int, default=5, help="passages read per question (K)")
    fa.add_argument("--retriever", choices=RETRIEVERS, default="hybrid")
    fa.add_argument("--cache", metavar="FILE", help="the readings, as evaluate-open's --cache")
    fa.add_argument("--out", help="where to write the weights (default: RUN_DIR/ask_fusion.json)")
    add_runtime_argument(fa)
    fa.set_defaults(func=_cmd_fit_ask)
