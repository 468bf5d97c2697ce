"""Data-parallel training (`train.distribution = "data_parallel"`, JAX) equals one device.

Runs in a subprocess with two virtual CPU devices (`XLA_FLAGS`), JAX backend, fp32, dropout 0:
every training step's loss of the 2-device run equals the 1-device run's within 1e-5 relative,
and so do the dev scores; other backends refuse the setting at start, naming the backend to use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import TINY_TRAINING

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import squadqa.train as T
    from squadqa.config import load_config

    sizes = []

    class Recorded(T.TrainBatches):
        def set_epoch(self, epoch):
            super().set_epoch(epoch)
            sizes.append([len(b) for b in self.order])

    class Means(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.means = []
        def on_train_batch_end(self, batch, logs=None):
            self.means.append(float(logs["loss"]))

    T.TrainBatches = Recorded
    overrides, root = json.loads(sys.argv[1]), sys.argv[2]
    out = {}
    for dist in sys.argv[3].split(","):
        sizes.clear()
        means = Means()
        name = f"name={dist}{len(out)}"
        config = load_config(None, overrides + [f"train.distribution={dist}", name])
        status = T.train(config, root, extra_callbacks=[means])
        # Keras logs the batch-size-weighted running mean of the epoch: undo it per step.
        steps, seen, total = [], 0, 0.0
        for mean, size in zip(means.means, sizes[-1]):
            steps.append((mean * (seen + size) - total) / size)
            seen, total = seen + size, mean * (seen + size)
        out[f"{dist}{len(out)}"] = {"steps": steps, "sizes": sizes[-1], "status": status}
    print("RESULT " + json.dumps(out))
    """
)


RUNS = "none,data_parallel"


def fixed_tokenizer(path) -> str:
    """One vocabulary for both runs (WordPiece training breaks ties in hash order)."""
    from squadqa.data import load_squad
    from squadqa.tokenization import train_wordpiece, training_texts

    examples = load_squad("sample", max_samples=96).examples
    return str(train_wordpiece(training_texts(examples), 1500).save(path))


def run_on_two_devices(tmp_path, script: str, *args) -> dict:
    """`script` in a JAX subprocess with two virtual CPU devices; its `RESULT {json}` line."""
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "SQUADQA_CACHE": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def test_two_device_data_parallel_equals_one_device(tmp_path):
    overrides = [
        *TINY_TRAINING,
        "tokenizer.kind=vocab",
        f"tokenizer.path={fixed_tokenizer(tmp_path)}",
        "data.max_train_samples=96",
        "train.batch_size=4",
        "train.epochs=1",
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
    ]
    result = run_on_two_devices(tmp_path, SCRIPT, json.dumps(overrides), tmp_path / "runs", RUNS)
    one, two = result["none0"], result["data_parallel1"]
    assert one["status"]["replicas"] == 1 and two["status"]["replicas"] == 2
    assert len(one["steps"]) >= 20
    compared = 0
    pairs = zip(one["steps"], two["steps"], one["sizes"], two["sizes"], strict=True)
    for a, b, size_a, size_b in pairs:
        if size_a == size_b:  # the one short batch may have lost a row to the 2-way split
            assert b == pytest.approx(a, rel=1e-5), (one["steps"], two["steps"])
            compared += 1
    assert compared >= len(one["steps"]) - 1
    if one["sizes"] == two["sizes"]:  # nothing cut: the whole run is the same
        assert two["status"]["best_dev_f1"] == pytest.approx(one["status"]["best_dev_f1"], abs=1e-6)
    assert sorted(os.listdir(tmp_path / "runs" / "none0")) == sorted(
        os.listdir(tmp_path / "runs" / "data_parallel1")
    )


def test_data_parallel_on_torch_stops_at_start_naming_jax():
    from squadqa.config import load_config
    from squadqa.train import set_distribution

    config = load_config(None, ["train.distribution=data_parallel"])
    if os.environ.get("KERAS_BACKEND", "torch") == "jax":
        pytest.skip("this process runs JAX")
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        set_distribution(config.train)


PRETRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    from squadqa import objectives as obj
    from squadqa.config import load_config
    from squadqa.data import load_squad
    from squadqa.pretrain import pretrain
    from squadqa.tokenization import load_tokenizer

    overrides, root = json.loads(sys.argv[1]), sys.argv[2]
    # A window length that makes an even number of windows, so the 2-way split cuts nothing
    # and both runs see the same rows in every step.
    contexts = list(dict.fromkeys(e.context for e in load_squad("sample").examples))
    tokenizer = load_tokenizer(json.loads(sys.argv[3]))
    counts = {m: len(obj.build_windows(contexts, tokenizer, m)) for m in range(64, 129, 8)}
    length = next(m for m, n in counts.items() if n % 2 == 0)

    def config(*extra):
        return load_config(None, overrides + [f"pretrain.max_seq_length={length}", *extra])

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == 5:
                raise KeyboardInterrupt("killed at step 5")

    out = {"windows": counts[length], "max_seq_length": length}
    out["one"] = pretrain(config("name=one", "train.distribution=none"), root)
    two = config("name=two", "train.distribution=data_parallel")
    try:
        pretrain(two, root, extra_callbacks=[Kill()])
    except KeyboardInterrupt:
        out["killed"] = json.load(open(f"{root}/two/status.json"))
    out["two"] = pretrain(two, root, resume=True)
    print("RESULT " + json.dumps(out))
    """
)


def test_two_device_pretraining_killed_and_resumed_equals_one_device(tmp_path):
    tokenizer = fixed_tokenizer(tmp_path)
    overrides = [
        *TINY_TRAINING,
        "tokenizer.kind=vocab",
        f"tokenizer.path={tokenizer}",
        "data.max_train_samples=0",
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
        "pretrain.save_every_steps=3",
        "train.batch_size=16",
        "train.epochs=1",
    ]
    root = tmp_path / "runs"
    result = run_on_two_devices(
        tmp_path, PRETRAIN_SCRIPT, json.dumps(overrides), root, json.dumps(tokenizer)
    )
    assert result["one"]["replicas"] == 1 and result["two"]["replicas"] == 2

    def losses(name: str) -> list[float]:
        lines = (root / name / "steps.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines]

    # The 2-device run was killed at step 5 and resumed from its step-3 checkpoint: its steps
    # 1-3 come from the first attempt, the rest from the resumed one; all equal the 1-device run.
    assert result["killed"]["status"] == "crashed"
    assert result["two"]["status"] == "finished"
    one, two = losses("one"), losses("two")
    assert len(one) == result["one"]["steps_per_epoch"] >= 8
    assert two == pytest.approx(one, rel=1e-5)
