"""A session's own totals (``session_gpus``, ``session_endpoints``): what its summary still reads
once retention has deleted its per-tick rows.

Nothing is added to the per-tick path. A GPU's first row is copied with the statement that
already listed the GPU under its session (``INSERT_SESSION_GPU``); the rest is brought up to
date by ``refresh``, every ``REFRESH_EVERY_S`` and at close, inside the transaction of the tick
that triggers it, from the rows written since the previous refresh: each GPU's latest cumulative
figures and its ticks by how their energy was measured; each endpoint's first and latest rows,
the requests it completed (tick by tick: a counter that went down restarted from zero) and the
sums behind its mean latencies. Retention deletes these rows only with their session.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, fields
from itertools import groupby
from operator import itemgetter
from typing import NamedTuple

from tokentop.derive import Point
from tokentop.history.rows import cum
from tokentop.history.schema import SESSION_GPU_TOTALS

REFRESH_EVERY_S = 60.0

INSERT_SESSION_GPU = (
    f"INSERT OR IGNORE INTO session_gpus (session_id, gpu_id, gpu_index, {', '.join(SESSION_GPU_TOTALS)})"
    f" VALUES (?, ?, ?, {', '.join('?' * len(SESSION_GPU_TOTALS))})"
)
_UPDATE_GPU = (
    "UPDATE session_gpus SET t_last = ?, tokens_in_last = ?, tokens_out_last = ?, energy_j_last = ?,"
    " cost_usd_last = ?, busy_s_last = ?, busy_cost_usd_last = ?, counter_ticks = counter_ticks + ?,"
    " integrated_ticks = integrated_ticks + ?, unmeasured_ticks = unmeasured_ticks + ?"
    " WHERE session_id = ? AND gpu_id = ?"
)
# Each GPU's rows after its first, by energy method, since the previous refresh.
_COUNT_METHODS = """
SELECT k.gpu_id, m.text, count(*) FROM gpu_ticks k
JOIN session_gpus s ON s.session_id = k.session_id AND s.gpu_id = k.gpu_id
JOIN gpu_states g ON g.id = k.state_id LEFT JOIN labels m ON m.id = g.energy_method_id
WHERE k.session_id = ? AND k.t > ? AND k.t > s.t_first GROUP BY k.gpu_id, m.text
"""
_METHOD_COLUMN = {"counter": 0, "power_integral": 1}  # else 2: no counter and no power reading


def first_gpu_row(session_id: int, gpu_id: int, gpu_index: int | None, first: Point) -> tuple:
    """``INSERT_SESSION_GPU``'s values for a GPU's first row: its first and latest rows are the
    same, no tick counted yet."""
    point = (first.t, *cum(first.totals))
    return (session_id, gpu_id, gpu_index, *point, *point, 0, 0, 0)


def refresh(conn: sqlite3.Connection, session_id: int, latest: Mapping[int, Point], since: float) -> None:
    """Bring the session's totals up to date with its rows after ``since`` (a session time);
    ``latest``: each GPU's latest row."""
    counts: dict[int, list[int]] = {gpu_id: [0, 0, 0] for gpu_id in latest}
    for gpu_id, method, n in conn.execute(_COUNT_METHODS, (session_id, since)):
        counts.setdefault(gpu_id, [0, 0, 0])[_METHOD_COLUMN.get(method, 2)] += n
    for gpu_id, point in latest.items():
        conn.execute(_UPDATE_GPU, (point.t, *cum(point.totals), *counts[gpu_id], session_id, gpu_id))
    _refresh_endpoints(conn, session_id, since)


# --- endpoints ----------------------------------------------------------------------------------


class _EndpointRow(NamedTuple):
    endpoint_id: int
    t: float
    tokens_in_cum: float
    tokens_out_cum: float
    kind_id: int | None
    model_id: int | None
    gpus_id: int | None
    requests_finished_raw: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None


