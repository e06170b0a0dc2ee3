"""tokentop's CPU per page read, beside httpx's and ``http.client``'s, on the same keep-alive request.

    python benchmarks/bench_http.py [--engines 7] [--requests 600]

One server in another process serves the busy vLLM page of bench_reader.py (about 128 KiB for
7 engines; ``--engines 0`` gives a 5 KiB page). Each way of asking keeps one connection open and
reads the whole body; the ways take turns request by request, so that a noisy machine slows them
alike. Printed: the median CPU time of this process per request (``time.process_time``: user and
system, the kernel's loopback work included), and each way's ratio to ``http.client``.

- ``Client.stream``: what tokentop did before issue 13 (URL parsed, client headers, cookies
  and parameters merged on every request, then the decoding iterator).
- ``Client.send``: what tokentop did after issue 13's first step (URL and headers made once,
  the raw iterator when the body is not encoded).
- ``PageConnection``: what tokentop does now (``tokentop.collectors.fetch``: ``http.client``
  with its deadline, size limit and headers, as ``EndpointCollector._get`` calls it).
- ``HTTPTransport``: httpx's own transport under the client (no auth, redirect or cookie steps):
  the floor of httpx as a client, via httpcore and h11.
- ``http.client``: the standard library alone, the floor of ``PageConnection``.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from _common import serve_file
from bench_reader import busy_page

from tokentop.collectors.fetch import PageClient

HEADERS = {"Accept-Encoding": "identity"}
TIMEOUT = {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}


def ways(port: int, pages: PageClient) -> dict[str, Callable[[], bytes]]:
    url = f"http://127.0.0.1:{port}/metrics"
    client = httpx.Client(follow_redirects=False, trust_env=False, verify=False)
    prepared_url = httpx.URL(url)
    prepared_headers = httpx.Headers(client.headers)
    prepared_headers.update(HEADERS)
    transport = httpx.HTTPTransport()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    page_connection = pages.connection()

    def stream() -> bytes:
        with client.stream("GET", url, headers=HEADERS, timeout=1.0) as response:
            return b"".join(response.iter_bytes())

    def send() -> bytes:
        request = httpx.Request("GET", prepared_url, headers=prepared_headers, extensions={"timeout": TIMEOUT})
        response = client.send(request, stream=True)
        try:
            return b"".join(response.iter_raw())
        finally:
            response.close()

    def transport_only() -> bytes:
        request = httpx.Request("GET", prepared_url, headers=prepared_headers, extensions={"timeout": TIMEOUT})
        response = transport.handle_request(request)
        try:
            return b"".join(response.stream)  # type: ignore[arg-type]  # a SyncByteStream here
        finally:
            response.close()

    def tokentop_now() -> bytes:
        return page_connection.get(url, {}, time.monotonic() + 1.0, 64 << 20).body

    def standard_library() -> bytes:
        connection.request("GET", "/metrics", headers=HEADERS)
        return connection.getresponse().read()

    return {
        "httpx Client.stream (before)": stream,
        "httpx Client.send (before)": send,
        "httpx HTTPTransport (floor)": transport_only,
        "tokentop PageConnection (now)": tokentop_now,
        "http.client": standard_library,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=7, help="DP engines on the page (7: about 128 KiB)")
    parser.add_argument("--requests", type=int, default=600, help="requests per way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.txt"
        page.write_text(busy_page(args.engines))
        size = page.stat().st_size
        server, (port,) = serve_file(page)
        pages = PageClient()
        try:
            each = ways(port, pages)
            cpu: dict[str, list[float]] = {name: [] for name in each}
            for run in each.values():  # connect, warm up
                for _ in range(20):
                    assert len(run()) == size
            for _ in range(args.requests):
                for name, run in each.items():
                    started = time.process_time()
                    run()
                    cpu[name].append(time.process_time() - started)
                time.sleep(0.002)  # let the server go idle, as between ticks
        finally:
            pages.close()
            server.kill()
    floor = statistics.median(cpu["http.client"])
    print(f"page: {size / 1024:.0f} KiB, one keep-alive connection, {args.requests} requests per way, taking turns")
    for name, times in cpu.items():
        median = statistics.median(times)
        print(f"  {name:30s} CPU per request: median {median * 1e3:.3f} ms  ({median / floor:.1f}x http.client)")


if __name__ == "__main__":
    main()
