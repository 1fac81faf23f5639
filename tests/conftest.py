"""Shared pytest options: ``--update-golden`` rewrites tests/golden/* from today's output instead of comparing."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* with the current output (review the diff before committing)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


# The loopback hub (tests/hub_server.py) as a fixture for every test file: ``def test_x(hub_server): ...``.
from hub_server import hub_server  # noqa: E402, F401
