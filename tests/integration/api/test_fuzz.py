"""A property-based fuzz of the whole API from its own OpenAPI document: never a 500.

schemathesis generates requests for every operation in ``/openapi.json`` (valid and invalid
bodies, parameters and headers) and sends them with a platform-wide admin key and with a
project developer key. Any 5xx answer fails the test. ``FXRAY_FUZZ_EXAMPLES`` sets the number
of examples per operation (default 25).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis.openapi
import schemathesis.pytest
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness

EXAMPLES = int(os.environ.get("FXRAY_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzz_schema(sqlite_api: ApiHarness) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", sqlite_api.client.app)


@pytest.fixture(scope="module")
def developer(sqlite_api: ApiHarness) -> dict[str, str]:
    return sqlite_api.project("fuzz").developer


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: Any, sqlite_api: ApiHarness, developer: dict[str, str]) -> None:
    for headers in (sqlite_api.admin, developer):
        response = case.call(headers={**(case.headers or {}), **headers})
        case.validate_response(response, checks=[not_a_server_error])
