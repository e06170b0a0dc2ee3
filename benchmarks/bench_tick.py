"""CPU time of one whole tick: 8 GPUs and 4 endpoints serving ~130 KiB vLLM pages.

    python benchmarks/bench_tick.py [--ticks 200] [--engines 7]

The four servers run in another process, so their CPU is not ours; the tick's CPU is this
process's ``time.process_time()`` (all threads: sampler and HTTP pool) around
``Sampler.tick()``, so the wait for the network is excluded. GPUs are the fake NVML under the
real reader (a real driver call costs more; see benchmarks/device_nvml_check.py). Includes the
SQLite append to a real file. Prints the median and p95 per tick. Target: at most 2.5 ms (issue 13;
benchmarks/bench_http.py shows what of it is httpx's own floor).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import serve_file
from bench_reader import busy_page

from tokentop.config import Config, EndpointConfig
from tokentop.history import Store
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--engines", type=int, default=7, help="DP engines per page (7: about 130 KiB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.txt"
        page.write_text(busy_page(args.engines))
        servers, ports = [], []
        try:
            for _ in range(4):  # one process each
                server, (port,) = serve_file(page)
                servers.append(server)
                ports.append(port)
            config = Config(
                endpoints=tuple(
                    EndpointConfig(
                        url=f"http://127.0.0.1:{p}/metrics",
                        name=f"e{i}",
                        kind="vllm",
                        gpus=(str(2 * i), str(2 * i + 1)),
                    )
                    for i, p in enumerate(ports)
                )
            )
            store = Store.open(Path(tmp) / "h.db", host="bench", version="bench", config={})
            sampler = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=8)), store=store)
            cpu = []
            for i in range(args.ticks + 5):
                started = time.process_time()
                sampler.tick()
                if i >= 5:  # warm-up: first reads fill caches and detect kinds
                    cpu.append(time.process_time() - started)
                time.sleep(0.01)
            sampler.stop()
        finally:
            for server in servers:
                server.kill()
    cpu.sort()
    print(f"page size: {page_size_kib(args.engines):.0f} KiB x 4 endpoints, 8 GPUs (fake NVML), SQLite append")
    print(
        f"CPU per tick: median {statistics.median(cpu) * 1e3:.2f} ms, "
        f"p95 {cpu[int(len(cpu) * 0.95)] * 1e3:.2f} ms over {len(cpu)} ticks (target <= 2.5 ms)"
    )


def page_size_kib(engines: int) -> float:
    return len(busy_page(engines).encode()) / 1024


if __name__ == "__main__":
    main()
