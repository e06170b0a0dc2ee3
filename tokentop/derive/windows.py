"""Windows from cumulative points: a window is the difference of two points, and a window of N
seconds starts exactly N seconds before the newest point (interpolated between the two readings
around that instant), so it spans N seconds once there are N seconds of readings. The host's
figures are the sum of its GPUs' (``sum_windows``), as the history and the summary add them up.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
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
    return Window(
        span_s=max(0.0, new.t - old.t),
        tokens_in=b.tokens_in - a.tokens_in,
        tokens_out=b.tokens_out - a.tokens_out,
        energy_j=b.energy_j - a.energy_j,
        cost_usd=_diff(b.cost_usd, a.cost_usd),
        busy_s=b.busy_s - a.busy_s,
        busy_cost_usd=_diff(b.busy_cost_usd, a.busy_cost_usd),
        watched_gpu_s=_diff(b.watched_gpu_s, a.watched_gpu_s),
    )


def sum_windows(windows: list[Window]) -> Window:
    """Several GPUs' windows as one host window: sums, over the longest span; busy and watched
    time in GPU-seconds. Cost is unknown when any GPU's is (a host total that leaves a GPU out
    would lie)."""
    return Window(
        span_s=max(w.span_s for w in windows),
        tokens_in=sum(w.tokens_in for w in windows),
        tokens_out=sum(w.tokens_out for w in windows),
        energy_j=sum(w.energy_j for w in windows),
        cost_usd=_sum_known([w.cost_usd for w in windows]),
        busy_s=sum(w.busy_s for w in windows),
        busy_cost_usd=_sum_known([w.busy_cost_usd for w in windows]),
        watched_gpu_s=sum(w.span_s if w.watched_gpu_s is None else w.watched_gpu_s for w in windows),
    )


def host_tick(gpu_ticks: list[Window]) -> Window:
    """The host's tick from its GPUs' ticks: their sum (``sum_windows``), with no busy cost when
    any GPU has no price."""
    total = sum_windows(gpu_ticks)
    return total if total.cost_usd is not None else replace(total, busy_cost_usd=None)


def advance(totals: Totals, tick: Window) -> Totals:
    """Cumulative totals one tick later."""
    watched = None if totals.watched_gpu_s is None else totals.watched_gpu_s + _watched(tick)
    return Totals(
        tokens_in=totals.tokens_in + tick.tokens_in,
        tokens_out=totals.tokens_out + tick.tokens_out,
        energy_j=totals.energy_j + tick.energy_j,
        cost_usd=_add(totals.cost_usd, tick.cost_usd),
        busy_s=totals.busy_s + tick.busy_s,
        busy_cost_usd=_add(totals.busy_cost_usd, tick.busy_cost_usd),
        elapsed_s=totals.elapsed_s + tick.span_s,
        watched_gpu_s=watched,
    )


def all_finite(figures: Totals | Window) -> bool:
    """Every known figure is a finite number (None, unknown, passes). Their sum is finite only
    when each is, so one check does (it fails also for sums beyond the largest float)."""
    total = figures.tokens_in + figures.tokens_out + figures.energy_j + figures.busy_s
    for optional in (figures.cost_usd, figures.busy_cost_usd, figures.watched_gpu_s):
        if optional is not None:
            total += optional
    return math.isfinite(total)


def _watched(tick: Window) -> float:
    return tick.span_s if tick.watched_gpu_s is None else tick.watched_gpu_s


def _window_from_between(before: Point, after: Point, share: float, end: Point) -> Window:
    """The window from the instant ``share`` of the way from ``before`` to ``after`` up to
    ``end``: cumulative figures grow linearly between two readings as far as we know. (One
    Window built, no Totals in between: this runs for every window of every tick.)"""
    a, b, z = before.totals, after.totals, end.totals
    cost, busy_cost, watched = a.cost_usd, a.busy_cost_usd, a.watched_gpu_s
    return Window(
        span_s=end.t - (before.t + (after.t - before.t) * share),
        tokens_in=z.tokens_in - (a.tokens_in + (b.tokens_in - a.tokens_in) * share),
        tokens_out=z.tokens_out - (a.tokens_out + (b.tokens_out - a.tokens_out) * share),
        energy_j=z.energy_j - (a.energy_j + (b.energy_j - a.energy_j) * share),
        cost_usd=None
        if cost is None or b.cost_usd is None or z.cost_usd is None
        else z.cost_usd - (cost + (b.cost_usd - cost) * share),
        busy_s=z.busy_s - (a.busy_s + (b.busy_s - a.busy_s) * share),
        busy_cost_usd=None
        if busy_cost is None or b.busy_cost_usd is None or z.busy_cost_usd is None
        else z.busy_cost_usd - (busy_cost + (b.busy_cost_usd - busy_cost) * share),
        watched_gpu_s=None
        if watched is None or b.watched_gpu_s is None or z.watched_gpu_s is None
        else z.watched_gpu_s - (watched + (b.watched_gpu_s - watched) * share),
    )


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


def windowed_quantile(q: float, hist: Histogram | None, base: Histogram | None, no_window: bool) -> float | None:
    """A percentile over the window only: None until a reading at the window's start exists
    (never the server's whole life under a "1 min" heading), and None rather than a figure
    that is not a finite number."""
    if no_window or base is None:
        return None
    value = histogram_quantile(q, hist, base)
    return value if value is None or math.isfinite(value) else None


def _sum_known(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _diff(b: float | None, a: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


@dataclass
class Ring:
    """Cumulative points, in time order, over the longest on-screen window, plus one older
    point so that a window of that length can start between two readings."""

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

    def _bracket(self, seconds: float) -> tuple[Point, Point | None, float]:
        """Where a window of ``seconds`` that ends at the last point starts: the reading at or
        before that instant, the one after it and how far between (share) when it falls
        between two; the oldest reading alone while the ring holds less."""
        points = self.points
        start_t = points[-1].t - seconds
        i = bisect_right(points, start_t, key=lambda p: p.t)  # the first point after start_t
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
