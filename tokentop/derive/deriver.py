"""The ``Deriver``: each tick's readings in, a Snapshot out. It keeps only what the next tick
needs: per endpoint its counters, start time and PID; per GPU its last reading, price and
totals; for each a short ring of cumulative points for the on-screen windows.

Nothing that is not a finite number leaves it: a GPU tick whose arithmetic would give one is
left out (its totals stay as they were) and a message says so, once per run of such ticks.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import NamedTuple

from tokentop.config import Config, CostConfig
from tokentop.cost import price_for, tick_cost_usd
from tokentop.derive.counters import DeliveredCounter, energy_delta_j, first_energy_method
from tokentop.derive.windows import (
    GpuTick,
    Point,
    Ring,
    Series,
    advance,
    advance_gpu,
    all_finite,
    host_tick,
    windowed_quantiles,
)
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
START_TIME_TOLERANCE_S = 1.0  # two start times closer than this are the same process


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
_NO_MAPPING = EngineMapping()
_ZERO = Totals()
_HOST_ZERO = Totals(watched_gpu_s=0.0)


def endpoints_tick(delivered: Collection[TickTokens], dt_s: float) -> Window:
    """The host's tick when no GPU was read: what its endpoints delivered; no energy, no cost.
    Busy and watched time count the host as one unit."""
    tokens_in, tokens_out = sum(d.tokens_in for d in delivered), sum(d.tokens_out for d in delivered)
    busy_s = dt_s if any(d.busy for d in delivered) else 0.0
    return Window(dt_s, tokens_in, tokens_out, 0.0, None, busy_s, None, watched_gpu_s=dt_s)


class _Latency(NamedTuple):
    """Percentiles over the cost window and the histograms they came from. Histograms are read
    every few seconds and carried forward between reads (``endpoint.LATENCY_EVERY_S``), so most
    ticks see the very same objects as the tick before: then the percentiles are too."""

    ttft: Histogram | None  # the histograms, compared by identity
    ttft_base: Histogram | None
    itl: Histogram | None
    itl_base: Histogram | None
    no_window: bool
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None


@dataclass(slots=True)
class _ServerState:
    ring: Ring
    prompt: DeliveredCounter
    generation: DeliveredCounter
    engines: tuple[str, ...]  # its name: where the tokens it delivers come from
    start_time_s: float | None = None  # the engine's own start (Unix s), last seen
    pid: int | None = None  # the listening process, last seen
    latency: _Latency | None = None  # the last tick's percentiles, and the histograms behind them

    def same_process(self, start_time_s: float | None, pid: int | None) -> bool:
        """Whether the engine's start time, and its PID where known, show that it has not
        restarted since the last reading. Remembers both."""
        same = (
            start_time_s is not None
            and self.start_time_s is not None
            and abs(start_time_s - self.start_time_s) <= START_TIME_TOLERANCE_S
            and (pid is None or self.pid is None or pid == self.pid)
        )
        if start_time_s is not None:
            self.start_time_s = start_time_s
        if pid is not None:
            self.pid = pid
        return same


@dataclass(slots=True)
class _GpuState:
    price: Price | None
    series: Series
    totals: Totals = _ZERO
    prev: GpuSample | None = None
    energy_ignored: bool = False  # the last tick left out an energy counter step
    dropped: bool = False  # the last tick was left out (not finite)


class Deriver:
    """Turns each tick's readings into a Snapshot. One instance per session."""

    @classmethod
    def for_config(cls, config: Config) -> Deriver:
        """A deriver with the settings' cost model, windows and tok/s ceiling."""
        return cls(config.cost, config.rate_window_s, config.cost_window_s, config.max_endpoint_tok_s)

    def __init__(
        self,
        cost: CostConfig,
        rate_window_s: float = 10.0,
        cost_window_s: float = 60.0,
        max_endpoint_tok_s: float = 1e6,
    ):
        self.cost = cost
        self.rate_window_s = rate_window_s
        self.cost_window_s = cost_window_s
        self.max_endpoint_tok_s = max_endpoint_tok_s
        self._keep_s = max(rate_window_s, cost_window_s)
        self._seq = 0
        self._t_prev: float | None = None
        self._session_start: float | None = None  # wall time of the first tick
        self._gpus: dict[str, _GpuState] = {}
        self._host_series = Series(self._keep_s)
        self._servers: dict[str, _ServerState] = {}
        self._events: list[str] = []  # what this tick left out, for its messages

    def step(
        self, gpus: GpuReading, servers: tuple[EndpointSample, ...], mapping: dict[str, EngineMapping], t_wall: float
    ) -> Snapshot:
        t = gpus.t_mono
        dt = None if self._t_prev is None else max(0.0, t - self._t_prev)
        self._t_prev = t
        self._seq += 1
        if self._session_start is None:
            self._session_start = t_wall
        self._events = []

        endpoint_figs, delivered = self._step_servers(servers, mapping, t_wall)
        gpu_tokens = _attribute(servers, mapping, delivered)
        gpu_figs, gpu_ticks = self._step_gpus(gpus, gpu_tokens, dt or 0.0, t)
        tick = host_tick(gpu_ticks) if gpu_ticks else endpoints_tick(delivered.values(), dt or 0.0)
        unpriced = [f for f in gpu_figs if f.price is None]
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
            host=self._step_host(gpu_figs, unpriced, tick, t),
            messages=_messages(gpu_figs, unpriced, endpoint_figs) + tuple(self._events),
        )

    # -- servers --

    def _step_servers(
        self, servers: tuple[EndpointSample, ...], mapping: dict[str, EngineMapping], t_wall: float
    ) -> tuple[list[EndpointFigures], dict[str, TickTokens]]:
        """Each endpoint's figures, and the tokens it delivered this tick."""
        figs: list[EndpointFigures] = []
        delivered: dict[str, TickTokens] = {}
        for sample in servers:
            name = sample.name
            state = self._servers.get(name)
            if state is None:
                state = self._servers[name] = _ServerState(
                    Ring(self._keep_s),
                    DeliveredCounter(self.max_endpoint_tok_s),
                    DeliveredCounter(self.max_endpoint_tok_s),
                    (name,),
                )
            m = mapping.get(name, _NO_MAPPING)
            same = state.same_process(sample.process_start_time_s, m.pid)
            prompt, generation = state.prompt, state.generation
            if sample.status == "up":  # a "stale" sample repeats an old reading: nothing new to count
                fresh_s = self._fresh_s(sample, t_wall)
                added_in = self._count(sample, "prompt", prompt, same, fresh_s)
                added_out = self._count(sample, "generation", generation, same, fresh_s)
            else:
                added_in = added_out = 0.0
            delivered[name] = TickTokens(added_in, added_out, bool(sample.running), state.engines)
            totals = Totals(prompt.delivered, generation.delivered)
            state.ring.push(Point(sample.t_mono, totals, sample.ttft, sample.itl))
            figs.append(self._endpoint_figures(sample, state, m, totals))
        return figs, delivered

    def _fresh_s(self, sample: EndpointSample, t_wall: float) -> float | None:
        """Seconds since the engine started, when it started after this session did (its
        first reading then counts from zero: those tokens belong to the session)."""
        start = sample.process_start_time_s
        if start is None or self._session_start is None or start <= self._session_start:
            return None
        return t_wall - start

    def _count(
        self, sample: EndpointSample, which: str, counter: DeliveredCounter, same_process: bool, fresh_s: float | None
    ) -> float:
        """Feed one of the endpoint's counters ("prompt" or "generation") a fresh reading; say
        what it ignored."""
        if which == "prompt":
            raw, in_flight = sample.prompt_tokens_total, sample.prompt_tokens_in_flight
        else:
            raw, in_flight = sample.generation_tokens_total, sample.generation_tokens_in_flight
        added = counter.update(raw, in_flight, sample.t_mono, same_process=same_process, fresh_s=fresh_s)
        if counter.event is not None:
            self._events.append(f"{sample.name}: {which} tokens counter {counter.event}")
        return added

    def _endpoint_figures(
        self, sample: EndpointSample, state: _ServerState, m: EngineMapping, totals: Totals
    ) -> EndpointFigures:
        ring = state.ring
        tok_s_in, tok_s_out = ring.token_rates(self.rate_window_s)
        latency = state.latency = _latency(sample, ring.reading_before(self.cost_window_s), ring.last, state.latency)
        return EndpointFigures(
            sample,
            m.gpus,
            m.source,
            m.pid,
            totals.tokens_in,
            totals.tokens_out,
            tok_s_in,
            tok_s_out,
            latency.ttft_p50_s,
            latency.ttft_p95_s,
            latency.itl_p50_s,
        )

    # -- GPUs --

    def _step_gpus(
        self, reading: GpuReading, gpu_tokens: dict[str, TickTokens], dt: float, t: float
    ) -> tuple[list[GpuFigures], list[GpuTick]]:
        """Each GPU's figures, and what it added this tick."""
        figs: list[GpuFigures] = []
        ticks: list[GpuTick] = []
        states, rate_s, cost_s = self._gpus, self.rate_window_s, self.cost_window_s
        for sample in reading.gpus:
            state = states.get(sample.uuid)
            if state is None:
                price = price_for(sample.name, sample.uuid, sample.index, self.cost)
                state = states[sample.uuid] = _GpuState(price, Series(self._keep_s))
            tokens = gpu_tokens.get(sample.uuid, _NO_TOKENS)
            tick, method = self._gpu_tick(state, sample, tokens, dt)
            series, totals = state.series, state.totals
            series.add(t, totals)
            ticks.append(tick)
            figs.append(
                GpuFigures(
                    sample,
                    tokens.engines,
                    state.price,
                    method,
                    self._usd_per_hour_now(state.price, sample.power_w),
                    totals,
                    series.window(rate_s),
                    series.window(cost_s),
                )
            )
        return figs, ticks

    def _usd_per_hour_now(self, price: Price | None, power_w: float | None) -> float | None:
        """The cost rate of the last tick: an hour at the GPU's last power reading."""
        return _finite_or_none(tick_cost_usd(price, 3600.0, (power_w or 0.0) * 3600.0, self.cost))

    def _gpu_tick(
        self, state: _GpuState, sample: GpuSample, tokens: TickTokens, dt: float
    ) -> tuple[GpuTick, str | None]:
        """What one GPU added this tick (its tokens, energy, cost), and how its energy is
        measured; advances its totals. A tick that is not all finite numbers adds nothing."""
        prev, state.prev = state.prev, sample
        if prev is None:  # the first reading measures nothing yet; name the method the next ones use
            joules, method = 0.0, first_energy_method(sample)
        else:
            joules, method, ignored_j = energy_delta_j(prev, sample, dt)
            if ignored_j is not None or state.energy_ignored:
                self._note_energy(state, sample, method, ignored_j, dt)
        cost = tick_cost_usd(state.price, dt, joules, self.cost)
        busy_s, busy_cost = (dt, cost) if tokens.busy else (0.0, 0.0)
        tick = (dt, tokens.tokens_in, tokens.tokens_out, joules, cost, busy_s, busy_cost)
        totals = advance_gpu(state.totals, tick)
        if totals is not None:
            state.totals, state.dropped = totals, False
            return tick, method
        if not state.dropped:
            self._events.append(
                f"GPU {sample.index}: a tick with figures that are not finite numbers (energy {joules} J,"
                f" cost {cost} $, tokens {tokens.tokens_out}) was left out"
            )
        state.dropped = True
        unknown = cost is None
        return (0.0, 0.0, 0.0, 0.0, None if unknown else 0.0, 0.0, None if unknown else 0.0), method

    def _note_energy(
        self, state: _GpuState, sample: GpuSample, method: str | None, ignored_j: float | None, dt: float
    ) -> None:
        """Say once per run of them that an energy counter step was not believed."""
        if ignored_j is not None and not state.energy_ignored:
            instead = (
                "power integrated for this tick instead"
                if method == "power_integral"
                else "no energy counted for this tick (no power reading)"
            )
            self._events.append(
                f"GPU {sample.index}: energy counter rose {ignored_j:,.0f} J in {dt:.1f} s,"
                f" more than twice its power limit allows: {instead}"
            )
        state.energy_ignored = ignored_j is not None

    # -- the host --

    def _step_host(self, gpu_figs: list[GpuFigures], unpriced: list[GpuFigures], tick: Window, t: float) -> HostFigures:
        series = self._host_series
        before = series.totals[-1] if series.totals else _HOST_ZERO
        totals = advance(before, tick)
        if not all_finite(totals):  # cannot happen from finite GPU ticks; never let one through
            self._events.append("host: a tick whose totals are not finite numbers was left out")
            totals = before
        series.add(t, totals)
        priced = tick.cost_usd is not None  # every GPU has a price (and there is a GPU)
        powers = [power for f in gpu_figs if (power := f.sample.power_w) is not None]
        rates = [rate for f in gpu_figs if (rate := f.usd_per_hour_now) is not None]
        return HostFigures(
            gpu_count=len(gpu_figs),
            power_w=_finite_or_none(sum(powers)) if powers else None,
            usd_per_hour_now=_finite_or_none(sum(rates)) if priced else None,
            totals=totals,
            rate_window=series.window(self.rate_window_s),
            cost_window=series.window(self.cost_window_s),
            unpriced_gpus=tuple(f.sample.uuid for f in unpriced),
        )


