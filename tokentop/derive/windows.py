"""Windows from cumulative points: a window is the difference of two points, and a window of N
seconds starts exactly N seconds before the newest point (interpolated between the two readings
around that instant), so it spans N seconds once there are N seconds of readings. The host's
figures are the sum of its GPUs' (``sum_windows``), as the history and the summary add them up.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
    a, b = old.totals, new.totals
    cost, busy_cost, watched = a.cost_usd, a.busy_cost_usd, a.watched_gpu_s
    return Window(
        max(0.0, new.t - old.t),
        b.tokens_in - a.tokens_in,
        b.tokens_out - a.tokens_out,
        b.energy_j - a.energy_j,
        None if cost is None or b.cost_usd is None else b.cost_usd - cost,
        b.busy_s - a.busy_s,
        None if busy_cost is None or b.busy_cost_usd is None else b.busy_cost_usd - busy_cost,
        None if watched is None or b.watched_gpu_s is None else b.watched_gpu_s - watched,
    )


class GpuTick(NamedTuple):
    """What one GPU added in one tick: a ``Window``'s figures in a plain tuple (built for every
    GPU every tick, only to be added up: ``advance``, ``host_tick``)."""

    span_s: float
    tokens_in: float
    tokens_out: float
    energy_j: float
    cost_usd: float | None
    busy_s: float
    busy_cost_usd: float | None
    watched_gpu_s: float | None = None


Summable = Window | GpuTick  # what the host's tick and the totals add up


def sum_windows(windows: Sequence[Summable]) -> Window:
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


def host_tick(gpu_ticks: Sequence[Summable]) -> Window:
    """The host's tick from its GPUs' ticks: their sum (``sum_windows``), with no busy cost when
    any GPU has no price."""
    total = sum_windows(gpu_ticks)
    return total if total.cost_usd is not None else replace(total, busy_cost_usd=None)


def advance(totals: Totals, tick: Summable) -> Totals:
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


def all_finite(figures: Totals | Summable) -> bool:
    """Every known figure is a finite number (None, unknown, passes). Their sum is finite only
    when each is, so one check does (it fails also for sums beyond the largest float)."""
    total = figures.tokens_in + figures.tokens_out + figures.energy_j + figures.busy_s
    for optional in (figures.cost_usd, figures.busy_cost_usd, figures.watched_gpu_s):
        if optional is not None:
            total += optional
    return math.isfinite(total)


def _window_from_between(before: Point, after: Point, share: float, end: Point) -> Window:
    """The window from the instant ``share`` of the way from ``before`` to ``after`` up to
    ``end``: cumulative figures grow linearly between two readings as far as we know. (One
    Window built, no Totals in between: this runs for every window of every tick.)"""
    a, b, z = before.totals, after.totals, end.totals
    cost, busy_cost, watched = a.cost_usd, a.busy_cost_usd, a.watched_gpu_s
    return Window(
        end.t - (before.t + (after.t - before.t) * share),
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


@dataclass
class Ring:
    """Cumulative points, in time order, over the longest on-screen window, plus one older
    point so that a window of that length can start between two readings."""

    keep_s: float
    points: deque[Point] = field(default_factory=deque)
    times: deque[float] = field(init=False, repr=False, compare=False)  # the points' ``t``, to bisect

    def __post_init__(self) -> None:
        self.times = deque(point.t for point in self.points)

    def push(self, point: Point) -> None:
        points, times = self.points, self.times
        points.append(point)
        times.append(point.t)
        while len(points) > 2 and point.t - times[1] >= self.keep_s:
            points.popleft()
            times.popleft()

    @property
    def last(self) -> Point:
        return self.points[-1]

    def _bracket(self, seconds: float) -> tuple[Point, Point | None, float]:
        """Where a window of ``seconds`` that ends at the last point starts: the reading at or
        before that instant, the one after it and how far between (share) when it falls
        between two; the oldest reading alone while the ring holds less."""
        points, times = self.points, self.times
        start_t = times[-1] - seconds
        i = bisect_right(times, start_t)  # the first point after start_t
        if i == 0:
            return points[0], None, 0.0
        before = points[i - 1]
        if before.t == start_t or i == len(points):
            return before, None, 0.0
        after = points[i]
        return before, after, (start_t - before.t) / (after.t - before.t)

    def reading_before(self, seconds: float) -> Point:
        """The reading at or before the start of a window of ``seconds`` (histograms cannot be
        interpolated: percentiles over a window start there)."""
        return self._bracket(seconds)[0]

    def window(self, seconds: float) -> Window:
        """The last ``seconds``: exactly that long once the ring holds that much (the start
        interpolated between the two readings around it), else since the oldest reading (its
        ``span_s`` says how long)."""
        before, after, share = self._bracket(seconds)
        if after is None:
            return window_between(before, self.points[-1])
        return _window_from_between(before, after, share, self.points[-1])