@dataclass
class _EndpointTotals:
    """One ``session_endpoints`` row (after its key), in table order."""

    t_first: float
    tokens_in_first: float
    tokens_out_first: float
    t_last: float
    tokens_in_last: float
    tokens_out_last: float
    kind_id: int | None
    model_id: int | None
    gpus_id: int | None
    requests_finished_last: float | None
    requests_completed: float | None
    ttft_p50_s_sum: float = 0.0
    ttft_p50_s_n: int = 0
    ttft_p95_s_sum: float = 0.0
    ttft_p95_s_n: int = 0
    itl_p50_s_sum: float = 0.0
    itl_p50_s_n: int = 0

    @classmethod
    def first(cls, row: _EndpointRow) -> _EndpointTotals:
        """From the endpoint's first row (its latencies cover the time before: not counted)."""
        tokens = (row.tokens_in_cum, row.tokens_out_cum)
        labels = (row.kind_id, row.model_id, row.gpus_id)
        return cls(row.t, *tokens, row.t, *tokens, *labels, row.requests_finished_raw, None)

    def add(self, row: _EndpointRow) -> None:
        """A later row."""
        self.t_last, self.tokens_in_last, self.tokens_out_last = row.t, row.tokens_in_cum, row.tokens_out_cum
        self.kind_id = row.kind_id if row.kind_id is not None else self.kind_id
        self.model_id = row.model_id if row.model_id is not None else self.model_id
        self.gpus_id = row.gpus_id if row.gpus_id is not None else self.gpus_id
        raw, before = row.requests_finished_raw, self.requests_finished_last
        if raw is not None:
            if before is not None:
                self.requests_completed = (self.requests_completed or 0.0) + (raw - before if raw >= before else raw)
            self.requests_finished_last = raw
        if row.ttft_p50_s is not None:
            self.ttft_p50_s_sum += row.ttft_p50_s
            self.ttft_p50_s_n += 1
        if row.ttft_p95_s is not None:
            self.ttft_p95_s_sum += row.ttft_p95_s
            self.ttft_p95_s_n += 1
        if row.itl_p50_s is not None:
            self.itl_p50_s_sum += row.itl_p50_s
            self.itl_p50_s_n += 1


_ENDPOINT_TOTALS_COLUMNS = tuple(f.name for f in fields(_EndpointTotals))
_SELECT_ENDPOINT_TOTALS = (
    f"SELECT endpoint_id, {', '.join(_ENDPOINT_TOTALS_COLUMNS)} FROM session_endpoints WHERE session_id = ?"
)
_UPSERT_ENDPOINT_TOTALS = (
    f"INSERT OR REPLACE INTO session_endpoints (session_id, endpoint_id, {', '.join(_ENDPOINT_TOTALS_COLUMNS)})"
    f" VALUES (?, ?, {', '.join('?' * len(_ENDPOINT_TOTALS_COLUMNS))})"
)
_STATE_FIELDS = ("kind_id", "model_id", "gpus_id")  # in ``endpoint_states`` (schema 5)
_ENDPOINT_ROWS = (
    f"SELECT {', '.join(('s.' if f in _STATE_FIELDS else 'k.') + f for f in _EndpointRow._fields)}"
    " FROM endpoint_ticks k JOIN endpoint_states s ON s.id = k.state_id"
    " WHERE k.session_id = ? AND k.t > ? ORDER BY k.endpoint_id, k.t"
)


def _refresh_endpoints(conn: sqlite3.Connection, session_id: int, since: float) -> None:
    rows = conn.execute(_ENDPOINT_ROWS, (session_id, since)).fetchall()
    if not rows:
        return
    kept = {row[0]: _EndpointTotals(*row[1:]) for row in conn.execute(_SELECT_ENDPOINT_TOTALS, (session_id,))}
    for endpoint_id, group in groupby(map(_EndpointRow._make, rows), key=itemgetter(0)):
        totals = _folded(kept.get(endpoint_id), group)
        conn.execute(_UPSERT_ENDPOINT_TOTALS, (session_id, endpoint_id, *astuple(totals)))


def _folded(totals: _EndpointTotals | None, rows: Iterable[_EndpointRow]) -> _EndpointTotals:
    """``totals`` (None: the endpoint's first rows) with ``rows`` added, in time order."""
    for row in rows:
        if totals is None:
            totals = _EndpointTotals.first(row)
        else:
            totals.add(row)
    assert totals is not None  # groupby never yields an empty group
    return totals
