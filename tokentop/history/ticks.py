"""One tick's rows and 1-minute rollups, written in the caller's transaction.

The per-tick path uses raw ``sqlite3``: a tick's GPU rows go in one ``executemany`` (a bind and
a step of a statement ``sqlite3`` keeps prepared, per row, without a Python call each), so do
its endpoint rows, then the rollups of the new rows in one ``executemany`` per table; going
through sqlite-utils would add its per-call Python work (dicts, quoting, transaction checks) to
each of them, every second, for nothing. Writing a tick twice changes nothing: raw rows are
keyed by time and a rollup only counts a row that was actually inserted (a tick that may hold
rows written before is inserted row by row, each insert telling whether its row is new).

Per row and tick the Python side is one dict lookup of the row's key (``rows``) for its ids,
and a tuple for its row and one for its rollup; a tick's statements go back to back through
cursors kept for them.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

from tokentop.derive import Point
from tokentop.history.rows import (
    ENDPOINT_KEY_STATUS,
    GPU_KEY_ENGINES,
    GPU_KEY_INDEX,
    GPU_KEY_METHOD,
    GPU_KEY_STATE,
    VALUE_KV,
    VALUE_RUNNING,
    VALUE_TOKENS_IN,
    VALUE_TOKENS_OUT,
    VALUE_WAITING,
    EndpointRow,
    GpuRow,
    Tick,
)
from tokentop.history.schema import minute_of
from tokentop.history.states import MAX_CACHED_STATES, StateIds
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


def _null(value: None) -> None:
    return value


# ``sqlite3`` binds a None parameter only after looking for an adapter for it, and finding none
# costs it an AttributeError raised, formatted and cleared: about a microsecond, some twenty
# times a tick (rates, latencies, gauges not read). One registered for None finds it at once and
# gives back None, bound as NULL as before; an int, float or str never looks for one. It is
# process-wide: every connection binds None this way, to the same NULL (and only tokentop.history
# uses SQLite).
sqlite3.register_adapter(type(None), _null)


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
    """Writes one session's tick rows; remembers the row ids of repeated strings, each row key's
    ids and each GPU's latest cumulative figures (the rollups' differences start from them)."""

    def __init__(self, conn: sqlite3.Connection, session_id: int) -> None:
        self._conn = conn
        self._cursor = conn.cursor()  # the per-tick inserts' own: none made per call
        self.session_id = session_id
        # Row ids of repeated strings, by uuid, (name, url) and text.
        self._gpu_ids: dict[str, int] = {}
        self._endpoint_ids: dict[tuple[str, str], int] = {}
        self._label_ids: dict[str, int] = {}
        self._states = StateIds(conn)
        # A row key's ids (``rows.GpuRow.key``: gpu_id, state_id and the state's rate;
        # ``rows.EndpointRow.key``: endpoint_id, state_id), at most ``MAX_CACHED_STATES`` each.
        self._gpu_keys: dict[tuple[Any, ...], tuple[int, int, float | None]] = {}
        self._endpoint_keys: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.latest: dict[int, Point] = {}  # gpu_id -> its latest row's cumulative figures
        self._newest_t = -math.inf  # no row of the session is timed later (rolled back or not)

    def close(self) -> None:
        """Release the cursor (and the statement it holds: the connection can then close)."""
        self._cursor.close()

    def rolled_back(self, latest: dict[int, Point]) -> None:
        """Forget what a failed transaction did: the ids it handed out may not exist, and the
        latest rows are ``latest`` again."""
        for ids in (self._gpu_ids, self._endpoint_ids, self._label_ids, self._gpu_keys, self._endpoint_keys):
            ids.clear()
        self._states.clear()
        self.latest = latest

    def write(self, tick: Tick) -> None:
        """One tick's rows and rollups, in the caller's transaction: its rows and their rollups
        are made, then written back to back (a rollup counts only a row actually inserted)."""
        t = tick.t
        # No row of this session is timed ``t`` yet when ``t`` is past every time written: then
        # each GPU's (endpoint's) row is new unless the tick lists it twice, and the rows go in
        # one ``executemany``; else one by one, each insert telling whether its row is new.
        fresh = t > self._newest_t
        if fresh:
            self._newest_t = t
        gpu_rows = self._gpu_rows(t, tick.gpus)
        endpoint_rows = self._endpoint_rows(t, tick.endpoints)
        gpus_batched, endpoints_batched = _batched(gpu_rows, fresh), _batched(endpoint_rows, fresh)
        gpus_new = repeat(True, len(gpu_rows)) if gpus_batched else self._insert_each(_INSERT_GPU_TICK, gpu_rows)
        endpoints_new = (
            repeat(True, len(endpoint_rows))
            if endpoints_batched
            else self._insert_each(_INSERT_ENDPOINT_TICK, endpoint_rows)
        )
        minute = minute_of(t)
        gpu_rollups = self._gpu_rollups(t, minute, tick.gpus, gpu_rows, gpus_new)
        endpoint_rollups = _endpoint_rollups(minute, tick.endpoints, endpoint_rows, endpoints_new)
        cursor = self._cursor
        if gpus_batched and gpu_rows:
            cursor.executemany(_INSERT_GPU_TICK, gpu_rows)
        if endpoints_batched and endpoint_rows:
            cursor.executemany(_INSERT_ENDPOINT_TICK, endpoint_rows)
        if gpu_rollups:
            cursor.executemany(_UPSERT_GPU_ROLLUP, gpu_rollups)
        if endpoint_rollups:
            cursor.executemany(_UPSERT_ENDPOINT_ROLLUP, endpoint_rollups)

    def _insert_each(self, sql: str, rows: list[tuple]) -> list[bool]:
        """Insert the rows one by one; whether each was new."""
        return [self._cursor.execute(sql, row).rowcount == 1 for row in rows]

    def _gpu_rows(self, t: float, gpus: tuple[GpuRow, ...]) -> list[tuple]:
        """The GPUs' ``gpu_ticks`` rows."""
        session_id, known = self.session_id, self._gpu_keys
        rows = []
        for key, columns, usd_per_hour, _, _ in gpus:
            gpu_id, state_id, state_rate = known.get(key) or self._gpu_key_ids(key, usd_per_hour)
            rate = None if usd_per_hour == state_rate else usd_per_hour  # NULL: the state's rate
            rows.append((session_id, gpu_id, t, state_id, *columns, rate))
        return rows

    def _gpu_rollups(
        self, t: float, minute: int, gpus: tuple[GpuRow, ...], rows: list[tuple], inserted: Iterable[bool]
    ) -> list[tuple]:
        """Each GPU's row is its latest; its minute's rollup values when the row is new."""
        session_id, latest = self.session_id, self.latest
        rollups = []
        for (key, columns, _, totals, power), row, new in zip(gpus, rows, inserted, strict=True):
            gpu_id = row[1]
            previous = latest.get(gpu_id)
            now = latest[gpu_id] = Point(t, totals)  # also after a replay: this row is the latest
            if not new:
                continue  # written before (a retry): counted once already
            if previous is None:  # the session's first row of this GPU: it adds nothing yet
                first = first_gpu_row(session_id, gpu_id, key[GPU_KEY_INDEX], now)
                self._cursor.execute(INSERT_SESSION_GPU, first)
                previous = now
            t_before, before = previous.t, previous.totals  # the differences as ``window_between`` takes them
            tokens_in, tokens_out, energy_j = totals.tokens_in, totals.tokens_out, totals.energy_j
            cost = totals.cost_usd
            cost_before = before.cost_usd
            util = columns[0]
            # fmt: off
            rollups.append((
                session_id, minute, gpu_id, t, tokens_in, tokens_out, energy_j, cost, totals.busy_s,
                totals.busy_cost_usd, power or 0.0, 0 if power is None else 1, power,
                util or 0.0, 0 if util is None else 1,
                tokens_in - before.tokens_in, tokens_out - before.tokens_out, energy_j - before.energy_j,
                None if cost is None or cost_before is None else cost - cost_before,
                max(0.0, t - t_before),
            ))
            # fmt: on
        return rollups

    def _endpoint_rows(self, t: float, endpoints: tuple[EndpointRow, ...]) -> list[tuple]:
        """The endpoints' ``endpoint_ticks`` rows."""
        session_id, known = self.session_id, self._endpoint_keys
        rows = []
        for key, values in endpoints:
            endpoint_id, state_id = known.get(key) or self._endpoint_key_ids(key)
            rows.append((session_id, endpoint_id, t, state_id, *values))
        return rows

    def _gpu_key_ids(self, key: tuple[Any, ...], usd_per_hour: float | None) -> tuple[int, int, float | None]:
        """A GPU row key's ids, found (or inserted) in the tables: gpu_id, state_id, the state's
        rate (``usd_per_hour``: the row's, the rate of a state it makes)."""
        uuid = key[0]
        gpu_id = self._gpu_ids.get(uuid)
        if gpu_id is None:
            gpu_id = self._gpu_ids[uuid] = self._intern(_GPU, (uuid, key[1]))
        engines = self._label(",".join(key[GPU_KEY_ENGINES]))
        state = (*key[GPU_KEY_STATE], engines, self._label(key[GPU_KEY_METHOD]))
        ids = (gpu_id, *self._states.gpu(state, usd_per_hour))
        _remember(self._gpu_keys, key, ids)
        return ids

    def _endpoint_key_ids(self, key: tuple[Any, ...]) -> tuple[int, int]:
        """An endpoint row key's ids, found (or inserted) in the tables: endpoint_id, state_id."""
        name_url = key[:2]
        endpoint_id = self._endpoint_ids.get(name_url)
        if endpoint_id is None:
            endpoint_id = self._endpoint_ids[name_url] = self._intern(_ENDPOINT, name_url)
        status, error, kind, model, gpus = key[ENDPOINT_KEY_STATUS:]
        labels = (self._label(kind), self._label(model), self._label(",".join(gpus)))
        ids = (endpoint_id, self._states.endpoint((status, error, *labels)))
        _remember(self._endpoint_keys, key, ids)
        return ids

    def _label(self, text: str | None) -> int | None:
        if text is None:
            return None
        found = self._label_ids.get(text)
        if found is None:
            found = self._label_ids[text] = self._intern(_LABEL, (text,))
        return found

    def _intern(self, sql: _Intern, values: tuple[str, ...]) -> int:
        """The row id of a repeated string (or pair), inserted on first sight."""
        self._conn.execute(sql.insert, values)
        row_id: int = self._conn.execute(sql.select, values[: sql.select_arity]).fetchone()[0]
        return row_id


