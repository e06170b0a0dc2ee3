"""Windows from cumulative points: a window is the difference of two points, and a window of N
seconds starts exactly N seconds before the newest point (interpolated between the two readings
around that instant), so it spans N seconds once there are N seconds of readings. The host's
figures are the sum of its GPUs' (``sum_windows``), as the history and the summary add them up.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from tokentop.model import Histogram, Totals, Window


class Point(NamedTuple):
    """Cumulative figures of a GPU, the host or an endpoint at one instant (monotonic ``t``).
    An endpoint's point also keeps its latency histograms, for percentiles over a window."""

    t: float
    totals: Totals
    ttft: Histogram | None = None
    itl: Histogram | None = None


def window_between(old: Point, new: Point) -> Window:
    """Figures over the span between two cumulative points."""
    return _difference(old.totals, new.totals, max(0.0, new.t - old.t))


def _difference(a: Totals, b: Totals, span_s: float) -> Window:
    """Figures over ``span_s`` from totals ``a`` to totals ``b``."""
    cost, busy_cost, watched = a.cost_usd, a.busy_cost_usd, a.watched_gpu_s
    return Window(
        span_s,
        b.tokens_in - a.tokens_in,
        b.tokens_out - a.tokens_out,
        b.energy_j - a.energy_j,
        None if cost is None or b.cost_usd is None else b.cost_usd - cost,
        b.busy_s - a.busy_s,
        None if busy_cost is None or b.busy_cost_usd is None else b.busy_cost_usd - busy_cost,
        None if watched is None or b.watched_gpu_s is None else b.watched_gpu_s - watched,
    )


# What one GPU added in one tick: a ``Window``'s first seven figures (span_s, tokens_in,
# tokens_out, energy_j, cost_usd, busy_s, busy_cost_usd) in a plain tuple, built for every GPU
# every tick only to be added up (``advance_gpu``, ``host_tick``).
GpuTick = tuple[float, float, float, float, float | None, float, float | None]


def sum_windows(windows: Sequence[Window]) -> Window:
    """Several GPUs' windows as one host window: sums, over the longest span; busy and watched
    time in GPU-seconds. Cost is unknown when any GPU's is (a host total that leaves a GPU out
    would lie)."""
    return Window(
        span_s=max([w.span_s for w in windows]),
        tokens_in=sum([w.tokens_in for w in windows]),
        tokens_out=sum([w.tokens_out for w in windows]),
        energy_j=sum([w.energy_j for w in windows]),
        cost_usd=_sum_known([w.cost_usd for w in windows]),
        busy_s=sum([w.busy_s for w in windows]),
        busy_cost_usd=_sum_known([w.busy_cost_usd for w in windows]),
        watched_gpu_s=sum([w.span_s if w.watched_gpu_s is None else w.watched_gpu_s for w in windows]),
    )


def host_tick(gpu_ticks: Sequence[GpuTick]) -> Window:
    """The host's tick from its GPUs' ticks: their sum by ``sum_windows``' rule (busy and
    watched time in GPU-seconds), summed column by column, with no busy cost when any GPU has
    no price."""
    spans, tokens_in, tokens_out, energy_j, costs, busy_s, busy_costs = zip(*gpu_ticks)
    cost = None if None in costs else sum(costs)
    busy_cost = None if cost is None or None in busy_costs else sum(busy_costs)
    return Window(max(spans), sum(tokens_in), sum(tokens_out), sum(energy_j), cost, sum(busy_s), busy_cost, sum(spans))


def advance(totals: Totals, tick: Window) -> Totals:
    """Cumulative totals one tick later."""
    watched = totals.watched_gpu_s
    if watched is not None:
        watched += tick.span_s if tick.watched_gpu_s is None else tick.watched_gpu_s
    cost, busy_cost = totals.cost_usd, totals.busy_cost_usd
    return Totals(
        totals.tokens_in + tick.tokens_in,
        totals.tokens_out + tick.tokens_out,
        totals.energy_j + tick.energy_j,
        None if cost is None or tick.cost_usd is None else cost + tick.cost_usd,
        totals.busy_s + tick.busy_s,
        None if busy_cost is None or tick.busy_cost_usd is None else busy_cost + tick.busy_cost_usd,
        totals.elapsed_s + tick.span_s,
        watched,
    )


