"""The HTTP API: answers, every limit and bad request (JSON errors, never a 500), the page."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
import httpx
from fastapi.testclient import TestClient
from test_inference import check_answer

from squadqa.serve.app import (
    BodyLimitMiddleware,
    Limits,
    create_app,
    json_bad_request_protocol,
    serve_in_thread,
)

LIMITS = Limits(
    max_body_bytes=4096, max_context_chars=1500, max_questions=3, max_question_chars=200,
    max_top_k=5, body_timeout_s=0.5,
)  # fmt: skip
CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower. "
    "It was the entrance arch to the 1889 World's Fair."
)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, LIMITS), raise_server_exceptions=False) as c:
        yield c


class FakePredictor:
    """Answers at once, the context's first 4 characters, without a model: a `Predictor` for
    what the app does around the model. `held`: every call waits for `release` (a slow model);
    `asked` lists the questions of each call that reached it."""

    name = "fake"

    def __init__(self, held: bool = False) -> None:
        self.release, self.asked = threading.Event(), []
        if not held:
            self.release.set()

    def answer(self, context: str, questions: list[str], top_k: int = 3) -> list[dict]:
        self.asked.append(questions)
        assert self.release.wait(60), "the test never released the fake model"
        answers = []
        for question in questions:
            span = {"text": context[:4], "score": 1.0, "start": 0, "end": 4, "probability": 1.0}
            answers.append(
                {**span, "question": question, "no_answer": False, "null_score": 0.0,
                 "no_answer_probability": None,
                 "alternatives": [span]}
            )  # fmt: skip
        return answers


def raw_exchange(url: str, request: bytes) -> tuple[bytes, bytes]:
    """Send raw bytes to the server, read until it closes: (status line and headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        raw = b""
        with contextlib.suppress(ConnectionResetError):
            while part := sock.recv(65536):
                raw += part
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


def post(client: TestClient, body: object, **kwargs):
    return client.post("/v1/answer", json=body, **kwargs)


def assert_error(response, status: int, field: str | None = None, words: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] and body["message"]
    if field is not None:
        assert body["message"].startswith(f"{field}: "), body
        assert any(e["field"] == field for e in body["errors"]), body
    assert words.lower() in body["message"].lower(), body
    return body


# --------------------------------------------------------------------------- answers


def test_one_question(client, predictor):
    response = post(client, {"context": CONTEXT, "question": "Who is it named after?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny-qa"
    (answer,) = body["answers"]
    assert answer["question"] == "Who is it named after?"
    check_answer(CONTEXT, answer, top_k=3)
    assert len(answer["alternatives"]) == 3
    assert body["answers"] == predictor.answer(CONTEXT, ["Who is it named after?"], top_k=3)


def test_several_questions_and_top_k(client):
    questions = ["Where is it?", "When was the fair?", "Who built it?"]
    response = post(client, {"context": CONTEXT, "questions": questions, "top_k": 5})
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    assert [a["question"] for a in answers] == questions
    for answer in answers:
        check_answer(CONTEXT, answer, top_k=5)
        assert len(answer["alternatives"]) == 5


def test_context_without_tokens_gets_an_empty_answer(client):
    # U+FFFD is visible (not blank) but the tokenizer's normaliser drops it: no token at all.
    response = post(client, {"context": "\ufffd\ufffd", "question": "What?"})
    assert response.status_code == 200
    assert response.json()["answers"][0]["text"] == ""


def test_invisible_characters_around_a_question_are_fine(client):
    question = "\u200bWho is it named after?\u200d "
    response = post(client, {"context": CONTEXT, "question": question})
    assert response.status_code == 200, response.text
    assert response.json()["answers"][0]["question"] == question


def test_concurrent_requests(client):
    """Inference runs in the thread pool; answers stay right under concurrency."""
    questions = [f"Question number {i}?" for i in range(8)]
    results: dict[int, object] = {}

    def ask(i: int) -> None:
        results[i] = post(client, {"context": CONTEXT, "question": questions[i]}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, body in results.items():
        assert body["answers"][0]["question"] == questions[i]
    assert len(results) == 8


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"question": "Who?"}, "context", "required"),
        ({"context": "", "question": "Who?"}, "context", "empty"),
        ({"context": " \n\t ", "question": "Who?"}, "context", "whitespace"),
        ({"context": 42, "question": "Who?"}, "context", "string"),
        ({"context": ["a"], "question": "Who?"}, "context", "string"),
        ({"context": None, "question": "Who?"}, "context", "string"),
        ({"context": "\u200b", "question": "Who?"}, "context", "invisible"),
        ({"context": "\u200b\u2060\ufeff\u00a0\u3000\n", "question": "Who?"}, "context", "empty"),
        ({"context": CONTEXT}, "question", "required"),
        ({"context": CONTEXT, "question": ""}, "question", "empty"),
        ({"context": CONTEXT, "question": "   "}, "question", "whitespace"),
        ({"context": CONTEXT, "question": 7}, "question", "string"),
        ({"context": CONTEXT, "question": {"q": 1}}, "question", "string"),
        ({"context": CONTEXT, "question": "\u200b"}, "question", "invisible"),
        ({"context": CONTEXT, "question": "\x00\x7f\u2028\u200e\t"}, "question", "invisible"),
        ({"context": CONTEXT, "question": "a", "questions": ["b"]}, "question", "not both"),
        ({"context": CONTEXT, "questions": []}, "questions", "at least one"),
        ({"context": CONTEXT, "questions": "Who?"}, "questions", "list"),
        ({"context": CONTEXT, "questions": ["Who?", " "]}, "questions", "question 1"),
        ({"context": CONTEXT, "questions": ["Who?", "\u200c\u200d"]}, "questions", "question 1"),
        ({"context": CONTEXT, "questions": ["Who?", 3]}, "questions[1]", "string"),
        ({"context": CONTEXT, "questions": ["a", "b", "c", "d"]}, "questions", "limit is 3"),
        ({"context": "word " * 400, "question": "Who?"}, "context", "limit is 1500"),
        ({"context": CONTEXT, "question": "why " * 60}, "question", "limit is 200"),
        ({"context": CONTEXT, "questions": ["a", "why " * 60]}, "questions[1]", "limit is 200"),
        ({"context": CONTEXT, "question": "Who?", "top_k": 0}, "top_k", "greater than"),
        ({"context": CONTEXT, "question": "Who?", "top_k": 6}, "top_k", "limit is 5"),
        ({"context": CONTEXT, "question": "Who?", "top_k": "3"}, "top_k", "integer"),
        ({"context": CONTEXT, "question": "Who?", "top_k": 2.5}, "top_k", "integer"),
        ({"context": CONTEXT, "question": "Who?", "qestion": "x"}, "qestion", "not a known"),
        ([CONTEXT, "Who?"], "body", "dictionary"),
        ("just a string", "body", "dictionary"),
        (None, "body", ""),
    ],
)
def test_invalid_fields_are_422_naming_the_field(client, body, field, words):
    assert_error(post(client, body), 422, field, words)


