"""The API against its own OpenAPI description, by schemathesis: requests generated from the description (valid
and invalid), every answer checked for a server error and against the response schema it documents.

Bounded (a fixed number of examples per operation, derandomized) so that it runs in well under a minute; the
catch-all guard turns any exception into a 500, which ``not_a_server_error`` fails, so an unexpected exception
anywhere on the request path is found here rather than by a user.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("starlette", reason="the web extra (starlette) is not installed: pip install 'vramwise[web]'")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (the test extra)")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from vramwise.web.limits import Limits  # noqa: E402
from vramwise.web.server import create_app  # noqa: E402

EXAMPLES = 30  # per operation: 7 operations, each example an estimate of a few ms to a fit search of ~100 ms

schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(Limits(rate=0)))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_description(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
