"""Readings in, a Snapshot out: counter deltas, resets, energy, attribution and cost. No I/O.

The small functions here are pure; ``Deriver`` only keeps what the next tick needs (last
counters, high-water marks, a short ring of cumulative totals for the on-screen windows).

How each figure is computed (the README repeats this for users):

* Tokens: the engine's cumulative counters, differenced. A counter that goes down means the
  server restarted: that tick counts the new value from zero. Servers whose counters move only
  when a request ends (llama.cpp) also report in-flight progress; we follow the high-water
  mark of ``counter + in-flight`` so tokens show up live and are never counted twice.
* Energy: the NVML energy counter's difference; where the GPU has no counter (or it reset this
  tick), the trapezoid of the power readings over the measured interval. The method is kept.
* Attribution: an endpoint's tokens are split equally over its GPUs (one tensor/pipeline
  parallel group); separate endpoints (data-parallel replicas) add up.
* Cost: the GPU's hourly rate for the measured interval, plus electricity when charged
  (``tokentop.cost``). Host figures are sums of cost over sums of tokens, never an average
  of per-GPU ratios.
* Host: the sum of its GPUs (tokens attributed to them; busy time as their mean share), so it
  equals what the history and the summary add up. A host with no GPU reading counts what its
  endpoints delivered. An endpoint mapped to no GPU is named in the snapshot's messages.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from tokentop.config import CostConfig
from tokentop.cost import price_for, tick_cost_usd
from tokentop.model import (
    EndpointFigures,
    EndpointSample,
    GpuFigures,
    GpuReading,
    GpuSample,
    Histogram,
    HostFigures,
    Price,
    Snapshot,
    Totals,
    Window,
)

HOST = "host"


@dataclass(frozen=True)
class EngineMapping:
    """Which GPUs one endpoint runs on, and how we know."""

    gpus: tuple[str, ...] = ()  # UUIDs
    source: str | None = None  # "process" | "config"
    pid: int | None = None


# --- pure arithmetic -----------------------------------------------------------------


@dataclass
class DeliveredCounter:
    """A server's cumulative counter turned into tokens delivered since we started watching."""

    last_raw: float | None = None
    high_water: float = 0.0
    delivered: float = 0.0
    progress_only: bool = False

    def update(self, raw: float | None, in_flight: float | None) -> float:
        """Feed one reading; returns the tokens it adds (never negative)."""
        progress = in_flight or 0.0
        if raw is None:
            if in_flight is None:
                return 0.0
            # No counters (llama.cpp with metrics off): count progress increases only.
            return self._add_progress_only(progress)
        effective = raw + progress
        if self.last_raw is None:  # first reading: baseline, count nothing from before
            self.last_raw, self.high_water = raw, effective
            return 0.0
        if raw < self.last_raw:  # restart: the new counter starts from zero
            added = effective
            self.high_water = effective
        else:
            added = max(0.0, effective - self.high_water)
            self.high_water = max(self.high_water, effective)
        self.last_raw = raw
        self.delivered += added
        return added

    def _add_progress_only(self, progress: float) -> float:
        if not self.progress_only:
            self.progress_only, self.high_water = True, progress
            return 0.0
        added = max(0.0, progress - self.high_water)
        self.high_water = progress
        self.delivered += added
        return added


def energy_delta_j(prev: GpuSample | None, cur: GpuSample, dt_s: float) -> tuple[float, str | None]:
    """Board energy between two readings of one GPU and how it was measured."""
    if (
        prev is not None
        and prev.energy_counter_mj is not None
        and cur.energy_counter_mj is not None
        and cur.energy_counter_mj >= prev.energy_counter_mj
    ):
        return (cur.energy_counter_mj - prev.energy_counter_mj) / 1000.0, "counter"
    if cur.power_w is None:
        return 0.0, None
    before = prev.power_w if prev is not None and prev.power_w is not None else cur.power_w
    return (before + cur.power_w) / 2.0 * dt_s, "power_integral"


def window_between(old: tuple[float, Totals], new: tuple[float, Totals]) -> Window:
    """Figures over the span between two cumulative points."""
    (t0, a), (t1, b) = old, new
    return Window(
        span_s=max(0.0, t1 - t0),
        tokens_in=b.tokens_in - a.tokens_in,
        tokens_out=b.tokens_out - a.tokens_out,
        energy_j=b.energy_j - a.energy_j,
        cost_usd=_diff(b.cost_usd, a.cost_usd),
        busy_s=b.busy_s - a.busy_s,
        busy_cost_usd=_diff(b.busy_cost_usd, a.busy_cost_usd),
    )


