"""HTTP API and a one-page web UI for asking a trained run questions (`squadqa serve`)."""

from __future__ import annotations

from typing import Any

from squadqa.serve.limits import Limits

__all__ = ["Limits", "create_app"]


def __getattr__(name: str) -> Any:
    """`create_app` on first use: `squadqa.serve.limits` must import without FastAPI."""
    if name == "create_app":
        from squadqa.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
