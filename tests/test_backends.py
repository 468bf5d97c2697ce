"""Smoke tests on the jax and tensorflow backends, each in a fresh interpreter.

Keras fixes its backend at import time, so every backend other than the in-process default
(torch) runs in a subprocess with ``KERAS_BACKEND`` set: one per backend for all of this module's
checks of it (`on_backend`), as the import and the first compilations are most of their time. A
backend that is not installed is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
BACKEND_MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}


def run_backend_script(backend: str, code: str, tmp_path: Path, timeout: int = 300) -> dict:
    """Run ``code`` under ``KERAS_BACKEND=backend``; it prints one JSON line starting 'RESULT '."""
    module = BACKEND_MODULES[backend]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"backend {backend!r} is not installed (no module {module!r})")
    script = tmp_path / f"smoke_{backend}.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"{backend} script failed (rc={proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


SMOKE = """
import json
import numpy as np
import keras
import squadqa
from squadqa.layers import MASKED_LOGIT, MultiHeadSelfAttention
from squadqa.model import QAConfig, QATransformer, span_objective

assert keras.backend.backend() == "{backend}", keras.backend.backend()
keras.utils.set_random_seed(0)
result = {{"backend": keras.backend.backend()}}
config = QAConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32,
                  max_position_embeddings=32, position_embedding="{position}",
                  norm_first={norm_first}, num_key_value_heads={kv_heads})
result["config"] = {{k: config.to_dict()[k]
                    for k in ("position_embedding", "norm_first", "num_key_value_heads")}}
rng = np.random.default_rng(0)
batch = {{
    "input_ids": rng.integers(1, 40, size=(4, 10)).astype("int32"),
    "token_type_ids": np.zeros((4, 10), "int32"),
    "attention_mask": np.ones((4, 10), "int32"),
    "span_mask": np.ones((4, 10), "int32"),
}}
batch["attention_mask"][1, 6:] = 0
batch["attention_mask"][3, :] = 0  # an all-padding row
batch["span_mask"][:, 1:3] = 0
targets = {{"start_logits": np.array([0, 4, 5, 0], "int32"),
            "end_logits": np.array([0, 5, 7, 0], "int32")}}

model = QATransformer(config)
model.compile(optimizer=keras.optimizers.Adam(1e-2), **span_objective())
history = model.fit(batch, targets, batch_size=4, epochs=10, verbose=0)
losses = [float(x) for x in history.history["loss"]]
result["losses"] = losses

out = model(batch, training=False)
start = keras.ops.convert_to_numpy(out["start_logits"])
result["finite"] = bool(np.isfinite(start).all())
result["dtype"] = keras.backend.standardize_dtype(out["start_logits"].dtype)
result["masked_ok"] = bool((start[:, 1:3] == MASKED_LOGIT).all())

# dynamic padding: other lengths work, and appended padding keeps real positions unchanged,
# for every position scheme (fresh one-layer models, inference only)
short = {{k: v[:, :7] for k, v in batch.items()}}
padded = {{k: np.pad(v, ((0, 0), (0, 5))) for k, v in short.items()}}
padded["input_ids"][:, 7:] = 3
real = short["attention_mask"] == 1
result["padding_diff"] = {{}}
for scheme in ("learned", "sinusoidal", "rotary"):
    small = QATransformer(QAConfig(**{{**config.to_dict(), "num_layers": 1,
                                      "position_embedding": scheme}}))
    s_short = keras.ops.convert_to_numpy(small(short)["start_logits"])
    s_padded = keras.ops.convert_to_numpy(small(padded)["start_logits"])
    result["padding_diff"][scheme] = float(np.abs(s_padded[:, :7][real] - s_short[real]).max())

model.save("model.keras")
loaded = keras.saving.load_model("model.keras", safe_mode=True)
start_loaded = keras.ops.convert_to_numpy(loaded(batch)["start_logits"])
result["save_load_max_diff"] = float(np.abs(start_loaded - start).max())
model.save_weights("ckpt.weights.h5")
fresh = QATransformer(config)
fresh.build()
fresh.load_weights("ckpt.weights.h5")
start_fresh = keras.ops.convert_to_numpy(fresh(batch)["start_logits"])
result["weights_max_diff"] = float(np.abs(start_fresh - start).max())

# fused (keras.ops.dot_product_attention) vs explicit softmax attention on this backend, with
# grouped key/value heads (2 for 4 query heads); each path also against 4-head attention whose
# K/V projections are the grouped ones with each head's columns repeated for its 2 query heads
x = rng.normal(size=(3, 6, 16)).astype("float32")
mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [0] * 6], "int32")


def repeated(a):  # [..., 2 heads * 4] -> [..., 4 heads * 4]: heads 0, 1 use K/V head 0
    return np.repeat(a.reshape(*a.shape[:-1], 2, 4), 2, axis=-2).reshape(*a.shape[:-1], 16)


outputs = {{}}
result["grouped_vs_repeated"] = 0.0
for impl in ("fused", "explicit"):
    settings = dict(attention_dropout=0.0, rotary={rotary}, initializer_range=0.5,
                    attention_impl=impl)
    layer = MultiHeadSelfAttention(16, 4, num_key_value_heads=2, **settings)
    layer.build()
    if impl == "explicit":
        layer.set_weights(weights)
    weights = layer.get_weights()
    outputs[impl] = keras.ops.convert_to_numpy(layer(x, mask))
    plain = MultiHeadSelfAttention(16, 4, num_key_value_heads=4, **settings)
    plain.build()
    qk, qb, kk, kb, vk, vb, ok, ob = weights
    plain.set_weights([qk, qb, repeated(kk), repeated(kb), repeated(vk), repeated(vb), ok, ob])
    diff = np.abs(keras.ops.convert_to_numpy(plain(x, mask)) - outputs[impl]).max()
    result["grouped_vs_repeated"] = max(result["grouped_vs_repeated"], float(diff))
