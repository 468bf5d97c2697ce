"""How `squadqa ask` should rank spans of different passages: raw score or relative to the passage.

For dev questions at an even stride (`data.spread`), the `--passages` best passages of the whole
collection are read with `QAPredictor.read`, and the answer is the best span over them ranked two
ways: by raw span score (start + end logit: what `ask` did before), and by span score minus its
passage's null ([CLS]) score (`retrieval.ask.read_passages`: what `ask` ranks by, before the
retrieval evidence that `squadqa fit-ask` weighs in; `evaluate-open --fusion` scores that).
Printed beside them: the same reader given the question's own paragraph. EM / F1 by the official
scorer.

    OMP_NUM_THREADS=1 python scripts/open_aggregation.py ../shared/data/squad-v1.1/dev.json.gz \
        --index /tmp/dev-index --model builtin:minilm --questions 200
"""

from __future__ import annotations

import argparse
import time

from squadqa.data import gold_answers, load_squad, spread
from squadqa.evaluation import evaluate_v1
from squadqa.inference import QAPredictor
from squadqa.retrieval.ask import read_passages
from squadqa.retrieval.index import RETRIEVERS, load_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="SQuAD v1.1 file the index was built from")
    parser.add_argument("--index", required=True, help="`squadqa index DATA`'s index")
    parser.add_argument("--model", required=True, help="run directory or builtin:NAME")
    parser.add_argument("--questions", type=int, default=200, help="at an even stride")
    parser.add_argument("--passages", type=int, default=5, help="passages read per question")
    parser.add_argument("--retriever", choices=RETRIEVERS, default="hybrid")
    args = parser.parse_args()

    examples = spread(load_squad(args.data).examples, args.questions)
    index = load_index(args.index)
    predictor = QAPredictor.from_run_dir(args.model)
    vectors = (
        None if args.retriever == "bm25" else index.query_vectors([e.question for e in examples])
    )
    answers: dict[str, dict[str, str]] = {"given paragraph": {}, "raw": {}, "relative": {}}
    started = time.perf_counter()
    for q, example in enumerate(examples):
        hits = index.search(
            example.question, args.passages, args.retriever, None if vectors is None else vectors[q]
        )
        pairs = [(example.question, index.collection.passage_text(p)) for p, _ in hits]
        *readings, given = read_passages(predictor, [*pairs, (example.question, example.context)])
        answers["given paragraph"][example.id] = given[0].text if given else ""
        best: dict[str, tuple[float, str]] = {}
        for ranked in filter(None, readings):  # each passage's spans, relative to its null score
            top = ranked[0]
            raw = top.start_logit + top.end_logit  # its score before the null is taken off
            for way, score in (("raw", raw), ("relative", top.score)):
                if way not in best or score > best[way][0]:
                    best[way] = (score, top.text)
        for way in ("raw", "relative"):
            answers[way][example.id] = best.get(way, (0.0, ""))[1]
    seconds = time.perf_counter() - started
    gold = gold_answers(examples)
    print(f"{len(examples)} questions, {args.retriever}, {args.passages} passages, {seconds:.0f} s")
    for way, predicted in answers.items():
        scores = evaluate_v1(gold, predicted)
        print(f"{way:>16}: EM {scores['exact_match']:.2f}  F1 {scores['f1']:.2f}")


if __name__ == "__main__":
    main()