def sum_windows(windows: list[Window]) -> Window:
    """Several GPUs' windows as one host window: sums, over the longest span. Cost is unknown
    when any GPU's is (a host total that leaves a GPU out would lie)."""
    return Window(
        span_s=max(w.span_s for w in windows),
        tokens_in=sum(w.tokens_in for w in windows),
        tokens_out=sum(w.tokens_out for w in windows),
        energy_j=sum(w.energy_j for w in windows),
        cost_usd=_sum_known([w.cost_usd for w in windows]),
        busy_s=sum(w.busy_s for w in windows),
        busy_cost_usd=_sum_known([w.busy_cost_usd for w in windows]),
    )


def _sum_known(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def histogram_quantile(q: float, hist: Histogram | None, base: Histogram | None = None) -> float | None:
    """Prometheus ``histogram_quantile`` over the observations between ``base`` and ``hist``.

    Linear interpolation inside the bucket; None when there were no observations.
    """
    if hist is None:
        return None
    buckets = list(hist.buckets)
    if base is not None and [b for b, _ in base.buckets] == [b for b, _ in buckets]:
        diffs = [(le, c - c0) for (le, c), (_, c0) in zip(buckets, base.buckets)]
        if all(c >= 0 for _, c in diffs):  # else the server restarted: use its own totals
            buckets = diffs
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # above the highest finite bucket: its bound is all we know
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def _windowed_quantile(q: float, hist: Histogram | None, base: Histogram | None, no_window: bool) -> float | None:
    """A percentile over the window only: None until a reading at the window's start exists
    (never the server's whole life under a "1 min" heading)."""
    if no_window or base is None:
        return None
    return histogram_quantile(q, hist, base)


def _diff(b: float | None, a: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


# --- state between ticks ------------------------------------------------------------


@dataclass
class _Ring:
    """Cumulative points over the longest on-screen window."""

    keep_s: float
    points: deque[tuple[float, Totals]] = field(default_factory=deque)

    def push(self, t: float, totals: Totals) -> None:
        self.points.append((t, totals))
        while len(self.points) > 2 and t - self.points[1][0] >= self.keep_s:
            self.points.popleft()

    def window(self, seconds: float) -> Window:
        now = self.points[-1]
        start = self.points[0]
        for point in reversed(self.points):
            if now[0] - point[0] >= seconds:
                start = point
                break
        return window_between(start, now)


@dataclass
class _TickSums:
    """What all GPUs added up to in one tick."""

    tokens_in: float = 0.0
    tokens_out: float = 0.0
    energy_j: float = 0.0
    busy_s: float = 0.0  # GPU-seconds
    cost_usd: float = 0.0
    busy_cost_usd: float = 0.0
    unpriced: list[str] = field(default_factory=list)


@dataclass
class _ServerState:
    prompt: DeliveredCounter = field(default_factory=DeliveredCounter)
    generation: DeliveredCounter = field(default_factory=DeliveredCounter)
    ring: deque[tuple[float, float, float, Histogram | None, Histogram | None]] = field(default_factory=deque)


class Deriver:
    """Turns each tick's readings into a Snapshot. One instance per session."""

    def __init__(self, cost: CostConfig, rate_window_s: float = 10.0, cost_window_s: float = 60.0):
        self.cost = cost
        self.rate_window_s = rate_window_s
        self.cost_window_s = cost_window_s
        self._seq = 0
        self._t_prev: float | None = None
        self._prev_gpu: dict[str, GpuSample] = {}
        self._gpu_totals: dict[str, Totals] = {}
        self._prices: dict[str, Price | None] = {}
        self._rings: dict[str, _Ring] = {}
        self._servers: dict[str, _ServerState] = {}

    def step(
        self,
        gpus: GpuReading,
        servers: tuple[EndpointSample, ...],
        mapping: dict[str, EngineMapping],
        t_wall: float,
    ) -> Snapshot:
        t = gpus.t_mono
        dt = None if self._t_prev is None else max(0.0, t - self._t_prev)
        self._t_prev = t
        self._seq += 1

        endpoint_figs, tokens_by_endpoint = self._step_servers(servers, mapping)
        gpu_tokens = self._attribute(servers, mapping, tokens_by_endpoint)
        gpu_figs, sums = self._step_gpus(gpus, gpu_tokens, dt or 0.0, t)
        unpriced = sums.unpriced
        priced = bool(gpu_figs) and not unpriced

        host_prev = self._rings[HOST].points[-1][1] if HOST in self._rings else Totals()
        tick_dt = dt or 0.0
        if gpu_figs:  # the host is its GPUs: their tokens, and busy as the mean of their busy time
            in_tokens, out_tokens = sums.tokens_in, sums.tokens_out
            busy_s = sums.busy_s / len(gpu_figs)
        else:  # no GPU reading (no driver, a CPU server): what the endpoints delivered
            in_tokens = sum(v[0] for v in tokens_by_endpoint.values())
            out_tokens = sum(v[1] for v in tokens_by_endpoint.values())
            busy_s = tick_dt if any(v[0] + v[1] > 0 or v[2] for v in tokens_by_endpoint.values()) else 0.0
        host_totals = Totals(
            tokens_in=host_prev.tokens_in + in_tokens,
            tokens_out=host_prev.tokens_out + out_tokens,
            energy_j=host_prev.energy_j + sums.energy_j,
            cost_usd=_add(host_prev.cost_usd, sums.cost_usd) if priced else None,
            busy_s=host_prev.busy_s + busy_s,
            busy_cost_usd=_add(host_prev.busy_cost_usd, sums.busy_cost_usd) if priced else None,
            elapsed_s=host_prev.elapsed_s + tick_dt,
        )
        host_ring = self._ring(HOST)
        host_ring.push(t, host_totals)
        powers = [f.sample.power_w for f in gpu_figs if f.sample.power_w is not None]
        host = HostFigures(
            gpu_count=len(gpu_figs),
            power_w=sum(powers) if powers else None,
            usd_per_hour_now=(
                sum(f.usd_per_hour_now for f in gpu_figs if f.usd_per_hour_now is not None) if priced else None
            ),
            totals=host_totals,
            rate_window=host_ring.window(self.rate_window_s),
            cost_window=host_ring.window(self.cost_window_s),
            unpriced_gpus=tuple(unpriced),
        )
        messages = tuple(
            f"no price for GPU model {self._name_of(uuid, gpus)!r}: set cost.gpu_hour_usd in the config"
            for uuid in unpriced
        ) + tuple(
            f"endpoint {f.sample.name} runs on no known GPU: its tokens are in no GPU's or the host's "
            "$/Mtok; give it gpus= in the config"
            for f in endpoint_figs
            if gpu_figs and not f.gpus and f.sample.status == "up"
        )
        return Snapshot(
            seq=self._seq,
            t_wall=t_wall,
            t_mono=t,
            dt_s=dt,
            rate_window_s=self.rate_window_s,
            cost_window_s=self.cost_window_s,
            gpu_available=gpus.available,
            gpu_reason=gpus.reason,
            gpus=tuple(gpu_figs),
            endpoints=tuple(endpoint_figs),
            host=host,
            messages=messages,
        )

    # -- servers --

    def _step_servers(
        self, servers: tuple[EndpointSample, ...], mapping: dict[str, EngineMapping]
    ) -> tuple[list[EndpointFigures], dict[str, tuple[float, float, bool]]]:
        figs: list[EndpointFigures] = []
        tokens: dict[str, tuple[float, float, bool]] = {}
        for sample in servers:
            state = self._servers.setdefault(sample.name, _ServerState())
            added_in = state.prompt.update(sample.prompt_tokens_total, sample.prompt_tokens_in_flight)
            added_out = state.generation.update(sample.generation_tokens_total, sample.generation_tokens_in_flight)
            tokens[sample.name] = (added_in, added_out, bool(sample.running))
            ring = state.ring
            ring.append((sample.t_mono, state.prompt.delivered, state.generation.delivered, sample.ttft, sample.itl))
            while len(ring) > 2 and sample.t_mono - ring[1][0] >= self.cost_window_s:
                ring.popleft()
            rate_start = _start_of(ring, self.rate_window_s)
            span = sample.t_mono - rate_start[0]
            cost_start = _start_of(ring, self.cost_window_s)
            m = mapping.get(sample.name, EngineMapping())
            figs.append(
                EndpointFigures(
                    sample=sample,
                    gpus=m.gpus,
                    mapping=m.source,
                    pid=m.pid,
                    tokens_in_total=state.prompt.delivered,
                    tokens_out_total=state.generation.delivered,
                    tok_s_in=(state.prompt.delivered - rate_start[1]) / span if span > 0 else None,
                    tok_s_out=(state.generation.delivered - rate_start[2]) / span if span > 0 else None,
                    ttft_p50_s=_windowed_quantile(0.5, sample.ttft, cost_start[3], cost_start is ring[-1]),
                    ttft_p95_s=_windowed_quantile(0.95, sample.ttft, cost_start[3], cost_start is ring[-1]),
                    itl_p50_s=_windowed_quantile(0.5, sample.itl, cost_start[4], cost_start is ring[-1]),
                )
            )
        return figs, tokens

    @staticmethod
    def _attribute(
        servers: tuple[EndpointSample, ...],
        mapping: dict[str, EngineMapping],
        tokens: dict[str, tuple[float, float, bool]],
    ) -> dict[str, tuple[float, float, bool, tuple[str, ...]]]:
        """Tokens per GPU UUID this tick: each endpoint's split equally over its GPUs."""
        per_gpu: dict[str, tuple[float, float, bool, tuple[str, ...]]] = {}
        for sample in servers:
            gpus = mapping.get(sample.name, EngineMapping()).gpus
            if not gpus:
                continue
            added_in, added_out, running = tokens[sample.name]
            share = 1.0 / len(gpus)
            for uuid in gpus:
                t_in, t_out, busy, names = per_gpu.get(uuid, (0.0, 0.0, False, ()))
                per_gpu[uuid] = (
                    t_in + added_in * share,
                    t_out + added_out * share,
                    busy or running,
                    names + (sample.name,),
                )
        return per_gpu

    # -- GPUs --

    def _step_gpus(
        self,
        reading: GpuReading,
        gpu_tokens: dict[str, tuple[float, float, bool, tuple[str, ...]]],
        dt: float,
        t: float,
    ) -> tuple[list[GpuFigures], _TickSums]:
        figs: list[GpuFigures] = []
        sums = _TickSums()
        for sample in reading.gpus:
            uuid = sample.uuid
            if uuid not in self._prices:
                self._prices[uuid] = price_for(sample.name, uuid, sample.index, self.cost)
            price = self._prices[uuid]
            prev = self._prev_gpu.get(uuid)
            energy_j, method = energy_delta_j(prev, sample, dt) if prev is not None else (0.0, None)
            if prev is None:
                method = (
                    "counter"
                    if sample.energy_counter_mj is not None
                    else ("power_integral" if sample.power_w is not None else None)
                )
            added_in, added_out, running, engines = gpu_tokens.get(uuid, (0.0, 0.0, False, ()))
            busy = added_in + added_out > 0 or running
            cost_now = tick_cost_usd(price, dt, energy_j, self.cost)
            before = self._gpu_totals.get(uuid, Totals())
            totals = Totals(
                tokens_in=before.tokens_in + added_in,
                tokens_out=before.tokens_out + added_out,
                energy_j=before.energy_j + energy_j,
                cost_usd=_add(before.cost_usd, cost_now),
                busy_s=before.busy_s + (dt if busy else 0.0),
                busy_cost_usd=_add(before.busy_cost_usd, cost_now if busy else 0.0),
                elapsed_s=before.elapsed_s + dt,
            )
            self._gpu_totals[uuid] = totals
            self._prev_gpu[uuid] = sample
            ring = self._ring(uuid)
            ring.push(t, totals)
            sums.energy_j += energy_j
            sums.tokens_in += added_in
            sums.tokens_out += added_out
            sums.busy_s += dt if busy else 0.0
            if cost_now is None:
                sums.unpriced.append(uuid)
            else:
                sums.cost_usd += cost_now
                sums.busy_cost_usd += cost_now if busy else 0.0
            figs.append(
                GpuFigures(
                    sample=sample,
                    engines=engines,
                    price=price,
                    energy_method=method,
                    usd_per_hour_now=(
                        tick_cost_usd(price, 3600.0, (sample.power_w or 0.0) * 3600.0, self.cost)
                        if price is not None
                        else None
                    ),
                    totals=totals,
                    rate_window=ring.window(self.rate_window_s),
                    cost_window=ring.window(self.cost_window_s),
                )
            )
        return figs, sums

    def _ring(self, key: str) -> _Ring:
        if key not in self._rings:
            self._rings[key] = _Ring(keep_s=max(self.rate_window_s, self.cost_window_s))
        return self._rings[key]

    @staticmethod
    def _name_of(uuid: str, reading: GpuReading) -> str:
        return next((g.name for g in reading.gpus if g.uuid == uuid), uuid)


def _start_of(ring: deque, seconds: float) -> tuple:
    now_t = ring[-1][0]
    for point in reversed(ring):
        if now_t - point[0] >= seconds:
            return point
    return ring[0]
