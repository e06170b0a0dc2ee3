"""The real llama-server every integration test talks to (one per test session).

When it cannot be had (a package or the binary missing, the model not assembled, the server
not starting), the tests skip and the reason is printed at the end of the run; with
``TOKENTOP_REQUIRE_LLAMA=1`` (CI) they fail with that reason instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_harness import LlamaServer, ServerUnavailable, find_server_files

REQUIRE_ENV = "TOKENTOP_REQUIRE_LLAMA"
START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
HERE = Path(__file__).parent

_unavailable_reason: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unavailable_reason:
        terminalreporter.write_sep("-", "real llama-server unavailable")
        terminalreporter.write_line(_unavailable_reason[0])


def unavailable(reason: str) -> None:
    """Skip (or, when required, fail) every test that needs the server, saying why."""
    message = f"real llama-server unavailable: {reason}"
    if os.environ.get(REQUIRE_ENV) == "1":
        message += f" ({REQUIRE_ENV}=1, so the integration tests fail)"
        _unavailable_reason[:] = [message]
        pytest.fail(message, pytrace=False)
    _unavailable_reason[:] = [message + " (integration tests skipped)"]
    pytest.skip(message)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log_dir = tmp_path_factory.mktemp("llama-server")
    server: LlamaServer | None = None
    reason: str | None = None
    try:
        files = find_server_files()
        for attempt in range(START_ATTEMPTS):
            server = LlamaServer(files, log_dir)
            try:
                server.start()
                break
            except ServerUnavailable as exc:
                if "bind" not in str(exc) or attempt == START_ATTEMPTS - 1:
                    raise
    except ServerUnavailable as exc:
        reason = str(exc)
    if reason is not None:  # outside the except block: one plain message, no exception chain
        unavailable(reason)
    assert server is not None
    try:
        yield server
    finally:
        server.stop()
