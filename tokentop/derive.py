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
* Host: the sum of its GPUs (tokens attributed to them; busy time as their mean share), summed
  by ``sum_windows`` like the history and the summary do, so it equals what they add up. A host
  with no GPU reading counts what its endpoints delivered. An endpoint mapped to no GPU is named
  in the snapshot's messages.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from tokentop.config import CostConfig
from tokentop.cost import price_for, tick_cost_usd
from tokentop.model import (
    EndpointFigures,
    EndpointSample,
    EngineMapping,
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

HOST = "host"  # key of the host's series; a GPU's series is keyed by its UUID


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


def _energy_method(sample: GpuSample) -> str | None:
    if sample.energy_counter_mj is not None:
        return "counter"
    return "power_integral" if sample.power_w is not None else None


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


class Point(NamedTuple):
    """Cumulative figures of a GPU, the host or an endpoint at one instant (monotonic ``t``).
    An endpoint's point also keeps its latency histograms, for percentiles over a window."""

    t: float
    totals: Totals
    ttft: Histogram | None = None
    itl: Histogram | None = None


class TickTokens(NamedTuple):
    """Tokens delivered in one tick: by one endpoint, or attributed to one GPU."""

    tokens_in: float = 0.0
    tokens_out: float = 0.0
    running: bool = False  # requests were running, whether or not a token came out
    engines: tuple[str, ...] = ()  # the endpoints the tokens came from

    @property
    def busy(self) -> bool:
        return self.tokens_in + self.tokens_out > 0 or self.running

    def plus_share(self, other: TickTokens, share: float) -> TickTokens:
        """These tokens and ``share`` of ``other``'s (an engine split over its GPUs)."""
        return TickTokens(
            self.tokens_in + other.tokens_in * share,
            self.tokens_out + other.tokens_out * share,
            self.running or other.running,
            self.engines + other.engines,
        )


_NO_TOKENS = TickTokens()


def window_between(old: Point, new: Point) -> Window:
    """Figures over the span between two cumulative points."""
    a, b = old.totals, new.totals
    return Window(
        span_s=max(0.0, new.t - old.t),
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


def host_tick(gpu_ticks: list[Window]) -> Window:
    """The host's tick from its GPUs' ticks: their sum (``sum_windows``), with busy time as
    their mean (the busy share of the host) and no busy cost when any GPU has no price."""
    total = sum_windows(gpu_ticks)
    busy_cost = total.busy_cost_usd if total.cost_usd is not None else None
    return replace(total, busy_s=total.busy_s / len(gpu_ticks), busy_cost_usd=busy_cost)


def endpoints_tick(delivered: Collection[TickTokens], dt_s: float) -> Window:
    """The host's tick when no GPU was read: what its endpoints delivered; no energy, no cost."""
    tokens_in, tokens_out = sum(d.tokens_in for d in delivered), sum(d.tokens_out for d in delivered)
    busy_s = dt_s if any(d.busy for d in delivered) else 0.0
    return Window(dt_s, tokens_in, tokens_out, energy_j=0.0, cost_usd=None, busy_s=busy_s, busy_cost_usd=None)


def advance(totals: Totals, tick: Window) -> Totals:
    """Cumulative totals one tick later."""
    return Totals(
        tokens_in=totals.tokens_in + tick.tokens_in,
        tokens_out=totals.tokens_out + tick.tokens_out,
        energy_j=totals.energy_j + tick.energy_j,
        cost_usd=_add(totals.cost_usd, tick.cost_usd),
        busy_s=totals.busy_s + tick.busy_s,
        busy_cost_usd=_add(totals.busy_cost_usd, tick.busy_cost_usd),
        elapsed_s=totals.elapsed_s + tick.span_s,
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
class Ring:
    """Cumulative points, in time order, over the longest on-screen window (two at least)."""

    keep_s: float
    points: deque[Point] = field(default_factory=deque)

    def push(self, point: Point) -> None:
        points = self.points
        points.append(point)
        while len(points) > 2 and point.t - points[1].t >= self.keep_s:
            points.popleft()

    @property
    def last(self) -> Point:
        return self.points[-1]

    def start_of(self, seconds: float) -> Point:
        """Where a window of ``seconds`` that ends at the last point starts: the newest point at
        least that old, else the oldest (the window is shorter while the ring fills)."""
        points = self.points
        now_t = points[-1].t
        # Points come in time order, so "now_t - t >= seconds" holds for a prefix of them.
        i = bisect_right(points, -seconds, key=lambda p: p.t - now_t)
        return points[i - 1] if i else points[0]

    def window(self, seconds: float) -> Window:
        return window_between(self.start_of(seconds), self.points[-1])


@dataclass
class _ServerState:
    ring: Ring
    prompt: DeliveredCounter = field(default_factory=DeliveredCounter)
    generation: DeliveredCounter = field(default_factory=DeliveredCounter)


_NO_MAPPING = EngineMapping()
_ZERO = Totals()


class Deriver:
    """Turns each tick's readings into a Snapshot. One instance per session."""

    def __init__(self, cost: CostConfig, rate_window_s: float = 10.0, cost_window_s: float = 60.0):
        self.cost = cost
        self.rate_window_s = rate_window_s
        self.cost_window_s = cost_window_s
        self._keep_s = max(rate_window_s, cost_window_s)
        self._seq = 0
        self._t_prev: float | None = None
        self._prev_gpu: dict[str, GpuSample] = {}
        self._gpu_totals: dict[str, Totals] = {}
        self._prices: dict[str, Price | None] = {}
        self._rings: dict[str, Ring] = {}  # by GPU UUID, and HOST
        self._servers: dict[str, _ServerState] = {}

    def step(
        self, gpus: GpuReading, servers: tuple[EndpointSample, ...], mapping: dict[str, EngineMapping], t_wall: float
    ) -> Snapshot:
        t = gpus.t_mono
        dt = None if self._t_prev is None else max(0.0, t - self._t_prev)
        self._t_prev = t
        self._seq += 1

        endpoint_figs, delivered = self._step_servers(servers, mapping)
        gpu_tokens = self._attribute(servers, mapping, delivered)
        gpu_figs, gpu_ticks = self._step_gpus(gpus, gpu_tokens, dt or 0.0, t)
        tick = host_tick(gpu_ticks) if gpu_ticks else endpoints_tick(delivered.values(), dt or 0.0)
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
            host=self._step_host(gpu_figs, tick, t),
            messages=_messages(gpu_figs, endpoint_figs),
        )

    # -- servers --

    def _step_servers(
        self, servers: tuple[EndpointSample, ...], mapping: dict[str, EngineMapping]
    ) -> tuple[list[EndpointFigures], dict[str, TickTokens]]:
        """Each endpoint's figures, and the tokens it delivered this tick."""
        figs: list[EndpointFigures] = []
        delivered: dict[str, TickTokens] = {}
        for sample in servers:
            state = self._servers.get(sample.name)
            if state is None:
                state = self._servers[sample.name] = _ServerState(Ring(self._keep_s))
            added_in = state.prompt.update(sample.prompt_tokens_total, sample.prompt_tokens_in_flight)
            added_out = state.generation.update(sample.generation_tokens_total, sample.generation_tokens_in_flight)
            delivered[sample.name] = TickTokens(added_in, added_out, bool(sample.running), (sample.name,))
            totals = Totals(tokens_in=state.prompt.delivered, tokens_out=state.generation.delivered)
            state.ring.push(Point(sample.t_mono, totals, sample.ttft, sample.itl))
            figs.append(self._endpoint_figures(sample, state.ring, mapping.get(sample.name, _NO_MAPPING)))
        return figs, delivered

    def _endpoint_figures(self, sample: EndpointSample, ring: Ring, m: EngineMapping) -> EndpointFigures:
        now = ring.last
        rate = ring.window(self.rate_window_s)
        base = ring.start_of(self.cost_window_s)  # latency percentiles are over the cost window
        no_window = base is now
        return EndpointFigures(
            sample=sample,
            gpus=m.gpus,
            mapping=m.source,
            pid=m.pid,
            tokens_in_total=now.totals.tokens_in,
            tokens_out_total=now.totals.tokens_out,
            tok_s_in=rate.tok_s_in,
            tok_s_out=rate.tok_s_out,
            ttft_p50_s=_windowed_quantile(0.5, sample.ttft, base.ttft, no_window),
            ttft_p95_s=_windowed_quantile(0.95, sample.ttft, base.ttft, no_window),
            itl_p50_s=_windowed_quantile(0.5, sample.itl, base.itl, no_window),
        )

    @staticmethod
    def _attribute(
        servers: tuple[EndpointSample, ...], mapping: dict[str, EngineMapping], delivered: dict[str, TickTokens]
    ) -> dict[str, TickTokens]:
        """Tokens per GPU UUID this tick: each endpoint's split equally over its GPUs."""
        per_gpu: dict[str, TickTokens] = {}
        for sample in servers:
            gpus = mapping.get(sample.name, _NO_MAPPING).gpus
            if not gpus:
                continue
            tokens = delivered[sample.name]
            share = 1.0 / len(gpus)
            for uuid in gpus:
                per_gpu[uuid] = per_gpu.get(uuid, _NO_TOKENS).plus_share(tokens, share)
        return per_gpu

    # -- GPUs --

    def _step_gpus(
        self, reading: GpuReading, gpu_tokens: dict[str, TickTokens], dt: float, t: float
    ) -> tuple[list[GpuFigures], list[Window]]:
        """Each GPU's figures, and what it added this tick."""
        figs: list[GpuFigures] = []
        ticks: list[Window] = []
        for sample in reading.gpus:
            uuid = sample.uuid
            if uuid not in self._prices:
                self._prices[uuid] = price_for(sample.name, uuid, sample.index, self.cost)
            price = self._prices[uuid]
            tokens = gpu_tokens.get(uuid, _NO_TOKENS)
            tick, method = self._gpu_tick(sample, price, tokens, dt)
            totals = advance(self._gpu_totals.get(uuid, _ZERO), tick)
            self._gpu_totals[uuid] = totals
            ring = self._ring(uuid)
            ring.push(Point(t, totals))
            ticks.append(tick)
            figs.append(
                GpuFigures(
                    sample=sample,
                    engines=tokens.engines,
                    price=price,
                    energy_method=method,
                    usd_per_hour_now=tick_cost_usd(price, 3600.0, (sample.power_w or 0.0) * 3600.0, self.cost),
                    totals=totals,
                    rate_window=ring.window(self.rate_window_s),
                    cost_window=ring.window(self.cost_window_s),
                )
            )
        return figs, ticks

    def _gpu_tick(
        self, sample: GpuSample, price: Price | None, tokens: TickTokens, dt: float
    ) -> tuple[Window, str | None]:
        """What one GPU added this tick (its tokens, energy, cost), and how its energy is measured."""
        prev = self._prev_gpu.get(sample.uuid)
        self._prev_gpu[sample.uuid] = sample
        if prev is not None:
            energy_j, method = energy_delta_j(prev, sample, dt)
        else:  # the first reading measures nothing yet; name the method the next ones will use
            energy_j, method = 0.0, _energy_method(sample)
        cost = tick_cost_usd(price, dt, energy_j, self.cost)
        busy_s, busy_cost = (dt, cost) if tokens.busy else (0.0, 0.0)
        return Window(dt, tokens.tokens_in, tokens.tokens_out, energy_j, cost, busy_s, busy_cost), method

    # -- the host --

    def _step_host(self, gpu_figs: list[GpuFigures], tick: Window, t: float) -> HostFigures:
        ring = self._ring(HOST)
        totals = advance(ring.last.totals if ring.points else _ZERO, tick)
        ring.push(Point(t, totals))
        priced = tick.cost_usd is not None  # every GPU has a price (and there is a GPU)
        powers = [f.sample.power_w for f in gpu_figs if f.sample.power_w is not None]
        rates = [f.usd_per_hour_now for f in gpu_figs if f.usd_per_hour_now is not None]
        return HostFigures(
            gpu_count=len(gpu_figs),
            power_w=sum(powers) if powers else None,
            usd_per_hour_now=sum(rates) if priced else None,
            totals=totals,
            rate_window=ring.window(self.rate_window_s),
            cost_window=ring.window(self.cost_window_s),
            unpriced_gpus=tuple(f.sample.uuid for f in gpu_figs if f.price is None),
        )

    def _ring(self, key: str) -> Ring:
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = Ring(self._keep_s)
        return ring


def _messages(gpu_figs: list[GpuFigures], endpoint_figs: list[EndpointFigures]) -> tuple[str, ...]:
    """What the user should know this tick: GPUs without a price, endpoints on no known GPU."""
    unpriced = tuple(
        f"no price for GPU model {f.sample.name!r}: set cost.gpu_hour_usd in the config"
        for f in gpu_figs
        if f.price is None
    )
    return unpriced + tuple(
        f"endpoint {f.sample.name} runs on no known GPU: its tokens are in no GPU's or the host's "
        "$/Mtok; give it gpus= in the config"
        for f in endpoint_figs
        if gpu_figs and not f.gpus and f.sample.status == "up"
    )