def test_malformed_json(client, predictor):
    headers = {"content-type": "application/json"}
    for raw in (b'{"context": "a", ', b"{'context': 'a'}", b"\xff\xfe\x00\x01", b"[" * 3000):
        response = client.post("/v1/answer", content=raw, headers=headers)
        assert response.status_code in (400, 422), (raw[:20], response.text)
        assert response.json()["error"]
    assert_error(client.post("/v1/answer", content=b"{", headers=headers), 400, words="JSON")
    huge_number = b'{"context": "a b", "question": "c", "top_k": 1' + b"0" * 5000 + b"}"
    with TestClient(create_app(predictor), raise_server_exceptions=False) as default_limits:
        response = default_limits.post("/v1/answer", content=huge_number, headers=headers)
        assert response.status_code in (400, 422) and response.json()["error"], response.text
        deep = b'{"context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        response = default_limits.post("/v1/answer", content=deep, headers=headers)
        assert response.status_code in (400, 422) and response.json()["error"], response.text


def test_body_that_is_not_json_is_415(client):
    headers = {"content-type": "text/plain"}
    response = client.post("/v1/answer", content=b"context=a", headers=headers)
    assert_error(response, 415, words="application/json")


def test_big_body_with_honest_content_length_is_413(client):
    body = {"context": "x" * 5000, "question": "Who?"}
    assert_error(post(client, body), 413, words="4096 bytes")


