"""squadqa: extractive question answering on SQuAD with a from-scratch Keras 3 Transformer."""

import os

# Keras picks its backend at import time; torch is this project's default.
os.environ.setdefault("KERAS_BACKEND", "torch")

__version__ = "0.1.0"
