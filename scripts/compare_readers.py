"""Two trained readers side by side: what does one encoder hold that the other does not?

    python scripts/compare_readers.py RUN_A RUN_B [--labels A,B] [--examples 3]
        [--explain-steps 32] [--probe-train-samples N] [--probe-dev-samples M] [--out DIR]

Both runs must be finished run directories scored on the same dev split (`data.dev` and
`data.max_dev_samples` of their config.toml), with predictions.json, nbest_predictions.json and
eval.json. Written to DIR (default `compare/`): `compare.json` (every number, the question ids of
each agreement cell, the seconds each part took) and `compare.md`, a markdown section to paste:

1. dev EM / F1 (eval.json) and the agreement over dev questions (both exactly right, only A,
   only B, neither), each question scored by the official per-question scorer
   (`evaluation.question_scores`) against the gold answers the runs were scored with;
2. calibration (`squadqa calibrate`, run here when calibration.json is missing);
3. linear span probes by layer (`squadqa probe`, run here when probes.json is missing, or when
   `--probe-*-samples` ask for other subset sizes than it holds; both runs must be probed on the
   same subsets);
4. attention head statistics (`squadqa explain`'s `heads_summary`: row entropy, shares to [CLS],
   [SEP] and the question) per layer, the mean over heads and over `--examples` dev questions
   both runs answer exactly;
5. attribution examples: `--examples` dev questions only A answers exactly and as many only B
   does, each run's answer and top context tokens by integrated gradients of its
   start and end logits, with the completeness gap.

Questions are chosen at an even stride over each list (`probes.spread`), so they span dev's
articles rather than all coming from its first.

calibrate and probe write calibration.json / probes.json into the run directories (as the
commands do). The script is glue: every number comes from the package's own code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squadqa import rundir  # squadqa sets the default Keras backend before keras is imported
from squadqa.calibration import calibrate_run
from squadqa.config import RunConfig, load_config
from squadqa.data import Example, data_path, spread
from squadqa.evaluation import load_predictions, question_scores
from squadqa.explain import STEPS, TARGETS, Explainer
from squadqa.inference import QAPredictor
from squadqa.probes import probe_run
from squadqa.runs import md_cell
from squadqa.scoring import load_dev

NEEDED = (rundir.CONFIG, rundir.TOKENIZER, rundir.MODEL, rundir.PREDICTIONS, rundir.NBEST)
OUTCOMES = ("both", "only_a", "only_b", "neither")
HEAD_STATS = {"entropy": "entropy", "cls": "[CLS]", "sep": "[SEP]", "question": "question"}
TOP_TOKENS = 5


@dataclass
class Reader:
    """One run as compared: where it is, its config, its dev answers and scores."""

    label: str
    path: Path
    config: RunConfig
    predictions: dict[str, str]
    scores: dict[str, Any]  # eval.json


def load_reader(path: Path, label: str) -> Reader:
    """A finished run's files, or FileNotFoundError naming the ones it lacks."""
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")
    missing = [name for name in (*NEEDED, rundir.EVAL) if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} lacks {', '.join(str(path / name) for name in missing)}: compare needs a "
            "finished `squadqa train` run (or `squadqa snapshot`) scored on dev"
        )
    return Reader(
        label=label,
        path=path,
        config=load_config(path / rundir.CONFIG),
        predictions=load_predictions(path / rundir.PREDICTIONS),
        scores=rundir.read_json(path / rundir.EVAL),
    )


def check_same_dev(a: Reader, b: Reader) -> None:
    """Both runs scored on the same dev questions, or ValueError naming both files."""
    da, db = a.config.data, b.config.data
    if data_path(da.dev).resolve() != data_path(db.dev).resolve():
        raise ValueError(
            f"the runs were scored on different dev files: {a.path / rundir.CONFIG} has "
            f"data.dev = {da.dev!r}, {b.path / rundir.CONFIG} has data.dev = {db.dev!r}"
        )
    if da.max_dev_samples != db.max_dev_samples:
        raise ValueError(
            f"the runs were scored on different parts of {da.dev}: data.max_dev_samples = "
            f"{da.max_dev_samples} in {a.path / rundir.CONFIG}, {db.max_dev_samples} in "
            f"{b.path / rundir.CONFIG}"
        )