def test_big_body_with_dishonest_content_length_is_413(client):
    raw = json.dumps({"context": "x" * 5000, "question": "Who?"}).encode()
    headers = {"content-type": "application/json", "content-length": "20"}
    assert_error(client.post("/v1/answer", content=raw, headers=headers), 413)


def test_big_body_without_content_length_is_413(client):
    def chunks():
        yield b'{"context": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'", "question": "Who?"}'

    headers = {"content-type": "application/json"}
    assert_error(client.post("/v1/answer", content=chunks(), headers=headers), 413)


def test_invalid_content_length_is_400(client):
    headers = {"content-type": "application/json", "content-length": "lots"}
    assert_error(client.post("/v1/answer", content=b"{}", headers=headers), 400)


@pytest.mark.parametrize("indent", [None, 2])
def test_longest_valid_request_passes_the_default_body_limit(indent):
    """Every text at its limit, all emoji, sent with Python's default `json.dumps` (each emoji
    escaped as a surrogate pair, `\\ud83d\\ude00`: 12 bytes) is a valid request: 200, not 413."""
    body = {
        "context": "\U0001f600" * 20_000,
        "questions": ["\U0001f600" * 1_000] * 16,
        "top_k": 20,
    }
    raw = json.dumps(body, indent=indent).encode()
    assert len(raw) > 12 * 36_000 > 256 * 1024  # the old fixed limit refused it
    with TestClient(create_app(FakePredictor()), raise_server_exceptions=False) as fast:
        response = fast.post(
            "/v1/answer", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text[:300]
        assert [a["question"] for a in response.json()["answers"]] == body["questions"]
        assert fast.get("/healthz").json()["limits"]["max_body_bytes"] >= len(raw)


def test_body_limit_follows_the_other_limits():
    small = Limits(max_context_chars=100, max_questions=2, max_question_chars=10)
    # 12 bytes per character of 100 + 2 x 10, 16 per text (3), 4096 for the rest.
    assert small.max_body_bytes == 12 * 120 + 16 * 3 + 4096
    assert Limits(max_body_bytes=1000).max_body_bytes == 1000  # an explicit limit is kept
    with pytest.raises(ValueError, match="max_body_bytes=0"):
        Limits(max_body_bytes=0)


def test_a_stalled_body_gets_408_not_a_hang():
    sent: list[dict] = []

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app must not run")

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    middleware = BodyLimitMiddleware(app, max_bytes=100, timeout_s=0.1)
    scope = {"type": "http", "method": "POST", "path": "/v1/answer", "headers": []}
    asyncio.run(asyncio.wait_for(middleware(scope, receive, send), timeout=5))
    assert sent[0]["status"] == 408
    assert b"not received within" in sent[1]["body"]


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/v2/nothing"), 404)
    assert_error(client.get("/v1/answer"), 405)


@pytest.fixture(scope="module")
def fake_server():
    """A real uvicorn server on 127.0.0.1 around `FakePredictor` (no model needed)."""
    with serve_in_thread(create_app(FakePredictor(), LIMITS)) as url:
        yield url


@pytest.fixture(scope="module", params=["h11", "httptools"])
def fake_server_on_each_parser(request):
    """`fake_server` on each of uvicorn's HTTP parsers: `auto` takes httptools when installed (the
    `serve` extra), h11 otherwise, and each answers a request it cannot parse on its own."""
    pytest.importorskip(request.param)
    with serve_in_thread(create_app(FakePredictor(), LIMITS), parser=request.param) as url:
        yield url


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/answer HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n{}",
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n",  # a header without its colon
    ],
)
def test_malformed_http_is_a_json_400(fake_server_on_each_parser, request_bytes):
    """uvicorn answers these before the app sees them: in the app's JSON shape all the same."""
    head, body = raw_exchange(fake_server_on_each_parser, request_bytes)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400"), head
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    payload = json.loads(body)
    assert (
        payload["error"] == "bad_request" and "invalid http request" in payload["message"].lower()
    )


