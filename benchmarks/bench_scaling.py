"""How one tick's CPU and the process's memory grow with GPUs, endpoints and page size.

    python benchmarks/bench_scaling.py [--ticks 40] [--python-fake] [--by-name] [--before DIR] [--rounds 1]
        [--row G E PAGE]

Each row is a fresh process (so that memory is its own) running ``Sampler.tick`` as ``record``
does: the real NVML reader through the real ``pynvml`` and ctypes over the C fake NVML
(``tests/fakenvml``, a fake ``libnvidia-ml.so.1`` built here, up to 64 GPUs; a real driver call
costs more, see device_nvml_check.py), the endpoints' pages served by one other process (one
listening thread per endpoint: its CPU is not ours), the SQLite append to a real file. Printed
per row: the median CPU of a tick (``time.process_time``, every thread of ours: the poll pool
too), that as a share of one core at 1 Hz, and the peak RSS. The sampler's clock advances 1 s a
tick, as at 1 Hz, so every fifth read of a page also reads the latency histograms.

``--by-name``: the server answers ``?name[]=`` as prometheus_client's app (vLLM's) does, so a
read asks for only what it needs (``collectors/by_name.py``); without it every read is the
whole page, as from a server that ignores the query.

``--python-fake``: the Python ``FakeNvml`` (``tokentop.nvml.fake``) instead, as before; it costs
about as much as the reader itself, so its GPU rows measure the fake too. Without a C compiler
the Python fake is used, and the first line says so. ``--before DIR``: each row also for an
earlier tokentop's source tree (``git archive <commit> tokentop | tar -x -C DIR``), in the same
run, interleaved ``--rounds`` times, with the ratio now / before (medians over every round's
ticks). ``--row``: only the rows named (repeatable), e.g. ``--row 64 16 "128 KiB"``.

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
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import build_fakenvml, peak_rss_mb, serve_file
from bench_reader import busy_page
from bench_tick_parts import SteppedClock

ROOT = Path(__file__).resolve().parent.parent
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


def one(gpus: int, endpoints: int, page: str, ticks: int, python_fake: bool, by_name: bool) -> dict[str, Any]:
    """Runs in the child: the ticks of one row; returns its figures (every tick's CPU)."""
    from tokentop.config import Config, EndpointConfig
    from tokentop.history import Store
    from tokentop.nvml.fake import FakeNvml
    from tokentop.nvml.reader import NvmlReader
    from tokentop.sampler import Sampler

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "page.txt"
        path.write_text(page_text(page))
        server, ports = serve_file(path, endpoints, by_name=by_name)  # one process, a thread per endpoint
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
            reader = NvmlReader(lib=FakeNvml.healthy(count=gpus) if python_fake else None)
            clock = SteppedClock()  # 1 s a tick, as at 1 Hz: every fifth read has the latency histograms
            sampler = Sampler(config, reader, store=store, clock=clock.mono, wall_clock=clock.wall)
            cpu = []
            for i in range(ticks + 10):
                started = time.process_time()
                snapshot = sampler.tick()
                if i >= 10:  # warm-up: kinds detected, label caches filled, the filter tried
                    cpu.append(time.process_time() - started)
                clock.step()
                time.sleep(0.02)
            up = sum(e.sample.status == "up" for e in snapshot.endpoints)
            sampler.stop()
            if len(snapshot.gpus) != gpus:
                raise SystemExit(f"{len(snapshot.gpus)} GPUs read, {gpus} wanted: {snapshot.gpu_reason}")
        finally:
            server.kill()
    return {"cpu_ms": [c * 1e3 for c in cpu], "rss_mb": peak_rss_mb(os.getpid()) or float("nan"), "up": up}


def run_row(
    row: tuple[int, int, str], tree: Path, ticks: int, lib: Path | None, tmp: Path, by_name: bool
) -> dict[str, Any]:
    """One row in a fresh process importing tokentop from ``tree``; over the C fake at ``lib``
    (its config: ``row``'s GPU count) or, when None, the Python fake."""
    gpus, endpoints, page = row
    child = [sys.executable, __file__, "--ticks", str(ticks), "--tree", str(tree)]
    child += ["--one", str(gpus), str(endpoints), page] + (["--python-fake"] if lib is None else [])
    child += ["--by-name"] if by_name else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    if lib is not None:
        config = tmp / f"fakenvml-{gpus}.conf"
        config.write_text(f"gpus = {gpus}\n")  # the defaults otherwise: H200s under a sine load
        env["FAKENVML_CONFIG"] = str(config)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), env.get("LD_LIBRARY_PATH")]))
    done = subprocess.run(child, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"row {row} ({tree}) failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--python-fake", action="store_true", help="the Python FakeNvml instead of the C fake")
    parser.add_argument("--by-name", action="store_true", help="servers answer ?name[]= as prometheus_client does")
    parser.add_argument("--before", type=Path, help="an earlier tokentop's source tree, measured in the same run")
    parser.add_argument("--rounds", type=int, default=1, help="processes per (row, tree), interleaved")
    parser.add_argument("--row", nargs=3, action="append", metavar=("GPUS", "ENDPOINTS", "PAGE"), help="only this row")
    parser.add_argument("--one", nargs=3, metavar=("GPUS", "ENDPOINTS", "PAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import tokentop  # from ``tree``: first on PYTHONPATH (``run_row``)

        assert Path(tokentop.__file__).resolve().is_relative_to(args.tree.resolve()), tokentop.__file__
        gpus, endpoints, page = args.one
        print(json.dumps(one(int(gpus), int(endpoints), page, args.ticks, args.python_fake, args.by_name)))
        return
    rows = [(int(g), int(e), p) for g, e, p in args.row] if args.row else ROWS
    trees = [("now", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    with tempfile.TemporaryDirectory() as tmp:
        lib, why = (None, "--python-fake") if args.python_fake else build_fakenvml(Path(tmp) / "fakenvml")
        nvml = "C fake libnvidia-ml.so.1 through pynvml" if lib else f"Python FakeNvml ({why})"
        print(f"median CPU of one tick over {args.rounds} x {args.ticks} ticks (record's path: NVML, HTTP, derive,")
        print(f"SQLite append); NVML: {nvml}" + ("; trees: now, before" if args.before else ""))
        print("servers: " + ("answer ?name[]= as vLLM's does" if args.by_name else "whole pages (a query is ignored)"))
        head = f"{'GPUs':>5} {'endpoints':>9} {'page':>8} | {'tick CPU':>9} {'% core at 1 Hz':>14} {'peak RSS':>9} | up"
        print(head + ("  | before: tick CPU, peak RSS, now/before" if args.before else ""))
        for row in rows:
            results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
            for _ in range(args.rounds):
                for label, tree in trees:
                    results[label].append(run_row(row, tree, args.ticks, lib, Path(tmp), args.by_name))
            print_row(row, results)


def print_row(row: tuple[int, int, str], results: dict[str, list[dict[str, Any]]]) -> None:
    gpus, endpoints, page = row
    cpu = {label: statistics.median([c for r in runs for c in r["cpu_ms"]]) for label, runs in results.items()}
    rss = {label: statistics.median([r["rss_mb"] for r in runs]) for label, runs in results.items()}
    up = results["now"][-1]["up"]
    line = (
        f"{gpus:>5} {endpoints:>9} {page:>8} | {cpu['now']:>6.2f} ms {cpu['now'] / 10:>13.2f}% "
        f"{rss['now']:>6.1f} MB | {up}/{endpoints}"
    )
    if "before" in cpu:
        line += f"  | {cpu['before']:>6.2f} ms {rss['before']:>6.1f} MB {cpu['now'] / cpu['before']:>6.2f}"
    print(line, flush=True)


if __name__ == "__main__":
    main()
