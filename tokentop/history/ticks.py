"""One tick's rows and 1-minute rollups, written in the caller's transaction.

The per-tick path uses raw ``sqlite3``: a tick's GPU rows go in one ``executemany`` (a bind and
a step of a statement ``sqlite3`` keeps prepared, per row, without a Python call each), so do
its endpoint rows, then the rollups of the new rows in one ``executemany`` per table; going
through sqlite-utils would add its per-call Python work (dicts, quoting, transaction checks) to
each of them, every second, for nothing. Writing a tick twice changes nothing: raw rows are
keyed by time and a rollup only counts a row that was actually inserted (a tick that may hold
rows written before is inserted row by row, each insert telling whether its row is new).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from itertools import repeat
from typing import NamedTuple

from tokentop.derive import Point
from tokentop.history.rows import EndpointRow, GpuRow, Tick
from tokentop.history.schema import minute_of
from tokentop.history.states import StateIds
from tokentop.history.totals import INSERT_SESSION_GPU, first_gpu_row

_INSERT_GPU_TICK = (
    "INSERT OR IGNORE INTO gpu_ticks (session_id, gpu_id, t, state_id, util_pct, mem_used, power,"
    " energy_counter_mj, temperature_c, sm_clock_mhz, tokens_in_cum, tokens_out_cum, energy_j_cum,"
    " cost_usd_cum, busy_s_cum, busy_cost_usd_cum, usd_per_hour)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_GPU_ROLLUP = """
INSERT INTO gpu_rollup_1m (session_id, minute, gpu_id, t_last, tokens_in_cum, tokens_out_cum,
    energy_j_cum, cost_usd_cum, busy_s_cum, busy_cost_usd_cum, samples,
    power_w_sum, power_w_n, power_w_max, util_pct_sum, util_pct_n,
    tokens_in_delta, tokens_out_delta, energy_j_delta, cost_usd_delta, covered_s)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, minute, gpu_id) DO UPDATE SET
    t_last = excluded.t_last, tokens_in_cum = excluded.tokens_in_cum,
    tokens_out_cum = excluded.tokens_out_cum, energy_j_cum = excluded.energy_j_cum,
    cost_usd_cum = excluded.cost_usd_cum, busy_s_cum = excluded.busy_s_cum,
    busy_cost_usd_cum = excluded.busy_cost_usd_cum, samples = samples + 1,
    power_w_sum = power_w_sum + excluded.power_w_sum, power_w_n = power_w_n + excluded.power_w_n,
    power_w_max = max(coalesce(power_w_max, excluded.power_w_max),
                      coalesce(excluded.power_w_max, power_w_max)),
    util_pct_sum = util_pct_sum + excluded.util_pct_sum,
    util_pct_n = util_pct_n + excluded.util_pct_n,
    tokens_in_delta = tokens_in_delta + excluded.tokens_in_delta,
    tokens_out_delta = tokens_out_delta + excluded.tokens_out_delta,
    energy_j_delta = energy_j_delta + excluded.energy_j_delta,
    cost_usd_delta = cost_usd_delta + excluded.cost_usd_delta,
    covered_s = covered_s + excluded.covered_s
"""
_INSERT_ENDPOINT_TICK = (
    "INSERT OR IGNORE INTO endpoint_ticks (session_id, endpoint_id, t, state_id, prompt_tokens_raw,"
    " generation_tokens_raw, tokens_in_cum, tokens_out_cum, running, waiting, kv_cache_fraction,"
    " requests_finished_raw, ttft_p50_s, ttft_p95_s, itl_p50_s)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_ENDPOINT_ROLLUP = """
INSERT INTO endpoint_rollup_1m (session_id, minute, endpoint_id, t_last, tokens_in_cum,
    tokens_out_cum, samples, up_samples, running_sum, running_n, waiting_sum, waiting_n,
    kv_sum, kv_n, kv_max)
VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, minute, endpoint_id) DO UPDATE SET
    t_last = excluded.t_last, tokens_in_cum = excluded.tokens_in_cum,
    tokens_out_cum = excluded.tokens_out_cum, samples = samples + 1,
    up_samples = up_samples + excluded.up_samples,
    running_sum = running_sum + excluded.running_sum, running_n = running_n + excluded.running_n,
    waiting_sum = waiting_sum + excluded.waiting_sum, waiting_n = waiting_n + excluded.waiting_n,
    kv_sum = kv_sum + excluded.kv_sum, kv_n = kv_n + excluded.kv_n,
    kv_max = max(coalesce(kv_max, excluded.kv_max), coalesce(excluded.kv_max, kv_max))
"""


class _Intern(NamedTuple):
    """How a repeated string (or pair) becomes a row id of its own table."""

    insert: str
    select: str  # finds the row by the first ``select_arity`` of the inserted values
    select_arity: int


# A GPU is found by its uuid (its name is kept from the first sighting); an endpoint by both.
_GPU = _Intern("INSERT OR IGNORE INTO gpus (uuid, name) VALUES (?, ?)", "SELECT id FROM gpus WHERE uuid = ?", 1)
_ENDPOINT = _Intern(
    "INSERT OR IGNORE INTO endpoints (name, url) VALUES (?, ?)",
    "SELECT id FROM endpoints WHERE name = ? AND url = ?",
    2,
)
_LABEL = _Intern("INSERT OR IGNORE INTO labels (text) VALUES (?)", "SELECT id FROM labels WHERE text = ?", 1)


class TickRows:
    """Writes one session's tick rows; remembers the row ids of repeated strings and each GPU's
    latest cumulative figures (the rollups' differences start from them)."""

    def __init__(self, conn: sqlite3.Connection, session_id: int) -> None:
        self._conn = conn
        self.session_id = session_id
        # Row ids of repeated strings, by uuid, (name, url) and text.
        self._gpu_ids: dict[str, int] = {}
        self._endpoint_ids: dict[tuple[str, str], int] = {}
        self._label_ids: dict[str, int] = {}
        self._states = StateIds(conn)
        self.latest: dict[int, Point] = {}  # gpu_id -> its latest row's cumulative figures
        self._newest_t = -math.inf  # no row of the session is timed later (rolled back or not)

    def rolled_back(self, latest: dict[int, Point]) -> None:
        """Forget what a failed transaction did: the ids it handed out may not exist, and the
        latest rows are ``latest`` again."""
        for ids in (self._gpu_ids, self._endpoint_ids, self._label_ids):
            ids.clear()
        self._states.clear()
        self.latest = latest

    def write(self, tick: Tick) -> None:
        """One tick's rows and rollups, in the caller's transaction: the rows (a rollup counts
        only a row actually inserted), then the rollups of those in one call per table."""
        t = tick.t
        minute = minute_of(t)
        # No row of this session is timed ``t`` yet when ``t`` is past every time written: then
        # each GPU's (endpoint's) row is new unless the tick lists it twice, and the rows go in
        # one ``executemany``; else one by one, each insert telling whether its row is new.
        fresh = t > self._newest_t
        if fresh:
            self._newest_t = t
        gpu_rows = [self._gpu_row(t, gpu) for gpu in tick.gpus]
        gpus_inserted = self._insert(_INSERT_GPU_TICK, gpu_rows, fresh)
        gpu_rollups = [
            self._gpu_rollup(minute, gpu, row, inserted)
            for gpu, row, inserted in zip(tick.gpus, gpu_rows, gpus_inserted, strict=True)
        ]
        endpoint_rows = [self._endpoint_row(t, endpoint) for endpoint in tick.endpoints]
        endpoints_inserted = self._insert(_INSERT_ENDPOINT_TICK, endpoint_rows, fresh)
        endpoint_rollups = [
            _endpoint_rollup(minute, endpoint, row)
            for endpoint, row, inserted in zip(tick.endpoints, endpoint_rows, endpoints_inserted, strict=True)
            if inserted
        ]
        self._conn.executemany(_UPSERT_GPU_ROLLUP, [rollup for rollup in gpu_rollups if rollup is not None])
        self._conn.executemany(_UPSERT_ENDPOINT_ROLLUP, endpoint_rollups)

    def _insert(self, sql: str, rows: list[tuple], fresh: bool) -> Iterable[bool]:
        """Insert the rows (``(session, id, t, ...)``); whether each was new."""
        if fresh and len({row[1] for row in rows}) == len(rows):  # each id once: every row is new
            self._conn.executemany(sql, rows)
            return repeat(True, len(rows))
        return [self._conn.execute(sql, row).rowcount == 1 for row in rows]

    def _gpu_row(self, t: float, g: GpuRow) -> tuple:
        """The GPU's ``gpu_ticks`` row."""
        gpu_id = self._gpu_ids.get(g.uuid)
        if gpu_id is None:
            gpu_id = self._gpu_ids[g.uuid] = self._intern(_GPU, (g.uuid, g.name))
        state = (*g.state, self._label(g.engines), self._label(g.energy_method))
        state_id, usd_per_hour = self._states.gpu(state, g.usd_per_hour)
        return (self.session_id, gpu_id, t, state_id, *g.columns, usd_per_hour)

    def _gpu_rollup(self, minute: int, g: GpuRow, row: tuple, inserted: bool) -> tuple | None:
        """The GPU's row is its latest; its minute's rollup values when the row is new."""
        sid, gpu_id, t = row[0], row[1], row[2]
        totals = g.totals
        now = Point(t, totals)
        latest = self.latest
        previous = latest.get(gpu_id)
        latest[gpu_id] = now  # also after a replay: this row is the latest
        if not inserted:
            return None  # written before (a retry): counted once already
        if previous is None:  # the session's first row of this GPU: it adds nothing yet
            self._conn.execute(INSERT_SESSION_GPU, first_gpu_row(sid, gpu_id, g.state[0], now))
            previous = now
        before = previous.totals  # the differences as ``window_between`` takes them
        tokens_in, tokens_out, energy_j, cost = totals.tokens_in, totals.tokens_out, totals.energy_j, totals.cost_usd
        cost_before = before.cost_usd
        power, util = g.power_w, g.util_pct
        # fmt: off
        return (
            sid, minute, gpu_id, t, tokens_in, tokens_out, energy_j, cost, totals.busy_s, totals.busy_cost_usd,
            power or 0.0, int(power is not None), power, util or 0.0, int(util is not None),
            tokens_in - before.tokens_in, tokens_out - before.tokens_out, energy_j - before.energy_j,
            None if cost is None or cost_before is None else cost - cost_before,
            max(0.0, t - previous.t),
        )
        # fmt: on

    def _endpoint_row(self, t: float, e: EndpointRow) -> tuple:
        """The endpoint's ``endpoint_ticks`` row."""
        key = (e.name, e.url)
        endpoint_id = self._endpoint_ids.get(key)
        if endpoint_id is None:
            endpoint_id = self._endpoint_ids[key] = self._intern(_ENDPOINT, key)
        labels = (self._label(e.kind), self._label(e.model), self._label(e.gpus))
        return (self.session_id, endpoint_id, t, self._states.endpoint((e.status, e.error, *labels)), *e.values)

    def _label(self, text: str | None) -> int | None:
        if text is None:
            return None
        found = self._label_ids.get(text)  # the per-tick case: a dict lookup, no SQL
        if found is None:
            found = self._label_ids[text] = self._intern(_LABEL, (text,))
        return found

    def _intern(self, sql: _Intern, values: tuple[str, ...]) -> int:
        """The row id of a repeated string (or pair), inserted on first sight."""
        self._conn.execute(sql.insert, values)
        row_id: int = self._conn.execute(sql.select, values[: sql.select_arity]).fetchone()[0]
        return row_id


def _endpoint_rollup(minute: int, e: EndpointRow, row: tuple) -> tuple:
    """The rollup values of the endpoint's new row."""
    v = e.values
    return (
        *(row[0], minute, row[1], row[2], v.tokens_in_cum, v.tokens_out_cum, int(e.status == "up")),
        *(v.running or 0.0, int(v.running is not None)),
        *(v.waiting or 0.0, int(v.waiting is not None)),
        *(v.kv_cache_fraction or 0.0, int(v.kv_cache_fraction is not None), v.kv_cache_fraction),
    )
