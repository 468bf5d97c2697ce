"""FastAPI app: `POST /v1/answer`, `POST /v1/explain`, `POST /v1/ask` (a server started with an
index), `GET /healthz`, the web page at `/`, OpenAPI at `/docs`.

Every bad request gets a JSON error naming what is wrong, never a 500 or a hang:

* 400 for a request that is not HTTP at all (a garbage request line, `Content-Length: abc`),
  answered by uvicorn before the app sees it (`JsonBadRequestProtocol`);
* 413 when the body is over `Limits.max_body_bytes`: checked on `Content-Length` before reading,
  and again on the bytes actually received (a missing or dishonest header changes nothing), by
  `BodyLimitMiddleware`, which never holds more than the limit in memory;
* 408 when the body does not arrive within `Limits.body_timeout_s`;
* 400 for malformed JSON, 415 for a body that is not declared JSON;
* 422 for a missing, blank (nothing visible: `is_blank`) or non-string field, too many questions,
  a context or question over its length limit, or an unknown field; the message names the field;
* 501 for `/v1/explain` on a server without the Keras model (`--runtime onnx`), and for
  `/v1/ask` on a server started without `--index`;
* 503 at once when `Limits.max_queue` requests are already in flight (`Admission`), answers,
  explanations and asks counted together.

The model runs in Starlette's thread pool (`priority.in_model_thread`), at a lower CPU priority
than the event loop, so the event loop keeps serving health checks and refusing overload at once
while it computes; `QAPredictor` serialises calls into the Keras model with its own lock. Without
`--batch-requests`, accepted requests also take their turn on the event loop (`model_turns`)
before entering a worker thread: one at a time, as the model answers them, instead of up to 32
threads tokenising at once and holding the GIL the event loop needs to refuse the next request.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import typing
import unicodedata
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from squadqa.explain import BASELINES, METHODS, STEPS, NothingToExplain, quadrature
from squadqa.inference import ANSWER_FIELDS_HELP, AnswerDict
from squadqa.inference import Span as SpanDict
from squadqa.retrieval.ask import ask
from squadqa.retrieval.index import RETRIEVERS
from squadqa.serve.limits import Limits
from squadqa.serve.priority import in_model_thread, lower_other_threads

if TYPE_CHECKING:
    from squadqa.retrieval.index import Index

ANSWER_PATH = "/v1/answer"
EXPLAIN_PATH = "/v1/explain"
ASK_PATH = "/v1/ask"


class Predictor(Protocol):
    """What the app needs of `squadqa.inference.QAPredictor` (a fake will do in tests)."""

    name: str

    def answer(self, context: str, questions: list[str], top_k: int = 3) -> list[AnswerDict]: ...


class Explaining(Protocol):
    """What the app needs of `squadqa.explain.Explainer`."""

    def explain(
        self, context: str, question: str, steps: int, baseline: str, method: str
    ) -> dict[str, Any]: ...


def default_explainer(predictor: Predictor) -> Explaining | None:
    """An `Explainer` of the predictor's model when it is the Keras one (gradients and attention
    come from its layers), else None (ONNX Runtime, a test's fake): then `/v1/explain` is 501."""
    if not hasattr(getattr(predictor, "model", None), "encoder_layers"):
        return None
    from squadqa.explain import Explainer

    return Explainer(predictor)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors


def error_body(code: str, message: str, errors: list[dict[str, str]] | None = None) -> dict:
    body: dict[str, Any] = {"error": code, "message": message}
    if errors:
        body["errors"] = errors
    return body


def _error(status: int, code: str, message: str, errors: list[dict[str, str]] | None = None):
    return JSONResponse(error_body(code, message, errors), status_code=status)


class ApiError(Exception):
    """A request problem found after parsing (limits): rendered as a JSON error."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


def _field_name(loc: tuple[Any, ...]) -> str:
    """`("body", "questions", 2)` → `questions[2]`; the body itself → `body`."""
    parts = [p for p in loc if p != "body"]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _message(error: dict[str, Any], known: str) -> str:
    """The message of one pydantic error; `known`: the request's fields, for an unknown one."""
    kind, msg = error.get("type", ""), str(error.get("msg", "invalid"))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return f"is not a known field (use {known})"
    if kind.startswith("string_type"):
        return "must be a string"
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


class ErrorResponse(BaseModel):
    error: str = Field(description="machine-readable code, e.g. invalid_request")
    message: str = Field(description="what is wrong, naming the field")
    errors: list[dict[str, str]] | None = Field(
        default=None, description="one {field, message} per problem"
    )


class Admission:
    """Counts the requests to the model accepted and not yet answered, and refuses one more than
    `limit` with 503 at once: `gate` is an ASGI middleware around the answer route.

    It lives in the app, not in the predictor: a request must count from the moment the app
    has it, while it still waits for one of the thread pool's workers (anyio's 40), which only
    the app sees; and so every `Predictor` (batched, serialised on a lock, or a test's fake)
    gets the same bound and `/healthz` the same count without implementing either. The gate
    runs once the body is read and before FastAPI parses it, so a refusal costs no more than
    uvicorn's own handling of a request (a full server answers even an invalid request 503); it
    only ever runs on the event loop's thread, so the count needs no lock.
    """

    RETRY_AFTER_S = 1

    def __init__(self, limit: int) -> None:
        self.limit, self.depth = limit, 0

    def gate(self, app: ASGIApp, method: str, path: str) -> ASGIApp:
        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or (scope["method"], scope["path"]) != (method, path):
                await app(scope, receive, send)
            elif self.depth >= self.limit:
                message = (
                    f"{self.limit} requests are already waiting for the model or in it; retry "
                    f"after {self.RETRY_AFTER_S} s"
                )
                response = _error(503, "server_busy", message)
                response.headers["retry-after"] = str(self.RETRY_AFTER_S)
                await response(scope, receive, send)
            else:
                self.depth += 1
                try:
                    await app(scope, receive, send)
                finally:
                    self.depth -= 1

        return gated


# --------------------------------------------------------------------------- body limit


class BodyLimitMiddleware:
    """Reads each HTTP request body, up to `max_bytes` and within `timeout_s`, then replays it.

    Pure ASGI (not `BaseHTTPMiddleware`), so nothing upstream can read past the limit: the body is
    counted as it arrives, a `Content-Length` over the limit is refused before reading any of it,
    and a body that stalls is answered with 408 instead of holding a worker forever.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            try:
                length = int(declared)
                if length < 0:
                    raise ValueError
            except ValueError:
                await self._reply(
                    scope, receive, send, 400, "bad_request", "invalid Content-Length"
                )
                return
            if length > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client is gone: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await self._too_large(scope, receive, send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            message = f"request body not received within {self.timeout_s:g} s"
            await self._reply(scope, receive, send, 408, "request_timeout", message)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than {self.max_bytes} bytes"
        await self._reply(scope, receive, send, 413, "payload_too_large", message)

    @staticmethod
    async def _reply(
        scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
    ) -> None:
        # Connection: close, since the rest of an unread body would otherwise be parsed as the
        # next request on a kept-alive connection.
        response = _error(status, code, message)
        response.headers["connection"] = "close"
        await response(scope, receive, send)


# --------------------------------------------------------------------------- schemas


_SURROGATE = re.compile("[\ud800-\udfff]")
# What shows nothing: separators (Zs, Zl, Zp: spaces, line breaks), controls (Cc: tab, newline,
# NUL) and format characters (Cf: zero-width space, joiners, BOM, direction marks).
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def is_blank(text: str) -> bool:
    """No visible character: the one definition of blank, for context and every question."""
    return all(unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in text)


def _non_blank(value: str) -> str:
    """A usable text: not blank, and valid Unicode (JSON's `"\\ud800"` escapes can smuggle a lone
    UTF-16 surrogate into a Python str, which no tokenizer accepts)."""
    if is_blank(value):
        raise ValueError(
            "must not be empty or hold only whitespace and invisible characters (control or "
            "format characters such as U+200B)"
        )
    bad = _SURROGATE.search(value)
    if bad:
        raise ValueError(
            f"holds a lone UTF-16 surrogate (\\u{ord(bad.group()):04x}) at character "
            f"{bad.start()}: not valid Unicode text"
        )
    return value


# The request example of both routes' schemas.
_EXAMPLE = {
    "context": "The Eiffel Tower is on the Champ de Mars in Paris. It is named after the engineer "
    "Gustave Eiffel.",
    "question": "Who is the tower named after?",
}


class AnswerRequest(BaseModel):
    """A context and one question (`question`) or several (`questions`)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE,
                    "top_k": 3,
                }
            ]
        },
    )

    context: str = Field(description="the passage to answer from (plain text)")
    question: str | None = Field(default=None, description="one question")
    questions: list[str] | None = Field(default=None, description="several questions")
    top_k: int = Field(default=3, ge=1, description="how many ranked candidates to return")

    @field_validator("context", "question")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        return value if value is None else _non_blank(value)

    @field_validator("questions")
    @classmethod
    def _each_not_blank(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("must hold at least one question")
        for i, value in enumerate(values):
            try:
                _non_blank(value)
            except ValueError as err:
                raise ValueError(f"question {i} {err}") from None
        return values


def _response_model(typed: Any, name: str, **types: Any) -> type[BaseModel]:
    """The pydantic model of a `squadqa.inference` TypedDict, each field described by
    `ANSWER_FIELDS_HELP`; `types`: fields the API types otherwise (as models of their own)."""
    fields = {
        key: (types.get(key, hint), Field(description=ANSWER_FIELDS_HELP[key]))
        for key, hint in typing.get_type_hints(typed).items()
    }
    return create_model(name, **fields)


Span = _response_model(SpanDict, "Span")
AnswerOut = _response_model(AnswerDict, "AnswerOut", alternatives=list[Span])


class AnswerResponse(BaseModel):
    model: str = Field(description="name of the run directory serving the answers")
    answers: list[AnswerOut] = Field(description="one per question, in request order")


class ExplainRequest(BaseModel):
    """A context and one question: why the model answers it as it does."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE,
                    "steps": 32,
                }
            ]
        },
    )

    context: str = Field(description="the passage to answer from (plain text)")
    question: str = Field(description="the question whose answer is explained")
    steps: int = Field(default=STEPS, ge=1, description="points on the integrated-gradients path")
    baseline: Literal[BASELINES] = Field(  # type: ignore[valid-type]
        default=BASELINES[0],
        description="where the path starts for question and context tokens: the [PAD] "
        "embedding or zeros ([CLS] and [SEP] keep theirs)",
    )
    method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        default=METHODS[0], description="quadrature rule along the path"
    )

    @field_validator("context", "question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _non_blank(value)


class ExplainedSpan(BaseModel):
    text: str = Field(
        description="the span explained: the answer (or, for no answer, the best span)"
    )
    start: int
    end: int
    start_token: int = Field(description="window position of its first token")
    end_token: int = Field(description="window position of its last token")
    start_logit: float
    end_logit: float


class ExplainedWindow(BaseModel):
    index: int = Field(description="which window of the context the span comes from (0-based)")
    windows: int = Field(description="how many windows the context makes")
    context_start: int = Field(description="window position of the first context token")
    length: int = Field(description="tokens in the window: [CLS] question [SEP] context [SEP]")


class ExplainedToken(BaseModel):
    text: str = Field(description="the vocabulary piece")
    segment: Literal["cls", "question", "sep", "context"]
    start: int = Field(
        description="character offset in the context (context tokens) or in the "
        "question (question tokens); -1 for [CLS] and [SEP]"
    )
    end: int


class PathSettings(BaseModel):
    steps: int
    method: str
    baseline: str


class Attributions(BaseModel):
    start: list[float] = Field(description="per window token, for the start logit")
    end: list[float] = Field(description="per window token, for the end logit")


class Completeness(BaseModel):
    attribution_sum: float
    logit: float = Field(description="the logit at the input")
    baseline_logit: float = Field(description="the logit at the baseline")
    difference: float = Field(description="logit - baseline_logit, what the attributions share")
    gap: float = Field(description="attribution_sum - difference")
    relative_gap: float = Field(description="|gap| / |difference|")


class CompletenessPair(BaseModel):
    start: Completeness
    end: Completeness


class HeadsSummary(BaseModel):
    entropy: list[list[float]] = Field(description="[layer][head] mean row entropy, nats")
    cls: list[list[float]] = Field(description="[layer][head] mean share of attention to [CLS]")
    sep: list[list[float]] = Field(description="[layer][head] mean share to the [SEP]s")
    question: list[list[float]] = Field(description="[layer][head] mean share to the question")


class AttentionOut(BaseModel):
    layers: int
    heads: int
    question_rows: list[int] = Field(description="window positions of the question tokens")
    context_columns: list[int] = Field(description="window positions of the context tokens")
    answer_rows: list[int] = Field(description="window positions of the answer tokens")
    question_to_context: list[list[list[list[float]]]] = Field(
        description="[layer][head][question row][context column] attention probabilities"
    )
    answer_to_window: list[list[list[list[float]]]] = Field(
        description="[layer][head][answer row][window position] attention probabilities"
    )
    heads_summary: HeadsSummary


class ExplainResponse(BaseModel):
    model: str = Field(description="name of the run directory serving the answers")
    backend: str = Field(description="the Keras backend that computed the gradients")
    context: str
    question: str
    answer: AnswerOut = Field(description="what /v1/answer answers (top_k 3)")
    span: ExplainedSpan
    window: ExplainedWindow
    tokens: list[ExplainedToken] = Field(description="the window's tokens, in order")
    integrated_gradients: PathSettings
    attributions: Attributions
    completeness: CompletenessPair
    attention: AttentionOut


class AskRequest(BaseModel):
    """One question to the server's index: retrieve passages, read them, cite the best span."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"question": _EXAMPLE["question"], "passages": 5, "top_k": 3}]
        },
    )

    question: str = Field(description="the question, answered from the indexed documents")
    passages: int = Field(default=5, ge=1, description="passages retrieved and read (K)")
    retriever: Literal[RETRIEVERS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="bm25, dense or hybrid (reciprocal-rank fusion of the two); default hybrid, "
        "or bm25 on an index built with --no-dense (which has no vectors for the other two)",
    )
    top_k: int = Field(default=3, ge=1, description="how many ranked candidates to return")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _non_blank(value)


