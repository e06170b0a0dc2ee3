"""The windows and percentiles made cheaper for issue 13 give exactly what the straightforward
code they replaced gave (kept here as the reference), on any input: histograms of other bounds,
counts that went down or are not numbers, rings of any times."""

from __future__ import annotations

import math
from bisect import bisect_right

from hypothesis import given
from hypothesis import strategies as st

from tokentop.derive import Point, Ring, histogram_quantile, window_between
from tokentop.derive.windows import windowed_quantiles
from tokentop.model import Histogram, Totals, Window

# --- the reference: the code as it was ------------------------------------------------------


def reference_quantile(q: float, hist: Histogram | None, base: Histogram | None = None) -> float | None:
    if hist is None:
        return None
    buckets = list(hist.buckets)
    if base is not None and [b for b, _ in base.buckets] == [b for b, _ in buckets]:
        diffs = [(le, c - c0) for (le, c), (_, c0) in zip(buckets, base.buckets, strict=False)]
        if all(c >= 0 for _, c in diffs):
            buckets = diffs
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def reference_windowed(q: float, hist: Histogram | None, base: Histogram | None, no_window: bool) -> float | None:
    if no_window or base is None:
        return None
    value = reference_quantile(q, hist, base)
    return value if value is None or math.isfinite(value) else None


def reference_window(points: list[Point], seconds: float) -> Window:
    start_t = points[-1].t - seconds
    i = bisect_right(points, start_t, key=lambda p: p.t)
    if i == 0 or points[i - 1].t == start_t or i == len(points):
        return window_between(points[max(i - 1, 0)], points[-1])
    before, after, end = points[i - 1], points[i], points[-1]
    share = (start_t - before.t) / (after.t - before.t)
    a, b, z = before.totals, after.totals, end.totals

    def at(old: float, new: float) -> float:
        return old + (new - old) * share

    def optional(old: float | None, new: float | None, last: float | None) -> float | None:
        return None if old is None or new is None or last is None else last - at(old, new)

    cost = optional(a.cost_usd, b.cost_usd, z.cost_usd)
    busy_cost = optional(a.busy_cost_usd, b.busy_cost_usd, z.busy_cost_usd)
    return Window(
        end.t - at(before.t, after.t),
        z.tokens_in - at(a.tokens_in, b.tokens_in),
        z.tokens_out - at(a.tokens_out, b.tokens_out),
        z.energy_j - at(a.energy_j, b.energy_j),
        cost,
        z.busy_s - at(a.busy_s, b.busy_s),
        busy_cost,
        None,
    )


def same(a: object, b: object) -> bool:
    """Equal, NaN included (a float that is not a number equals another one)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, Window) and isinstance(b, Window):
        return all(same(getattr(a, f), getattr(b, f)) for f in Window.__dataclass_fields__)
    return a == b


# --- histograms ---------------------------------------------------------------------------------

counts = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, 1.0, 5.0, math.nan, math.inf]),
)


@st.composite
def histogram_pair(draw: st.DrawFn) -> tuple[Histogram, Histogram | None]:
    bounds = sorted(set(draw(st.lists(st.floats(min_value=1e-4, max_value=100), max_size=8))))
    bounds.append(math.inf)
    grows = draw(st.lists(counts, min_size=len(bounds), max_size=len(bounds)))
    cumulative = [sum(grows[: i + 1]) for i in range(len(bounds))]
    hist = Histogram(tuple(zip(bounds, cumulative, strict=True)), sum=0.0, count=cumulative[-1])
    kind = draw(st.sampled_from(["none", "older", "restarted", "other bounds", "other length"]))
    if kind == "none":
        return hist, None
    if kind == "older":
        fractions = draw(st.lists(st.floats(0, 1), min_size=len(bounds), max_size=len(bounds)))
        older = [c * f for c, f in zip(cumulative, sorted(fractions), strict=True)]
        return hist, Histogram(tuple(zip(bounds, older, strict=True)), 0.0, older[-1])
    if kind == "restarted":
        return hist, Histogram(tuple((b, c + 1.0) for b, c in hist.buckets), 0.0, cumulative[-1] + 1.0)
    if kind == "other bounds":
        return hist, Histogram(tuple((b * 2, 0.0) for b in bounds), 0.0, 0.0)
    return hist, Histogram(hist.buckets[1:], 0.0, 0.0)


@given(histogram_pair(), st.sampled_from([0.0, 0.5, 0.95, 0.99, 1.0]), st.booleans())
def test_percentiles_are_what_the_reference_gives(
    pair: tuple[Histogram, Histogram | None], q: float, no_window: bool
) -> None:
    hist, base = pair
    assert same(histogram_quantile(q, hist, base), reference_quantile(q, hist, base))
    got = windowed_quantiles((q, 0.5), hist, base, no_window)
    assert same(got[0], reference_windowed(q, hist, base, no_window))
    assert same(got[1], reference_windowed(0.5, hist, base, no_window))


# --- rings --------------------------------------------------------------------------------------


@given(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.0, 1.0, 1.5, 3.0]), min_size=1, max_size=40),
    st.sampled_from([0.5, 1.0, 2.0, 10.0, 60.0]),
    st.sampled_from([5.0, 10.0, 60.0]),
    st.booleans(),
)
def test_ring_windows_are_what_the_reference_gives(
    steps: list[float], seconds: float, keep: float, priced: bool
) -> None:
    ring = Ring(keep)
    t = 1000.0
    for i, step in enumerate(steps):
        t += step
        totals = Totals(
            i * 1.5, i * 3.0, i * 250.0, i * 0.01 if priced else None, i * 0.5, i * 0.004 if priced else None
        )
        ring.push(Point(t, totals))
        assert list(ring.times) == [p.t for p in ring.points]
        assert same(ring.window(seconds), reference_window(list(ring.points), seconds))
        start = ring.points[-1].t - seconds
        expected = ring.points[max(bisect_right(list(ring.times), start) - 1, 0)]
        assert ring.reading_before(seconds) is expected
