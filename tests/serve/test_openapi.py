"""schemathesis against the live server's own OpenAPI spec: requests generated from the schema (valid and
not) never get a 500, and every response matches the schema it documents."""

from __future__ import annotations

import re

import httpx
import hypothesis
import schemathesis
from live_server import live_server, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from omnivis.predictor import Predictor

EXAMPLES = 30  # generated requests per operation


def test_the_api_keeps_its_spec(predictor: Predictor) -> None:
    with live_server(predictor, settings()) as url:
        spec = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in spec.get_all_operations()]
        assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
            "POST /v1/predict", "POST /v1/predict/batch", "GET /v1/tasks", "GET /healthz", "GET /readyz", "GET /metrics"
        }  # fmt: skip
        for operation in operations:

            @hypothesis.given(case=operation.as_strategy())
            @hypothesis.settings(
                max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )  # fmt: skip
            def conforms(case: schemathesis.Case) -> None:
                # A schema cannot say which bytes decode as an image, or that <VQA> needs text: such
                # schema-valid requests rightly get 400/422, so that one check does not apply here.
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            conforms()
        counts = _request_counts(httpx.get(f"{url}/metrics").text)
    assert sum(counts.values()) >= EXAMPLES * 2  # requests were generated and sent
    assert not [key for key in counts if key[1].startswith("5")], counts


def _request_counts(metrics: str) -> dict[tuple[str, str], float]:
    """(route, status) -> requests answered, from the Prometheus text."""
    pattern = re.compile(r'^omnivis_requests_total\{route="([^"]*)",status="(\d+)"\} (\S+)$', re.MULTILINE)
    return {(route, status): float(value) for route, status, value in pattern.findall(metrics)}
