"""Memory and time under hostile pages (issue 9, item 2).

    python benchmarks/bench_hostile_memory.py [--duration 60] [--series 60] [--label-kb 120]

1. A server in another process answers every scrape with ``--series`` vLLM series, each with a
   fresh ``--label-kb`` KB label value (7.2 MB by default: nothing in it repeats from one scrape
   to the next). ``tokentop record`` reads it every second for ``--duration`` seconds, with a
   history database in a temporary folder (no GPU here: NVML absent is said and passed over);
   its RSS is read from /proc every second. Printed: RSS once started (5 s in), peak, end,
   growth, the RSS every 10 s, and how many pages the server served.
   Before issue 9 the label cache, capped by count, held every label value it saw: 105 MB to
   946 MB in 60 s.
2. One ``EndpointCollector.poll`` of a page with ``--many`` (110,000) series, timed: it must
   end well within a one-second tick, with the endpoint in error and the reason said.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import serve_pages, start_server

from tokentop.collectors import EndpointCollector
from tokentop.collectors.fetch import PageClient
from tokentop.config import EndpointConfig


def hostile_pages(series: int, label_bytes: int, many: int) -> Callable[[str], bytes]:
    """The pages of the server: /metrics new every scrape, /many/metrics, /served (a count)."""
    scrape = itertools.count()
    served = [0]
    many_page = "".join(f'vllm:num_requests_running{{engine="{i}",model_name="m"}} 1\n' for i in range(many)).encode()

    def unique_page() -> bytes:
        n = next(scrape)
        served[0] = n + 1
        filler = "x" * label_bytes
        lines = [f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {n}\n']
        lines += [f'vllm:num_requests_running{{engine="{i}",model_name="{n}-{i}-{filler}"}} 1\n' for i in range(series)]
        return "".join(lines).encode()

    def body_for(path: str) -> bytes:
        if path == "/served":
            return str(served[0]).encode()
        return many_page if path == "/many/metrics" else unique_page()

    return body_for


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def record_rss(url: str, duration_s: float) -> list[float]:
    """RSS of ``tokentop record`` every second while it reads ``url``."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "tokentop.cli",
            "record",
            "--duration",
            f"{duration_s:g}",
            "--no-summary",
            "--endpoint",
            url,
            "--db",
            str(Path(tmp) / "history.db"),
            "--interval",
            "1",
        ]
        record = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples: list[float] = []
        while record.poll() is None:
            time.sleep(1.0)
            if (mb := rss_mb(record.pid)) is not None:
                samples.append(mb)
        _, errors = record.communicate()
        if record.returncode != 0:
            raise SystemExit(f"record failed ({record.returncode}):\n{errors}")
    return samples


def time_many_series_poll(base: str, repeat: int) -> None:
    with closing(PageClient()) as client:
        walls = []
        for i in range(repeat):
            collector = EndpointCollector(
                EndpointConfig(base + "/many/metrics"), client, timeout_s=0.8, max_page_bytes=8 << 20
            )
            started = time.perf_counter()
            sample = collector.poll(float(i))
            walls.append(time.perf_counter() - started)
    median_ms, max_ms = statistics.median(walls) * 1e3, max(walls) * 1e3
    print(f"one tick on the many-series page: median {median_ms:.0f} ms, max {max_ms:.0f} ms")
    print(f"  status {sample.status}: {sample.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--series", type=int, default=60)
    parser.add_argument("--label-kb", type=int, default=120)
    parser.add_argument("--many", type=int, default=110_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server's own process
    args = parser.parse_args()
    if args.serve:
        serve_pages(hostile_pages(args.series, args.label_kb * 1000, args.many), disable_nagle=False)
        return
    server, (port,) = start_server([sys.executable, __file__, "--serve", *sys.argv[1:]])
    try:
        base = f"http://127.0.0.1:{port}"
        page_mb = args.series * args.label_kb / 1000
        print(f"page: {args.series} series with a fresh {args.label_kb} KB label each, {page_mb:.1f} MB a scrape")
        samples = record_rss(base + "/metrics", args.duration)
        served = httpx.get(base + "/served").text
        warm = samples[min(4, len(samples) - 1)]
        peak, last = max(samples), samples[-1]
        print(
            f"tokentop record RSS over {len(samples)} s ({served} pages served): at 5 s {warm:.0f} MB, "
            f"peak {peak:.0f} MB, end {last:.0f} MB, growth {last - warm:+.0f} MB (peak {peak - warm:+.0f} MB)"
        )
        print("  every 10 s: " + " ".join(f"{mb:.0f}" for mb in samples[::10]) + " MB")
        time_many_series_poll(base, args.repeat)
    finally:
        server.terminate()
        server.wait()
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
