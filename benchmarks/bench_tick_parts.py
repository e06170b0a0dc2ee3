"""CPU time of the non-HTTP parts of one tick: the GPU read, the derivation and the history append.

    python benchmarks/bench_tick_parts.py [--ticks 150] [--rounds 3] [--before DIR]

8 GPUs and 4 vLLM endpoints (busy ~130 KiB pages whose counters and histograms grow with
every request, served by another process), each tick a real ``Sampler.tick()`` on a clock that
advances 1 s per tick (so the windows, rollups and the process-list cadence are those of a real
session), ticks ``--gap`` seconds apart in real time (caches go cold between ticks, as they do
at 1 Hz). Inside those ticks, the thread CPU time (``time.thread_time``) of:

- ``gpus.read``: ``NvmlReader.read`` over the Python ``FakeNvml`` (its GPUs' power,
  utilisation, temperature, clock and energy change every tick), and over the C fake NVML
  (``tests/fakenvml``, built here) through the real ``pynvml`` and ctypes;
- ``deriver.step``: ``Deriver.step``;
- ``store.append``: ``Store.append`` to a real SQLite file.

Prints the median per tick of each. ``--before DIR``: the same, in the same run, for an earlier
tokentop's source tree (``git archive <commit> tokentop | tar -x -C DIR``), with the ratio now /
before. Each (tree, NVML) pair runs in a fresh process, ``--rounds`` times, interleaved;
medians are over every tick of every round. Target (issue 13): each part at most half of what
it cost before the work on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = 4
GPUS = 8
PARTS = ("gpus.read", "deriver.step", "store.append")
GROWING = ("_total", "_bucket", "_count", "_sum")  # series whose values grow request by request


# --- the page server (another process) -------------------------------------------------------


def serve(engines: int) -> None:
    """Serve the busy vLLM page on ``ENDPOINTS`` ports; each request's counters a little higher."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import serve_pages
    from bench_reader import busy_page

    lines: list[tuple[str, float | None, str]] = []  # (series, base value or None, the line)
    for line in busy_page(engines).splitlines():
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        growing = not line.startswith("#") and name.endswith(GROWING) and not name.endswith("_created")
        lines.append((series, float(value) if growing else None, line))
    requests = 0

    def body_for(_path: str) -> bytes:
        nonlocal requests
        requests += 1
        factor = 1.0 + requests * 1e-4
        return (
            "\n".join(line if base is None else f"{series} {base * factor!r}" for series, base, line in lines) + "\n"
        ).encode()

    serve_pages(body_for, ENDPOINTS)


# --- one measurement (a fresh process, the tree's own tokentop) --------------------------------


def measure(tree: Path, nvml: str, ports: list[int], ticks: int, gap_s: float) -> dict[str, list[float]]:
    """Each part's thread CPU seconds in ``ticks`` real ticks of the tokentop in ``tree``."""
    sys.path.insert(0, str(tree))
    import tokentop
    from tokentop.config import Config, EndpointConfig
    from tokentop.history import Store
    from tokentop.nvml.fake import MIB, FakeNvml
    from tokentop.nvml.reader import NvmlReader
    from tokentop.sampler import Sampler

    assert Path(tokentop.__file__).resolve().is_relative_to(tree.resolve()), tokentop.__file__
    config = Config(
        endpoints=tuple(
            EndpointConfig(
                url=f"http://127.0.0.1:{port}/metrics", name=f"e{i}", kind="vllm", gpus=(str(2 * i), str(2 * i + 1))
            )
            for i, port in enumerate(ports)
        )
    )
    fake = FakeNvml.healthy(count=GPUS) if nvml == "python" else None
    if fake is not None:
        for i, gpu in enumerate(fake.gpus):
            gpu.compute_processes = [(40_000 + i, 70_000 * MIB)]
    clock = SteppedClock()
    spent: dict[str, list[float]] = {part: [] for part in PARTS}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "history.db", host="bench", version="bench", config={})
        sampler = Sampler(config, NvmlReader(lib=fake), store=store, clock=clock.mono, wall_clock=clock.wall)
        if not sampler.gpus.available:
            raise SystemExit(f"{nvml} NVML not readable: {sampler.gpus.reason}")
        for part, owner, method in (
            ("gpus.read", sampler.gpus, "read"),
            ("deriver.step", sampler.deriver, "step"),
            ("store.append", store, "append"),
        ):
            setattr(owner, method, timed(getattr(owner, method), spent[part]))
        for tick in range(ticks + 10):  # the first 10 warm up
            if fake is not None:
                vary(fake.gpus, tick)
            if tick == 10:
                for times in spent.values():
                    times.clear()
            sampler.tick()
            clock.step()
            time.sleep(gap_s)
        sampler.stop()
    return spent


