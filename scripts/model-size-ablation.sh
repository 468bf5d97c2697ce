#!/usr/bin/env bash
# #11's model-size rows: scratch-full-cpu's recipe from random weights at three encoder sizes,
# fine-tuned FT_EPOCHS epochs on the 44-article split (train.json.gz), dev = all of dev.json.gz,
# the same way as the "none" row of scripts/pretrain-ablation.sh (same vocabulary: VOCAB, the
# tokenizer.json of an MLM pretraining run of configs/pretrain-mlm.toml). Sizes (parameters with
# the 8k vocabulary): s 128 wide x 3 layers (1.6M, the preset's), m 256 x 4 (5.2M), l 384 x 6
# (13.7M, MiniLM's encoder shape). One seed (0); each run lands in $RUNS as size-<s|m|l>.
#   RUNS=runs/ablation VOCAB=runs/ablation/pt-mlm-e4/tokenizer.json [FT_EPOCHS=2] [SIZES="s m l"] \
#     [FT_ARGS="--set train.mixed_precision=true"] bash scripts/model-size-ablation.sh
# Try it tiny first: FT_ARGS="--set data.max_train_samples=64 --set data.max_dev_samples=32".
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-runs/ablation}"
vocab="${VOCAB:?VOCAB=path/to/tokenizer.json of an MLM pretraining run}"
ft="${FT_EPOCHS:-2}"
read -ra ft_args <<< "${FT_ARGS:-}"
declare -A shape=(  # hidden_size num_layers num_heads intermediate_size
  [s]="128 3 4 512" [m]="256 4 4 1024" [l]="384 6 6 1536")
for size in ${SIZES:-s m l}; do
  read -r hidden layers heads inner <<< "${shape[$size]}"
  squadqa train --config configs/scratch-full-cpu.toml --init scratch --runs-dir "$runs" \
    --set data.train=../shared/data/squad-v1.1/train.json.gz --set "train.epochs=$ft" \
    --set tokenizer.kind=vocab --set "tokenizer.path=$vocab" \
    --set "model.hidden_size=$hidden" --set "model.num_layers=$layers" \
    --set "model.num_heads=$heads" --set "model.intermediate_size=$inner" \
    --name "size-$size" "${ft_args[@]}"
done
squadqa runs "$runs"
