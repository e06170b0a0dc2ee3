"""Long hostile sequences of readings replayed through a ``Deriver``, each snapshot as text.

Used by test_derive_equal.py to compare the Deriver with an earlier one loaded from another
source tree in a child process (``python -c`` with that tree first on ``sys.path``, then
``derive_replay.main``): the sequences are built from a seed by the same code on both sides.
Every figure is in a snapshot's ``repr`` (floats by ``repr``: -0.0 and NaN are told apart and
NaN equals NaN), and so is a step that raises.
"""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass, field

from tokentop.config import CostConfig
from tokentop.derive import Deriver
from tokentop.model import EndpointSample, EngineMapping, GpuReading, GpuSample, Histogram

NAMES = ["NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA L4", "Mystery Accelerator 9000"]
HOSTILE_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1.0, 5e-324]
BOUNDS = [(0.01, 0.1, 1.0, math.inf), (0.05, 0.5, math.inf), (0.01, 0.1, 2.0, math.inf)]


def cost_configs() -> list[tuple[CostConfig, float, float, float]]:
    """(cost model, rate window s, cost window s, max tok/s) of each scenario family."""
    return [
        (CostConfig(), 10.0, 60.0, 1e6),
        (CostConfig(energy_in_rate=False), 10.0, 60.0, 1e6),
        (CostConfig(mode="owned", gpu_hour_usd={"L4": 0.5}), 3.0, 7.5, 5e4),
        (CostConfig(gpu_hour_usd={"GPU-1": 1e300, "0": 0.0, "Mystery": 2.25}, energy_in_rate=False), 60.0, 10.0, 1e9),
        (CostConfig(mode="owned", electricity_usd_per_kwh=1e300), 1.0, 2.0, 100.0),
        (CostConfig(gpu_hour_usd={"H200": 0.1}), 0.5, 120.0, 1e6),
    ]


@dataclass
class _Gpu:
    uuid: str
    index: int
    name: str
    counter_mj: int | None = 10**9
    power_w: float | None = 300.0
    limit_w: float | None = 700.0
    present: bool = True


@dataclass
class _Endpoint:
    name: str
    prompt: float | None = 0.0
    generation: float | None = 0.0
    start_s: float | None = 1.7e9
    pid: int | None = 100
    in_flight: float | None = None
    histograms: tuple[Histogram | None, Histogram | None] = (None, None)
    gpus: tuple[str, ...] = ()
    last: EndpointSample | None = None


@dataclass
class Scenario:
    rng: random.Random
    gpus: list[_Gpu] = field(default_factory=list)
    endpoints: list[_Endpoint] = field(default_factory=list)
    t: float = 1000.0
    t_wall: float = 1.7e9 + 5000.0


def _maybe(rng: random.Random, p: float, hostile: float | None, usual: float | None) -> float | None:
    return hostile if rng.random() < p else usual


