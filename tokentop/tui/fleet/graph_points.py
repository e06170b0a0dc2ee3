"""A source's past (``FleetSeries``) as the live view's graph draws it (``GraphPoint``s).

Each series point is taken as the average over its step (``step_s``) ending at its time, as a
range query of ``rate()`` or ``increase()`` gives. Points are gathered into one bucket per plot
column by adding what they stand for (tokens, joules, dollars) and dividing at the end: a
bucket's $/Mtok is its cost over its tokens, never an average of ratios. The series carries no
input tokens, so the fleet graph has no "in tok/s" chart.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokentop.fleet.model import FleetSeries
from tokentop.model import usd_per_mtok
from tokentop.tui.history import GraphPoint
from tokentop.units import fmt_window


@dataclass(frozen=True)
class Span:
    seconds: float
    label: str


SPANS: tuple[Span, ...] = (Span(3600.0, "1 h"), Span(86_400.0, "24 h"), Span(7 * 86_400.0, "7 d"))


@dataclass
class _Bucket:
    tok_s: float = 0.0  # sum of known tok/s values (each stands for one step)
    tok_count: int = 0
    watts: float = 0.0
    watt_count: int = 0
    priced_tokens: float = 0.0  # tokens (per step) of the points whose cost is known too
    usd: float = 0.0  # dollars (per step) of those points

    def add(
        self, tok_s: float | None, watts: float | None, usd_per_hour: float | None, priced_tok_s: float | None
    ) -> None:
        """``priced_tok_s``: the tok/s of the hosts whose cost ``usd_per_hour`` covers."""
        if tok_s is not None:
            self.tok_s += tok_s
            self.tok_count += 1
        if watts is not None:
            self.watts += watts
            self.watt_count += 1
        if priced_tok_s is not None and usd_per_hour is not None:
            self.priced_tokens += priced_tok_s
            self.usd += usd_per_hour / 3600.0

    def point(self, t: float, step_s: float) -> GraphPoint:
        return GraphPoint(
            t,
            None,
            self.tok_s / self.tok_count if self.tok_count else None,
            self.watts / self.watt_count if self.watt_count else None,
            usd_per_mtok(self.usd * step_s, self.priced_tokens * step_s) if self.tok_count else None,
        )


def bucket_count(series: FleetSeries, width: int) -> int:
    """One bucket per plot column, but never more than the series has steps."""
    steps = round(series.span_s / series.step_s) if series.step_s > 0 else len(series.t_wall)
    return max(1, min(width, steps or 1))


def graph_points(series: FleetSeries, buckets: int) -> list[GraphPoint]:
    """``buckets`` points over the series' span up to its last point, oldest first; a bucket no
    point falls in is a gap (all None)."""
    if not series.t_wall or buckets <= 0:
        return []
    end = max(series.t_wall)
    start = end - series.span_s
    width = series.span_s / buckets
    gathered = [_Bucket() for _ in range(buckets)]
    priced = series.tok_s_out if series.priced_tok_s_out is None else series.priced_tok_s_out
    for i, t in enumerate(series.t_wall):
        if t <= start:
            continue
        index = min(buckets - 1, int((t - start) / width)) if width > 0 else buckets - 1
        gathered[index].add(series.tok_s_out[i], series.power_w[i], series.usd_per_hour[i], priced[i])
    return [bucket.point(start + (i + 1) * width, series.step_s) for i, bucket in enumerate(gathered)]


def graph_title(what: str, span: Span, series: FleetSeries | None, buckets: int) -> str:
    """`` History · fleet (all hosts) · last 1 h · 1m per bar · w: span``; a source that keeps
    less than the span asked gives what it keeps, and the title says so: ``last 15m (all kept)``."""
    shown, per_bar = f"last {span.label}", ""
    if series is not None and series.t_wall:
        if series.span_s < span.seconds:
            shown = f"last {fmt_window(series.span_s)} (all kept)"
        per_bar = f" · {fmt_window(max(series.step_s, series.span_s / max(1, buckets)))} per bar"
    return f" History · {what} · {shown}{per_bar} · w: span"