class Citation(BaseModel):
    text: str = Field(description="exactly the document's text[start:end]")
    score: float = Field(
        description="start logit + end logit minus the passage's null ([CLS]) score, so that it "
        "compares between passages"
    )
    probability: float = Field(
        description="softmax of the score over the candidates of every passage read, at the "
        "run's calibrated temperature (the answer's: through its isotonic map, when fitted)"
    )
    document: int = Field(description="the document's number in the index (-1: no answer)")
    source: str = Field(description="the file the document was read from")
    title: str = Field(description="the document's title")
    passage: int = Field(description="the passage's number in the index (-1: no answer)")
    passage_start: int = Field(description="character offset of the passage in the document")
    passage_end: int = Field(description="where the passage ends in the document (exclusive)")
    start: int = Field(description="character offset of the answer in the document")
    end: int = Field(description="where the answer ends in the document (exclusive)")


class Retrieved(BaseModel):
    passage: int
    score: float = Field(description="the retriever's score (for hybrid: the fused RRF score)")


class AskAnswer(Citation):
    question: str
    no_answer: bool = Field(
        description="no passage read gave a span (nothing retrieved, or SQuAD 2.0 nulls): text "
        'is then "" and document and passage -1'
    )
    retrieved: list[Retrieved] = Field(description="the passages read, best retrieved first")
    alternatives: list[Citation] = Field(
        description="top_k candidate spans over all passages read, by score, the answer first"
    )