def _gpu_sample(s: Scenario, g: _Gpu, dt: float) -> GpuSample:
    rng = s.rng
    roll = rng.random()
    if g.counter_mj is not None:
        if roll < 0.03:
            g.counter_mj = rng.choice([0, g.counter_mj // 2])  # a driver reload
        elif roll < 0.06:
            g.counter_mj += 10**12  # a spike no board could draw
        else:
            drawn_w = g.power_w if g.power_w is not None and 0 <= g.power_w < 1e4 else 250.0
            g.counter_mj += int(drawn_w * max(dt, 0.0) * 1000 * rng.uniform(0.5, 1.5))
    if rng.random() < 0.02:
        g.counter_mj = None if g.counter_mj is not None else 5 * 10**9
    if rng.random() < 0.05:
        g.power_w = None if g.power_w is not None else 250.0
    elif g.power_w is not None:
        g.power_w = rng.choice([*HOSTILE_FLOATS, *[rng.uniform(50, 700)] * 24])
    if rng.random() < 0.01:
        g.limit_w = rng.choice([None, 0.0, 350.0, 700.0])
    status = rng.choice(["ok"] * 30 + ["error", "lost"])
    return GpuSample(
        uuid=g.uuid,
        index=g.index,
        name=g.name,
        status=status,
        power_w=g.power_w,
        power_limit_w=g.limit_w,
        energy_counter_mj=g.counter_mj,
        utilization_pct=rng.choice([None, 50.0]),
    )


def _histogram(rng: random.Random, old: Histogram | None) -> Histogram | None:
    roll = rng.random()
    if roll < 0.6:
        return old  # carried forward: the very same object
    if roll < 0.65:
        return None
    bounds = rng.choice(BOUNDS)
    base = [] if old is None or rng.random() < 0.1 else [c for _, c in old.buckets]
    counts, running = [], 0.0
    for i in range(len(bounds)):
        running += rng.choice([0.0, 1.0, 3.0, 10.0, *([math.nan] if rng.random() < 0.02 else [])])
        counts.append(max(running, base[i] if i < len(base) else 0.0) + running)
    return Histogram(tuple(zip(bounds, counts)), sum=1.0, count=counts[-1])


def _counter(rng: random.Random, value: float | None, dt: float) -> float | None:
    roll = rng.random()
    if value is None:
        return 0.0 if roll < 0.1 else None
    if roll < 0.02:
        return 0.0  # a restart, or a glitch
    if roll < 0.04:
        return value + 1e12  # a spike
    if roll < 0.05:
        return rng.choice(HOSTILE_FLOATS)
    if roll < 0.06:
        return None
    if roll < 0.08:
        return max(0.0, value - 5.0)  # a small dip
    return value + rng.choice([0.0, 0.0, 17.0, 250.5, 3000.0]) * max(dt, 0.0)


def _endpoint_sample(s: Scenario, e: _Endpoint, dt: float) -> EndpointSample:
    rng = s.rng
    roll = rng.random()
    if e.last is not None and roll < 0.1:
        return EndpointSample(**{**_fields(e.last), "status": "stale"})  # an old reading again
    if roll < 0.15:
        return EndpointSample(name=e.name, url="http://x", t_mono=s.t, status="error", error="refused")
    if rng.random() < 0.03:  # restarted: a new start time (or none), maybe a new PID
        e.start_s = rng.choice([None, s.t_wall - rng.choice([0.5, 30.0, 1e6]), e.start_s])
        e.pid = rng.choice([None, e.pid, (e.pid or 0) + 1])
        e.prompt, e.generation = rng.choice([(0.0, 0.0), (1e9, 1e9), (None, None)])
    e.prompt, e.generation = _counter(rng, e.prompt, dt), _counter(rng, e.generation, dt)
    if rng.random() < 0.05:
        e.in_flight = None if e.in_flight is not None else 0.0
    elif e.in_flight is not None:
        e.in_flight = rng.choice([e.in_flight, e.in_flight + 40.0, 0.0, math.nan, 1e15])
    ttft, itl = _histogram(rng, e.histograms[0]), _histogram(rng, e.histograms[1])
    e.histograms = (ttft, itl)
    e.last = EndpointSample(
        name=e.name,
        url="http://x",
        t_mono=s.t,
        status="up",
        kind="vllm",
        prompt_tokens_total=e.prompt,
        generation_tokens_total=e.generation,
        prompt_tokens_in_flight=e.in_flight,
        generation_tokens_in_flight=e.in_flight,
        running=rng.choice([None, 0.0, 2.0]),
        process_start_time_s=e.start_s,
        ttft=ttft,
        itl=itl,
    )
    return e.last


def _fields(sample: EndpointSample) -> dict[str, object]:
    return {name: getattr(sample, name) for name in EndpointSample.__dataclass_fields__}


def _clock_step(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.02:
        return rng.choice([0.0, -0.5, -3.0])  # the same instant, or a clock that went back
    if roll < 0.04:
        return rng.choice([30.0, 61.0, 600.0])  # a gap
    if roll < 0.1:
        return rng.choice([0.001, 0.25, 2.5, 9.999, 10.0, 60.0])
    return 1.0 + rng.uniform(-0.01, 0.01)


def _remap(s: Scenario) -> dict[str, EngineMapping]:
    rng = s.rng
    uuids = [g.uuid for g in s.gpus] + ["GPU-unknown"]
    for e in s.endpoints:
        if rng.random() < 0.03 or (not e.gpus and rng.random() < 0.1):
            e.gpus = tuple(rng.sample(uuids, min(len(uuids), rng.choice([0, 1, 1, 2, 3]))))
    return {e.name: EngineMapping(e.gpus, rng.choice(["process", "config"]), e.pid) for e in s.endpoints if e.gpus}


def steps(
    seed: int, ticks: int
) -> list[tuple[GpuReading, tuple[EndpointSample, ...], dict[str, EngineMapping], float]]:
    """A hostile sequence of ``ticks`` step arguments: GPUs lost and back, counters reset and
    spiking, no power, no price, clock gaps and steps back, endpoints restarting, stale samples,
    histograms carried forward or changed."""
    rng = random.Random(seed)
    s = Scenario(rng)
    for i in range(rng.choice([0, 1, 3, 8])):
        s.gpus.append(_Gpu(f"GPU-{i}", i, rng.choice(NAMES), counter_mj=rng.choice([None, 10**9, 10**9])))
    for j in range(rng.choice([0, 1, 2, 5])):
        s.endpoints.append(_Endpoint(f"e{j}", start_s=rng.choice([None, 1.7e9, s.t_wall + 100.0])))
    out = []
    dt = 0.0
    for _ in range(ticks):
        for g in s.gpus:
            if rng.random() < 0.03:
                g.present = not g.present
        available = rng.random() > 0.03
        gpus = tuple(_gpu_sample(s, g, dt) for g in s.gpus if g.present) if available else ()
        reading = GpuReading(s.t, gpus, available, None if available else "NVML gone")
        servers = tuple(_endpoint_sample(s, e, dt) for e in s.endpoints if rng.random() > 0.02)
        out.append((reading, servers, _remap(s), s.t_wall))
        dt = _clock_step(rng)
        s.t += dt
        s.t_wall += rng.choice([1.0, 1.0, 1.0, 0.0, 120.0])
    return out


def replay(seed: int, ticks: int) -> list[str]:
    """Each step's snapshot as text (or what it raised)."""
    cost, rate_s, cost_s, max_tok_s = cost_configs()[seed % len(cost_configs())]
    deriver = Deriver(cost, rate_s, cost_s, max_tok_s)
    texts = []
    for reading, servers, mapping, t_wall in steps(seed, ticks):
        try:
            texts.append(repr(deriver.step(reading, servers, mapping, t_wall)))
        except Exception as error:  # compared, not hidden
            texts.append(f"raised {type(error).__name__}: {error}")
    return texts


def main(seeds: list[int], ticks: int) -> None:
    """Print the replays of ``seeds`` as one JSON list of lists (for the child process)."""
    json.dump([replay(seed, ticks) for seed in seeds], sys.stdout)