@pytest.mark.parametrize("path", ["/healthz", "/"])
def test_head_answers_like_get_without_a_body(fake_server, path):
    get_head, get_body = raw_exchange(
        fake_server, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    head, body = raw_exchange(
        fake_server, f"HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == b""
    type_of = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-type")]
    assert type_of and type_of[0] in get_head and get_body


# --------------------------------------------------------------------------- the rest


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == "tiny-qa"
    assert body["limits"]["max_questions"] == 3
    assert body["queue_depth"] == 0


def test_requests_beyond_max_queue_get_503_at_once():
    """40 concurrent requests, `max_queue` 4, a model that holds every call: 4 are accepted and
    36 refused, all 36 answered while the model still holds the 4 (so at once, not after a
    worker thread or the model came free); then the 4 get their own answers and the count
    returns to 0. Without the admission bound none is refused and this fails at the deadline."""
    model = FakePredictor(held=True)
    limits = dataclasses.replace(LIMITS, max_queue=4)
    n = 40

    async def flood(url: str) -> None:
        pool = httpx.Limits(max_connections=n + 1)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=pool) as http:

            async def ask(i: int) -> httpx.Response:
                body = {"context": CONTEXT, "question": f"Question {i}?"}
                return await http.post("/v1/answer", json=body)

            tasks = [asyncio.create_task(ask(i)) for i in range(n)]
            try:
                deadline = time.monotonic() + 30
                while sum(t.done() for t in tasks) < n - 4 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                refused = [t.result() for t in tasks if t.done()]
                assert len(refused) == n - 4, f"{len(refused)} of {n} answered while held"
                for response in refused:
                    assert_error(response, 503, words="4 requests are already waiting")
                    assert response.json()["error"] == "server_busy"
                    assert response.headers["retry-after"] == "1"
                assert (await http.get("/healthz")).json()["queue_depth"] == 4
                assert len(model.asked) <= 4  # the refused never reached the model
            finally:
                model.release.set()  # also after a failed check: no request stays held
            results = [await task for task in tasks]
            statuses = sorted(response.status_code for response in results)
            assert statuses == [200] * 4 + [503] * (n - 4)
            for i, response in enumerate(results):
                if response.status_code == 200:
                    (answer,) = response.json()["answers"]
                    assert answer["question"] == f"Question {i}?" and answer["text"] == "The "
            assert len(model.asked) == 4
            # The count drops as each answered request's handler returns, just after its reply.
            deadline = time.monotonic() + 30
            while (depth := (await http.get("/healthz")).json()["queue_depth"]) and (
                time.monotonic() < deadline
            ):
                await asyncio.sleep(0.01)
            assert depth == 0

    with serve_in_thread(create_app(model, limits)) as url:
        asyncio.run(asyncio.wait_for(flood(url), timeout=120))


class _CountingPredictor(FakePredictor):
    """A fake model that records how many calls are inside it at once."""

    def __init__(self, batching: bool) -> None:
        super().__init__()
        self.batching, self.inside, self.most = batching, 0, 0
        self.changed = threading.Condition()

    def answer(self, context: str, questions: list[str], top_k: int = 3) -> list[dict]:
        with self.changed:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.changed.notify_all()
            # Stay until a second call is inside (at once where the app lets two in), or 0.25 s
            # (where it lets one in at a time): not a race against the other requests' arrival.
            self.changed.wait_for(lambda: self.most > 1, timeout=0.25)
            self.inside -= 1
        return super().answer(context, questions, top_k)


@pytest.mark.parametrize("batching", [False, True])
def test_an_unbatched_model_gets_one_request_at_a_time(batching: bool) -> None:
    """Unbatched, accepted requests wait their turn on the event loop, not in 8 worker threads
    contending for the GIL with it; a batching predictor gets them together (its batcher must
    see them at once). Every request is answered either way."""
    model = _CountingPredictor(batching)

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            body = {"context": CONTEXT, "question": "Who?"}
            return await asyncio.gather(*(http.post("/v1/answer", json=body) for _ in range(8)))

    with serve_in_thread(create_app(model, LIMITS)) as url:
        responses = asyncio.run(burst(url))
    assert [r.status_code for r in responses] == [200] * 8
    assert (model.most == 1) if not batching else (model.most > 1)


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a thread's niceness is set on Linux only"
)


