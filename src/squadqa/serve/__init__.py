"""HTTP API and a one-page web UI for asking a trained run questions (`squadqa serve`)."""

from squadqa.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
