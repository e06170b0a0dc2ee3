"""How fast tokentop reads a busy vLLM V1 /metrics page, against prometheus_client.

    python benchmarks/bench_reader.py [--engines 7] [--repeat 200]

The page is the real vLLM V1 capture in ``tests/fixtures/metrics`` with every ``engine="0"``
series repeated for N data-parallel engines (values scaled per engine), about 130 KiB for 7:
the size of a busy multi-engine server's page. Prints medians: the reader vs
``prometheus_client`` (same values checked), and one whole ``EndpointCollector.poll`` against
a server in another process, split into this process's CPU time and the wait for the server.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tokentop.collectors import EndpointCollector, exposition, read_samples
from tokentop.collectors.kinds import VLLM, read_figures
from tokentop.config import EndpointConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import serve_file
from conftest import read_page  # tests/conftest.py names the fixtures folder

FIXTURE = "vllm/v1-qwen3-0.6b-via-dynamo.txt"


def busy_page(engines: int) -> str:
    """The V1 capture with each engine-0 series repeated for ``engines`` engines."""
    out: list[str] = []
    for line in read_page(FIXTURE).splitlines():
        if line.startswith("#") or 'engine="0"' not in line:
            out.append(line)
            continue
        series, value = line.rsplit(" ", 1)
        created = series.split("{", 1)[0].endswith("_created")
        for engine in range(engines):
            scaled = float(value) if created else float(value) * (engine + 1)
            out.append(f"{series.replace(chr(34) + '0' + chr(34), chr(34) + str(engine) + chr(34), 1)} {scaled!r}")
    return "\n".join(out) + "\n"


def median_s(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def oracle(text: str, names: tuple[str, ...]) -> dict[str, dict[frozenset, float]]:
    wanted = set(names)
    found: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = float(sample.value)
    return found


def identical(page: str) -> bool:
    expected = oracle(page, VLLM.names)
    got = {
        n: {frozenset(labels.items()): v for labels, v in s} for n, s in read_samples(page, VLLM.names).series.items()
    }
    return expected.keys() == got.keys() and all(
        got[n].keys() == expected[n].keys()
        and all(v == got[n][k] or (math.isnan(v) and math.isnan(got[n][k])) for k, v in expected[n].items())
        for n in expected
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    page = busy_page(args.engines)
    names = VLLM.names
    lines = sum(len(s) for s in read_samples(page, names).series.values())
    print(
        f"page: {len(page) / 1024:.0f} KiB, {page.count(chr(10))} lines, {args.engines} engines; "
        f"{len(names)} names asked for, {lines} sample lines read"
    )

    exposition._label_cache.clear()
    started = time.perf_counter()
    read_samples(page, names)
    cold = time.perf_counter() - started
    ours = median_s(lambda: read_samples(page, names), args.repeat)
    theirs = median_s(lambda: list(text_string_to_metric_families(page)), max(10, args.repeat // 10))
    figures = median_s(lambda: read_figures(VLLM, read_samples(page, names)), args.repeat)
    print(f"read_samples          median {ours * 1e3:7.3f} ms  (first read, empty label cache: {cold * 1e3:.3f} ms)")
    print(f"  + read_figures      median {figures * 1e3:7.3f} ms  (sums, histograms, model)")
    print(f"prometheus_client     median {theirs * 1e3:7.3f} ms")
    print(f"ratio                 {theirs / ours:7.1f}x faster (target: at least 30x)")
    print(f"identical values      {'yes' if identical(page) else 'NO'}")

    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "metrics"
        body.write_text(page)
        server, (port,) = serve_file(body)
        try:
            with httpx.Client() as client:
                collector = EndpointCollector(
                    EndpointConfig(f"http://127.0.0.1:{port}"), client, timeout_s=2.0, max_page_bytes=8 << 20
                )
                assert collector.poll(0.0).status == "up"  # probe once, warm the connection
                walls, cpus = [], []
                for i in range(args.repeat):
                    wall, cpu = time.perf_counter(), time.process_time()
                    sample = collector.poll(float(i))
                    walls.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
                    assert sample.status == "up", sample.error
        finally:
            server.terminate()
            server.wait()
    wall_ms, cpu_ms = statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3
    print(
        f"EndpointCollector.poll median {wall_ms:7.3f} ms wall: {cpu_ms:.3f} ms CPU in this process "
        f"(HTTP client + reading), {max(0.0, wall_ms - cpu_ms):.3f} ms waiting for the server (another process)"
    )


if __name__ == "__main__":
    main()
