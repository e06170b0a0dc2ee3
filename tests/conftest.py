"""What the tests here share: where the captured server pages live, and how to read one.

``tests/fixtures/metrics`` holds real pages that inference servers produced (SOURCES.md there
says where each came from, EXPECTED.md what each should yield). ``FIXTURES`` below is the one
place that names the folder. Tests reach it through the fixtures defined here, not by importing
this module: ``from conftest import ...`` would find ``tests/integration/conftest.py`` instead
once pytest has collected that folder. The benchmarks, outside pytest, import ``FIXTURES`` and
``read_page`` from here.

* ``fixture_page("vllm/v1-qwen3-0.6b-via-dynamo.txt")``: the text of one page;
* ``fixtures_dir``: the folder itself;
* a test that takes ``captured_page`` runs once per Prometheus page (every ``*/*.txt``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loopback import LoopbackServer

from tokentop.collectors.fetch import PageClient

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "metrics"


def read_page(name: str) -> str:
    """The text of one captured page, named by its path under FIXTURES."""
    return (FIXTURES / name).read_text()


def prometheus_pages() -> list[Path]:
    """Every captured Prometheus text page (the JSON pages are left out)."""
    return sorted(FIXTURES.glob("*/*.txt"))


@pytest.fixture
def fixture_page() -> Callable[[str], str]:
    return read_page


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "captured_page" in metafunc.fixturenames:
        pages = prometheus_pages()
        metafunc.parametrize("captured_page", pages, ids=[page.relative_to(FIXTURES).as_posix() for page in pages])


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A real HTTP server on loopback (tests/loopback.py), closed after the test."""
    with LoopbackServer() as loopback:
        yield loopback


@pytest.fixture
def client() -> Iterator[PageClient]:
    pages = PageClient()
    yield pages
    pages.close()