class SteppedClock:
    """One second per tick, on both clocks."""

    def __init__(self) -> None:
        self.ticks = 0
        self._mono, self._wall = time.monotonic(), time.time()

    def step(self) -> None:
        self.ticks += 1

    def mono(self) -> float:
        return self._mono + self.ticks

    def wall(self) -> float:
        return self._wall + self.ticks


def vary(gpus: list[Any], tick: int) -> None:
    """What a busy GPU's readings do from one second to the next (whole milliwatts, as NVML)."""
    for i, gpu in enumerate(gpus):
        phase = tick + 7 * i
        gpu.power_w = round(420.0 + 180.0 * math.sin(phase / 9.0), 3)
        gpu.utilization_pct = 60 + phase % 40
        gpu.temperature_c = 55 + phase % 15
        gpu.sm_clock_mhz = 1980 - 15 * (phase % 8)
        gpu.advance(1.0)


def timed(function: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            into.append(time.thread_time() - started)

    return call


# --- the run -----------------------------------------------------------------------------------


def run_child(tree: Path, nvml: str, ports: list[int], args: argparse.Namespace, lib: Path | None) -> dict:
    command = [sys.executable, __file__, "--child", nvml, "--tree", str(tree), "--ports", ",".join(map(str, ports))]
    command += ["--ticks", str(args.ticks), "--gap", str(args.gap)]
    env = dict(os.environ)
    if lib is not None:
        env["LD_LIBRARY_PATH"] = (
            f"{lib}{os.pathsep}{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else str(lib)
        )
        env.pop("FAKENVML_CONFIG", None)  # its defaults: 8 H200s under a sine load
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree} ({nvml} NVML) failed:\n{done.stderr}")
    result: dict = json.loads(done.stdout.splitlines()[-1])
    return result


def report(results: dict[tuple[str, str], dict[str, list[float]]], labels: list[str], nvmls: list[str]) -> None:
    header = f"{'part':14s} {'NVML':7s}" + "".join(f"{label:>12s}" for label in labels)
    print(header + ("   now/before" if len(labels) == 2 else ""))
    for part in PARTS:
        for nvml in nvmls if part == "gpus.read" else nvmls[:1]:
            medians = [statistics.median(results[label, nvml][part]) * 1e3 for label in labels]
            line = f"{part:14s} {nvml:7s}" + "".join(f"{m:9.3f} ms" for m in medians)
            if len(medians) == 2:
                line += f"   {medians[0] / medians[1]:8.2f}"
            print(line)
    for nvml in nvmls[1:]:
        for part in PARTS[1:]:
            medians = ", ".join(f"{statistics.median(results[label, nvml][part]) * 1e3:.3f} ms" for label in labels)
            print(f"  ({part} in the {nvml} NVML runs: {medians})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=150, help="measured ticks per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.02, help="real seconds between ticks")
    parser.add_argument("--engines", type=int, default=7, help="DP engines per page (7: about 130 KiB)")
    parser.add_argument("--before", type=Path, help="an earlier tokentop's source tree, measured in the same run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("python", "c"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.engines)
        return
    if args.child:
        ports = [int(p) for p in args.ports.split(",")]
        print(json.dumps(measure(args.tree, args.child, ports, args.ticks, args.gap)))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import build_fakenvml, start_server

    trees = [("now", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    with tempfile.TemporaryDirectory() as tmp:
        lib, why = build_fakenvml(Path(tmp) / "fakenvml")
        nvmls = ["python"] + (["c"] if lib is not None else [])
        if lib is None:
            print(f"C fake NVML: skipped ({why})")
        server, ports = start_server([sys.executable, __file__, "--serve", "--engines", str(args.engines)])
        results: dict[tuple[str, str], dict[str, list[float]]] = {
            (label, nvml): {part: [] for part in PARTS} for label, _ in trees for nvml in nvmls
        }
        try:
            for _ in range(args.rounds):
                for nvml in nvmls:
                    for label, tree in trees:
                        spent = run_child(tree, nvml, ports, args, lib if nvml == "c" else None)
                        for part in PARTS:
                            results[label, nvml][part] += spent[part]
        finally:
            server.kill()
            server.wait()
    print(
        f"median thread CPU per tick, {GPUS} GPUs + {ENDPOINTS} endpoints, "
        f"{args.rounds} x {args.ticks} ticks per (tree, NVML):"
    )
    report(results, [label for label, _ in trees], nvmls)


if __name__ == "__main__":
    main()
