#!/usr/bin/env bash
# The MiniLM fine-tuning sweep of docs/results.md in one command, for the device machine:
#   ../shared/device/prepare                              # here, once: keras wheels + data
#   python scripts/minilm_fp16.py pack .device/minilm     # here, once: the checkpoint, fp16
#   then on the device:  bash scripts/gpu-minilm-sweep.sh [--grid seeds] [sweep.py options]
# Installs the keras wheels the device lacks, expands the checkpoint to fp32, runs
# benchmarks/sweep.py (all runs of the grid side by side on the GPU, bf16 mixed precision) and
# copies its summary, logs and best predictions to $OUT (or ./sweep-out).
# Try it on the CPU first with tiny runs, e.g.
#   DEVICE=cpu OUT=/tmp/try bash scripts/gpu-minilm-sweep.sh --only sq-lr1e-4-ep3 \
#       --max-train-samples 40 --max-dev-samples 20
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .device/site ] || python3 -c "import keras" 2>/dev/null; then :; else
  python3 -m pip install -q --no-index --no-deps --target .device/site .device/wheels/*.whl
fi
export PYTHONPATH="$PWD/.device/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND="${KERAS_BACKEND:-torch}" PYTHONUNBUFFERED=1
out="${OUT:-sweep-out}"
mkdir -p "$out"
python3 scripts/minilm_fp16.py unpack .device/minilm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
work=$(mktemp -d)
python3 benchmarks/sweep.py --device "${DEVICE:-cuda}" --bf16 --deadline "${DEADLINE:-470}" \
  --checkpoint .device/minilm --train .device/data/squad-v1.1/train.json.gz \
  --dev .device/data/squad-v1.1/dev.json.gz --out "$work" "$@" 2>&1 | tee "$out/driver.log" || true
cp "$work"/summary.md "$work"/summary.json "$work"/logs.txt "$out"/
cp "$work"/predictions-*.json "$out"/ 2>/dev/null || true