result["fused_vs_explicit"] = float(np.abs(outputs["fused"] - outputs["explicit"]).max())
result["attention_finite"] = bool(np.isfinite(outputs["fused"]).all())
print("RESULT " + json.dumps(result))
"""


# One interpreter per backend is the expensive part (imports, XLA / graph compilation), so each
# backend trains one configuration; BERT's (learned, post-LN) on jax, the other end (rotary,
# pre-LN, 2 key/value heads for 4 query heads) on tensorflow.
CASES = [
    ("jax", "learned", False, 0),
    ("tensorflow", "rotary", True, 2),
]


SANITY = """
import json
from squadqa.checks import overfit_check

# Fixed shapes (one padded length, one batch) so jax / tensorflow compile each step once.
result = overfit_check(n_examples=8, epochs={epochs}, runs_dir="runs", overrides=[
    "train.length_multiple=256", "train.batch_size=16", "train.eval_batch_size=16",
])
print("RESULT " + json.dumps(result))
"""


def smoke(backend: str) -> str:
    """SMOKE with the configuration that `backend` trains (its case in CASES)."""
    _, position, norm_first, kv_heads = next(case for case in CASES if case[0] == backend)
    return SMOKE.format(
        backend=backend,
        position=position,
        norm_first=norm_first,
        rotary=position == "rotary",
        kv_heads=kv_heads,
    )


# The checks run on each backend, in this order (the sanity run first, in a fresh interpreter as
# `squadqa sanity` would be; SMOKE seeds everything itself): the scripts' codes by name, and the
# test that reads each one.
PARTS: dict[str, Callable[[str], str]] = {
    "sanity": lambda backend: SANITY.format(epochs=30),
    "smoke": smoke,
}
TEST_PART = {"test_sanity_overfit_on_backend": "sanity", "test_backend_smoke": "smoke"}

# Runs the parts of parts.json in one interpreter, each as NAME/NAME.py in a folder of its own
# with its output captured; prints {name: its RESULT, or {"error": its output's tail and
# traceback}}.
RUNNER = """
import contextlib, io, json, os, traceback

results = {}
for name, code in json.load(open("parts.json")).items():
    os.mkdir(name)
    os.chdir(name)
    with open(name + ".py", "w") as file:
        file.write(code)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, os.path.abspath(name + ".py"), "exec"), {"__name__": "__main__"})
        lines = [line for line in out.getvalue().splitlines() if line.startswith("RESULT ")]
        results[name] = json.loads(lines[-1][len("RESULT "):])
    except BaseException:
        results[name] = {"error": out.getvalue()[-3000:] + traceback.format_exc()}
    os.chdir("..")
print("RESULT " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def on_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], dict]:
    """`(backend, part)` -> the RESULT of that part run under ``KERAS_BACKEND=backend``.

    The first request for a backend runs, in one subprocess, every part that this session's
    selected tests of this module read on it; a part that raised fails only its own tests, with
    its traceback (a subprocess that failed as a whole, all of them)."""
    done: dict[str, dict[str, dict]] = {}

    def result(backend: str, part: str) -> dict:
        if backend not in done:
            wanted = {part} | {
                TEST_PART[item.originalname]
                for item in request.session.items
                if getattr(item, "module", None) is request.module
                and item.originalname in TEST_PART
                and item.callspec.params["backend"] == backend
            }
            parts = {name: code(backend) for name, code in PARTS.items() if name in wanted}
            tmp_path = tmp_path_factory.mktemp(f"on-{backend}")
            (tmp_path / "parts.json").write_text(json.dumps(parts))
            try:
                done[backend] = run_backend_script(backend, RUNNER, tmp_path, timeout=1200)
            except (AssertionError, subprocess.TimeoutExpired) as err:  # once for all its tests
                done[backend] = {name: {"error": str(err)} for name in parts}
        found = done[backend][part]
        if "error" in found:
            raise AssertionError(f"{part} on {backend} failed:\n{found['error']}")
        return found

    return result


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "position", "norm_first", "kv_heads"), CASES)
def test_backend_smoke(
    on_backend: Callable[[str, str], dict],
    backend: str,
    position: str,
    norm_first: bool,
    kv_heads: int,
) -> None:
    result = on_backend(backend, "smoke")
    assert result["backend"] == backend
    assert result["config"] == {
        "position_embedding": position,
        "norm_first": norm_first,
        "num_key_value_heads": kv_heads,
    }
    losses = result["losses"]
    assert all(map(lambda v: v == v, losses)), losses  # no NaN
    assert losses[-1] < losses[0] * 0.8, losses
    assert sum(b < a for a, b in itertools.pairwise(losses)) >= len(losses) - 3, losses
    assert result["finite"] and result["attention_finite"]
    assert result["dtype"] == "float32"
    assert result["masked_ok"]
    assert max(result["padding_diff"].values()) < 1e-4, result["padding_diff"]
    assert result["save_load_max_diff"] == 0.0
    assert result["weights_max_diff"] == 0.0
    assert result["fused_vs_explicit"] < 1e-5
    assert result["grouped_vs_repeated"] < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_sanity_overfit_on_backend(on_backend: Callable[[str, str], dict], backend: str) -> None:
    """`squadqa sanity`, small, through the real training loop on each non-default backend."""
    result = on_backend(backend, "sanity")
    assert result["passed"], result["message"]