@linux_only
def test_model_threads_run_below_the_event_loop_thread():
    """In a fresh process (niceness is per thread and sticks): a thread running when the server
    starts (a runtime's pool) is lowered by `lower_other_threads`, the calling thread (the event
    loop's) is not; a worker lowers itself, and a thread it starts is born lowered (what makes
    torch's and ONNX Runtime's later pools low too)."""
    code = """
import json, os, threading
from squadqa.serve import priority

def nice():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

base, seen, ready, release = nice(), {}, threading.Event(), threading.Event()

def pool():
    ready.set()
    release.wait()
    seen["pool"] = nice()

def worker():
    seen["worker_before"] = nice()
    priority.lower_this_thread()
    seen["worker"] = nice()
    child = threading.Thread(target=lambda: seen.update(child=nice()))
    child.start()
    child.join()

running = threading.Thread(target=pool)
running.start()
ready.wait()
priority.lower_other_threads()
release.set()
running.join()
later = threading.Thread(target=worker)
later.start()
later.join()
print(json.dumps({"base": base, "event_loop": nice(), **seen}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    low = min(seen["base"] + 10, 19)
    assert seen == {
        "base": seen["base"], "event_loop": seen["base"], "pool": low,
        "worker_before": seen["base"], "worker": low, "child": low,
    }  # fmt: skip


@linux_only
def test_the_model_runs_in_a_lowered_thread():
    """The app's model calls go through `in_model_thread`: the fake model sees its thread's
    niceness above the server process's own."""
    seen = []

    class Recording(FakePredictor):
        def answer(self, context: str, questions: list[str], top_k: int = 3) -> list[dict]:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return super().answer(context, questions, top_k)

    with serve_in_thread(create_app(Recording(), LIMITS)) as url:
        body = {"context": CONTEXT, "question": "Who?"}
        assert httpx.post(f"{url}/v1/answer", json=body, timeout=60).status_code == 200
    assert seen == [min(os.getpriority(os.PRIO_PROCESS, os.getpid()) + 10, 19)]


def test_serve_command_bounds_requests_with_or_without_batching():
    from squadqa.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "RUN", "--max-queue", "4"])
    assert args.max_queue == 4 and not args.batch_requests
    assert build_parser().parse_args(["serve", "--model", "RUN"]).max_queue == 64


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    answer = spec["paths"]["/v1/answer"]["post"]
    for code in ("200", "400", "413", "415", "422", "503"):
        assert code in answer["responses"], code
    schema = spec["components"]["schemas"]["AnswerRequest"]
    assert {"context", "question", "questions", "top_k"} <= set(schema["properties"])
    assert "/healthz" in spec["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("limits", "numbers"), [(Limits(), (20_000, 16, 1_000, 20)), (LIMITS, (1500, 3, 200, 5))]
)
def test_openapi_states_the_limits(limits, numbers):
    """A client reads the app's actual limits from the schema (the defaults and LIMITS)."""
    with TestClient(create_app(FakePredictor(), limits)) as fast:
        spec = fast.get("/openapi.json").json()
    fields = spec["components"]["schemas"]["AnswerRequest"]["properties"]
    context_chars, questions, question_chars, top_k = numbers
    assert fields["context"]["maxLength"] == context_chars
    (many,) = [b for b in fields["questions"]["anyOf"] if b.get("type") == "array"]
    assert many["maxItems"] == questions and many["items"]["maxLength"] == question_chars
    (one,) = [b for b in fields["question"]["anyOf"] if b.get("type") == "string"]
    assert one["maxLength"] == question_chars
    assert fields["top_k"]["maximum"] == top_k and fields["top_k"]["minimum"] == 1
    assert set(spec["paths"]["/healthz"]) == {"get"}  # HEAD works, and is implied by HTTP


def test_page_is_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", page, re.I)
    for element in ('id="context"', 'id="question"', 'id="ask"', "<mark", "v1/answer"):
        if element == "<mark":
            assert 'createElement("mark")' in page
        else:
            assert element in page


