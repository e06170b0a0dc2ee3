"""Pages filtered by name (``/metrics?name[]=...``), against prometheus_client's own app.

vLLM serves ``prometheus_client``'s app; here its WSGI twin (``make_wsgi_app``, the same
``restricted_registry`` and ``generate_latest`` code) serves a real registry on loopback: in one
process, as vLLM with one API server, and in multiprocess mode (``MultiProcessCollector`` over
the files a child process wrote), as vLLM with ``--api-server-count`` > 1, which answers a
filtered query with an empty page.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loopback import LoopbackServer, Reply, Seen
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from tokentop.collectors import EndpointCollector
from tokentop.collectors.by_name import _FIGURES, keeps_figures
from tokentop.collectors.endpoint import LATENCY_EVERY_S
from tokentop.collectors.fetch import PageClient
from tokentop.collectors.kinds import Reading
from tokentop.config import EndpointConfig
from tokentop.model import EndpointSample, Histogram

ENGINES = 4
# What vLLM's registry holds, cut down: the figures tokentop reads, and histograms it does not.
FIGURES = """
registry = CollectorRegistry(auto_describe=True)
labels = ["model_name", "engine"]
prompt = Counter("vllm:prompt_tokens", "Prefill tokens.", labels, registry=registry)
generation = Counter("vllm:generation_tokens", "Generation tokens.", labels, registry=registry)
running = Gauge("vllm:num_requests_running", "Running.", labels, registry=registry, multiprocess_mode="mostrecent")
waiting = Gauge("vllm:num_requests_waiting", "Waiting.", labels, registry=registry, multiprocess_mode="mostrecent")
ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT.", labels, registry=registry)
unread = [
    Histogram(f"vllm:unread_{i}_seconds", "Not read by tokentop.", labels, registry=registry,
              buckets=[0.001 * 2**k for k in range(20)])
    for i in range(8)
]
for engine in map(str, range(ENGINES)):
    prompt.labels("m", engine).inc(30)
    generation.labels("m", engine).inc(60)
    running.labels("m", engine).set(3)
    waiting.labels("m", engine).set(1)
    ttft.labels("m", engine).observe(0.2)
    for histogram in unread:
        histogram.labels("m", engine).observe(0.01)
