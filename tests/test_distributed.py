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
from pathlib import Path

import numpy as np
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
        def set_epoch(self, epoch, start=0):
            super().set_epoch(epoch, start)
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


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The module's one vocabulary, and one JAX persistent compilation cache for its subprocesses.

    Compiling is most of these tests' time (each subprocess compiles some 75 programs, ~1 s each
    on CPU), and their runs repeat each other's programs: a killed run's resumed attempt, the
    one-device run of several tests. The cache only skips compiling: an executable is found by
    its program (and devices), so every run computes what a fresh compile would."""
    root = tmp_path_factory.mktemp("distributed")
    return {"tokenizer": fixed_tokenizer(root), "jax_cache": root / "jax-cache"}


def equal_training(shared: dict, epochs: int) -> list[str]:
    """A tiny training config whose runs can be compared step for step: one shared vocabulary,
    no dropout, batches of 4 (an even split over 2 devices or processes). The learning-rate
    schedule is laid out over 2 epochs whatever `epochs` is, so 1- and 2-epoch runs train with
    the same programs and compile them once for the module (`shared`)."""
    return [
        *TINY_TRAINING,
        "tokenizer.kind=vocab",
        f"tokenizer.path={shared['tokenizer']}",
        "data.max_train_samples=96",
        "train.batch_size=4",
        f"train.epochs={epochs}",
        "train.decay_epochs=2",
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
    ]


def jax_cache_env(shared: dict) -> dict[str, str]:
    """Environment of a JAX subprocess that uses the module's compilation cache for every
    program (JAX caches only those that took a second or more to compile by default)."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(shared["jax_cache"]),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def run_on_two_devices(tmp_path: Path, shared: dict, script: str, *args) -> dict:
    """`script` in a JAX subprocess with two virtual CPU devices; its `RESULT {json}` line."""
    env = {
        **os.environ,
        **jax_cache_env(shared),
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


@pytest.fixture(scope="module")
def one_and_two_devices(
    tmp_path_factory: pytest.TempPathFactory, shared: dict
) -> tuple[dict, list[str], Path]:
    """One epoch on one device, then on two, in one subprocess: its results, the overrides and
    the runs folder. The one-device run is also the reference of the two-process test."""
    tmp_path = tmp_path_factory.mktemp("one-and-two-devices")
    overrides = equal_training(shared, epochs=1)
    runs = tmp_path / "runs"
    result = run_on_two_devices(tmp_path, shared, SCRIPT, json.dumps(overrides), runs, RUNS)
    return result, overrides, runs


def test_two_device_data_parallel_equals_one_device(one_and_two_devices):
    result, _, runs = one_and_two_devices
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
    assert sorted(os.listdir(runs / "none0")) == sorted(os.listdir(runs / "data_parallel1"))


def test_data_parallel_on_torch_stops_at_start_naming_jax():
    from squadqa.config import load_config
    from squadqa.distributed import set_distribution

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


def test_two_device_pretraining_killed_and_resumed_equals_one_device(tmp_path, shared):
    tokenizer = shared["tokenizer"]
    overrides = [
        *TINY_TRAINING,
        "tokenizer.kind=vocab",
        f"tokenizer.path={tokenizer}",
        "data.max_train_samples=0",
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
        "train.save_every_steps=3",
        "train.batch_size=16",
        "train.epochs=1",
    ]
    root = tmp_path / "runs"
    result = run_on_two_devices(
        tmp_path, shared, PRETRAIN_SCRIPT, json.dumps(overrides), root, json.dumps(tokenizer)
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


TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    from squadqa.distributed import Replicas, broadcast_text

    exec(sys.argv[4])  # SCRIPT: trains and prints its RESULT line
    replicas = Replicas(2, jax.process_index(), jax.process_count())
    text = broadcast_text(f"process {jax.process_index()}: ünïcode", replicas)
    print("BROADCAST " + json.dumps(text))
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_equal_one_device(tmp_path, one_and_two_devices):
    """Two JAX processes on 127.0.0.1 (jax.distributed, CPU collectives, one device each) train
    with the losses of one process on one device; only process 0 writes anything."""
    result, overrides, runs = one_and_two_devices
    one = result["none0"]
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "KERAS_BACKEND": "jax",
            "SQUADQA_CACHE": str(tmp_path / f"cache{index}"),
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
        }
        env.pop("XLA_FLAGS", None)
        args = [json.dumps(overrides), str(tmp_path / f"root{index}"), "data_parallel", SCRIPT]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", TWO_PROCESS_SCRIPT, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=900)
            assert proc.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for proc in procs:
            proc.kill()
    results = [json.loads(out.split("RESULT ", 1)[1].splitlines()[0]) for out in outputs]
    texts = [json.loads(out.split("BROADCAST ", 1)[1].splitlines()[0]) for out in outputs]
    assert texts == ["process 0: ünïcode"] * 2
    first, second = results[0]["data_parallel0"], results[1]["data_parallel0"]
    assert first["status"]["replicas"] == 2 and first["status"]["processes"] == 2
    assert first["sizes"] == one["sizes"]  # batches of 4 split 2 ways: nothing is cut
    assert len(one["steps"]) >= 20
    assert first["steps"] == pytest.approx(one["steps"], rel=1e-5)
    assert second["steps"] == pytest.approx(first["steps"], rel=1e-6)
    assert first["status"]["best_dev_f1"] == pytest.approx(one["status"]["best_dev_f1"], abs=1e-6)
    assert sorted(os.listdir(tmp_path / "root0" / "data_parallel0")) == sorted(
        os.listdir(runs / "none0")
    )
    # Process 1 wrote nothing: no run directory, no feature cache.
    assert not (tmp_path / "root1").exists()
    assert not (tmp_path / "cache1").exists() or not any((tmp_path / "cache1").rglob("*.npz"))


TRAIN_RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    import squadqa.train as T
    from squadqa.config import load_config
    from squadqa.data import load_squad
    from squadqa.features import build_features, pad_batch
    from squadqa.tokenization import load_tokenizer

    overrides, root = json.loads(sys.argv[1]), sys.argv[2]

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, step, logs=None):
            if self.epoch == 1 and step == 2:
                raise KeyboardInterrupt("killed in epoch 2")

    out = {"one": T.train(load_config(None, overrides + ["name=one"]), root)}
    two = load_config(None, overrides + ["name=two", "train.distribution=data_parallel"])
    try:
        T.train(two, root, extra_callbacks=[Kill()])
    except KeyboardInterrupt:
        out["killed"] = json.load(open(f"{root}/two/status.json"))
    out["two"] = T.train(two, root, resume=True)

    # The data-parallel run's model.keras on one device gives the one-device run's logits.
    keras.distribution.set_distribution(None)
    config = load_config(f"{root}/two/config.toml")
    tokenizer = load_tokenizer(f"{root}/two/tokenizer.json")
    examples = load_squad(config.data.dev, max_samples=8).examples
    features = build_features(examples, tokenizer, config.features)
    batch = pad_batch(features, list(range(len(features))), tokenizer.pad_id, multiple=32)
    logits = [
        np.asarray(keras.saving.load_model(f"{root}/{name}/model.keras").predict_on_batch(batch)
                   ["start_logits"]).tolist()
        for name in ("one", "two")
    ]
    out["logits"] = logits
    print("RESULT " + json.dumps(out))
    """
)


def test_two_device_training_killed_and_resumed_equals_one_device(tmp_path, shared):
    """`squadqa train` on two devices, killed in its second epoch and continued with --resume
    from its epoch-1 checkpoint, ends where the uninterrupted one-device run ends; its model
    loads on one device."""
    overrides = equal_training(shared, epochs=2)
    root = tmp_path / "runs"
    result = run_on_two_devices(tmp_path, shared, TRAIN_RESUME_SCRIPT, json.dumps(overrides), root)
    assert result["killed"]["status"] == "crashed" and result["killed"]["epochs_run"] == 1
    one, two = result["one"], result["two"]
    assert two["status"] == "finished" and two["replicas"] == 2 and two["epochs_run"] == 2

    def lines(name: str) -> list[dict]:
        return [
            json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()
        ]

    assert len(lines("two")) == 2  # the killed attempt's partial epoch left no line
    for a, b in zip(lines("one"), lines("two"), strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["dev_loss"] == pytest.approx(a["dev_loss"], rel=1e-5)
        assert b["dev_f1"] == pytest.approx(a["dev_f1"], abs=1e-6)
    assert two["best_dev_f1"] == pytest.approx(one["best_dev_f1"], abs=1e-6)
    logits_one, logits_two = (np.asarray(x) for x in result["logits"])
    assert np.abs(logits_one - logits_two).max() < 1e-4
