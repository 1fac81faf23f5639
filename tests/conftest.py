"""Shared pytest options: ``--update-golden`` rewrites tests/golden/* from today's output instead of comparing."""

from __future__ import annotations

# huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, when first imported (constants.py), and then blocks
# every request if it was offline. Imported here, before ``_no_internet`` sets the flag for a test, so that the
# flag (which vramwise reads at each call) never leaves huggingface_hub offline for the hub tests after it.
import huggingface_hub.constants  # noqa: F401
import pytest

# The loopback hub (tests/hub_server.py) as a fixture for every test file: ``def test_x(hub_server): ...``.
from hub_server import hub_server  # noqa: F401


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


@pytest.fixture(scope="session")
def _empty_hf_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("empty-hf-cache"))


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch, _empty_hf_cache: str) -> None:
    """No test reaches the real Hugging Face hub or reads the machine's cache: a hub id is looked up in an empty
    cache, offline, unless the test starts the loopback hub (the ``hub_server`` fixture clears the offline flag
    and points HF_ENDPOINT at 127.0.0.1 and HF_HUB_CACHE into its tmp_path)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", _empty_hf_cache)
