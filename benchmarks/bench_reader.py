"""How fast tokentop reads a busy vLLM V1 /metrics page: before and after a change, and
against prometheus_client.

    python benchmarks/bench_reader.py [--engines 7] [--repeat 300] [--before REV]

The page is the real vLLM V1 capture in ``tests/fixtures/metrics`` with every ``engine="0"``
series repeated for N data-parallel engines (values scaled per engine), about 130 KiB for 7:
the size of a busy multi-engine server's page.

The live view reads a page as ``EndpointCollector._read_page`` does: every tick a *scalar
read*, ``read_samples(spec.scalar_names + PROCESS_NAMES)`` then ``read_figures``; every 5 s a
*full read*, the latency histograms too. Both are timed for the reader at git revision REV
("before": by default the last commit with the one-regular-expression reader) and for the
working tree's ("after"), taken in turn in the same run, medians; their figures are checked
equal. Issue 13's targets for the 7-engine page: scalar read <= 0.1 ms, full read <= 0.35 ms.
Two floors are printed with them: one regular-expression pass over the page and one
``str.find`` of an absent name, which a reader that looks at every line cannot beat.

Then the reader against ``prometheus_client`` (same values checked), and one whole
``EndpointCollector.poll`` against a server in another process, split into this process's CPU
time and the wait for the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tokentop.collectors import EndpointCollector, exposition, read_samples
from tokentop.collectors.fetch import PageClient
from tokentop.collectors.kinds import PROCESS_NAMES, VLLM, KindSpec, read_figures
from tokentop.config import EndpointConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import serve_file
from conftest import read_page  # tests/conftest.py names the fixtures folder

FIXTURE = "vllm/v1-qwen3-0.6b-via-dynamo.txt"
BEFORE = "d79ea71"  # the last commit with the one-regular-expression reader (issue 13)
ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"scalar": 0.1, "full": 0.35}


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


def medians_ms(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Each run's median in ms, the runs taken in turn, so that load from elsewhere falls on
    all of them alike."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            started = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - started)
    return {label: statistics.median(taken) * 1e3 for label, taken in times.items()}


@dataclasses.dataclass(frozen=True)
class Reader:
    """One version of ``read_samples`` and ``read_figures``, with its vLLM spec."""

    read_samples: Callable[..., exposition.PageSamples]
    read_figures: Callable[..., Any]
    spec: KindSpec

    def names(self, which: str) -> tuple[str, ...]:
        return (self.spec.scalar_names if which == "scalar" else self.spec.names) + PROCESS_NAMES

    def read(self, page: str, which: str) -> Any:
        samples = self.read_samples(page, self.names(which))
        return self.read_figures(self.spec, samples, samples)


def reader_at(revision: str) -> Reader | None:
    """The reader as it was at ``revision``: its exposition.py and kinds.py from ``git show``,
    run as modules of their own (kinds' imports of the rest of tokentop are today's)."""
    modules = {}
    for name in ("exposition", "kinds"):
        path = f"tokentop/collectors/{name}.py"
        try:
            source = subprocess.run(
                ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        module = types.ModuleType(f"before_{name}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
        modules[name] = module
    kinds = modules["kinds"]
    return Reader(modules["exposition"].read_samples, kinds.read_figures, kinds.VLLM)


def compare(page: str, repeat: int, revision: str) -> None:
    """Scalar and full reads, before and after, with their parts and the floors."""
    after = Reader(read_samples, read_figures, VLLM)
    before = reader_at(revision)
    readers = {"after": after} if before is None else {"before": before, "after": after}
    runs: dict[str, Callable[[], object]] = {}
    for version, reader in readers.items():
        for which in ("scalar", "full"):
            names, samples = reader.names(which), reader.read_samples(page, reader.names(which))
            runs[f"{version} {which}"] = lambda r=reader, w=which: r.read(page, w)
            runs[f"{version} {which} samples"] = lambda r=reader, n=names: r.read_samples(page, n)
            runs[f"{version} {which} figures"] = lambda r=reader, s=samples: r.read_figures(r.spec, s, s)
    no_match, absent = re.compile("\n\x00"), "\nvllm:no_such_sample_name"
    runs["regex pass"], runs["str.find"] = lambda: no_match.search(page), lambda: page.find(absent)
    ms = medians_ms(runs, repeat)
    print(f"medians of {repeat}, taken in turn, ms   before    after   before/after  target")
    for which in ("scalar", "full"):
        lines = sum(map(len, after.read_samples(page, after.names(which)).series.values()))
        title = f"{which} read: {len(after.names(which))} names, {lines} lines"
        for part, label in (("", title), (" samples", "  read_samples"), (" figures", "  read_figures")):
            was, now = ms.get(f"before {which}{part}"), ms[f"after {which}{part}"]
            row = (
                f"{label:36s} {was:8.3f} {now:8.3f}   {was / now:5.2f}x" if was else f"{label:36s} {'-':>8s} {now:8.3f}"
            )
            print(row + (f"      <= {TARGETS_MS[which]:.3f}" if not part else ""))
    print(
        f"floors: one regular-expression pass over the page {ms['regex pass']:.3f} ms; "
        f"one str.find of an absent name {ms['str.find']:.3f} ms"
    )
    if before is None:
        print(f"before: revision {revision} not found (no git?); after only")
        return
    same = all(
        dataclasses.asdict(before.read(page, which)) == dataclasses.asdict(after.read(page, which))
        for which in ("scalar", "full")
    )
    print(f"same figures before and after: {'yes' if same else 'NO'} (before: {revision})")


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
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--before", default=BEFORE, help=f"git revision of the reader to compare (default {BEFORE})")
    args = parser.parse_args()
    page = busy_page(args.engines)
    names = VLLM.names
    print(f"page: {len(page) / 1024:.0f} KiB, {page.count(chr(10))} lines, {args.engines} engines")
    compare(page, args.repeat, args.before)
    print()

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
            with closing(PageClient()) as client:
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
