"""Time and peak memory of featurising a SQuAD split, then of reading its feature cache.

    PYTHONPATH=src python scripts/featurize_memory.py DATA TOKENIZER [--cache DIR]

Step 1 featurises without a cache; step 2 (with --cache, the `features/` folder under
$SQUADQA_CACHE that `squadqa train` uses) reads the cached features, writing them first if absent.
Peak memory is this process's peak resident set (getrusage) after each step; `squadqa train`
records the same figure for its own run as `features_peak_rss_mb` in status.json.
"""

from __future__ import annotations

import argparse
import time

from squadqa.data import load_squad
from squadqa.features import FeatureConfig, build_features
from squadqa.tokenization import load_tokenizer
from squadqa.train import peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="SQuAD JSON (plain or .gz)")
    parser.add_argument("tokenizer", help="tokenizer.json or vocab.txt")
    parser.add_argument("--cache", help="feature cache folder to read (written if empty)")
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_squad(args.data)
    print(f"load: {time.perf_counter() - start:.1f} s, peak {peak_rss_mb():.0f} MB")
    tokenizer = load_tokenizer(args.tokenizer)
    steps = [("featurise", None)] + ([("from the cache", args.cache)] if args.cache else [])
    for what, cache in steps:
        start = time.perf_counter()
        features = build_features(data.examples, tokenizer, FeatureConfig(), cache)
        print(
            f"{what}: {len(data.examples)} examples -> {len(features)} features in "
            f"{time.perf_counter() - start:.1f} s, peak {peak_rss_mb():.0f} MB"
        )


if __name__ == "__main__":
    main()
