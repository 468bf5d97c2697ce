#!/usr/bin/env bash
# One from-scratch GPU experiment in one command, for the device machine (../shared/device/README.md):
#   ../shared/device/prepare squad-v1.1/train-full.json.gz squad-v1.1/train.json.gz \
#       squad-v1.1/dev.json.gz          # here, once: keras wheels + data into .device/
#   pip download --no-deps -d .device/wheels tqdm   # here: the device lacks tqdm too
#   then on the device:  [CONFIG=configs/X.toml] [PRETRAIN=configs/pretrain-Y.toml] \
#       bash scripts/gpu-scratch.sh [extra --set overrides for the fine-tune...]
# CONFIG (default configs/scratch-gpu.toml) is trained with its data paths pointed at the copied
# data; with PRETRAIN, that pretraining config runs first, on CONFIG's [model] (the encoder the
# fine-tune is named for), and the fine-tune starts from it (--init run:...), PRETRAIN_ARGS
# holding extra arguments for it. Run directories land under $OUT/runs (or ./runs).
# Try it on the CPU first with tiny overrides, e.g.
#   OUT=/tmp/gpu-try CONFIG=configs/scratch-full-gpu.toml bash scripts/gpu-scratch.sh \
#       --set data.max_train_samples=64 --set data.max_dev_samples=32 --set train.epochs=1
#   (add PRETRAIN=configs/pretrain-mlm.toml PRETRAIN_ARGS="--set data.max_train_samples=64
#    --set train.epochs=1" to try the pretraining step too)
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
config="${CONFIG:-configs/scratch-gpu.toml}"
out="${OUT:-.}"
mkdir -p "$out/runs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt" || true
# data.train / data.dev of a config, re-pointed at $data (same file names).
data_sets() {
  python3 - "$1" "$data" <<'PY'
import pathlib, sys, tomllib
cfg = tomllib.loads(pathlib.Path(sys.argv[1]).read_text())
for key in ("train", "dev"):
    if key in cfg.get("data", {}):
        print(f'--set=data.{key}="{sys.argv[2]}/{pathlib.Path(cfg["data"][key]).name}"')
PY
}
# CONFIG's [model] as --set overrides: the pretraining trains the encoder the fine-tune names.
model_sets() {
  python3 - "$1" <<'PY'
import json, pathlib, sys, tomllib
for key, value in tomllib.loads(pathlib.Path(sys.argv[1]).read_text()).get("model", {}).items():
    print(f"--set=model.{key}={json.dumps(value)}")
PY
}
init=()
if [ -n "${PRETRAIN:-}" ]; then
  name="$(basename "$PRETRAIN" .toml)"
  mapfile -t sets < <(data_sets "$PRETRAIN")
  mapfile -t model < <(model_sets "$config")
  read -ra extra <<< "${PRETRAIN_ARGS:-}"
  python3 -m squadqa.cli pretrain --config "$PRETRAIN" "${sets[@]}" "${model[@]}" "${extra[@]}" \
    --runs-dir "$out/runs"
  init=(--init "run:$out/runs/$name")
fi
mapfile -t sets < <(data_sets "$config")
python3 -m squadqa.cli train --config "$config" "${sets[@]}" "${init[@]}" --runs-dir "$out/runs" "$@"
python3 -m squadqa.cli runs "$out/runs"