_ROW_ID = itemgetter(1)  # a tick row's gpu_id or endpoint_id


def _batched(rows: list[tuple], fresh: bool) -> bool:
    """Whether a tick's rows (of one table) go in one ``executemany``: none of them can have
    been written before (``fresh``) and none is there twice, so that every one is new."""
    return fresh and len(set(map(_ROW_ID, rows))) == len(rows)


_V = TypeVar("_V")


def _remember(ids: dict[tuple[Any, ...], _V], key: tuple[Any, ...], value: _V) -> None:
    """Keep a key's ids; all forgotten past ``MAX_CACHED_STATES`` (a key per tick, an error quoting
    a changing value, must not pile up)."""
    if len(ids) >= MAX_CACHED_STATES:
        ids.clear()
    ids[key] = value


def _endpoint_rollups(
    minute: int, endpoints: tuple[EndpointRow, ...], rows: list[tuple], inserted: Iterable[bool]
) -> list[tuple]:
    """The rollup values of the endpoints' new rows."""
    rollups = []
    for (key, v), row, new in zip(endpoints, rows, inserted, strict=True):
        if not new:
            continue
        running, waiting, kv = v[VALUE_RUNNING], v[VALUE_WAITING], v[VALUE_KV]
        # fmt: off
        rollups.append((
            row[0], minute, row[1], row[2], v[VALUE_TOKENS_IN], v[VALUE_TOKENS_OUT],
            1 if key[ENDPOINT_KEY_STATUS] == "up" else 0, running or 0.0, 0 if running is None else 1,
            waiting or 0.0, 0 if waiting is None else 1, kv or 0.0, 0 if kv is None else 1, kv,
        ))
        # fmt: on
    return rollups
