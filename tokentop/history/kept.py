"""Reading a session's totals (``session_gpus``, ``session_endpoints``; written by ``totals``):
the figures of a session that retention does not delete. Files of schema 3 and later only; the
sessions that older versions wrote have none (their GPU rows hold NULLs)."""

from __future__ import annotations

import sqlite3

from tokentop.derive import Point
from tokentop.history.records import EndpointSessionTotals, GpuSessionTotals
from tokentop.history.schema import SESSION_GPU_TOTALS
from tokentop.model import Totals

_FIRST_AND_LAST = ", ".join(SESSION_GPU_TOTALS[:14])  # t_first, 6 figures, t_last, 6 figures
_GPU_POINTS = f"SELECT gpu_id, {_FIRST_AND_LAST} FROM session_gpus WHERE session_id = ? AND t_first IS NOT NULL"
_BOUNDS = """
SELECT min(t_first), max(t_last) FROM (
    SELECT t_first, t_last FROM session_gpus WHERE session_id = :session AND t_first IS NOT NULL
    UNION ALL SELECT t_first, t_last FROM session_endpoints WHERE session_id = :session
)
"""
_GPUS = """
SELECT g.uuid, s.t_first, s.t_last, s.counter_ticks, s.integrated_ticks, s.unmeasured_ticks,
       EXISTS (SELECT 1 FROM gpu_ticks k WHERE k.session_id = s.session_id AND k.t = s.t_first
               AND k.gpu_id = s.gpu_id)
FROM session_gpus s JOIN gpus g ON g.id = s.gpu_id
WHERE s.session_id = ? AND s.t_first IS NOT NULL ORDER BY s.gpu_id
"""
_ENDPOINTS = """
SELECT p.name, p.url, kd.text, md.text, gl.text, s.t_first, s.t_last,
       s.tokens_in_last - s.tokens_in_first, s.tokens_out_last - s.tokens_out_first,
       s.requests_completed, s.ttft_p50_s_sum / NULLIF(s.ttft_p50_s_n, 0),
       s.ttft_p95_s_sum / NULLIF(s.ttft_p95_s_n, 0), s.itl_p50_s_sum / NULLIF(s.itl_p50_s_n, 0),
       EXISTS (SELECT 1 FROM endpoint_ticks k WHERE k.session_id = s.session_id AND k.t = s.t_first
               AND k.endpoint_id = s.endpoint_id)
FROM session_endpoints s JOIN endpoints p ON p.id = s.endpoint_id
LEFT JOIN labels kd ON kd.id = s.kind_id LEFT JOIN labels md ON md.id = s.model_id
LEFT JOIN labels gl ON gl.id = s.gpus_id
WHERE s.session_id = ? ORDER BY s.endpoint_id
"""


def gpu_points(conn: sqlite3.Connection, session_id: int, gpu_id: int | None) -> dict[int, tuple[Point, Point]]:
    """The first and latest rows kept of one GPU, or of all (``gpu_id`` None), by ``gpu_id``."""
    sql, params = (
        (_GPU_POINTS, (session_id,)) if gpu_id is None else (_GPU_POINTS + " AND gpu_id = ?", (session_id, gpu_id))
    )
    return {
        row[0]: (Point(row[1], Totals(*row[2:8])), Point(row[8], Totals(*row[9:15])))
        for row in conn.execute(sql, params)
    }


def bounds(conn: sqlite3.Connection, session_id: int) -> tuple[float | None, float | None]:
    """The session's first reading and its latest kept one; None where nothing is kept."""
    first, last = conn.execute(_BOUNDS, {"session": session_id}).fetchone()
    return first, last


def gpus(conn: sqlite3.Connection, session_id: int) -> list[GpuSessionTotals]:
    return [
        GpuSessionTotals(uuid, t_first, t_last, counter, integrated, unmeasured, bool(raw))
        for uuid, t_first, t_last, counter, integrated, unmeasured, raw in conn.execute(_GPUS, (session_id,))
    ]


def endpoints(conn: sqlite3.Connection, session_id: int) -> list[EndpointSessionTotals]:
    return [
        EndpointSessionTotals(
            name=row[0],
            url=row[1],
            kind=row[2],
            model=row[3],
            gpus=tuple(row[4].split(",")) if row[4] else (),
            t_first=row[5],
            t_last=row[6],
            tokens_in=row[7],
            tokens_out=row[8],
            requests_completed=row[9],
            ttft_p50_s_mean=row[10],
            ttft_p95_s_mean=row[11],
            itl_p50_s_mean=row[12],
            raw_from_first=bool(row[13]),
        )
        for row in conn.execute(_ENDPOINTS, (session_id,))
    ]
