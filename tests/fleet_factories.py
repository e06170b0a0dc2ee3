"""Fleets for the fleet view's tests and pictures, made of real snapshots.

Each host's ``model.Snapshot`` comes from tokentop's own demo host run through the real sampler
(fake NVML under the real reader, vLLM pages on loopback, the real deriver) on a simulated
clock: ``demo_runs`` runs a few seeds once per process, and a fleet's hosts take their
snapshots from those runs. ``ScriptedSource`` is a ``FleetSource`` that hands out the readings a
test scripts, and answers ``series`` from the demo's own simulation (its closed-form load,
tokens and energy), never hand-written numbers.

The pictures: ``python tests/fleet_factories.py [--out screenshots]`` writes
``fleet-80x24.svg`` and ``fleet.svg``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from tokentop.config import Config
from tokentop.demo import GPU_COUNT, DemoHost, SimulatedClock, simulated_snapshots
from tokentop.fleet.model import FleetHost, FleetReading, FleetSeries, fleet_figures
from tokentop.fleet.prometheus_source import NOT_OPENED
from tokentop.model import Snapshot

TICKS = 65  # past the demo's 60 s cost window, so every window is full
SEEDS = (7, 11, 23)  # three demo hosts, each its own load
UNPRICED = "unpriced"  # the run whose GPUs are a model with no price
UNPRICED_GPU = "NVIDIA Mystery X1"
WALL_END = SimulatedClock.WALL_START + SimulatedClock().t + TICKS  # the last snapshot's wall time


@functools.lru_cache(maxsize=1)
def demo_runs() -> dict[int | str, list[Snapshot]]:
    """``TICKS`` snapshots of the demo host for each of ``SEEDS``, and of an unpriced one; run
    at once, and once per process."""
    with ThreadPoolExecutor(len(SEEDS) + 1) as pool:
        priced = {seed: pool.submit(simulated_snapshots, TICKS, seed) for seed in SEEDS}
        unpriced = pool.submit(simulated_snapshots, TICKS, SEEDS[0], gpu_name=UNPRICED_GPU)
        runs: dict[int | str, list[Snapshot]] = {seed: future.result() for seed, future in priced.items()}
        runs[UNPRICED] = unpriced.result()
    return runs


def host_name(i: int) -> str:
    return f"node-{i:03d}"


def seed_of(i: int) -> int:
    return SEEDS[i % len(SEEDS)]


def fleet_host(
    name: str,
    snapshot: Snapshot | None,
    *,
    state: str = "up",
    reason: str | None = None,
    age_s: float | None = 1.0,
    clock_offset_s: float | None = None,
) -> FleetHost:
    """A host as a source would give it: its snapshot and what the hosts table needs from it."""
    if snapshot is None:
        return FleetHost(name, state, reason, None, age_s, clock_offset_s)
    up = sum(e.sample.status == "up" for e in snapshot.endpoints)
    models = tuple(dict.fromkeys(g.sample.name for g in snapshot.gpus))
    return FleetHost(name, state, reason, snapshot, age_s, clock_offset_s, models, up, len(snapshot.endpoints))


def fleet_reading(
    hosts: Sequence[FleetHost],
    *,
    status: str | None = None,
    stale: bool = False,
    messages: tuple[str, ...] = (),
    source: str = "scripted test source (3 demo hosts)",
) -> FleetReading:
    """A reading of ``hosts`` with the fleet's figures summed by ``fleet_figures``; its windows
    are the demo snapshots' own (10 s and 1 min), so hosts and fleet state the same spans."""
    snapshot = next((h.snapshot for h in hosts if h.snapshot is not None), None)
    rate_s, cost_s = (snapshot.rate_window_s, snapshot.cost_window_s) if snapshot else (10.0, 60.0)
    return FleetReading(
        t_wall=WALL_END + 1.0,
        source=source,
        mode="tokentop",
        rate_window_s=rate_s,
        cost_window_s=cost_s,
        hosts=tuple(hosts),
        fleet=fleet_figures(hosts, rate_s, cost_s),
        status=status,
        stale=stale,
        messages=messages,
    )