def advance_gpu(totals: Totals, tick: GpuTick) -> Totals | None:
    """``advance`` by one GPU's tick, or None where ``all_finite`` of the tick or of the new
    totals would be false (the same sums in the same order: one call for all three)."""
    span_s, tokens_in, tokens_out, energy_j, cost_usd, busy_s, busy_cost_usd = tick
    known = tokens_in + tokens_out + energy_j + busy_s
    if cost_usd is not None:
        known += cost_usd
    if busy_cost_usd is not None:
        known += busy_cost_usd
    if not math.isfinite(known):
        return None
    watched, cost, busy_cost = totals.watched_gpu_s, totals.cost_usd, totals.busy_cost_usd
    if watched is not None:
        watched += span_s
    cost = None if cost is None or cost_usd is None else cost + cost_usd
    busy_cost = None if busy_cost is None or busy_cost_usd is None else busy_cost + busy_cost_usd
    tokens_in = totals.tokens_in + tokens_in
    tokens_out = totals.tokens_out + tokens_out
    energy_j = totals.energy_j + energy_j
    busy_s = totals.busy_s + busy_s
    advanced = Totals(tokens_in, tokens_out, energy_j, cost, busy_s, busy_cost, totals.elapsed_s + span_s, watched)
    return advanced if all_finite(advanced) else None


def all_finite(figures: Totals | Window) -> bool:
    """Every known figure is a finite number (None, unknown, passes). Their sum is finite only
    when each is, so one check does (it fails also for sums beyond the largest float)."""
    total = figures.tokens_in + figures.tokens_out + figures.energy_j + figures.busy_s
    for optional in (figures.cost_usd, figures.busy_cost_usd, figures.watched_gpu_s):
        if optional is not None:
            total += optional
    return math.isfinite(total)


def _interpolated(a: Totals, b: Totals, share: float, z: Totals, span_s: float) -> Window:
    """The window over ``span_s`` from the instant ``share`` of the way from totals ``a`` to
    ``b`` up to totals ``z``: cumulative figures grow linearly between two readings as far as we
    know. (One Window built, no Totals in between: this runs for every window of every tick.)"""
    cost, busy_cost, watched = a.cost_usd, a.busy_cost_usd, a.watched_gpu_s
    return Window(
        span_s,
        z.tokens_in - (a.tokens_in + (b.tokens_in - a.tokens_in) * share),
        z.tokens_out - (a.tokens_out + (b.tokens_out - a.tokens_out) * share),
        z.energy_j - (a.energy_j + (b.energy_j - a.energy_j) * share),
        None
        if cost is None or b.cost_usd is None or z.cost_usd is None
        else z.cost_usd - (cost + (b.cost_usd - cost) * share),
        z.busy_s - (a.busy_s + (b.busy_s - a.busy_s) * share),
        None
        if busy_cost is None or b.busy_cost_usd is None or z.busy_cost_usd is None
        else z.busy_cost_usd - (busy_cost + (b.busy_cost_usd - busy_cost) * share),
        None
        if watched is None or b.watched_gpu_s is None or z.watched_gpu_s is None
        else z.watched_gpu_s - (watched + (b.watched_gpu_s - watched) * share),
    )


def histogram_quantile(q: float, hist: Histogram | None, base: Histogram | None = None) -> float | None:
    """Prometheus ``histogram_quantile`` over the observations between ``base`` and ``hist``.

    Linear interpolation inside the bucket; None when there were no observations.
    """
    if hist is None:
        return None
    return _quantile(q, hist.buckets if base is None else _observed(hist.buckets, base.buckets))


def windowed_quantiles(
    qs: tuple[float, ...], hist: Histogram | None, base: Histogram | None, no_window: bool
) -> list[float | None]:
    """Percentiles over the window only: None until a reading at the window's start exists
    (never the server's whole life under a "1 min" heading), and None rather than a figure
    that is not a finite number. The window's counts are worked out once for all of ``qs``."""
    if no_window or base is None or hist is None:
        return [None] * len(qs)
    buckets = _observed(hist.buckets, base.buckets)
    return [_finite_or_none(_quantile(q, buckets)) for q in qs]


Buckets = Sequence[tuple[float, float]]  # cumulative (upper bound, count), +Inf last