class CitedPassage(BaseModel):
    passage: int
    document: int
    source: str
    title: str
    start: int = Field(description="character offset of the passage in its document")
    end: int
    text: str = Field(description="the passage: the document's text[start:end]")


class AskResponse(BaseModel):
    model: str = Field(description="name of the run directory reading the passages")
    answer: AskAnswer
    passages: list[CitedPassage] = Field(
        description="every passage the answer or an alternative cites, in passage order, so a "
        "client can show each span in its context"
    )


class IndexInfo(BaseModel):
    documents: int
    passages: int
    retrievers: list[str] = Field(description="the retrievers this index supports")
    default_retriever: str


# --------------------------------------------------------------------------- the app


def _check_context(context: str, limits: Limits) -> None:
    if len(context) > limits.max_context_chars:
        raise ApiError(
            422,
            "context",
            f"is {len(context)} characters; the limit is {limits.max_context_chars}",
        )


def _check_question(question: str, field: str, limits: Limits) -> None:
    if len(question) > limits.max_question_chars:
        raise ApiError(
            422,
            field,
            f"is {len(question)} characters; the limit is {limits.max_question_chars}",
        )


def _questions(request: AnswerRequest, limits: Limits) -> list[str]:
    """The question list, after the checks that depend on the configured limits."""
    if request.question is not None and request.questions is not None:
        raise ApiError(422, "question", "give either question or questions, not both")
    if request.question is None and request.questions is None:
        raise ApiError(422, "question", "is required (or questions: a list of questions)")
    _check_context(request.context, limits)
    questions = [request.question] if request.question is not None else request.questions or []
    field = "question" if request.question is not None else "questions"
    if len(questions) > limits.max_questions:
        raise ApiError(
            422,
            "questions",
            f"has {len(questions)} questions; the limit is {limits.max_questions} per request",
        )
    for i, question in enumerate(questions):
        _check_question(question, field if field == "question" else f"questions[{i}]", limits)
    _check_top_k(request.top_k, limits)
    return questions


