"""Arithmetic over the history's tracks: the windows behind peaks and percentiles, how each
GPU's energy was measured, the requests an endpoint completed. Numbers in, numbers out.

A day of 8 GPUs holds tens of thousands of 10 s windows, so they are differenced column by
column (``RateWindows``), by the rules of ``tokentop.derive.window_between`` (a window is the
difference of its two cumulative points) and ``tokentop.derive.sum_windows`` (the host's window
sums its GPUs' over the longest span among them). A ``Window`` object per window would cost
several times the whole summary; the tests check these columns against those two functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import sub, truediv
from typing import NamedTuple

from tokentop.history import EndpointTrack, GpuMinutes, GpuSessionTotals, GpuTrack, Store

MIN_WINDOW_SHARE = 0.5  # a window covering less than this share of its length joins its neighbour
MIN_WINDOWS_FOR_PERCENTILES = 3  # fewer windows: the peak only, and the summary says why


class RateWindows(NamedTuple):
    """One GPU's (or the host's) fixed windows, column by column: what each delivered and the
    seconds it covered, keyed by ``ends`` (the window's last tick time, or its minute)."""

    ends: list[float]
    span_s: list[float]
    tokens_in: list[float]
    tokens_out: list[float]
    energy_j: list[float]

    def per_second(self, column: Sequence[float]) -> list[float]:
        """``column`` (one of this object's) divided by each window's span: tok/s, W."""
        return list(map(truediv, column, self.span_s))


NO_WINDOWS = RateWindows([], [], [], [], [])


class Distribution(NamedTuple):
    p50: float | None
    p95: float | None
    peak: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (NumPy's default); None for no values."""
    return _percentile_of_sorted(sorted(values), q)


def _percentile_of_sorted(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Iterable[float]) -> Distribution:
    """p50, p95 and the peak of ``values``, sorted once; p50 and p95 only from
    ``MIN_WINDOWS_FOR_PERCENTILES`` values on (the percentiles of one or two windows would only
    repeat them)."""
    ordered = sorted(values)
    if len(ordered) < MIN_WINDOWS_FOR_PERCENTILES:
        return Distribution(None, None, ordered[-1] if ordered else None)
    return Distribution(_percentile_of_sorted(ordered, 0.5), _percentile_of_sorted(ordered, 0.95), ordered[-1])


def mean_known(values: Iterable[float | None]) -> float | None:
    """Mean of the known values; None when there are none."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# --- the fixed windows of peaks and percentiles ---------------------------------------------


def windows_from_track(track: GpuTrack) -> RateWindows:
    """Differences between consecutive points, each window keyed by its last point. Together
    they cover the track from its first point to its last (``settled`` then joins the short
    ones to their neighbours)."""

    def diff(column: Sequence[float]) -> list[float]:
        return list(map(sub, column[1:], column[:-1]))

    t = track.t
    return RateWindows(
        list(t[1:]), diff(t), diff(track.tokens_in_cum), diff(track.tokens_out_cum), diff(track.energy_j_cum)
    )


def windows_from_minutes(minutes: GpuMinutes) -> RateWindows:
    """The 1-minute rollups as windows, keyed by the minute: the seconds each covered."""
    return RateWindows(
        [float(m) for m in minutes.minute],
        list(minutes.covered_s),
        list(minutes.tokens_in_delta),
        list(minutes.tokens_out_delta),
        list(minutes.energy_j_delta),
    )


def settled(windows: RateWindows, length_s: float) -> RateWindows:
    """The windows that peaks and percentiles are taken over: each one shorter than
    ``MIN_WINDOW_SHARE`` of ``length_s`` (the range's remainder at its end, a span between
    ticks that a gap cut short) joined to the window before it (the first one to the window
    after it); a lone window that short is left out.

    Nothing is dropped between the first and last point, so the mean over the range (its
    tokens over its seconds) is a weighted mean of these windows' rates and never exceeds the
    peak. Dropping the short remainder instead let a 13 s session's mean (over 13 s) exceed its
    only window's rate (over the first 10 s)."""
    shortest = length_s * MIN_WINDOW_SHARE
    if all(span >= shortest for span in windows.span_s):
        return windows
    out: list[list[float]] = []  # [end, span, tokens in, tokens out, energy] per window
    for window in zip(*windows):
        if out and (window[1] < shortest or out[-1][1] < shortest):
            last = out[-1]
            out[-1] = [window[0], *(a + b for a, b in zip(last[1:], window[1:]))]
        else:
            out.append(list(window))
    kept = [w for w in out if w[1] >= shortest]
    return RateWindows(*(list(column) for column in zip(*kept))) if kept else NO_WINDOWS


def host_windows(per_gpu: Sequence[RateWindows]) -> RateWindows:
    """Per window: the GPUs' deliveries summed over the longest span among them."""
    present = [w for w in per_gpu if w.ends]
    if not present:
        return NO_WINDOWS
    if len(present) == 1:
        return present[0]
    if all(w.ends == present[0].ends for w in present[1:]):  # the usual case: the same ticks
        return RateWindows(
            present[0].ends,
            list(map(max, *(w.span_s for w in present))),
            *([sum(values) for values in zip(*columns)] for columns in _columns(present)),
        )
    merged: dict[float, list[float]] = {}
    for w in present:
        for key, span, tin, tout, energy in zip(*w):
            m = merged.get(key)
            if m is None:
                merged[key] = [span, tin, tout, energy]
            else:
                m[0] = max(m[0], span)
                m[1] += tin
                m[2] += tout
                m[3] += energy
    return RateWindows(list(merged), *(list(column) for column in zip(*merged.values())))


def _columns(windows: list[RateWindows]) -> list[list[list[float]]]:
    """Per summed column (tokens in, tokens out, energy): that column of every GPU."""
    return [[w.tokens_in for w in windows], [w.tokens_out for w in windows], [w.energy_j for w in windows]]


# --- how energy was measured ----------------------------------------------------------------


@dataclass(frozen=True)
class EnergyMethod:
    method: str | None  # "counter" | "power_integral" | "mixed" | None (no power reading)
    integrated_ticks: int
    unmeasured_ticks: int


NO_ENERGY_METHOD = EnergyMethod(None, 0, 0)


def _counter_explains(track: GpuTrack) -> list[bool]:
    """Per window between consecutive points: whether its energy is exactly the NVML counter's
    difference, i.e. every tick in between was measured by the counter."""
    counter, energy = track.energy_counter_mj, track.energy_j_cum
    return [
        a is not None
        and b is not None
        and b >= a
        and math.isclose((b - a) / 1000.0, e1 - e0, rel_tol=1e-9, abs_tol=1e-3)
        for a, b, e0, e1 in zip(counter, counter[1:], energy, energy[1:])
    ]


def energy_method(
    store: Store, session_id: int, track: GpuTrack, session_totals: GpuSessionTotals | None = None
) -> EnergyMethod:
    """Counter windows need no reading; the rest (resets, GPUs without a counter, missing
    readings) are counted tick by tick: each run of consecutive ones a span, all spans in one
    read. Nothing is read when the session's totals (``session_totals``, this GPU's) show every
    tick of the track measured by the counter."""
    if _all_by_counter(track, session_totals):
        return EnergyMethod("counter", 0, 0)
    explained = _counter_explains(track)
    spans: list[tuple[float, float]] = []
    start = None
    for i, by_counter in enumerate([*explained, True], start=1):  # a sentinel ends the last run
        if not by_counter:
            start = track.t[i - 1] if start is None else start
        elif start is not None:
            spans.append((start, track.t[i - 1]))
            start = None
    counts = store.gpu_energy_methods_over(session_id, track.uuid, spans) if spans else {}
    integrated, unmeasured = counts.get("power_integral", 0), counts.get(None, 0)
    has_counter = any(explained) or counts.get("counter", 0) > 0
    if has_counter and integrated:
        method = "mixed"
    elif has_counter:
        method = "counter"
    elif integrated:
        method = "power_integral"
    else:
        method = None
    return EnergyMethod(method, integrated, unmeasured)


def _all_by_counter(track: GpuTrack, session_totals: GpuSessionTotals | None) -> bool:
    """Whether the session's totals count every tick after the GPU's first by the counter, up
    to a time at or after the track's last point: then every tick of the track was (and
    ``energy_method`` would count only counter ticks, in its spans and out of them)."""
    return (
        session_totals is not None
        and len(track.t) >= 2
        and session_totals.counter_ticks > 0
        and session_totals.integrated_ticks == 0
        and session_totals.unmeasured_ticks == 0
        and session_totals.t_first <= track.t[0]
        and session_totals.t_last >= track.t[-1]
    )


# --- requests an endpoint completed ---------------------------------------------------------


def requests_completed(store: Store, session_id: int, track: EndpointTrack) -> float | None:
    """Increase of the finished-requests counter, a restart counting its new value from zero.

    Between two read points the plain difference is right unless the engine restarted in
    between: the counter went down, appeared or vanished, or its token counters moved otherwise
    than the delivered tokens. Runs of such windows are read row by row, in one read each."""
    values = track.requests_finished_raw
    increases: list[float] = []
    pending = None  # first point of a run of windows to read row by row
    for i in range(1, len(values)):
        if _may_have_restarted(track, i):
            pending = i - 1 if pending is None else pending
            continue
        if pending is not None:
            increases += _increases_row_by_row(store, session_id, track, pending, i - 1)
            pending = None
        a, b = values[i - 1], values[i]
        if a is not None and b is not None:
            increases.append(b - a)
    if pending is not None:
        increases += _increases_row_by_row(store, session_id, track, pending, len(values) - 1)
    return sum(increases) if increases else None


def _may_have_restarted(track: EndpointTrack, i: int) -> bool:
    a, b = track.requests_finished_raw[i - 1], track.requests_finished_raw[i]
    if a is None or b is None:
        return (a is None) != (b is None)
    return b < a or _tokens_disagree(track, i)


def _tokens_disagree(track: EndpointTrack, i: int) -> bool:
    """The token counters went down or moved otherwise than the tokens delivered."""
    for raw, delivered in (
        (track.prompt_tokens_raw, track.tokens_in_cum),
        (track.generation_tokens_raw, track.tokens_out_cum),
    ):
        a, b = raw[i - 1], raw[i]
        if a is None or b is None:
            continue
        if b < a or not math.isclose(b - a, delivered[i] - delivered[i - 1], rel_tol=1e-9, abs_tol=1e-6):
            return True
    return False


def _increases_row_by_row(store: Store, session_id: int, track: EndpointTrack, first: int, last: int) -> list[float]:
    """The counter's increases tick by tick between points ``first`` and ``last``."""
    rows = store.endpoint_rows(session_id, track.name, track.url, track.t[first], track.t[last])
    previous = track.requests_finished_raw[first]
    increases = []
    for raw in rows.requests_finished_raw if rows is not None else ():
        if raw is None:
            continue
        if previous is not None:
            increases.append(raw - previous if raw >= previous else raw)
        previous = raw
    return increases
