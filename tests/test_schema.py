"""The server against its own OpenAPI spec (`/docs.json`), driven by Schemathesis.

For each operation in the spec Schemathesis generates requests, valid ones and ones that break
the spec, and checks: no 5xx, 2xx bodies match the documented response schema, responses carry
a documented content type. Not checked: that every schema-valid request is accepted, because a
schema-valid "binary" image is random bytes, which rightly gets a 400.

`schemathesis.pytest.from_fixture` (the lazy loader a session-scoped server needs) fails under
pytest 9.2 in Schemathesis 4.32 (it reads `Function._nodeid`, which pytest 9.2 no longer has),
so each operation is a plain parametrized test that draws cases from `operation.as_strategy()`.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

OPERATIONS = (
    ("POST", "/predict_image"),
    ("POST", "/predict_images"),
    ("POST", "/predict"),
    ("POST", "/predict_bulk"),
    ("POST", "/preprocess_image"),
    ("POST", "/model_info"),
    ("GET", "/model_info"),
    # The Open Inference Protocol routes.
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{model}"),
    ("GET", "/v2/models/{model}/ready"),
    ("POST", "/v2/models/{model}/infer"),
    ("GET", "/v2/models/{model}/versions/{version}"),
    ("GET", "/v2/models/{model}/versions/{version}/ready"),
    ("POST", "/v2/models/{model}/versions/{version}/infer"),
    # BentoML's own infrastructure routes; they take no input, a few calls are enough.
    ("GET", "/healthz"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
)
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
pytestmark = pytest.mark.e2e  # against the session's real server


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/docs.json", timeout=30)


def test_the_spec_lists_every_tested_operation(api_schema):
    listed = {(op.method.upper(), op.path) for op in map(_ok, api_schema.get_all_operations())}
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[p for _, p in OPERATIONS])
def test_operation_conforms_to_the_spec(api_schema, server, method, path):
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=25 if method == "POST" else 5,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases)
    def check(case):
        case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)

    check()


def _ok(result):
    return result.ok()
