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

from tokentop.model import Snapshot, Totals, usd_per_mtok

HOST = ""  # key of the host series (GPU series are keyed by UUID)


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


@dataclass(frozen=True, slots=True)
class _Tick:
    t: float  # monotonic end of the tick
    dt: float
    tokens_in: float
    tokens_out: float
    energy_j: float
    cost_usd: float | None


class LiveHistory:
    """Per-tick increments for the host and each GPU over the last ``keep_s`` seconds."""

    def __init__(self, keep_s: float = WINDOWS[1].seconds + 30.0) -> None:
        self.keep_s = keep_s
        self._ticks: dict[str, deque[_Tick]] = {}
        self._last: dict[str, tuple[float, Totals]] = {}
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        t = snapshot.t_mono
        with self._lock:
            self._add(HOST, t, snapshot.host.totals)
            for gpu in snapshot.gpus:
                self._add(gpu.sample.uuid, t, gpu.totals)

    def _add(self, key: str, t: float, totals: Totals) -> None:
        previous = self._last.get(key)
        self._last[key] = (t, totals)
        if previous is None or t <= previous[0]:
            return
        t0, before = previous
        cost = None if totals.cost_usd is None or before.cost_usd is None else totals.cost_usd - before.cost_usd
        ticks = self._ticks.setdefault(key, deque())
        ticks.append(
            _Tick(
                t=t,
                dt=t - t0,
                tokens_in=max(0.0, totals.tokens_in - before.tokens_in),
                tokens_out=max(0.0, totals.tokens_out - before.tokens_out),
                energy_j=max(0.0, totals.energy_j - before.energy_j),
                cost_usd=None if cost is None else max(0.0, cost),
            )
        )
        while ticks and t - ticks[0].t > self.keep_s:
            ticks.popleft()

    def series(self, key: str, window_s: float, buckets: int, now: float, interval_s: float) -> list[GraphPoint]:
        """``buckets`` points covering the ``window_s`` seconds up to ``now``, oldest first.

        Buckets about one tick long show one tick each (so clock jitter never leaves a gap);
        longer ones are aligned to multiples of their length and only complete ones are shown,
        so a bar does not change once drawn and the chart moves one bar at a time.
        """
        with self._lock:
            ticks = list(self._ticks.get(key, ()))
        step = window_s / max(1, buckets)
        if step < 1.5 * interval_s:
            recent = [t for t in ticks if t.t > now - window_s - 0.5 * interval_s][-buckets:]
            padding = [GraphPoint(now - window_s, None, None, None, None)] * (buckets - len(recent))
            return padding + [_point(t.t, t.dt, t.tokens_in, t.tokens_out, t.energy_j, t.cost_usd) for t in recent]
        end = math.floor(now / step) * step
        return bucket_ticks(ticks, window_s, buckets, end)


def _point(t: float, dt: float, tokens_in: float, tokens_out: float, joules: float, usd: float | None) -> GraphPoint:
    if dt <= 0:
        return GraphPoint(t, None, None, None, None)
    return GraphPoint(t, tokens_in / dt, tokens_out / dt, joules / dt, usd_per_mtok(usd, tokens_out))


def bucket_ticks(ticks: Iterable[_Tick], window_s: float, buckets: int, now: float) -> list[GraphPoint]:
    buckets = max(1, buckets)
    step = window_s / buckets
    start = now - window_s
    sums = [[0.0, 0.0, 0.0, 0.0, 0.0, False] for _ in range(buckets)]  # dt, in, out, J, $, unpriced
    for tick in ticks:
        if tick.t <= start or tick.t > now:
            continue
        index = min(buckets - 1, max(0, math.ceil((tick.t - start) / step) - 1))
        acc = sums[index]
        acc[0] += tick.dt
        acc[1] += tick.tokens_in
        acc[2] += tick.tokens_out
        acc[3] += tick.energy_j
        if tick.cost_usd is None:
            acc[5] = True
        else:
            acc[4] += tick.cost_usd
    return [
        _point(start + i * step, dt, tin, tout, joules, None if unpriced else usd)
        for i, (dt, tin, tout, joules, usd, unpriced) in enumerate(sums)
    ]


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
