#!/usr/bin/env bash
# #33's long from-scratch recipe in one resumable command: 8 epochs of MLM pretraining on the
# contexts of train-full.json.gz (configs/pretrain-mlm-long.toml), then configs/scratch-long-cpu.toml's
# 6 fine-tune epochs on the whole train set from it, every epoch's weights kept. Hours on the
# 2-core CPU: stop it with SIGTERM (each run checkpoints and ends `stopped`) and run the same
# command again to go on: a finished run is reused, a stopped one resumed.
#   [RUNS=runs] bash scripts/scratch-long-cpu.sh [extra `squadqa train` arguments...]
# Try it tiny first:
#   RUNS=/tmp/try PT_ARGS="--set data.max_train_samples=64 --set train.epochs=1" \
#     bash scripts/scratch-long-cpu.sh --set data.max_train_samples=64 \
#     --set data.max_dev_samples=32 --set train.epochs=2 --set train.decay_epochs=2
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/resumable.sh
runs="${RUNS:-runs}"
read -ra pt_args <<< "${PT_ARGS:-}"
resumable pretrain "$runs" pretrain-mlm-long --config configs/pretrain-mlm-long.toml "${pt_args[@]}"
resumable train "$runs" scratch-long-cpu --config configs/scratch-long-cpu.toml \
  --init "run:$runs/pretrain-mlm-long" "$@"
squadqa average "$runs/scratch-long-cpu" --epochs 2-
