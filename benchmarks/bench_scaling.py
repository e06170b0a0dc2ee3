"""How one tick's CPU and the process's memory grow with GPUs, endpoints and page size.

    python benchmarks/bench_scaling.py [--ticks 40]

Each row is a fresh process (so that memory is its own) running ``Sampler.tick`` as ``record``
does: the real NVML reader over the fake NVML (``tokentop.nvml.fake``; a real driver call costs
more, see device_nvml_check.py), the endpoints' pages served by one other process (one
listening thread per endpoint: its CPU is not ours), the SQLite append to a real file. Printed
per row: the median CPU of a tick (``time.process_time``, every thread of ours: the poll pool
too), that as a share of one core at 1 Hz, and the peak RSS.

Pages: the real vLLM V1 capture of bench_reader.py with N data-parallel engines (128 KiB: 7
engines, 1 MiB: 58), and for 10 KiB the one-engine page cut down to every line tokentop reads
and others up to the size. One variable at a time from the middle row (8 GPUs, 4 endpoints, 128 KiB), and the
target's corner: 64 GPUs and 16 endpoints at under 1 % of a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import peak_rss_mb, serve_file
from bench_reader import busy_page

PAGES = {"10 KiB": None, "128 KiB": 7, "1 MiB": 58}  # engines on the page; None: cut to 10 KiB
ROWS = [  # (GPUs, endpoints, page)
    (1, 4, "128 KiB"),
    (8, 4, "128 KiB"),
    (16, 4, "128 KiB"),
    (64, 4, "128 KiB"),
    (8, 1, "128 KiB"),
    (8, 16, "128 KiB"),
    (8, 64, "128 KiB"),
    (8, 4, "10 KiB"),
    (8, 4, "1 MiB"),
    (64, 16, "128 KiB"),
]


def page_text(page: str) -> str:
    engines = PAGES[page]
    if engines is not None:
        return busy_page(engines)
    # One engine's page (23 KiB) cut to 10 KiB: every line tokentop reads, then others in order.
    from tokentop.collectors.kinds import PROCESS_NAMES, VLLM

    lines = busy_page(1).splitlines(keepends=True)
    read = [line for line in lines if line.split("{")[0].split(" ")[0] in VLLM.names + PROCESS_NAMES]
    size = sum(map(len, read))
    kept = set(read)
    for line in lines:
        if line not in kept and size + len(line) <= 10 * 1024:
            kept.add(line)
            size += len(line)
    return "".join(line for line in lines if line in kept)


def one(gpus: int, endpoints: int, page: str, ticks: int) -> dict[str, float]:
    """Runs in the child: the ticks of one row; returns its figures."""
    from tokentop.config import Config, EndpointConfig
    from tokentop.history import Store
    from tokentop.nvml.fake import FakeNvml
    from tokentop.nvml.reader import NvmlReader
    from tokentop.sampler import Sampler

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "page.txt"
        path.write_text(page_text(page))
        server, ports = serve_file(path, endpoints)  # one process, a thread per endpoint
        try:
            config = Config(
                endpoints=tuple(
                    EndpointConfig(
                        url=f"http://127.0.0.1:{port}/metrics", name=f"e{i}", kind="vllm", gpus=(str(i % gpus),)
                    )
                    for i, port in enumerate(ports)
                )
            )
            store = Store.open(Path(tmp) / "h.db", host="bench", version="bench", config={})
            sampler = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=gpus)), store=store)
            cpu = []
            for i in range(ticks + 5):
                started = time.process_time()
                snapshot = sampler.tick()
                if i >= 5:  # warm-up: kinds detected, label caches filled
                    cpu.append(time.process_time() - started)
                time.sleep(0.02)
            up = sum(e.sample.status == "up" for e in snapshot.endpoints)
            sampler.stop()
        finally:
            server.kill()
    return {"cpu_ms": statistics.median(cpu) * 1e3, "rss_mb": peak_rss_mb(os.getpid()) or float("nan"), "up": up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--one", nargs=3, metavar=("GPUS", "ENDPOINTS", "PAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        gpus, endpoints, page = args.one
        print(json.dumps(one(int(gpus), int(endpoints), page, args.ticks)))
        return
    print(f"median CPU of one tick over {args.ticks} ticks (record's path: NVML, HTTP, derive, SQLite append)")
    print(f"{'GPUs':>5} {'endpoints':>9} {'page':>8} | {'tick CPU':>9} {'% core at 1 Hz':>14} {'peak RSS':>9} | up")
    for gpus, endpoints, page in ROWS:
        child = [sys.executable, __file__, "--ticks", str(args.ticks), "--one", str(gpus), str(endpoints), page]
        result = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
        print(
            f"{gpus:>5} {endpoints:>9} {page:>8} | {result['cpu_ms']:>6.2f} ms {result['cpu_ms'] / 10:>13.2f}% "
            f"{result['rss_mb']:>6.1f} MB | {result['up']}/{endpoints}"
        )


if __name__ == "__main__":
    main()