def _observed(buckets: Buckets, base: Buckets) -> Buckets:
    """The counts observed since ``base``, bucket by bucket; ``buckets`` themselves when the
    bounds differ or a count went down (the server restarted: its own totals are all there is).
    One pass (a plain loop: cheaper here than whole-column builtins)."""
    if len(base) != len(buckets):
        return buckets
    observed = []
    for (bound, count), (base_bound, base_count) in zip(buckets, base):
        since = count - base_count
        if not since >= 0 or (bound is not base_bound and bound != base_bound):
            return buckets
        observed.append((bound, since))
    return observed


def _quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of cumulative buckets: interpolated inside the first that reaches it."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_le  # above the highest finite bucket: its bound is all we know
            if count == prev_count:
                return bound
            return prev_le + (bound - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = bound, count
    return prev_le


def _finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _sum_known(values: list[float | None]) -> float | None:
    return None if None in values else sum([v for v in values if v is not None])


class Series:
    """Cumulative totals at their times, in time order, over the longest on-screen window, plus
    one older point so that a window of that length can start between two readings. (A GPU's
    and the host's: two flat lists, no point objects; the windows of every GPU are worked out
    from them every tick.)"""

    __slots__ = ("keep_s", "times", "totals")

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.times: list[float] = []
        self.totals: list[Totals] = []

    def add(self, t: float, totals: Totals) -> int:
        """Add the totals at ``t``; returns how many of the oldest were dropped."""
        times = self.times
        times.append(t)
        self.totals.append(totals)
        dropped = 0
        while len(times) - dropped > 2 and t - times[dropped + 1] >= self.keep_s:
            dropped += 1
        if dropped:
            del times[:dropped], self.totals[:dropped]
        return dropped

    def _bracket(self, seconds: float) -> tuple[int, float | None, float]:
        """Where a window of ``seconds`` that ends at the last point starts: the index of the
        reading at or before that instant (the oldest while the series holds less), how far
        it is from there to the next reading (share) when it falls between two, and the
        window's span."""
        times = self.times
        end_t = times[-1]
        start_t = end_t - seconds
        i = bisect_right(times, start_t)
        if i == 0:
            return 0, None, max(0.0, end_t - times[0])
        before_t = times[i - 1]
        if before_t == start_t or i == len(times):
            return i - 1, None, max(0.0, end_t - before_t)
        after_t = times[i]
        share = (start_t - before_t) / (after_t - before_t)
        return i - 1, share, end_t - (before_t + (after_t - before_t) * share)

    def window(self, seconds: float) -> Window:
        """The last ``seconds``: exactly that long once the series holds that much (the start
        interpolated between the two readings around it), else since the oldest reading (its
        ``span_s`` says how long)."""
        j, share, span_s = self._bracket(seconds)
        totals = self.totals
        if share is None:
            return _difference(totals[j], totals[-1], span_s)
        return _interpolated(totals[j], totals[j + 1], share, totals[-1], span_s)

    def token_rates(self, seconds: float) -> tuple[float | None, float | None]:
        """``window(seconds)``'s ``tok_s_in`` and ``tok_s_out``, and nothing else of it (an
        endpoint's figures: its totals are tokens only)."""
        j, share, span_s = self._bracket(seconds)
        if not span_s > 0:
            return None, None
        totals = self.totals
        a, z = totals[j], totals[-1]
        if share is None:
            return (z.tokens_in - a.tokens_in) / span_s, (z.tokens_out - a.tokens_out) / span_s
        b = totals[j + 1]
        return (
            (z.tokens_in - (a.tokens_in + (b.tokens_in - a.tokens_in) * share)) / span_s,
            (z.tokens_out - (a.tokens_out + (b.tokens_out - a.tokens_out) * share)) / span_s,
        )


class Ring(Series):
    """A ``Series`` that keeps its points, histograms included (an endpoint's: its latency
    percentiles start at the reading at or before a window's start). Points come in by
    ``push`` only."""

    __slots__ = ("points",)

    def __init__(self, keep_s: float) -> None:
        super().__init__(keep_s)
        self.points: list[Point] = []

    def push(self, point: Point) -> None:
        points = self.points
        points.append(point)
        dropped = self.add(point.t, point.totals)
        if dropped:
            del points[:dropped]

    @property
    def last(self) -> Point:
        return self.points[-1]

    def reading_before(self, seconds: float) -> Point:
        """The reading at or before the start of a window of ``seconds`` (histograms cannot be
        interpolated: percentiles over a window start there)."""
        times = self.times
        return self.points[max(bisect_right(times, times[-1] - seconds) - 1, 0)]