"""


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(registry: CollectorRegistry, port: int = 0) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """``make_wsgi_app(registry)`` on loopback: its /metrics URL and (query, body bytes) of each answer."""
    app = make_wsgi_app(registry)
    answers: list[tuple[str, int]] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = b"".join(app(environ, start_response))
        answers.append((environ.get("QUERY_STRING", ""), len(body)))
        return [body]

    server = make_server("127.0.0.1", port, recording, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics", answers
    finally:
        server.shutdown()
        server.server_close()


def one_process_registry(prefix: str = "vllm:") -> CollectorRegistry:
    scope: dict[str, Any] = {"ENGINES": ENGINES}
    exec("from prometheus_client import *\n" + FIGURES.replace("vllm:", prefix), scope)
    registry: CollectorRegistry = scope["registry"]
    return registry


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """What vLLM's ``get_prometheus_registry`` builds in multiprocess mode, over files written by
    another process (the engine's)."""
    script = f"ENGINES = {ENGINES}\nfrom prometheus_client import *\n" + FIGURES
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def collector(url: str, client: PageClient) -> EndpointCollector:
    return EndpointCollector(EndpointConfig(url), client, timeout_s=5.0, max_page_bytes=8 << 20)


def asked_names(query: str) -> set[str]:
    return set(parse_qs(query).get("name[]", []))


@pytest.mark.parametrize("prefix", ["vllm:", "lmdeploy:"])
def test_prometheus_client_is_asked_for_what_each_read_needs_and_gives_the_same_figures(
    prefix: str, client: PageClient
) -> None:
    with serving(one_process_registry(prefix)) as (url, answers):
        endpoint = collector(url, client)
        ticks = [1.0, 2.0, 3.0, 2.0 + LATENCY_EVERY_S, 3.0 + LATENCY_EVERY_S]
        samples = [endpoint.poll(t) for t in ticks]
    for sample in samples:
        assert sample.status == "up"
        assert (sample.prompt_tokens_total, sample.generation_tokens_total) == (30 * ENGINES, 60 * ENGINES)
        assert (sample.running, sample.waiting, sample.model) == (3 * ENGINES, 1 * ENGINES, "m")
        assert sample.ttft is not None and sample.ttft.count == ENGINES
    queries = [query for query, _ in answers]
    assert queries[0] == ""  # the read that finds the server reads the whole page
    full, scalar = asked_names(queries[1]), asked_names(queries[2])  # the trial asks for every name
    assert f"{prefix}generation_tokens_total" in scalar and not any(name.endswith("_bucket") for name in scalar)
    assert f"{prefix}time_to_first_token_seconds_bucket" in full and scalar < full
    assert [asked_names(query) for query in queries[1:]] == [full, scalar, full, scalar]
    whole_bytes = answers[0][1]
    assert all(size * 4 < whole_bytes for _, size in answers[1:])


def test_a_multiprocess_registry_answers_empty_so_the_whole_page_is_read(client: PageClient, tmp_path: Path) -> None:
    with serving(multiprocess_registry(tmp_path)) as (url, answers):
        endpoint = collector(url, client)
        samples = [endpoint.poll(t) for t in (1.0, 2.0, 3.0)]
    assert [s.status for s in samples] == ["up", "up", "up"]
    assert all(s.generation_tokens_total == 60 * ENGINES and s.running == 3 * ENGINES for s in samples)
    # found; tried once (an empty page), the whole page read in the same tick; whole from then on
    assert [bool(query) for query, _ in answers] == [False, True, False, False]
    assert answers[1][1] == 0


@pytest.mark.parametrize("lacking", ["running", "ttft"])
def test_a_filtered_page_lacking_a_figure_is_not_used(lacking: str, server: LoopbackServer, client: PageClient) -> None:
    down = [Reply(status=503)]  # once, at 6.0: the server is found again after it

    def answer(seen: Seen) -> Reply:
        if "name" in seen.query:
            return Reply(body=one_page(lacking, unread=False))
        return down.pop() if len(server.requests) == 5 else Reply(body=one_page(""))

    server.route("/metrics", answer)
    endpoint = collector(server.url + "/metrics", client)
    samples = [endpoint.poll(t) for t in (1.0, 2.0, 3.0)]
    assert [(s.running, s.ttft is not None) for s in samples] == [(2, True)] * 3
    assert ["name" in seen.query for seen in server.requests] == [False, True, False, False]
    assert endpoint.poll(6.0).status == "stale"
    assert [endpoint.poll(t).status for t in (7.0, 8.0)] == ["up", "up"]  # found again: not tried again
    assert not any("name" in seen.query for seen in server.requests[4:])


def test_a_filtered_read_that_loses_a_figure_is_replaced_by_the_whole_page(
    server: LoopbackServer, client: PageClient
) -> None:
    filtered = [one_page("", unread=False)] * 2 + [one_page("running", unread=False)]
    server.route("/metrics", lambda seen: Reply(body=filtered.pop(0) if "name" in seen.query else one_page("")))
    endpoint = collector(server.url + "/metrics", client)
    samples = [endpoint.poll(t) for t in (1.0, 2.0, 3.0, 4.0, 5.0)]
    assert [s.running for s in samples] == [2] * 5  # at 4.0 from the whole page, read in the same tick
    assert ["name" in seen.query for seen in server.requests] == [False, True, True, True, False, False]


def test_a_trial_the_connection_drops_leaves_the_reads_whole_and_up(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", lambda seen: Reply(drop=True) if "name" in seen.query else Reply(body=one_page("")))
    endpoint = collector(server.url + "/metrics?model=m", client)
    assert [endpoint.poll(t).status for t in (1.0, 2.0, 3.0, 4.0)] == ["up"] * 4
    asked = [seen.query for seen in server.requests]
    assert asked[0] == "model=m" and asked[1].startswith("model=m&name%5B%5D=")
    assert asked[-3:] == ["model=m"] * 3  # the whole page at 2.0 (the same tick), 3.0 and 4.0


@pytest.mark.parametrize("refusal", [Reply(status=400), Reply(body="<html>bad query</html>", content_type="text/html")])
def test_a_refused_filter_is_not_used(refusal: Reply, server: LoopbackServer, client: PageClient) -> None:
    page = one_page("")
    server.route("/metrics", lambda seen: refusal if "name" in seen.query else Reply(body=page))
    endpoint = collector(server.url + "/metrics", client)
    assert [endpoint.poll(t).generation_tokens_total for t in (1.0, 2.0, 3.0)] == [600, 600, 600]
    assert ["name" in seen.query for seen in server.requests] == [False, True, False, False]


def test_a_server_ignoring_the_query_is_read_whole_without_it(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", one_page(""))
    endpoint = collector(server.url + "/metrics", client)
    assert [endpoint.poll(t).status for t in (1.0, 2.0, 3.0)] == ["up", "up", "up"]
    # the trial's answer was the whole page: used as such, and the query is not sent again
    assert ["name" in seen.query for seen in server.requests] == [False, True, False]


def test_the_filter_is_tried_again_when_the_server_is_found_again(client: PageClient) -> None:
    with serving(one_process_registry()) as (url, answers):
        endpoint = collector(url, client)
        endpoint.poll(1.0)
        endpoint.poll(2.0)
    assert endpoint.poll(3.0).status in ("stale", "error")  # the server went away
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with serving(one_process_registry(), port) as (_, again):
        samples = [endpoint.poll(t) for t in (4.0, 5.0)]
    assert [s.generation_tokens_total for s in samples] == [60 * ENGINES] * 2
    assert [bool(query) for query, _ in answers] == [False, True]
    assert [bool(query) for query, _ in again] == [False, True]


def one_page(lacking: str, *, unread: bool = True) -> str:
    """A vLLM page of one process, without the ``lacking`` figure ("running" or "ttft"); with
    ``unread``, other families beside the read ones (the page over 10x larger)."""
    lines = ['vllm:generation_tokens_total{model_name="m"} 600', 'vllm:prompt_tokens_total{model_name="m"} 300']
    if lacking != "running":
        lines.append('vllm:num_requests_running{model_name="m"} 2')
    if lacking != "ttft":
        name = "vllm:time_to_first_token_seconds"
        lines += [f'{name}_bucket{{le="0.5",model_name="m"}} 3', f'{name}_bucket{{le="+Inf",model_name="m"}} 4']
        lines += [f'{name}_sum{{model_name="m"}} 1.5', f'{name}_count{{model_name="m"}} 4']
    if unread:
        lines += [f'vllm:unread_seconds_bucket{{le="{i}",model_name="m"}} {i}' for i in range(300)]
    return "\n".join(lines) + "\n"


@given(
    st.lists(st.booleans(), min_size=len(_FIGURES), max_size=len(_FIGURES)),
    st.lists(st.booleans(), min_size=len(_FIGURES), max_size=len(_FIGURES)),
)
def test_keeps_figures_is_the_plain_rule(read_has: list[bool], last_had: list[bool]) -> None:
    """``keeps_figures`` (in C, by identity) against the rule it stands for, for every figure
    present or not: histograms are never compared with ``==``."""
    histogram = Histogram(buckets=((1.0, 2.0), (math.inf, 3.0)), sum=0.5, count=3.0)
    some = {"model": "m", "ttft": histogram, "itl": histogram}
    reading = Reading(**{name: some.get(name, 1.0) if has else None for name, has in zip(_FIGURES, read_has)})
    figures = {name: some.get(name, 2.0) if had else None for name, had in zip(_FIGURES, last_had)}
    last = EndpointSample(name="e", url="http://h/metrics", t_mono=1.0, status="up", **figures)
    plain = all(getattr(reading, name) is not None for name in _FIGURES if getattr(last, name) is not None)
    assert keeps_figures(reading, last) is plain
