"""`Limits`: what the server accepts. Kept apart from the app (no FastAPI import), so that
`squadqa serve --help` reads `--max-queue`'s default and help from here without the extra."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from squadqa.settings import setting

# JSON's most bytes per character: one outside the BMP (an emoji) sent with Python's default
# `json.dumps` (ensure_ascii) is a surrogate pair of escapes, `\ud83d\ude00`.
JSON_BYTES_PER_CHAR = 12
# Beyond the texts: keys, brackets, top_k and whitespace (4 KiB), and per text its quotes, comma
# and some indentation (16 bytes), so pretty-printed JSON fits as well.
JSON_FIXED_BYTES = 4096
JSON_BYTES_PER_TEXT = 16


@dataclass(frozen=True)
class Limits:
    """Request limits of the API, and how many requests it takes on at once (`max_queue`).

    `max_body_bytes` defaults to the longest valid request, JSON-escaped (`longest_body_bytes`),
    so the body limit never refuses a request that every other limit accepts.
    """

    max_body_bytes: int | None = setting(
        None, "largest request body read; None: the longest valid request, JSON-escaped"
    )
    max_context_chars: int = setting(20_000, "longest context, in characters")
    max_questions: int = setting(16, "most questions in one request")
    max_question_chars: int = setting(1_000, "longest question, in characters")
    max_top_k: int = setting(20, "most ranked candidates per question")
    max_passages: int = setting(
        20, "most passages one /v1/ask request retrieves and reads (its cost grows with them)"
    )
    max_explain_steps: int = setting(
        128, "most integrated-gradients steps of one /v1/explain request (its cost grows with them)"
    )
    body_timeout_s: float = setting(15.0, "seconds for the body to arrive; then 408")
    max_queue: int = setting(
        64,
        "requests accepted and not yet answered (in the model or waiting for it, with or "
        "without --batch-requests); one more is answered 503 server_busy at once",
    )

    def __post_init__(self) -> None:
        if self.max_body_bytes is None:  # frozen: set the derived default the dataclass way
            object.__setattr__(self, "max_body_bytes", self.longest_body_bytes())
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name}={value} must be positive")

    def longest_body_bytes(self) -> int:
        """Bytes of the longest valid request: every text at its limit, every character JSON's
        worst case, plus room for the keys, top_k and whitespace."""
        texts = 1 + self.max_questions
        chars = self.max_context_chars + self.max_questions * self.max_question_chars
        return JSON_BYTES_PER_CHAR * chars + JSON_BYTES_PER_TEXT * texts + JSON_FIXED_BYTES
