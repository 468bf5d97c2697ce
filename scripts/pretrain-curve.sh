#!/usr/bin/env bash
# #33's pretraining-length curve for the from-scratch reader: MLM on the contexts of the whole
# train set (configs/pretrain-mlm.toml) for 2, 8 and 32 epochs, at the preset's encoder
# (s: 128 wide, 3 blocks, 1.6M parameters) and at a larger one (m: 256 wide, 4 blocks, 5.2M), each
# fine-tuned with the same budget: scratch-full-cpu's recipe for 2 epochs on the 44-article split
# (train.json.gz, 11,877 questions; the learning rate decays over those 2 epochs), dev = all of
# dev.json.gz. Cheap points first. Hours in all on the 2-core CPU: run it again after a stop and it
# resumes the stopped run and skips the finished ones. Same seed (0) everywhere.
#   RUNS=runs/curve-pt [EPOCHS="2 8 32"] [SIZES="s m"] bash scripts/pretrain-curve.sh
# Try it tiny first:
#   RUNS=/tmp/ptc EPOCHS="1 2" PT_ARGS="--set data.max_train_samples=64" \
#     FT_ARGS="--set data.max_train_samples=64 --set data.max_dev_samples=32" \
#     bash scripts/pretrain-curve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/resumable.sh
runs="${RUNS:-runs/curve-pt}"
read -ra epochs <<< "${EPOCHS:-2 8 32}"
read -ra sizes <<< "${SIZES:-s m}"
read -ra pt_args <<< "${PT_ARGS:-}"
read -ra ft_args <<< "${FT_ARGS:-}"

model_args() {  # the encoder of a size (pretraining and fine-tune)
  case "$1" in
    s) echo "" ;;
    m) echo "--set model.hidden_size=256 --set model.num_layers=4 --set model.intermediate_size=1024" ;;
    *) echo "unknown size $1 (s or m)" >&2; return 1 ;;
  esac
}
declare -A finetune_lr=([s]=2e-3 [m]=1e-3)  # s: the preset's; m: what its earlier full-data run used

for e in "${epochs[@]}"; do
  for size in "${sizes[@]}"; do
    read -ra model <<< "$(model_args "$size")"
    resumable pretrain "$runs" "pt-$size-e$e" --config configs/pretrain-mlm.toml "${model[@]}" \
      --set "train.epochs=$e" "${pt_args[@]}"
    resumable train "$runs" "ft-$size-e$e" --config configs/scratch-full-cpu.toml \
      --init "run:$runs/pt-$size-e$e" --set data.train=../shared/data/squad-v1.1/train.json.gz \
      --set train.epochs=2 --set train.decay_epochs=0 --set "train.learning_rate=${finetune_lr[$size]}" \
      "${model[@]}" "${ft_args[@]}"
  done
done
squadqa runs "$runs"
