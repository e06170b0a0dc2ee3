"""Hammer ``tokentop export`` with many concurrent scrapers and count the slow answers.

    python benchmarks/bench_exporter_load.py                  # 200 clients for 10 s
    python benchmarks/bench_exporter_load.py --tree /tmp/old  # the exporter of another source tree
    python benchmarks/bench_exporter_load.py --url http://127.0.0.1:9464/metrics

The exporter runs as its own process (``tokentop export --demo --no-history --listen
127.0.0.1:0``: the demo host, sampling at 1 Hz); ``--processes`` other processes run
``--clients`` scrapers between them, each scraping ``/metrics`` again as soon as it is answered
(a new connection per scrape), for ``--seconds``. A scrape is answered when a full ``200``
response arrived; any scrape not answered within 1 s counts as unanswered (one not answered at
all within 10 s is given up). Printed: scrapes answered, unanswered within 1 s, given up,
latency median, p99 and max. Target: none unanswered within 1 s at 200 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ANSWER_WITHIN_S = 1.0
GIVE_UP_S = 10.0


async def scrape(host: str, port: int, path: str) -> bool:
    """One scrape on a new connection; True when a whole 200 response came back."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return (
        head.startswith(b"HTTP/1.")
        and b" 200 " in head.split(b"\r\n")[0]
        and (length is None or len(body) == int(length.group(1)))
    )


async def client(url: str, until: float, latencies: list[float], failures: list[str]) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            answered = await asyncio.wait_for(scrape(host, port, parts.path or "/metrics"), GIVE_UP_S)
        except (OSError, asyncio.TimeoutError) as exc:
            failures.append(type(exc).__name__)
            continue
        if answered:
            latencies.append(time.monotonic() - started)
        else:
            failures.append("not a full 200 answer")


async def hammer(url: str, clients: int, seconds: float) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(url, until, latencies, failures) for _ in range(clients)))
    return latencies, failures


def hammer_in_process(job: tuple[str, int, float]) -> tuple[list[float], list[str]]:
    return asyncio.run(hammer(*job))


def hammer_from_processes(url: str, clients: int, seconds: float, processes: int) -> tuple[list[float], list[str]]:
    """``clients`` scrapers spread over ``processes`` client processes (one event loop each), so
    that the clients' own CPU does not cap the rate of new connections."""
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    with multiprocessing.Pool(processes) as pool:
        results = pool.map(hammer_in_process, [(url, share, seconds) for share in shares if share])
    return [t for r in results for t in r[0]], [f for r in results for f in r[1]]


def start_exporter(tree: Path | None) -> tuple[subprocess.Popen[str], str]:
    """``tokentop export`` of this checkout (or of ``tree``) on a free loopback port, once it
    serves a first reading."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if tree is not None:  # ``-m`` puts the working directory first on the path: run from the tree
        env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "tokentop.cli", "export", "--demo", "--no-history", "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tree)
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"serving (http://\S+/metrics)", line)
    if not match:
        process.kill()
        raise SystemExit(f"the exporter did not start: {line.strip()}")
    url = match.group(1)
    deadline = time.monotonic() + 30
    while b"tokentop_gpu_power_watts" not in urllib.request.urlopen(url, timeout=5).read():
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("no reading after 30 s")
        time.sleep(0.2)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4, help="client processes the clients are spread over")
    parser.add_argument("--tree", type=Path, help="source tree whose tokentop package serves (default: this one)")
    parser.add_argument("--url", help="scrape this running exporter instead of starting one")
    args = parser.parse_args()
    process = None
    url = args.url
    if url is None:
        process, url = start_exporter(args.tree)
    try:
        latencies, failures = hammer_from_processes(url, args.clients, args.seconds, args.processes)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    slow = sum(1 for t in latencies if t > ANSWER_WITHIN_S)
    latencies.sort()
    print(f"{args.clients} clients in {args.processes} processes for {args.seconds:g} s against {url}")
    print(f"scrapes answered: {len(latencies):,}")
    print(f"unanswered within {ANSWER_WITHIN_S:g} s: {slow + len(failures):,} ({slow} slow, {len(failures)} failed)")
    if failures:
        print(f"failures: {sorted(set(failures))}")
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"latency median {statistics.median(latencies) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
            f"max {latencies[-1] * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