def agreement(examples: list[Example], a: Reader, b: Reader) -> dict[str, list[str]]:
    """Dev question ids per outcome (`OUTCOMES`), in dev order, by official per-question EM."""
    cells: dict[str, list[str]] = {outcome: [] for outcome in OUTCOMES}
    for example in examples:
        gold = [answer.text for answer in example.answers]
        right = []
        for reader in (a, b):
            if example.id not in reader.predictions:
                raise ValueError(
                    f"{reader.path / rundir.PREDICTIONS} has no answer to dev question "
                    f"{example.id!r} of {reader.config.data.dev}"
                )
            right.append(question_scores(reader.predictions[example.id], gold)[0] == 1.0)
        outcome = {(True, True): "both", (True, False): "only_a", (False, True): "only_b"}
        cells[outcome.get((right[0], right[1]), "neither")].append(example.id)
    return cells


def calibration_of(reader: Reader) -> tuple[dict[str, Any], float | None]:
    """calibration.json, fitted now if the run has none (and the seconds that took)."""
    path = reader.path / rundir.CALIBRATION
    if path.is_file():
        return rundir.read_json(path), None
    began = time.perf_counter()
    record = calibrate_run(reader.path)
    return record, time.perf_counter() - began


def probes_of(
    reader: Reader, train_samples: int | None, dev_samples: int | None
) -> tuple[dict[str, Any], float | None]:
    """probes.json, probed now if the run has none or one of other subset sizes than asked."""
    path = reader.path / rundir.PROBES
    asked = {"train_samples": train_samples, "dev_samples": dev_samples}
    if path.is_file():
        record = rundir.read_json(path)
        if all(n is None or record[key] == n for key, n in asked.items()):
            return record, None
    began = time.perf_counter()
    record = probe_run(reader.path, **{k: n for k, n in asked.items() if n is not None})
    return record, time.perf_counter() - began


def check_same_probes(a: Reader, pa: dict[str, Any], b: Reader, pb: dict[str, Any]) -> None:
    """Probe F1s compare only on the same subsets and fit settings."""
    keys = ("dev_data", "dev_samples", "train_samples", "settings")
    differ = [key for key in keys if pa[key] != pb[key]]
    if differ:
        raise ValueError(
            f"{a.path / rundir.PROBES} and {b.path / rundir.PROBES} were probed differently "
            f"({', '.join(differ)}): rerun with the same --probe-train-samples and "
            "--probe-dev-samples for both"
        )


def explain(explainer: Explainer, example: Example, steps: int) -> dict[str, Any]:
    """`squadqa explain`'s explanation of a dev question, with the seconds it took."""
    began = time.perf_counter()
    explanation = explainer.explain(example.context, example.question, steps=steps)
    explanation["seconds"] = time.perf_counter() - began
    return explanation