def _check_top_k(top_k: int, limits: Limits) -> None:
    if top_k > limits.max_top_k:
        raise ApiError(422, "top_k", f"is {top_k}; the limit is {limits.max_top_k}")


def _check_ask(request: AskRequest, limits: Limits) -> None:
    """The checks of an ask request that depend on the limits (as `_questions`')."""
    _check_question(request.question, "question", limits)
    if request.passages > limits.max_passages:
        message = f"is {request.passages}; the limit is {limits.max_passages}"
        raise ApiError(422, "passages", message)
    _check_top_k(request.top_k, limits)


def index_info(index: Index) -> IndexInfo:
    """What `/healthz` and the page say of the server's index: its size and retrievers (BM25
    only when it was built with --no-dense)."""
    dense = index.has_vectors
    return IndexInfo(
        documents=len(index.collection.documents),
        passages=len(index),
        retrievers=list(RETRIEVERS) if dense else ["bm25"],
        default_retriever="hybrid" if dense else "bm25",
    )


def cited_passages(index: Index, answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The passages that an `ask` answer and its alternatives cite, with their text."""
    numbers = {c["passage"] for c in [answer, *answer["alternatives"]] if c["passage"] >= 0}
    cited = []
    for number in sorted(numbers):
        passage = index.collection.passages[number]
        document = index.collection.documents[passage.document]
        cited.append(
            {
                "passage": number,
                "document": passage.document,
                "source": document.source,
                "title": document.title,
                "start": passage.start,
                "end": passage.end,
                "text": index.collection.passage_text(number),
            }
        )
    return cited


def _check_explain(request: ExplainRequest, limits: Limits) -> None:
    """The checks of an explain request that depend on the limits (as `_questions`'), and the
    steps the quadrature rule needs."""
    _check_context(request.context, limits)
    _check_question(request.question, "question", limits)
    if request.steps > limits.max_explain_steps:
        message = f"is {request.steps}; the limit is {limits.max_explain_steps}"
        raise ApiError(422, "steps", message)
    try:
        quadrature(request.method, request.steps)
    except ValueError as err:
        raise ApiError(422, "steps", str(err)) from None


def _state_limits(openapi: dict[str, Any], limits: Limits, retrievers: list[str]) -> None:
    """Write the limits `_questions`, `_check_explain` and `_check_ask` check into
    `AnswerRequest`'s, `ExplainRequest`'s and `AskRequest`'s OpenAPI schemas, for clients, and the
    retrievers the server's index supports into `AskRequest`'s.

    Stated after the schema is made, not as pydantic constraints: one `AnswerRequest` then serves
    any `Limits`, and the 422s keep `_questions`' messages (the length found and the limit).
    """
    schemas = openapi["components"]["schemas"]
    context = {"type": "string", "maxLength": limits.max_context_chars}
    question = {"type": "string", "maxLength": limits.max_question_chars}
    for schema, field, keywords in (
        ("AnswerRequest", "context", context),
        ("AnswerRequest", "question", question),
        (
            "AnswerRequest",
            "questions",
            {"type": "array", "maxItems": limits.max_questions, "items": question},
        ),
        ("AnswerRequest", "top_k", {"type": "integer", "maximum": limits.max_top_k}),
        ("ExplainRequest", "context", context),
        ("ExplainRequest", "question", question),
        ("ExplainRequest", "steps", {"type": "integer", "maximum": limits.max_explain_steps}),
        ("AskRequest", "question", question),
        ("AskRequest", "passages", {"type": "integer", "maximum": limits.max_passages}),
        ("AskRequest", "top_k", {"type": "integer", "maximum": limits.max_top_k}),
        ("AskRequest", "retriever", {"type": "string", "enum": retrievers}),
    ):
        prop = schemas[schema]["properties"][field]
        for branch in prop.get("anyOf", [prop]):  # `str | None`: the branch of that type
            if branch.get("type") == keywords["type"]:
                branch.update(keywords)


def index_html() -> str:
    """The self-contained page (inline CSS and JS, no external assets: works offline)."""
    return resources.files("squadqa.serve").joinpath("static/index.html").read_text("utf-8")


def create_app(
    predictor: Predictor,
    limits: Limits | None = None,
    explainer: Explaining | None = None,
    index: Index | None = None,
) -> FastAPI:
    """The API around one loaded predictor; `explainer`: what `/v1/explain` runs (default:
    `default_explainer(predictor)`); `index`: what `/v1/ask` retrieves from (a `load_index`,
    loaded once; None: `/v1/ask` answers 501), read by the predictor (a `QAPredictor`)."""
    limits = limits or Limits()
    explainer = explainer or default_explainer(predictor)
    info = None if index is None else index_info(index)
    app = FastAPI(
        title="squadqa",
        summary="Extractive question answering: the answer is a span of the given context.",
        version="1",
    )
    admission = Admission(limits.max_queue)
    app.state.predictor, app.state.limits, app.state.admission = predictor, limits, admission
    run_model = model_turns(predictor)
    # The last added runs first: the body is read (and limited) before admission.
    app.add_middleware(admission.gate, method="POST", path=ANSWER_PATH)
    app.add_middleware(admission.gate, method="POST", path=EXPLAIN_PATH)
    app.add_middleware(admission.gate, method="POST", path=ASK_PATH)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s
    )
    page = index_html()

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # FastAPI.openapi makes and caches it
            retrievers = list(RETRIEVERS) if info is None else info.retrievers
            _state_limits(FastAPI.openapi(app), limits, retrievers)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]  (FastAPI's documented way to extend it)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = errors[0].get("ctx", {}).get("error", "")
            position = errors[0]["loc"][-1]
            return _error(
                400,
                "malformed_json",
                f"body is not valid JSON: {detail} at character {position}",
            )
        content_type = request.headers.get("content-type", "")
        empty = any(e.get("type") == "missing" and tuple(e["loc"]) == ("body",) for e in errors)
        if not empty and "json" not in content_type.lower():
            return _error(
                415,
                "unsupported_media_type",
                "send a JSON object with Content-Type: application/json",
            )
        schemas = {EXPLAIN_PATH: ExplainRequest, ASK_PATH: AskRequest}
        schema = schemas.get(request.url.path)
        known = (
            "context, question or questions, top_k"
            if schema is None
            else ", ".join(schema.model_fields)
        )
        fields = [{"field": _field_name(e["loc"]), "message": _message(e, known)} for e in errors]
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return _error(422, "invalid_request", message, fields)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        fields = [{"field": exc.field, "message": exc.message}]
        return _error(exc.status, "invalid_request", f"{exc.field}: {exc.message}", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404, 405, and FastAPI's 400 for a body it cannot parse at all: same JSON shape.
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # What json.loads gives up on, e.g. arrays nested 100,000 deep (RecursionError).
            detail = "body: cannot be parsed as JSON (nested too deeply, or not JSON at all)"
        response = _error(exc.status_code, code.get(exc.status_code, "error"), detail)
        response.headers.update(exc.headers or {})
        return response

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in (
            (400, "malformed JSON"),
            (408, "body not received in time"),
            (413, "body too large"),
            (415, "body not JSON"),
            (422, "invalid or missing field, or a limit exceeded"),
            (503, "max_queue requests in flight already: retry after the Retry-After seconds"),
        )
    }

    @app.post(ANSWER_PATH, response_model=AnswerResponse, responses=error_responses)
    async def answer(request: AnswerRequest) -> Any:
        """Answer one or several questions about a context with spans of it."""
        questions = _questions(request, limits)
        answers = await run_model(predictor.answer, request.context, questions, request.top_k)
        return {"model": predictor.name, "answers": answers}

    explain_responses = {
        **error_responses,
        501: {"model": ErrorResponse, "description": "no Keras model to explain (ONNX runtime)"},
    }

    @app.post(EXPLAIN_PATH, response_model=ExplainResponse, responses=explain_responses)
    async def explain(request: ExplainRequest) -> Any:
        """Why the model gives its answer: integrated-gradients attributions of the answer's
        start and end logits to each token of its window, and the window's attention per layer
        and head (what `squadqa explain` writes to explain.json)."""
        _check_explain(request, limits)
        if explainer is None:
            message = (
                "this server has no Keras model to explain (it runs ONNX Runtime): serve the "
                "run with --runtime keras"
            )
            return _error(501, "not_implemented", message)
        try:
            return await run_model(
                explainer.explain,
                request.context,
                request.question,
                request.steps,
                request.baseline,
                request.method,
            )
        except NothingToExplain as err:
            raise ApiError(422, "context", str(err)) from None

    ask_responses = {
        **error_responses,
        501: {"model": ErrorResponse, "description": "no index (serve with --index INDEX)"},
    }
    encoding = threading.Lock()

    def ask_index(request: AskRequest, retriever: str) -> dict[str, Any]:
        assert index is not None
        vectors = None
        if retriever != "bm25":
            with encoding:  # the sentence encoder loads on first use: once, by one thread
                vectors = index.query_vectors([request.question])
        (answer,) = ask(
            predictor,
            index,
            [request.question],
            request.passages,
            retriever,
            request.top_k,
            query_vectors=vectors,
        )
        return {
            "model": predictor.name,
            "answer": answer,
            "passages": cited_passages(index, answer),
        }

    @app.post(ASK_PATH, response_model=AskResponse, responses=ask_responses)
    async def ask_collection(request: AskRequest) -> Any:
        """Answer a question from the server's index (`squadqa serve --index`): retrieve the
        `passages` best passages, read them in one batch, and cite the best span by document,
        passage and character offsets in the document (what `squadqa ask --json` prints)."""
        _check_ask(request, limits)
        if index is None or info is None:
            message = (
                "this server has no index to ask: start it with `squadqa serve --model RUN "
                "--index INDEX` (an index made by `squadqa index`), or send the context to "
                f"{ANSWER_PATH}"
            )
            return _error(501, "not_implemented", message)
        retriever = request.retriever or info.default_retriever
        if retriever not in info.retrievers:
            message = (
                f"is {retriever!r}, but the index has no dense vectors (it was built with "
                "--no-dense): use bm25"
            )
            raise ApiError(422, "retriever", message)
        return await run_model(ask_index, request, retriever)

    # HEAD answers like GET without the body (uvicorn drops it); left out of the schema, where
    # HTTP implies it.
    @app.head("/healthz", include_in_schema=False)
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the model is loaded and the server answers; `queue_depth`: requests
        accepted and not yet answered (in the model or waiting for it), at most
        `limits.max_queue`; `index`: the index `/v1/ask` answers from (null: none, 501)."""
        return {
            "status": "ok",
            "model": predictor.name,
            "queue_depth": admission.depth,
            "limits": asdict(limits),
            "index": None if info is None else info.model_dump(),
        }

    @app.head("/", include_in_schema=False)
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(page)

    return app


# --------------------------------------------------------------------------- uvicorn


def json_bad_request_protocol(parser: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP parser (`auto`: httptools if installed, as the `serve` extra does, else h11;
    or `h11` / `httptools`), but answering a request it cannot parse with the app's JSON error
    shape instead of a text/plain 400: uvicorn's `http=` for `run` and `serve_in_thread`."""
    if parser == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    elif parser == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    elif parser == "auto":
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base
    else:
        raise ValueError(f"unknown HTTP parser {parser!r} (auto, h11 or httptools)")

    class JsonBadRequestProtocol(base):  # type: ignore[misc, valid-type]
        def send_400_response(self, msg: str) -> None:
            # Raw bytes, as httptools' version writes them: the connection closes right after,
            # so h11's state machine has nothing left to track.
            body = json.dumps(error_body("bad_request", msg)).encode()
            head = [b"HTTP/1.1 400 Bad Request"]
            head += [name + b": " + value for name, value in self.server_state.default_headers]
            head += [
                b"content-type: application/json",
                b"content-length: " + str(len(body)).encode(),
                b"connection: close",
            ]
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            self.transport.close()

    return JsonBadRequestProtocol


def model_turns(predictor: Predictor) -> Callable[..., Awaitable[Any]]:
    """How the app calls the model: `in_model_thread`, one call at a time unless the predictor
    batches concurrent requests (`QAPredictor.batching`: they must meet in the batcher).

    Why: an unbatched predictor answers one request at a time behind its lock anyway, so more
    requests in worker threads only contend for the GIL with the event loop, which then refuses
    overload late (`benchmarks/overload.py --no-batch`, docs/results.md); waiting on an
    `asyncio.Semaphore` costs the event loop nothing.
    """
    if getattr(predictor, "batching", False):
        return in_model_thread
    turn = asyncio.Semaphore(1)

    async def one_at_a_time(fn: Callable[..., Any], *args: object) -> Any:
        async with turn:
            return await in_model_thread(fn, *args)

    return one_at_a_time


def run(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    index: Index | None = None,
) -> None:
    """Serve with uvicorn (blocking)."""
    import uvicorn

    app = create_app(predictor, limits, index=index)
    lower_other_threads()  # the runtime's pools and the batcher, started with the predictor
    uvicorn.run(app, host=host, port=port, http=json_bad_request_protocol())


@contextmanager
def serve_in_thread(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, parser: str = "auto"
) -> Iterator[str]:
    """Run uvicorn in a background thread (tests, benchmarks); yields the base URL.

    The socket is bound here, port 0 = any free one, so there is no race for the port. `parser`:
    as `json_bad_request_protocol`'s (tests try both).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", http=json_bad_request_protocol(parser)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn"
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
