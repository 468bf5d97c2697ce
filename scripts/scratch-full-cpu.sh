#!/usr/bin/env bash
# #11's CPU preset in one command: 2 epochs of MLM pretraining of scratch-full-cpu's encoder on the
# contexts of train-full.json.gz (configs/pretrain-mlm.toml, about 15 minutes on the 2-core CPU),
# then configs/scratch-full-cpu.toml's 4 fine-tune epochs on the whole train set from it (--init
# run:...). docs/results.md has what it measured and how long it took.
#   [RUNS=runs] bash scripts/scratch-full-cpu.sh [extra `squadqa train` arguments...]
# A finished pretraining run in $RUNS/pretrain-mlm is reused, not redone; a stopped one resumed.
# Try it tiny first:
#   RUNS=/tmp/try PT_ARGS="--set data.max_train_samples=64" bash scripts/scratch-full-cpu.sh \
#     --set data.max_train_samples=64 --set data.max_dev_samples=32 --set train.epochs=1
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/resumable.sh
runs="${RUNS:-runs}"
read -ra pt_args <<< "${PT_ARGS:-}"
resumable pretrain "$runs" pretrain-mlm --config configs/pretrain-mlm.toml "${pt_args[@]}"
squadqa train --config configs/scratch-full-cpu.toml --init "run:$runs/pretrain-mlm" --runs-dir "$runs" "$@"