def demo_hosts(
    count: int, *, down: Sequence[int] = (), stale: Sequence[int] = (), unpriced: Sequence[int] = ()
) -> list[FleetHost]:
    """``count`` hosts ``node-000``...: host ``i`` is the demo with seed ``seed_of(i)``, its last
    snapshot or one a few ticks earlier, so hosts differ. A ``down`` host has no snapshot, a
    ``stale`` one keeps an older snapshot, an ``unpriced`` one has GPUs with no price."""
    runs = demo_runs()
    hosts = []
    for i in range(count):
        run = runs[UNPRICED] if i in unpriced else runs[seed_of(i)]
        snapshot = run[-1 - (i // len(SEEDS)) % 5]
        name = host_name(i)
        if i in down:
            hosts.append(fleet_host(name, None, state="down", reason="connection refused", age_s=None))
        elif i in stale:
            hosts.append(fleet_host(name, run[-40], state="stale", reason="no sample for 40 s", age_s=40.0))
        else:
            hosts.append(fleet_host(name, snapshot, age_s=1.0 + i % 4, clock_offset_s=3.4 if i == 1 else 0.2))
    return hosts


# --- the source's past, from the demo's simulation --------------------------------------------


def demo_series(seeds: Sequence[int | str], span_s: float, points: int = 500) -> FleetSeries:
    """What a range query over the demo hosts ``seeds`` gives for the last ``span_s``: each
    point the average over its step of output tok/s, board power and $/h, from the simulation's
    exact tokens and energy (``DemoHost.truth``), summed over the hosts."""
    step = span_s / points
    end = float(TICKS)
    times = [end - span_s + (k + 1) * step for k in range(points)]
    tok = [0.0] * points
    watts = [0.0] * points
    usd: list[float | None] = [0.0] * points
    for seed in seeds:
        host = DemoHost(seed=SEEDS[0] if seed == UNPRICED else int(seed), clock=lambda: 0.0)
        for k, t in enumerate(times):
            truth = host.truth(t - step, t)
            tok[k] += sum(truth.tokens_out.values()) / step
            watts[k] += sum(truth.energy_j.values()) / step
            rate = usd[k]
            usd[k] = None if seed == UNPRICED or rate is None else rate + GPU_COUNT * 3.50  # the built-in H200 rate
    wall = [SimulatedClock.WALL_START + SimulatedClock().t + t for t in times]
    return FleetSeries(span_s, step, tuple(wall), tuple(tok), tuple(watts), tuple(usd))


def unopened(host: FleetHost) -> FleetHost:
    """``host`` as a source that reads GPU rows for the opened host only gives it while it is
    not opened (``PrometheusSource(detail="focused")``): its host figures, GPU count, models
    and engine counts, but no GPU or endpoint rows."""
    snapshot = host.snapshot
    if snapshot is None or not snapshot.gpus:
        return host
    counts = Counter(g.sample.name for g in snapshot.gpus)
    bare = replace(snapshot, gpus=(), endpoints=(), gpu_available=False, gpu_reason=NOT_OPENED)
    return replace(host, snapshot=bare, model_counts=tuple(sorted(counts.items())))


@dataclass
class ScriptedSource:
    """A ``FleetSource`` for tests: ``read`` hands out ``readings`` in turn (the last one again
    once they run out), or raises ``read_error``; ``series`` answers from the demo's simulation
    for the hosts named in ``host_seeds`` (None when ``past`` is False), and records each call
    with the thread it ran on. ``focus`` records its calls; with ``focused`` the readings carry
    GPU rows only for the host last focused (``unopened``), as the Prometheus source's."""

    readings: list[FleetReading]
    host_seeds: dict[str, int | str] = field(default_factory=dict)
    description: str = "scripted test source (3 demo hosts)"
    refresh_s: float = 5.0
    past: bool = True
    read_error: Exception | None = None
    series_error: Exception | None = None
    series_calls: list[tuple[float, str | None, str]] = field(default_factory=list)
    closed: bool = False
    focused: bool = False
    focus_calls: list[str | None] = field(default_factory=list)
    reads: int = 0

    def read(self) -> FleetReading:
        if self.read_error is not None:
            raise self.read_error
        reading = self.readings[min(self.reads, len(self.readings) - 1)]
        self.reads += 1
        if not self.focused:
            return reading
        opened = self.focus_calls[-1] if self.focus_calls else None
        return replace(reading, hosts=tuple(h if h.name == opened else unopened(h) for h in reading.hosts))

    def focus(self, host: str | None) -> None:
        self.focus_calls.append(host)

    def series(self, span_s: float, host: str | None = None) -> FleetSeries | None:
        self.series_calls.append((span_s, host, threading.current_thread().name))
        if self.series_error is not None:
            raise self.series_error
        if not self.past:
            return None
        seeds = list(self.host_seeds.values()) if host is None else [self.host_seeds[host]]
        return demo_series(seeds, span_s, points=120)

    def close(self) -> None:
        self.closed = True


def scripted_fleet(
    count: int, *, down: Sequence[int] = (), stale: Sequence[int] = (), unpriced: Sequence[int] = ()
) -> ScriptedSource:
    """A source over ``demo_hosts`` with the simulation behind each host's past."""
    listed = demo_hosts(count, down=down, stale=stale, unpriced=unpriced)
    seeds: dict[str, int | str] = {host_name(i): UNPRICED if i in unpriced else seed_of(i) for i in range(count)}
    return ScriptedSource([fleet_reading(listed)], seeds)


# --- pictures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    name: str
    size: tuple[int, int]
    hosts: int
    caption: str
    keys: tuple[str, ...] = ()


PICTURES: tuple[Picture, ...] = (
    Picture("fleet-80x24.svg", (80, 24), 16, "the fleet view at 80x24: 16 hosts, one stale, one down; it scrolls"),
    Picture("fleet.svg", (120, 40), 12, "the fleet view, 120x40: 12 hosts, one stale, one down"),
    Picture("fleet-host.svg", (120, 40), 12, "a host opened with Enter: the local view's tables", ("down", "enter")),
)


async def _picture(picture: Picture, out: Path) -> Path:
    from tokentop.tui.fleet.app import FleetApp

    source = scripted_fleet(picture.hosts, down=(4,), stale=(7,))
    app = FleetApp(Config(), source, start_poller=False, handle_signals=False)
    async with app.run_test(size=picture.size) as pilot:
        app.post_reading(source.read())
        await pilot.pause()
        await pilot.press(*picture.keys)
        await app.workers.wait_for_complete()
        await pilot.pause()
        path = out / picture.name
        path.write_text(app.export_screenshot(title=f"tokentop: {picture.caption}"))
    return path


def write_pictures(out: Path) -> None:
    for picture in PICTURES:
        print(asyncio.run(_picture(picture, out)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "screenshots")
    write_pictures(parser.parse_args().out)
