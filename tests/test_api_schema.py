"""The API against its own OpenAPI schema: schemathesis generates valid and invalid requests
(bounded, derandomised) and sends them to a real server on 127.0.0.1, started with a tiny index
so that `/v1/ask` answers. No response may be a 5xx, carry a status code the schema does not
document, or break the documented response schema.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from test_serve import LIMITS  # noqa: E402

from squadqa.serve.app import create_app, serve_in_thread  # noqa: E402

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


SEEN: dict[str, set[int]] = {}  # operation -> status codes the generated requests got


@pytest.fixture(scope="module")
def api_schema(predictor, tiny_index):
    with serve_in_thread(create_app(predictor, LIMITS, index=tiny_index)) as url:
        loaded = schemathesis.openapi.from_url(f"{url}/openapi.json")
        # Valid requests and invalid ones (wrong types, missing fields, extra keys, ...).
        loaded.config.generation.update(
            modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
        )
        yield loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case) -> None:
    response = case.call_and_validate(checks=CHECKS, timeout=60)
    SEEN.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)


def test_the_generated_requests_reached_both_outcomes() -> None:
    """Not a vacuous run: answers (explanations, asks of the index) and refusals were both
    exercised (runs after the one above)."""
    if not SEEN:  # e.g. `-k` selected this test alone: there is no run to check
        pytest.skip("the schema test did not run in this session")
    assert 200 in SEEN.get("GET /healthz", set()), SEEN
    for operation in ("POST /v1/answer", "POST /v1/explain", "POST /v1/ask"):
        seen = SEEN.get(operation, set())
        assert 200 in seen and 422 in seen, SEEN
