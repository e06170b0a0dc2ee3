"""The fleet view's cost on a large fleet: 100 hosts x 8 GPUs in a real Prometheus.

One synthetic exporter (a child process, so its work is not counted as tokentop's) publishes
every host's ``tokentop_*`` series, with ``host`` labels kept by ``honor_labels``; a real
Prometheus (``/usr/bin/prometheus``) scrapes it every second. Then ``PrometheusSource.read`` runs
REFRESHES times in each of its two modes, and this prints the medians of: queries per refresh
(target <= 10), tokentop's CPU per refresh (process time, target <= 50 ms), and the process's
peak RSS (target <= 80 MB). First the live view's mode (``detail="focused"``: per-host aggregates
for every host, per-GPU rows for the one host opened), then, as the peer in the same run, every
GPU of every host (``detail="all"``, what ``snapshot --json`` reads). ``--profile`` prints a
cProfile of five reads in each mode first.

    .venv/bin/python benchmarks/bench_fleet_prometheus.py
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests" / "integration")]

HOSTS, GPUS = 100, 8
REFRESHES = 15
FOCUS = "gpu-host-042"  # the host the live view has open
WARMUP_S = 12.0


def page(now: float) -> str:
    """Every host's series at ``now``: counters linear in time, varied per GPU."""
    t = now - 1_000_000.0
    lines = []
    for h in range(HOSTS):
        host = f"gpu-host-{h:03d}"
        lines.append(f'tokentop_info{{host="{host}",version="bench"}} 1')
        lines.append(f'tokentop_snapshot_timestamp_seconds{{host="{host}"}} {now:.3f}')
        lines.append(f'tokentop_endpoint_up{{endpoint="vllm",kind="vllm",host="{host}"}} 1')
        for d, k in (("in", 3.0), ("out", 1.0)):
            series = f'tokentop_endpoint_tokens_total{{endpoint="vllm",kind="vllm",host="{host}",direction="{d}"}}'
            lines.append(f"{series} {k * 8000 * t:.1f}")
        for g in range(GPUS):
            rate = 500.0 + 37 * ((h * GPUS + g) % 23)
            labels = f'gpu="{g}",uuid="GPU-{h:04d}-{g:04d}",host="{host}"'
            info = 'name="NVIDIA H200",energy_method="counter",engines="vllm",price_source="built-in table: H200"'
            lines.append(f"tokentop_gpu_info{{{labels},{info}}} 1")
            lines.append(f'tokentop_gpu_tokens_total{{{labels},direction="in"}} {3 * rate * t:.1f}')
            lines.append(f'tokentop_gpu_tokens_total{{{labels},direction="out"}} {rate * t:.1f}')
            for name, value in (
                ("energy_joules_total", 450.0 * t),
                ("cost_usd_total", 3.5 / 3600 * t),
                ("busy_seconds_total", 0.8 * t),
                ("busy_cost_usd_total", 0.8 * 3.5 / 3600 * t),
                ("watched_seconds_total", t),
                ("power_watts", 450.0),
                ("utilization_ratio", 0.8),
                ("usd_per_hour", 3.5),
            ):
                lines.append(f"tokentop_gpu_{name}{{{labels}}} {value:.6f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    from prometheus_harness import Job, Prometheus, Unavailable, end, spawn

    from tokentop.config import Config, PrometheusConfig
    from tokentop.fleet.prometheus_source import PrometheusSource

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    exporter = spawn([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE)
    try:
        assert exporter.stdout is not None
        port = exporter.stdout.readline().strip().decode()
        if not port:
            sys.exit(f"the synthetic exporter ended with {exporter.wait()}")
        job = Job("fleet", (f"127.0.0.1:{port}",), honor_labels=True)
        try:
            prometheus = Prometheus(work, [job])
            prometheus.start()
        except Unavailable as exc:
            sys.exit(f"no benchmark: real Prometheus unavailable: {exc}")
        try:
            time.sleep(WARMUP_S)
            settings = PrometheusConfig(url=prometheus.url, cost_window_s=10, rate_window_s=5)
            focused = PrometheusSource(Config(prometheus=settings), detail="focused")
            focused.focus(FOCUS)
            measure(focused, f"live view (detail='focused', {FOCUS} opened)")
            measure(PrometheusSource(Config(prometheus=settings)), "every GPU (detail='all', snapshot --json)")
        finally:
            prometheus.stop()
    finally:
        end(exporter)


def measure(source: object, what: str) -> None:
    from tokentop.fleet.prometheus_source import PrometheusSource

    assert isinstance(source, PrometheusSource)
    cpu, walls, queries = [], [], []
    if "--profile" in sys.argv:
        import cProfile

        cProfile.runctx("for _ in range(5): source.read()", globals(), {"source": source}, sort="tottime")
    for _ in range(REFRESHES):
        before_q, c0, w0 = source.client.queries, time.process_time(), time.perf_counter()
        reading = source.read()
        cpu.append((time.process_time() - c0) * 1000)
        walls.append((time.perf_counter() - w0) * 1000)
        queries.append(source.client.queries - before_q)
        time.sleep(0.2)
    assert reading.status is None, reading.status
    assert len(reading.hosts) == HOSTS and reading.fleet.gpu_count == HOSTS * GPUS, (len(reading.hosts),)
    with_rows = [h.name for h in reading.hosts if h.snapshot and h.snapshot.gpus]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{what}: {HOSTS} hosts x {GPUS} GPUs in Prometheus; {REFRESHES} refreshes; "
        f"GPU rows for {len(with_rows)} host(s)"
    )
    print(
        f"  queries per refresh: median {statistics.median(queries):g}, max {max(queries)} (first includes detection)"
    )
    wall = statistics.median(walls)
    print(f"  tokentop CPU per refresh: median {statistics.median(cpu):.1f} ms (wall median {wall:.1f} ms)")
    print(f"  peak RSS of the process so far: {rss_mb:.1f} MB")
    source.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:  # the synthetic exporter's own process
        from _common import serve_pages

        serve_pages(lambda path: page(time.time()).encode())
    else:
        main()
