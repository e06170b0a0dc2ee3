"""Chart data: the last minutes from memory, hours and days from the history store.

``LiveHistory`` keeps, per GPU and for the host, what each tick added (tokens, energy, cost,
seconds), for the longest in-memory window. It is fed on the sampler thread (so no tick is
missed when the screen drops a stale one) and read on the event loop, hence the lock.
Buckets add sums and divide at the end: $/Mtok of a bucket is its cost over its tokens, never
an average of per-tick ratios.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tokentop.derive import HOST, Point, window_between
from tokentop.model import Snapshot, Window, usd_per_mtok


@dataclass(frozen=True)
class GraphWindow:
    seconds: float
    label: str  # "1 min"
    from_store: bool  # long windows come from the store's 1-minute rollups


WINDOWS: tuple[GraphWindow, ...] = (
    GraphWindow(60.0, "1 min", False),
    GraphWindow(600.0, "10 min", False),
    GraphWindow(3600.0, "1 h", True),
    GraphWindow(86400.0, "24 h", True),
)


@dataclass(frozen=True, slots=True)
class GraphPoint:
    """One bucket ``[t, t + step)``; None where nothing is known (no ticks, no price, idle)."""

    t: float
    tok_s_in: float | None
    tok_s_out: float | None
    watts: float | None
    usd_per_mtok: float | None


class _Tick(NamedTuple):
    t: float  # monotonic end of the tick
    added: Window  # the difference of two snapshots' totals
    point: GraphPoint  # the tick as a bar of its own (made once, on the sampler's thread)


@dataclass(slots=True)
class _Bucket:
    """What the ticks of one bar added up to; rates are taken from the sums at the end."""

    seconds: float = 0.0
    tokens_in: float = 0.0
    tokens_out: float = 0.0
    energy_j: float = 0.0
    cost_usd: float | None = 0.0  # None once a tick in it had no price

    def add(self, tick: Window) -> None:
        self.seconds += tick.span_s
        self.tokens_in += tick.tokens_in
        self.tokens_out += tick.tokens_out
        self.energy_j += tick.energy_j
        self.cost_usd = None if self.cost_usd is None or tick.cost_usd is None else self.cost_usd + tick.cost_usd

    def point(self, t: float) -> GraphPoint:
        if self.seconds <= 0:
            return GraphPoint(t, None, None, None, None)
        s = self.seconds
        return GraphPoint(
            t, self.tokens_in / s, self.tokens_out / s, self.energy_j / s, usd_per_mtok(self.cost_usd, self.tokens_out)
        )


class LiveHistory:
    """Per-tick increments for the host and each GPU over the last ``keep_s`` seconds."""

    def __init__(self, keep_s: float = WINDOWS[1].seconds + 30.0) -> None:
        self.keep_s = keep_s
        self._ticks: dict[str, deque[_Tick]] = {}
        self._last: dict[str, Point] = {}
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        t = snapshot.t_mono
        with self._lock:
            self._add(HOST, Point(t, snapshot.host.totals))
            for gpu in snapshot.gpus:
                self._add(gpu.sample.uuid, Point(t, gpu.totals))

    def _add(self, key: str, point: Point) -> None:
        previous = self._last.get(key)
        self._last[key] = point
        if previous is None or point.t <= previous.t:
            return
        t = point.t
        ticks = self._ticks.setdefault(key, deque())
        added = window_between(previous, point)  # totals only grow: no negative
        ticks.append(_Tick(t, added, _one_tick(t, added)))
        while ticks and t - ticks[0].t > self.keep_s:
            ticks.popleft()

    def series(self, key: str, window_s: float, buckets: int, now: float, interval_s: float) -> list[GraphPoint]:
        """``buckets`` points covering the ``window_s`` seconds up to ``now``, oldest first.

        Buckets about one tick long show one tick each (so clock jitter never leaves a gap);
        longer ones are aligned to multiples of their length and only complete ones are shown,
        so a bar does not change once drawn and the chart moves one bar at a time.
        """
        step = window_s / max(1, buckets)
        if step < 1.5 * interval_s:
            with self._lock:  # read under the lock: the sampler's thread appends meanwhile
                recent = _newest(self._ticks.get(key, deque()), now - window_s - 0.5 * interval_s, buckets)
            return [GraphPoint(now - window_s, None, None, None, None)] * (buckets - len(recent)) + recent
        with self._lock:
            ticks = list(self._ticks.get(key, ()))
        end = math.floor(now / step) * step
        return bucket_ticks(ticks, window_s, buckets, end)


def _one_tick(t: float, added: Window) -> GraphPoint:
    bucket = _Bucket()
    bucket.add(added)
    return bucket.point(t)


def _newest(ticks: deque[_Tick], after: float, count: int) -> list[GraphPoint]:
    """The points of up to ``count`` newest ticks that end after ``after``, oldest first (read
    from the newest end: the deque holds ten minutes)."""
    points: list[GraphPoint] = []
    for tick in reversed(ticks):
        if len(points) == count or tick.t <= after:
            break
        points.append(tick.point)
    points.reverse()
    return points


def bucket_ticks(ticks: Iterable[_Tick], window_s: float, buckets: int, now: float) -> list[GraphPoint]:
    """``buckets`` bars of ``window_s / buckets`` seconds ending at ``now``; a tick goes in the
    bar its end falls in."""
    buckets = max(1, buckets)
    step = window_s / buckets
    start = now - window_s
    sums = [_Bucket() for _ in range(buckets)]
    for tick in ticks:
        if tick.t <= start or tick.t > now:
            continue
        sums[min(buckets - 1, max(0, math.ceil((tick.t - start) / step) - 1))].add(tick.added)
    return [bucket.point(start + i * step) for i, bucket in enumerate(sums)]


def buckets_for(window: GraphWindow, columns: int, interval_s: float) -> int:
    """As many buckets as there are columns, but no bucket shorter than the data beneath it:
    one tick in memory, one minute in the store."""
    finest = 60.0 if window.from_store else max(interval_s, 1e-3)
    return max(1, min(columns, int(window.seconds // finest)))


def points_from_store(points: Sequence[object]) -> list[GraphPoint]:
    """The store's ``SeriesPoint`` (same field names) as ``GraphPoint``."""
    return [
        GraphPoint(p.t, p.tok_s_in, p.tok_s_out, p.watts, p.usd_per_mtok)  # type: ignore[attr-defined]
        for p in points
    ]
