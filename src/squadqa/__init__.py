"""squadqa: extractive question answering on SQuAD with a from-scratch Keras 3 Transformer."""

import os
import sys

# Keras picks its backend at import time; torch is this project's default.
os.environ.setdefault("KERAS_BACKEND", "torch")
# TensorFlow's C++ start-up INFO lines (CPU feature guard, oneDNN, absl) on every command that
# imports Keras where tensorflow is installed; its warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"


def import_backend_only() -> bool:
    """Keep a serving process from importing JAX when it runs another backend.

    Keras 3.15's `import keras` imports JAX whenever it is installed (its Orbax checkpoint
    callback probes `jax.monitoring`), about 116 MB of resident memory in a torch server
    (docs/results.md). Called by `answer`, `predict` and `serve` before anything imports Keras;
    it marks `jax` unimportable for this process only, and does nothing once Keras is loaded or
    when the backend is JAX. Returns whether it did so.
    """
    if os.environ["KERAS_BACKEND"] == "jax" or "keras" in sys.modules or "jax" in sys.modules:
        return False
    sys.modules["jax"] = None  # type: ignore[assignment]  # `import jax` now raises ImportError
    return True
