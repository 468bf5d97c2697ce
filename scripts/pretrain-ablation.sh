#!/usr/bin/env bash
# #11's pretraining ablation at an equal fine-tune budget, sized for the 2-core CPU:
# each objective (mlm, electra, span) pretrains PT_EPOCHS epochs on the contexts of the whole
# train set (configs/pretrain-*.toml), then scratch-full-cpu's recipe fine-tunes FT_EPOCHS epochs
# on the 44-article split (train.json.gz) from it; "none" fine-tunes the same way from random
# weights with the same vocabulary (the mlm run's tokenizer). Last, pretraining length: mlm for
# LONG_EPOCHS epochs, fine-tuned the same way. Every run lands in $RUNS; the table at the end is
# `squadqa runs $RUNS`. Same seed everywhere (0).
#   RUNS=runs/ablation [PT_EPOCHS=2] [FT_EPOCHS=2] [LONG_EPOCHS=4] bash scripts/pretrain-ablation.sh
# Try it tiny first:
#   RUNS=/tmp/abl PT_EPOCHS=1 FT_EPOCHS=1 LONG_EPOCHS=2 PT_ARGS="--set data.max_train_samples=64" \
#     FT_ARGS="--set data.max_train_samples=64 --set data.max_dev_samples=32" \
#     bash scripts/pretrain-ablation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-runs/ablation}"
pt="${PT_EPOCHS:-2}"
ft="${FT_EPOCHS:-2}"
long="${LONG_EPOCHS:-4}"
read -ra pt_args <<< "${PT_ARGS:-}"
read -ra ft_args <<< "${FT_ARGS:-}"
finetune=(--config configs/scratch-full-cpu.toml --runs-dir "$runs"
  --set data.train=../shared/data/squad-v1.1/train.json.gz --set "train.epochs=$ft" "${ft_args[@]}")

pretrain_then_finetune() {  # objective, pretraining epochs
  squadqa pretrain --config "configs/pretrain-$1.toml" --set "train.epochs=$2" \
    --name "pt-$1-e$2" --runs-dir "$runs" "${pt_args[@]}"
  squadqa train "${finetune[@]}" --init "run:$runs/pt-$1-e$2" --name "ft-$1-e$2"
}

pretrain_then_finetune mlm "$pt"
squadqa train "${finetune[@]}" --set tokenizer.kind=vocab \
  --set "tokenizer.path=$runs/pt-mlm-e$pt/tokenizer.json" --name ft-none
pretrain_then_finetune electra "$pt"
pretrain_then_finetune span "$pt"
pretrain_then_finetune mlm "$long"
squadqa runs "$runs"
