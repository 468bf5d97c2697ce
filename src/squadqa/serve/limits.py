"""`Limits`: what the server accepts. Kept apart from the app (no FastAPI import), so that
`squadqa serve --help` reads `--max-queue`'s default and help from here without the extra."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from squadqa.settings import setting


@dataclass(frozen=True)
class Limits:
    """Request limits of the API, and how many requests it takes on at once (`max_queue`).

    The body limit leaves room for the longest valid request, JSON-escaped.
    """

    max_body_bytes: int = setting(256 * 1024, "largest request body read")
    max_context_chars: int = setting(20_000, "longest context, in characters")
    max_questions: int = setting(16, "most questions in one request")
    max_question_chars: int = setting(1_000, "longest question, in characters")
    max_top_k: int = setting(20, "most ranked candidates per question")
    body_timeout_s: float = setting(15.0, "seconds for the body to arrive; then 408")
    max_queue: int = setting(
        64,
        "requests accepted and not yet answered (in the model or waiting for it, with or "
        "without --batch-requests); one more is answered 503 server_busy at once",
    )

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name}={value} must be positive")
