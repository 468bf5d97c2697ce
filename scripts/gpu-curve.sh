#!/usr/bin/env bash
# Issue 12's MiniLM points that a 2-core CPU cannot give, in one command on the device machine:
#   ../shared/device/prepare squad-v1.1/train-full.json.gz squad-v1.1/dev.json.gz   # here, once
#   python scripts/minilm_fp16.py pack .device/minilm                                 # here, once
#   then on the device:  bash scripts/gpu-curve.sh
# Side by side on the one GPU (bf16), every process under one deadline (DEADLINE seconds, default
# 540): `squadqa curve` of configs/minilm-finetune.toml on the first N articles of
# train-full.json.gz, one process for each N of ARTICLES (default 110,242,442), and, with HF=1
# (the default), benchmarks/vs_hf.py --mode full --sides hf-grouped on the whole train file: HF
# Trainer's twin of the 442-article point, same recipe. EPOCHS (default: the config's) sets both.
# A point the deadline cuts keeps its finished epochs (its status stays "running"; HF's side
# scores only at its end, so a cut HF run gives nothing). The records (config, status, metrics,
# eval, predictions; no checkpoints), curve.md/.png and the logs go to $OUT (or ./curve-out).
# Try it on the CPU first with tiny runs:
#   DEVICE=cpu OUT=/tmp/try ARTICLES=1,2 EPOCHS=1 \
#     SET="--set data.max_train_samples=40 --set data.max_dev_samples=20" \
#     HF_ARGS="--max-train-samples 40 --max-dev-samples 20" bash scripts/gpu-curve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .device/site ] || python3 -c "import keras" 2>/dev/null; then :; else
  python3 -m pip install -q --no-index --no-deps --target .device/site .device/wheels/*.whl
fi
export PYTHONPATH="$PWD/.device/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND="${KERAS_BACKEND:-torch}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
device="${DEVICE:-cuda}"
[ "$device" = cpu ] && export CUDA_VISIBLE_DEVICES=""
out="${OUT:-curve-out}"
data=.device/data/squad-v1.1
mkdir -p "$out"
out=$(cd "$out" && pwd)
python3 scripts/minilm_fp16.py unpack .device/minilm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT  # the records are copied to $OUT below; checkpoints are not kept
read -ra extra <<< "${SET:-}"
read -ra hf_extra <<< "${HF_ARGS:-}"
common=(--set "data.train=\"$data/train-full.json.gz\"" --set "data.dev=\"$data/dev.json.gz\""
  --set 'train.init="pretrained:.device/minilm"' --set train.mixed_precision=true)
[ -n "${EPOCHS:-}" ] && common+=(--set "train.epochs=$EPOCHS")
deadline="${DEADLINE:-540}"
pids=()
articles="${ARTICLES:-110,242,442}"
IFS=, read -ra sizes <<< "$articles"
for n in "${sizes[@]}"; do
  timeout "$deadline" python3 -m squadqa.cli curve --config configs/minilm-finetune.toml \
    --articles "$n" --runs-dir "$runs" "${common[@]}" "${extra[@]}" > "$out/curve-a$n.log" 2>&1 &
  pids+=($!)
done
if [ "${HF:-1}" = 1 ]; then
  hf_epochs=()
  [ -n "${EPOCHS:-}" ] && hf_epochs=(--epochs "$EPOCHS")
  timeout "$deadline" python3 benchmarks/vs_hf.py --mode full --sides hf-grouped --bf16 \
    --device "$device" --threads 4 --checkpoint .device/minilm --train "$data/train-full.json.gz" \
    --dev "$data/dev.json.gz" "${hf_epochs[@]}" --json "$out/vs_hf.json" "${hf_extra[@]}" \
    > "$out/vs_hf.log" 2>&1 &
  pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid" || echo "process $pid exited with $?" | tee -a "$out/exits.txt"; done
python3 -m squadqa.cli curve --no-train --config configs/minilm-finetune.toml \
  --articles "$articles" --runs-dir "$runs" "${common[@]}" "${extra[@]}" \
  > "$out/curve-table.log" 2>&1 || true
cp "$runs"/curve.md "$runs"/curve.png "$out"/ 2>/dev/null || true
for run in "$runs"/*/; do
  mkdir -p "$out/$(basename "$run")"
  for f in config.toml status.json metrics.jsonl eval.json predictions.json; do
    cp "$run/$f" "$out/$(basename "$run")/" 2>/dev/null || true
  done
done
ls -R "$out"