def test_real_server_refuses_a_big_chunked_body(predictor):
    """Through uvicorn: a chunked body (no Content-Length) is counted as it arrives."""
    from squadqa.serve.app import serve_in_thread

    with serve_in_thread(create_app(predictor, LIMITS)) as url:
        host, port = url.removeprefix("http://").split(":")
        # A raw socket that stops sending once the answer is readable: a client that keeps
        # writing after the server's 413 gets a reset instead of the answer (a race, not a bug).
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(
            b"POST /v1/answer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(50):  # 50 kB at most, the limit is 4 kB
            if select.select([sock], [], [], 0.05)[0]:
                break
            try:
                sock.sendall(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        raw = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while b"payload_too_large" not in raw and (part := sock.recv(65536)):
                raw += part
        sock.close()
        assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
        assert b'"payload_too_large"' in raw
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        body = json.dumps({"context": CONTEXT, "question": "Where is it?"})
        conn.request("POST", "/v1/answer", body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        check_answer(CONTEXT, json.loads(response.read())["answers"][0], top_k=3)
        conn.close()


# --------------------------------------------------------------------------- bad requests of #14


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"context": "a \\ud800 b", "question": "x?"}', "context"),
        ('{"context": "Paris.", "question": "where \\udfff?"}', "question"),
        ('{"context": "Paris.", "questions": ["ok?", "bad \\ud83d"]}', "questions"),
    ],
)
def test_lone_surrogate_is_422_naming_the_field(client, body, field):
    response = client.post(
        "/v1/answer", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert_error(response, 422, field, "surrogate")


def test_deeply_nested_json_is_a_json_400_on_the_real_server(predictor):
    from squadqa.serve.app import create_app, serve_in_thread

    body = b"[" * 100_000 + b"]" * 100_000  # 200 kB: under the default body limit
    with serve_in_thread(create_app(predictor)) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/v1/answer", body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read())
    assert response.status == 400, payload
    assert payload["error"] == "bad_request" and "JSON" in payload["message"]


# --------------------------------------------------------------------------- explanations


def test_explain_explains_the_answer(client, predictor):
    question = "Who is it named after?"
    response = client.post(
        "/v1/explain", json={"context": CONTEXT, "question": question, "steps": 16}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predictor.answer(CONTEXT, [question], top_k=3)[0]
    assert body["answer"] == expected and body["model"] == "tiny-qa"
    span = body["span"]
    assert (span["text"], span["start"], span["end"]) == (
        expected["text"],
        expected["start"],
        expected["end"],
    )
    n = body["window"]["length"]
    assert len(body["tokens"]) == n
    assert len(body["attributions"]["start"]) == len(body["attributions"]["end"]) == n
    assert body["integrated_gradients"] == {"steps": 16, "method": "trapezoid", "baseline": "pad"}
    for completeness in body["completeness"].values():
        assert completeness["relative_gap"] < 0.05, completeness
    attention = body["attention"]
    rows = attention["question_to_context"]
    assert len(rows) == attention["layers"] and len(rows[0]) == attention["heads"]
    assert len(rows[0][0]) == len(attention["question_rows"])
    assert len(rows[0][0][0]) == len(attention["context_columns"])


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"question": "Who?"}, "context", "required"),
        ({"context": CONTEXT}, "question", "required"),
        ({"context": CONTEXT, "question": "   "}, "question", "whitespace"),
        ({"context": CONTEXT, "question": 7}, "question", "string"),
        ({"context": "word " * 400, "question": "Who?"}, "context", "limit is 1500"),
        ({"context": CONTEXT, "question": "why " * 60}, "question", "limit is 200"),
        ({"context": CONTEXT, "question": "Who?", "steps": 129}, "steps", "limit is 128"),
        (
            {"context": CONTEXT, "question": "Who?", "steps": 1, "method": "trapezoid"},
            "steps",
            "steps >= 2",
        ),
        ({"context": CONTEXT, "question": "Who?", "steps": 0}, "steps", "greater than"),
        ({"context": CONTEXT, "question": "Who?", "steps": "8"}, "steps", "integer"),
        ({"context": CONTEXT, "question": "Who?", "baseline": "mask"}, "baseline", "'zeros'"),
        ({"context": CONTEXT, "question": "Who?", "method": "simpson"}, "method", "riemann"),
        ({"context": CONTEXT, "question": "Who?", "top_k": 3}, "top_k", "steps, baseline"),
    ],
)
def test_explain_validates_like_answer(client, body, field, words):
    assert_error(client.post("/v1/explain", json=body), 422, field, words)


