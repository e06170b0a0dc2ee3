"""CPU time of one whole tick: 8 GPUs and 4 endpoints serving ~130 KiB vLLM pages.

    python benchmarks/bench_tick.py [--ticks 200] [--rounds 2] [--nvml c|python] [--before DIR]

Each tick is a real ``Sampler.tick()``: the GPUs through the real reader, the four endpoints'
pages over loopback HTTP from another process (its CPU is not ours), the derivation and the
SQLite append to a real file. Its CPU is this process's ``time.process_time()`` (every thread:
the sampler's and the HTTP pool's) around the tick, so the wait for the network is excluded.
The clock advances 1 s per tick, as at 1 Hz, so every fifth read of a page also reads the
latency histograms (``LATENCY_EVERY_S``); ticks are ``--gap`` apart in real time. A tick's CPU
grows with the time since the last one (``--gap 0 0.02 0.3 0.95`` shows it): code run after a
sleep finds the caches cold, and here that costs about a third more than the tick run hot.

GPUs: ``--nvml c`` (the default) is the C fake ``libnvidia-ml.so.1`` in tests/fakenvml under the
real ``pynvml`` and ctypes, as on a real host less the driver's own time (see
device_nvml_check.py); ``--nvml python`` is the Python fake, whose own code costs about as much
as the reader's.

Two kinds of server, in turn, ``--rounds`` times, each run a fresh process:

- *whole pages*: the server ignores a query, so every read is the whole page (a server other
  than prometheus_client's app, or vLLM with several API servers);
- *by name*: the server answers ``?name[]=`` as prometheus_client's app does (vLLM with one API
  server, LMDeploy): only the samples asked for (collectors/by_name.py).

``--before DIR``: the same for an earlier tokentop's source tree (``git archive <commit>
tokentop | tar -x -C DIR``), in the same run. Prints the median, mean and p95 of each. Target
(issue 13): at most 2.5 ms.
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

from _common import ROOT, build_fakenvml, serve_file
from bench_tick_parts import SteppedClock

SERVERS = {"whole pages": False, "by name": True}


def child(tree: Path, nvml: str, ports: list[int], ticks: int, gap_s: float) -> list[float]:
    """CPU seconds of each of ``ticks`` ticks of the tokentop in ``tree``."""
    sys.path.insert(0, str(tree))
    from tokentop.config import Config, EndpointConfig
    from tokentop.history import Store
    from tokentop.nvml.fake import FakeNvml
    from tokentop.nvml.reader import NvmlReader
    from tokentop.sampler import Sampler

    config = Config(
        endpoints=tuple(
            EndpointConfig(
                url=f"http://127.0.0.1:{p}/metrics", name=f"e{i}", kind="vllm", gpus=(str(2 * i), str(2 * i + 1))
            )
            for i, p in enumerate(ports)
        )
    )
    clock = SteppedClock()
    cpu = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "h.db", host="bench", version="bench", config={})
        lib = FakeNvml.healthy(count=8) if nvml == "python" else None
        sampler = Sampler(config, NvmlReader(lib=lib), store=store, clock=clock.mono, wall_clock=clock.wall)
        if not sampler.gpus.available:
            raise SystemExit(f"{nvml} NVML not readable: {sampler.gpus.reason}")
        for i in range(ticks + 10):  # the first 10 warm up: caches, kinds, the filter's trial
            started = time.process_time()
            sampler.tick()
            if i >= 10:
                cpu.append(time.process_time() - started)
            clock.step()
            time.sleep(gap_s)
        sampler.stop()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--gap", type=float, nargs="+", default=[0.02], help="seconds between ticks in real time; several: each in turn"
    )
    parser.add_argument("--engines", type=int, default=7, help="DP engines per page (7: about 130 KiB)")
    parser.add_argument("--nvml", choices=("c", "python"), default="c")
    parser.add_argument("--before", type=Path, help="an earlier tokentop's source tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ports = [int(port) for port in args.ports.split(",")]
        print(json.dumps(child(args.tree, args.nvml, ports, args.ticks, args.gap[0])))
        return
    from bench_reader import busy_page  # it imports tokentop: not in a child, which picks its tree

    trees = {"now": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    cpu: dict[tuple[str, str, float], list[float]] = {
        (tree, server, gap): [] for tree in trees for server in SERVERS for gap in args.gap
    }
    with tempfile.TemporaryDirectory() as tmp:
        lib, why = build_fakenvml(Path(tmp)) if args.nvml == "c" else (None, "")
        if args.nvml == "c" and lib is None:
            raise SystemExit(why)
        page = Path(tmp) / "page.txt"
        page.write_text(busy_page(args.engines))
        size_kib = page.stat().st_size / 1024
        for _ in range(args.rounds):
            for server_name, by_name in SERVERS.items():
                server, ports = serve_file(page, 4, by_name=by_name)
                try:
                    for gap in args.gap:
                        for tree_name, tree in trees.items():
                            cpu[tree_name, server_name, gap] += run_child(tree, ports, args, lib, gap)
                finally:
                    server.kill()
    print(f"8 GPUs ({args.nvml} fake NVML), 4 endpoints of {size_kib:.0f} KiB vLLM pages, SQLite append")
    print(f"{args.rounds} rounds x {args.ticks} ticks, 1 s apart on the sampler's clock; CPU per tick, ms:")
    print(f"{'tree':8s} {'server':12s} {'gap s':>6s} {'median':>8s} {'mean':>8s} {'p95':>8s}   (target <= 2.5 ms)")
    for (tree_name, server_name, gap), values in cpu.items():
        values.sort()
        median, p95 = statistics.median(values) * 1e3, values[int(len(values) * 0.95)] * 1e3
        mean = statistics.mean(values) * 1e3
        print(f"{tree_name:8s} {server_name:12s} {gap:6.2f} {median:8.2f} {mean:8.2f} {p95:8.2f}")
    print("median: a tick that reads the counters; mean: with every fifth one's histograms (record's cost a second)")


def run_child(tree: Path, ports: list[int], args: argparse.Namespace, lib: Path | None, gap: float) -> list[float]:
    command = [sys.executable, __file__, "--child", "--tree", str(tree), "--ports", ",".join(map(str, ports))]
    command += ["--ticks", str(args.ticks), "--gap", str(gap), "--nvml", args.nvml]
    env = dict(os.environ)
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), env.get("LD_LIBRARY_PATH")]))
        env.pop("FAKENVML_CONFIG", None)  # its defaults: 8 H200s under a sine load
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree} failed:\n{done.stderr}")
    values: list[float] = json.loads(done.stdout.splitlines()[-1])
    return values


if __name__ == "__main__":
    main()