def _latency(sample: EndpointSample, base: Point, now: Point, last: _Latency | None) -> _Latency:
    """The endpoint's latency percentiles over the cost window (from ``base``, the reading at
    or before its start: histograms cannot be interpolated); the last tick's when they come
    from the same histograms."""
    ttft, ttft_base, itl, itl_base, no_window = sample.ttft, base.ttft, sample.itl, base.itl, base is now
    if (
        last is not None
        and last.ttft is ttft
        and last.ttft_base is ttft_base
        and last.itl is itl
        and last.itl_base is itl_base
        and last.no_window is no_window
    ):
        return last
    ttft_p50, ttft_p95 = windowed_quantiles((0.5, 0.95), ttft, ttft_base, no_window)
    (itl_p50,) = windowed_quantiles((0.5,), itl, itl_base, no_window)
    return _Latency(ttft, ttft_base, itl, itl_base, no_window, ttft_p50, ttft_p95, itl_p50)


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


def _finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _messages(
    gpu_figs: list[GpuFigures], unpriced: list[GpuFigures], endpoint_figs: list[EndpointFigures]
) -> tuple[str, ...]:
    """What the user should know this tick: GPUs without a price, endpoints on no known GPU."""
    no_price = tuple(f"no price for GPU model {f.sample.name!r}: set cost.gpu_hour_usd in the config" for f in unpriced)
    if not gpu_figs:
        return no_price
    return no_price + tuple(
        f"endpoint {f.sample.name} runs on no known GPU: its tokens are in no GPU's or the host's "
        "$/Mtok; give it gpus= in the config"
        for f in endpoint_figs
        if not f.gpus and f.sample.status == "up"
    )