def test_explain_without_a_keras_model_is_501():
    with TestClient(create_app(FakePredictor(), LIMITS)) as fake:
        response = fake.post("/v1/explain", json={"context": CONTEXT, "question": "Who?"})
        assert_error(response, 501, words="--runtime keras")
        # Validation comes first: a bad request is still a 422.
        assert_error(fake.post("/v1/explain", json={"context": CONTEXT}), 422, "question")


def test_explanations_and_answers_share_max_queue():
    """One explanation held in the model fills `max_queue` 1: an answer is refused, and so are
    a second explanation and an ask."""

    class HeldExplainer:
        def __init__(self) -> None:
            self.release, self.started = threading.Event(), threading.Event()

        def explain(self, *args: object) -> dict:
            self.started.set()
            assert self.release.wait(60), "the test never released the explainer"
            raise ValueError("not needed: the test only counts requests")

    explainer = HeldExplainer()
    app = create_app(FakePredictor(), dataclasses.replace(LIMITS, max_queue=1), explainer)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = {"context": CONTEXT, "question": "Who?"}
        first = threading.Thread(target=http.post, args=("/v1/explain",), kwargs={"json": body})
        first.start()
        try:
            assert explainer.started.wait(30)
            assert_error(http.post("/v1/answer", json=body), 503, words="already waiting")
            assert_error(http.post("/v1/explain", json=body), 503, words="already waiting")
            ask = {"question": "Who?"}
            assert_error(http.post("/v1/ask", json=ask), 503, words="already waiting")
        finally:
            explainer.release.set()
            first.join(60)


def test_openapi_documents_explain_with_its_limits(client):
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/explain"]["post"]["responses"]
    for code in ("200", "400", "413", "415", "422", "501", "503"):
        assert code in responses, code
    fields = spec["components"]["schemas"]["ExplainRequest"]["properties"]
    assert fields["context"]["maxLength"] == 1500 and fields["question"]["maxLength"] == 200
    assert fields["steps"]["maximum"] == 128 and fields["steps"]["minimum"] == 1
    assert set(fields["baseline"]["enum"]) == {"pad", "zeros"}


# --------------------------------------------------------------------------- asking an index


@pytest.fixture(scope="module")
def ask_client(predictor, tiny_index):
    app = create_app(predictor, LIMITS, index=tiny_index)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def sample_contexts() -> dict[str, list[str]]:
    """The bundled sample's contexts by article title, read from the file itself."""
    import gzip

    from squadqa.data import sample_path

    raw = json.loads(gzip.decompress(sample_path().read_bytes()))
    return {a["title"]: [p["context"] for p in a["paragraphs"]] for a in raw["data"]}


