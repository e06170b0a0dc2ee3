"""tokentop's CPU per page read, beside httpx's and ``http.client``'s, on the same keep-alive request.

    python benchmarks/bench_http.py [--engines 7 0] [--requests 600] [--before DIR]

One server in another process serves the busy vLLM page of bench_reader.py (about 128 KiB for
7 engines, 5 KiB for ``0``: a page filtered to a few families); each ``--engines`` figure is one
page, measured in turn. Each way of asking keeps one connection open and reads the whole body;
the ways take turns request by request, so that a noisy machine slows them alike. Printed: the
median CPU time of this process per request (``time.process_time``: user and system, the
kernel's loopback work included), and each way's ratio to ``http.client``.

- ``Client.stream``: what tokentop did before issue 13 (URL parsed, client headers, cookies
  and parameters merged on every request, then the decoding iterator).
- ``HTTPTransport``: httpx's own transport under the client (no auth, redirect or cookie steps):
  the floor of httpx as a client, via httpcore and h11.
- ``PageConnection``: what tokentop does now (``tokentop.collectors.fetch``: its own HTTP/1.1
  reader over the socket, with its deadline, size limit and headers, as ``EndpointCollector._get``
  calls it).
- ``PageConnection (before)``, with ``--before DIR``: the same from an earlier tokentop's source
  tree (``DIR/tokentop/collectors/fetch.py``; until issue 13's last step, ``http.client`` under it).
- ``http.client``: the standard library alone, with no deadline or size limit.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _common import serve_file
from bench_reader import busy_page

from tokentop.collectors import fetch

HEADERS = {"Accept-Encoding": "identity"}
TIMEOUT = {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}
Way = Callable[[], bytes]


def earlier_fetch(tree: Path) -> ModuleType:
    """``tokentop/collectors/fetch.py`` of another source tree, loaded beside ours, with that
    tree's ``http1.py`` under it (its ``from tokentop.collectors.http1 import ...`` finds it)."""
    http1 = _load("http1_before", tree / "tokentop" / "collectors" / "http1.py")
    ours = sys.modules["tokentop.collectors.http1"]
    sys.modules["tokentop.collectors.http1"] = http1
    try:
        return _load("fetch_before", tree / "tokentop" / "collectors" / "fetch.py")
    finally:
        sys.modules["tokentop.collectors.http1"] = ours


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def ways(port: int, fetchers: dict[str, ModuleType]) -> tuple[dict[str, Way], Callable[[], None]]:
    """Each way of reading the page, and what closes them all."""
    url = f"http://127.0.0.1:{port}/metrics"
    client = httpx.Client(follow_redirects=False, trust_env=False, verify=False)
    prepared_url = httpx.URL(url)
    prepared_headers = httpx.Headers(client.headers)
    prepared_headers.update(HEADERS)
    transport = httpx.HTTPTransport()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    page_clients = {name: module.PageClient() for name, module in fetchers.items()}

    def stream() -> bytes:
        with client.stream("GET", url, headers=HEADERS, timeout=1.0) as response:
            return b"".join(response.iter_bytes())

    def transport_only() -> bytes:
        request = httpx.Request("GET", prepared_url, headers=prepared_headers, extensions={"timeout": TIMEOUT})
        response = transport.handle_request(request)
        try:
            return b"".join(response.stream)  # type: ignore[arg-type]  # a SyncByteStream here
        finally:
            response.close()

    def tokentop(pages: fetch.PageClient) -> Way:
        page_connection = pages.connection()
        return lambda: page_connection.get(url, {}, time.monotonic() + 1.0, 64 << 20).body

    def standard_library() -> bytes:
        connection.request("GET", "/metrics", headers=HEADERS)
        return connection.getresponse().read()

    def close() -> None:
        for pages in page_clients.values():
            pages.close()
        client.close()
        transport.close()
        connection.close()

    return {
        "httpx Client.stream (before)": stream,
        "httpx HTTPTransport (floor)": transport_only,
        **{f"tokentop PageConnection {name}": tokentop(pages) for name, pages in page_clients.items()},
        "http.client": standard_library,
    }, close


def measure(engines: int, requests: int, fetchers: dict[str, ModuleType]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.txt"
        page.write_text(busy_page(engines))
        size = page.stat().st_size
        server, (port,) = serve_file(page)
        each, close = ways(port, fetchers)
        try:
            cpu: dict[str, list[float]] = {name: [] for name in each}
            for run in each.values():  # connect, warm up
                for _ in range(20):
                    assert len(run()) == size
            for _ in range(requests):
                for name, run in each.items():
                    started = time.process_time()
                    run()
                    cpu[name].append(time.process_time() - started)
                time.sleep(0.002)  # let the server go idle, as between ticks
        finally:
            close()
            server.kill()
    floor = statistics.median(cpu["http.client"])
    print(f"page: {size / 1024:.0f} KiB, one keep-alive connection, {requests} requests per way, taking turns")
    for name, times in cpu.items():
        median = statistics.median(times)
        print(f"  {name:36s} CPU per request: median {median * 1e3:.3f} ms  ({median / floor:.2f}x http.client)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, nargs="+", default=[7, 0], help="DP engines on each page (7: 128 KiB)")
    parser.add_argument("--requests", type=int, default=600, help="requests per way")
    parser.add_argument(
        "--before", type=Path, help="an earlier tokentop's source tree, its PageConnection measured too"
    )
    args = parser.parse_args()
    fetchers = {"(now)": fetch}
    if args.before is not None:
        fetchers["(before)"] = earlier_fetch(args.before.resolve())
    for engines in args.engines:
        measure(engines, args.requests, fetchers)


if __name__ == "__main__":
    main()
