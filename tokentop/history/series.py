"""Chart series: what a GPU, or the whole host, delivered per bucket of a window.

Windows under ``ROLLUP_FOR_WINDOWS_S`` read the raw rows; longer ones, and short ones whose raw
rows are gone, read the 1-minute rollups. Rates divide by the seconds each bucket covered (times
on the session's clock: measured seconds).
"""

from __future__ import annotations

import math
import sqlite3
from typing import NamedTuple

from tokentop.history.records import SeriesPoint
from tokentop.history.schema import minute_of
from tokentop.model import usd_per_mtok

ROLLUP_FOR_WINDOWS_S = 3600.0  # gpu_series reads rollups for windows at least this long
RAW_LOOKBACK_S = 120.0  # how far before a raw chart's start to look for each GPU's previous row

# Chart queries. Both return, per bucket ``b`` of ``[since, until)``, the tokens, energy and
# cost delivered and the seconds covered (the longest any GPU covered).
#
# Raw rows: the last row of each GPU in each bucket (SQLite takes the bare columns from the
# max(t) row), minus the last row of the bucket before (rows just before ``since`` form bucket -1).
_SERIES_RAW_SQL = """
WITH last AS (
    SELECT gpu_id,
           CASE WHEN t < :since THEN -1 ELSE CAST((t - :since) / :step AS INTEGER) END AS b,
           max(t) AS t, tokens_in_cum, tokens_out_cum, energy_j_cum, cost_usd_cum
    FROM gpu_ticks
    WHERE session_id = :session AND t >= :lo AND t < :until {gpu_filter}
    GROUP BY gpu_id, b
), d AS (
    SELECT b, tokens_in_cum - LAG(tokens_in_cum) OVER w AS tin,
           tokens_out_cum - LAG(tokens_out_cum) OVER w AS tout,
           energy_j_cum - LAG(energy_j_cum) OVER w AS e,
           cost_usd_cum - LAG(cost_usd_cum) OVER w AS cost, t - LAG(t) OVER w AS span
    FROM last WINDOW w AS (PARTITION BY gpu_id ORDER BY b)
)
SELECT b, sum(tin), sum(tout), sum(e), CASE WHEN count(cost) = count(*) THEN sum(cost) END,
       max(span)
FROM d WHERE b >= 0 AND span > 0 GROUP BY b
"""
# Rollups: the per-minute differences summed (one streaming pass in key order), then the
# minutes summed into buckets of whole minutes.
_SERIES_ROLLUP_SQL = """
SELECT CAST((minute - :since) / :step AS INTEGER) AS b, sum(tin), sum(tout), sum(e),
       CASE WHEN count(cost) = count(*) THEN sum(cost) END, sum(covered)
FROM (
    SELECT minute, sum(tokens_in_delta) AS tin, sum(tokens_out_delta) AS tout,
           sum(energy_j_delta) AS e, max(covered_s) AS covered,
           CASE WHEN count(cost_usd_delta) = count(*) THEN sum(cost_usd_delta) END AS cost
    FROM gpu_rollup_1m
    WHERE session_id = :session AND minute >= :since AND minute < :until {gpu_filter}
    GROUP BY minute
)
GROUP BY b
"""


class _Bucket(NamedTuple):
    """One chart bucket's deliveries and the seconds they cover."""

    tokens_in: float
    tokens_out: float
    energy_j: float
    cost_usd: float | None
    covered_s: float


_NO_BUCKET = _Bucket(0.0, 0.0, 0.0, None, 0.0)


def gpu_series(
    conn: sqlite3.Connection, gpu_id: int | None, session_id: int | None, since: float, until: float, step_s: float
) -> list[SeriesPoint]:
    """Documented on ``Store.gpu_series``; ``gpu_id`` None: the whole host."""
    if until - since < ROLLUP_FOR_WINDOWS_S:
        buckets = _buckets(conn, False, session_id, gpu_id, since, until, step_s)
        if buckets:
            return _points(buckets, since, until, step_s)
    step_s = math.ceil(step_s / 60.0) * 60.0
    return _points(_buckets(conn, True, session_id, gpu_id, since, until, step_s), since, until, step_s)


def _buckets(
    conn: sqlite3.Connection,
    rollups: bool,
    session_id: int | None,
    gpu_id: int | None,
    since: float,
    until: float,
    step_s: float,
) -> dict[int, _Bucket]:
    """Per bucket, the session that covered it longest (sessions at the same time are taken
    to watch the same GPUs)."""
    sql = _SERIES_ROLLUP_SQL if rollups else _SERIES_RAW_SQL
    sql = sql.format(gpu_filter="" if gpu_id is None else "AND gpu_id = :gpu")
    params = {"since": since, "until": until, "step": step_s, "lo": since - RAW_LOOKBACK_S, "gpu": gpu_id}
    chosen: dict[int, _Bucket] = {}
    for session in _sessions_between(conn, session_id, since, until):
        for b, *figures in conn.execute(sql, {**params, "session": session}):
            bucket = _Bucket(*figures)
            if b not in chosen or bucket.covered_s > chosen[b].covered_s:
                chosen[b] = bucket
    return chosen


def _sessions_between(conn: sqlite3.Connection, session_id: int | None, since: float, until: float) -> list[int]:
    if session_id is not None:
        return [session_id]
    sessions = conn.execute("SELECT DISTINCT session_id FROM session_gpus").fetchall()
    return [
        s
        for (s,) in sessions
        if conn.execute(
            "SELECT 1 FROM gpu_rollup_1m WHERE session_id = ? AND minute >= ? AND minute < ? LIMIT 1",
            (s, minute_of(since) - 60, until),
        ).fetchone()
    ]


def _points(buckets: dict[int, _Bucket], since: float, until: float, step_s: float) -> list[SeriesPoint]:
    points = []
    for b in range(math.ceil((until - since) / step_s)):
        start = since + b * step_s
        bucket = buckets.get(b, _NO_BUCKET)
        span = bucket.covered_s
        if span <= 0:
            points.append(SeriesPoint(start, None, None, None, None))
            continue
        per_mtok = usd_per_mtok(bucket.cost_usd, bucket.tokens_out)
        tok_s_in, tok_s_out, watts = bucket.tokens_in / span, bucket.tokens_out / span, bucket.energy_j / span
        points.append(SeriesPoint(start, tok_s_in, tok_s_out, watts, per_mtok))
    return points


def empty(since: float, until: float, step_s: float) -> list[SeriesPoint]:
    """Every bucket, none with data."""
    return _points({}, since, until, step_s)