def test_ask_cites_a_span_of_the_documents_text(ask_client, predictor, tiny_index):
    from squadqa.retrieval.ask import ask

    question = "What is the genome of an organism?"
    response = ask_client.post("/v1/ask", json={"question": question, "passages": 3, "top_k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    answer, passages = body["answer"], {p["passage"]: p for p in body["passages"]}
    assert body["model"] == "tiny-qa" and answer["question"] == question
    assert not answer["no_answer"] and len(answer["retrieved"]) == 3
    contexts = sample_contexts()
    for cited in [answer, *answer["alternatives"]]:
        document = tiny_index.collection.documents[cited["document"]]
        assert document.text[cited["start"] : cited["end"]] == cited["text"]
        assert (document.source, document.title) == (cited["source"], cited["title"])
        passage = passages[cited["passage"]]
        assert (passage["start"], passage["end"]) == (cited["passage_start"], cited["passage_end"])
        assert passage["text"] == document.text[passage["start"] : passage["end"]]
        # The passage is a piece of one of its article's contexts in the sample file itself.
        assert any(passage["text"] in context for context in contexts[cited["title"]])
        offset = cited["start"] - passage["start"]
        assert passage["text"][offset : offset + len(cited["text"])] == cited["text"]
    assert sorted(passages) == sorted({c["passage"] for c in answer["alternatives"]})
    # What `squadqa ask` answers (bm25: the default of an index without vectors).
    (expected,) = ask(predictor, tiny_index, [question], 3, "bm25", 5)
    assert answer == json.loads(json.dumps(expected))


def test_ask_with_nothing_retrieved_is_no_answer(ask_client):
    body = {"question": "Zxqv wlrbbl?", "retriever": "bm25"}  # no term in common with any passage
    response = ask_client.post("/v1/ask", json=body)
    assert response.status_code == 200, response.text
    body = response.json()
    answer = body["answer"]
    assert answer["no_answer"] and answer["text"] == "" and answer["retrieved"] == []
    assert answer["document"] == answer["passage"] == -1 and body["passages"] == []


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "question", "required"),
        ({"question": ""}, "question", "empty"),
        ({"question": " \t "}, "question", "whitespace"),
        ({"question": "\u200b\u2060"}, "question", "invisible"),
        ({"question": 7}, "question", "string"),
        ({"question": "why " * 60}, "question", "limit is 200"),
        ({"question": "Who?", "passages": 0}, "passages", "greater than"),
        ({"question": "Who?", "passages": 21}, "passages", "limit is 20"),
        ({"question": "Who?", "passages": "5"}, "passages", "integer"),
        ({"question": "Who?", "top_k": 6}, "top_k", "limit is 5"),
        ({"question": "Who?", "retriever": "tfidf"}, "retriever", "'bm25'"),
        ({"question": "Who?", "retriever": "dense"}, "retriever", "no dense vectors"),
        ({"question": "Who?", "retriever": "hybrid"}, "retriever", "use bm25"),
        ({"question": "Who?", "context": "x"}, "context", "question, passages, retriever"),
        (["Who?"], "body", "dictionary"),
    ],
)
def test_ask_validates_like_answer(ask_client, body, field, words):
    assert_error(ask_client.post("/v1/ask", json=body), 422, field, words)


def test_ask_without_an_index_is_501_saying_so(client):
    assert_error(client.post("/v1/ask", json={"question": "Who?"}), 501, words="--index")
    # Validation comes first: a bad request is still a 422.
    assert_error(client.post("/v1/ask", json={"question": " "}), 422, "question")
    assert client.get("/healthz").json()["index"] is None


def test_healthz_and_openapi_describe_the_index(ask_client, client):
    info = ask_client.get("/healthz").json()["index"]
    passages = sum(len(ctx) for ctx in sample_contexts().values())  # none over 2,000 characters
    assert info == {
        "documents": 3, "passages": passages, "retrievers": ["bm25"], "default_retriever": "bm25"
    }  # fmt: skip
    for app, retrievers in ((ask_client, ["bm25"]), (client, ["bm25", "dense", "hybrid"])):
        spec = app.get("/openapi.json").json()
        responses = spec["paths"]["/v1/ask"]["post"]["responses"]
        for code in ("200", "400", "413", "415", "422", "501", "503"):
            assert code in responses, code
        fields = spec["components"]["schemas"]["AskRequest"]["properties"]
        assert fields["question"]["maxLength"] == 200
        assert fields["passages"]["maximum"] == 20 and fields["top_k"]["maximum"] == 5
        (named,) = [b for b in fields["retriever"]["anyOf"] if b.get("type") == "string"]
        assert named["enum"] == retrievers
        required = spec["components"]["schemas"]["AskResponse"]["required"]
        assert {"model", "answer", "passages"} <= set(required)


def test_serve_refuses_a_folder_that_is_not_an_index(tiny_run, tmp_path, capsys):
    from squadqa.cli import build_parser, main

    assert build_parser().parse_args(["serve", "--model", "R", "--index", "I"]).index == "I"
    assert main(["serve", "--model", str(tiny_run), "--index", str(tmp_path)]) == 2
    assert f"{tmp_path}: not a squadqa index (index.json is missing)" in capsys.readouterr().err


def test_serving_imports_no_training_code():
    import subprocess
    import sys

    code = (
        "import sys, squadqa.serve.app, squadqa.inference, squadqa.retrieval.dense; "
        "training = ('squadqa.train', 'squadqa.harness'); "
        "print(sorted(m for m in sys.modules if m.startswith(training)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_an_unknown_http_parser_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown HTTP parser 'h2'"):
        json_bad_request_protocol("h2")