def head_means(explanations: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per layer, each head statistic averaged over heads and explained questions."""
    return {
        stat: np.mean(
            [e["attention"]["heads_summary"][stat] for e in explanations], axis=(0, 2)
        ).tolist()
        for stat in HEAD_STATS
    }


def top_context_tokens(explanation: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """The `TOP_TOKENS` context tokens of the largest attribution (absolute) to `target`."""
    tokens = explanation["tokens"]
    values = np.asarray(explanation["attributions"][target])
    context = [i for i, token in enumerate(tokens) if token["segment"] == "context"]
    order = sorted(context, key=lambda i: -abs(values[i]))[:TOP_TOKENS]
    return [{"text": tokens[i]["text"], "attribution": float(values[i])} for i in order]


def attribution_example(
    example: Example, readers: list[Reader], explanations: list[dict[str, Any]]
) -> dict[str, Any]:
    """One question explained by both runs: answers, top tokens, completeness gaps."""
    gold = list(dict.fromkeys(answer.text for answer in example.answers))
    per_run = {}
    for reader, e in zip(readers, explanations, strict=True):
        answer = reader.predictions[example.id]
        per_run[reader.label] = {
            "answer": answer,
            "explained_span": e["span"]["text"],
            "exact_match": question_scores(answer, gold)[0],
            "top_tokens": {t: top_context_tokens(e, t) for t in TARGETS},
            "relative_gap": {t: e["completeness"][t]["relative_gap"] for t in TARGETS},
        }
        if e["span"]["text"] != answer:
            print(
                f"warning: {reader.label} explains {e['span']['text']!r} for {example.id}, its "
                f"{rundir.PREDICTIONS} says {answer!r}",
                file=sys.stderr,
            )
    return {"id": example.id, "question": example.question, "gold": gold, "runs": per_run}


# --------------------------------------------------------------------------- markdown


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """A markdown table; `align`: one of l/r per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    return [f"| {' | '.join(r)} |" for r in (header, rule, *rows)]


def markdown(result: dict[str, Any]) -> str:
    """compare.md: tables and plain facts, no interpretation."""
    la, lb = (run["label"] for run in result["runs"])
    runs, n = result["runs"], result["dev"]["questions"]
    counts = {k: len(v) for k, v in result["agreement"].items()}
    lines = [f"## {la} vs {lb}", ""]
    lines += [
        f"- {run['label']}: `{run['path']}` ({run['parameters']:,} parameters, "
        f"{run['layers']} layers, init `{run['init']}`)."
        for run in runs
    ]
    lines += [f"- dev: `{result['dev']['file']}`, {n} questions", ""]

    lines += ["### Dev scores and agreement", ""]
    lines += table(
        ["", la, lb],
        [
            ["dev EM (eval.json)", *(f"{r['exact_match']:.2f}" for r in runs)],
            ["dev F1 (eval.json)", *(f"{r['f1']:.2f}" for r in runs)],
        ],
    )
    lines.append("")
    lines += table(
        ["both exactly right", f"only {la}", f"only {lb}", "neither", "questions"],
        [[f"{counts[k]} ({100 * counts[k] / n:.1f}%)" for k in OUTCOMES] + [str(n)]],
        "rrrrr",
    )
    same = counts["both"] + counts["neither"]
    lines += [
        "",
        f"The two runs are both exactly right or both not on {same} of {n} questions "
        f"({100 * same / n:.1f}%); {la} alone is exactly right on {counts['only_a']}, {lb} alone "
        f"on {counts['only_b']}.",
        "",
    ]

    lines += ["### Calibration (`squadqa calibrate`, held-out half of dev)", ""]
    cal = [r["calibration"] for r in runs]
    lines += table(
        ["", la, lb],
        [
            ["temperature", *(f"{c['temperature']:.3f}" for c in cal)],
            ["held-out questions", *(str(c["held_out_questions"]) for c in cal)],
            ["held-out accuracy (EM)", *(f"{c['held_out_accuracy']:.3f}" for c in cal)],
            ["ECE before → after", *(f"{c['ece_before']:.4f} → {c['ece_after']:.4f}" for c in cal)],
            [
                "Brier before → after",
                *(f"{c['brier_before']:.4f} → {c['brier_after']:.4f}" for c in cal),
            ],
            [
                "mean confidence before → after",
                *(
                    f"{c['mean_confidence_before']:.3f} → {c['mean_confidence_after']:.3f}"
                    for c in cal
                ),
            ],
        ],
    )
    lines.append("")

    probes = [r["probes"] for r in runs]
    lines += [
        "### Linear span probes by layer (`squadqa probe`)",
        "",
        f"A linear span head fitted on each layer's states, encoder frozen: "
        f"{probes[0]['train_samples']} questions of each run's train file, scored on "
        f"{probes[0]['dev_samples']} dev questions, both at an even stride over their file "
        "(official EM / F1); layer 0 is the embeddings.",
        "",
    ]
    depth = max(len(p["layers"]) for p in probes)
    rows = []
    for layer in range(depth):
        row = [str(layer) if layer else "0 (embeddings)"]
        for p in probes:
            there = layer < len(p["layers"])
            row += [f"{p['layers'][layer][k]:.2f}" if there else "-" for k in ("exact_match", "f1")]
        rows.append(row)
    rows.append(
        ["run's own head"]
        + [f"{p['model_head'][k]:.2f}" for p in probes for k in ("exact_match", "f1")]
    )
    lines += table(["layer", f"{la} EM", f"{la} F1", f"{lb} EM", f"{lb} F1"], rows)
    lines.append("")
    for r, p in zip(runs, probes, strict=True):
        best = max(p["layers"], key=lambda row: row["f1"])
        lines.append(
            f"{r['label']}: best probe at layer {best['layer']} (F1 {best['f1']:.2f}), the "
            f"embeddings' F1 {p['layers'][0]['f1']:.2f}, its own head's F1 "
            f"{p['model_head']['f1']:.2f} on the same {p['dev_samples']} questions."
        )
    lines.append("")

    heads = result["heads"]
    lines += [
        "### Attention heads (`squadqa explain`'s head summaries)",
        "",
        f"Mean over heads and over {len(heads['ids'])} dev questions both runs answer exactly "
        "(at an even stride over them; the answer's window): row entropy (nats) and the shares "
        "of attention to [CLS], to [SEP] and to the question.",
        "",
    ]
    if heads["ids"]:
        depth = max(len(heads["runs"][label]["entropy"]) for label in (la, lb))
        rows = []
        for layer in range(depth):
            row = [str(layer + 1)]
            for label in (la, lb):
                means = heads["runs"][label]
                there = layer < len(means["entropy"])
                row += [f"{means[s][layer]:.3f}" if there else "-" for s in HEAD_STATS]
            rows.append(row)
        header = ["layer"] + [
            f"{label} {name}" for label in (la, lb) for name in HEAD_STATS.values()
        ]
        lines += table(header, rows)
    else:
        lines.append("No dev question is answered exactly by both runs.")
    lines.append("")

    lines += [
        "### Attribution examples (integrated gradients, `squadqa explain`)",
        "",
        "Dev questions only one run answers exactly (at an even stride over them); per run its "
        f"answer and the {TOP_TOKENS} context tokens of the largest attribution (absolute) to "
        f"the start and end logit of its answer ({result['explain_steps']} steps), and the "
        "completeness gap (|attributions' sum - logit difference| / |logit difference|).",
        "",
    ]
    for outcome, who in (("only_a", la), ("only_b", lb)):
        chosen = result["examples"][outcome]
        lines += [f"#### Only {who} exactly right", ""]
        if not chosen:
            lines += [f"No dev question is answered exactly by {who} alone.", ""]
        for ex in chosen:
            gold = " / ".join(f'"{md_cell(g)}"' for g in ex["gold"])
            lines += [f"`{ex['id']}` {md_cell(ex['question'])} Gold: {gold}", ""]
            rows = []
            for label in (la, lb):
                r = ex["runs"][label]
                tops = [
                    ", ".join(
                        f"{md_cell(repr(t['text']))} {t['attribution']:+.3f}"
                        for t in r["top_tokens"][target]
                    )
                    for target in TARGETS
                ]
                gaps = " / ".join(f"{100 * r['relative_gap'][t]:.2f}%" for t in TARGETS)
                rows.append(
                    [label, f'"{md_cell(r["answer"])}"', f"{r['exact_match']:.0f}", *tops, gaps]
                )
            lines += table(
                ["run", "answer", "EM", "start: top tokens", "end: top tokens", "gap start / end"],
                rows,
                "llrllr",
            )
            lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path, metavar="RUN_A")
    parser.add_argument("run_b", type=Path, metavar="RUN_B")
    parser.add_argument("--labels", help="two names for the runs, A,B (default: folder names)")
    parser.add_argument("--examples", type=int, default=3, help="questions per example kind (3)")
    parser.add_argument("--explain-steps", type=int, default=STEPS, help=f"IG steps ({STEPS})")
    parser.add_argument("--probe-train-samples", type=int, help="probe train questions (1000)")
    parser.add_argument("--probe-dev-samples", type=int, help="probe dev questions (500)")
    parser.add_argument("--out", type=Path, default=Path("compare"), help="output folder")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [args.run_a.name, args.run_b.name]
    if len(labels) != 2 or not all(label.strip() for label in labels):
        parser.error(f"--labels {args.labels!r} must be two names, A,B")
    if labels[0] == labels[1]:
        labels = [f"A ({labels[0]})", f"B ({labels[1]})"]
    args.labels = [label.strip() for label in labels]
    if args.examples < 0:
        parser.error(f"--examples {args.examples} must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    a = load_reader(args.run_a, args.labels[0])
    b = load_reader(args.run_b, args.labels[1])
    check_same_dev(a, b)
    examples = load_dev(a.config).examples
    by_id = {example.id: example for example in examples}
    cells = agreement(examples, a, b)
    print(
        "agreement: "
        + ", ".join(f"{k} {len(v)}" for k, v in cells.items())
        + f" of {len(examples)} dev questions"
    )
    seconds: dict[str, Any] = {"calibrate": {}, "probe": {}, "explain": {}}

    runs, explainers = [], []
    for reader in (a, b):
        calibration, seconds["calibrate"][reader.label] = calibration_of(reader)
        probes, seconds["probe"][reader.label] = probes_of(
            reader, args.probe_train_samples, args.probe_dev_samples
        )
        explainer = Explainer(QAPredictor.from_run_dir(reader.path, runtime="keras"))
        explainers.append(explainer)
        right = len(cells["both"]) + len(cells["only_a" if reader is a else "only_b"])
        exact = 100 * right / len(examples)
        if abs(exact - reader.scores["exact_match"]) > 1e-6:
            print(
                f"warning: {reader.path / rundir.PREDICTIONS} scores EM {exact:.4f}, "
                f"{reader.path / rundir.EVAL} says {reader.scores['exact_match']:.4f}",
                file=sys.stderr,
            )
        runs.append(
            {
                "label": reader.label,
                "path": str(reader.path),
                "init": reader.config.train.init,
                "parameters": int(explainer.model.count_params()),
                "layers": len(explainer.model.encoder_layers),
                "exact_match": float(reader.scores["exact_match"]),
                "f1": float(reader.scores["f1"]),
                "exact_match_from_predictions": exact,
                "calibration": {k: v for k, v in calibration.items() if k != "reliability"},
                "probes": probes,
            }
        )
    check_same_probes(a, runs[0]["probes"], b, runs[1]["probes"])

    def explained(ids: list[str]) -> list[list[dict[str, Any]]]:
        """Each question of `ids` explained by A and by B (timed per run)."""
        out = []
        for qid in ids:
            pair = [explain(x, by_id[qid], args.explain_steps) for x in explainers]
            for reader, e in zip((a, b), pair, strict=True):
                seconds["explain"].setdefault(reader.label, []).append(e["seconds"])
            out.append(pair)
        return out

    both = spread(cells["both"], args.examples)
    pairs = explained(both)
    heads = {
        "ids": both,
        "runs": {
            reader.label: head_means([pair[k] for pair in pairs]) for k, reader in enumerate((a, b))
        }
        if pairs
        else {},
    }
    chosen = {}
    for outcome in ("only_a", "only_b"):
        ids = spread(cells[outcome], args.examples)
        chosen[outcome] = [
            attribution_example(by_id[qid], [a, b], pair)
            for qid, pair in zip(ids, explained(ids), strict=True)
        ]

    result = {
        "runs": runs,
        "dev": {
            "file": a.config.data.dev,
            "max_dev_samples": a.config.data.max_dev_samples,
            "questions": len(examples),
        },
        "agreement": cells,
        "heads": heads,
        "explain_steps": args.explain_steps,
        "examples": chosen,
        "seconds": seconds,
        "created": rundir.now(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(args.out / "compare.json", result)
    rundir.write_text(args.out / "compare.md", markdown(result) + "\n")
    print(json.dumps({"seconds": seconds}, indent=1))
    print(f"wrote {args.out / 'compare.json'}, {args.out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
