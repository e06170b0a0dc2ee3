"""Chart series: what a GPU, or the whole host, delivered per bucket of a window.

Windows under ``ROLLUP_FOR_WINDOWS_S`` read the raw rows; longer ones, and short ones whose raw
rows are gone, read the 1-minute rollups. Rates divide by the seconds each bucket covered (times
on the session's clock: measured seconds).
"""

from __future__ import annotations

import math
import sqlite3
from typing import Final

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
# minutes summed into buckets of whole minutes. With 1-minute buckets each minute is its own
# bucket: the minutes are the buckets, without the second grouping.
_MINUTES_SQL = """
SELECT {bucket} AS b, sum(tokens_in_delta) AS tin, sum(tokens_out_delta) AS tout,
       sum(energy_j_delta) AS e,
       CASE WHEN count(cost_usd_delta) = count(*) THEN sum(cost_usd_delta) END AS cost,
       max(covered_s) AS covered
FROM gpu_rollup_1m
WHERE session_id = :session AND minute >= :since AND minute < :until {{gpu_filter}}
GROUP BY minute
"""
_SERIES_MINUTES_SQL = _MINUTES_SQL.format(bucket="CAST((minute - :since) / :step AS INTEGER)")
_SERIES_ROLLUP_SQL = f"""
SELECT CAST((b - :since) / :step AS INTEGER), sum(tin), sum(tout), sum(e),
       CASE WHEN count(cost) = count(*) THEN sum(cost) END, sum(covered)
FROM ({_MINUTES_SQL.format(bucket="minute")})
GROUP BY 1
"""


# A bucket as both queries return it: (b, tokens in, tokens out, energy J, cost $ or None,
# seconds covered). Read as plain rows: a NamedTuple per bucket costs a tenth of a day's chart.
_Bucket = tuple[int, float, float, float, float | None, float]
_COVERED_S: Final = 5


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
    if rollups:
        sql = _SERIES_MINUTES_SQL if step_s == 60.0 else _SERIES_ROLLUP_SQL
    else:
        sql = _SERIES_RAW_SQL
    sql = sql.format(gpu_filter="" if gpu_id is None else "AND gpu_id = :gpu")
    params = {"since": since, "until": until, "step": step_s, "lo": since - RAW_LOOKBACK_S, "gpu": gpu_id}
    chosen: dict[int, _Bucket] = {}
    for session in _sessions_between(conn, session_id, since, until):
        rows: list[_Bucket] = conn.execute(sql, {**params, "session": session}).fetchall()
        if not chosen:  # the first (usually the only) session
            chosen = {row[0]: row for row in rows}
            continue
        for row in rows:
            b = row[0]
            if b not in chosen or row[_COVERED_S] > chosen[b][_COVERED_S]:
                chosen[b] = row
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
        bucket = buckets.get(b)
        if bucket is None or bucket[_COVERED_S] <= 0:
            points.append(SeriesPoint(start, None, None, None, None))
            continue
        _, tokens_in, tokens_out, energy_j, cost_usd, span = bucket
        per_mtok = usd_per_mtok(cost_usd, tokens_out)
        points.append(SeriesPoint(start, tokens_in / span, tokens_out / span, energy_j / span, per_mtok))
    return points


def empty(since: float, until: float, step_s: float) -> list[SeriesPoint]:
    """Every bucket, none with data."""
    return _points({}, since, until, step_s)
