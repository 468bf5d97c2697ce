#!/usr/bin/env bash
# One GPU experiment in one command, for the device machine (see ../shared/device/README.md):
#   ../shared/device/prepare            # here, once: copies keras wheels + data into .device/
#   pip download --no-deps -d .device/wheels tqdm   # here: the device lacks tqdm too
#   then on the device:  bash scripts/gpu-scratch.sh [extra --set overrides...]
# Installs the keras wheels the device lacks, trains configs/scratch-gpu.toml on the shared train
# split, evaluates on dev every epoch, and leaves the run directory under $OUT/runs (or ./runs).
# Try it on the CPU first with a tiny override, e.g.
#   OUT=/tmp/gpu-try bash scripts/gpu-scratch.sh --set data.max_train_samples=64 \
#       --set data.max_dev_samples=32 --set train.epochs=1
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .device/wheels ]; then
  python3 -m pip install -q --no-index --no-deps --target .device/site .device/wheels/*.whl
  export PYTHONPATH="$PWD/.device/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  data=.device/data/squad-v1.1
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  data=../shared/data/squad-v1.1
fi
export KERAS_BACKEND="${KERAS_BACKEND:-torch}"
out="${OUT:-.}"
mkdir -p "$out/runs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt" || true
python3 -m squadqa.cli train --config configs/scratch-gpu.toml \
  --set "data.train=\"$data/train.json.gz\"" --set "data.dev=\"$data/dev.json.gz\"" \
  --runs-dir "$out/runs" "$@"
python3 -m squadqa.cli runs "$out/runs"
