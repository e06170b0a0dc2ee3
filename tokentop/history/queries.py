"""The read API: sessions, GPUs, chart series, window totals, tracks for the summary.

``Reader`` runs the queries over a connection and raises ``sqlite3.Error`` as it comes;
``Store`` holds the lock and turns those errors into ``StoreError``. It reads a file of any
schema version it knows, through that version's ``TableNames``.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from tokentop.derive import Point, sum_windows, window_between
from tokentop.history import kept as kept_totals
from tokentop.history import series
from tokentop.history.records import (
    EndpointSessionTotals,
    EndpointTrack,
    GpuInfo,
    GpuMinutes,
    GpuSessionTotals,
    GpuTrack,
    SeriesPoint,
    SessionInfo,
)
from tokentop.history.schema import TableNames, config_says_demo, database, minute_of
from tokentop.history.series import RAW_LOOKBACK_S
from tokentop.model import Totals, Window

_SPANS_PER_QUERY = 400  # 800 bound parameters: within every SQLite's limit (999 before 3.32)
_CUM_SELECT = "tokens_in_cum, tokens_out_cum, energy_j_cum, cost_usd_cum, busy_s_cum, busy_cost_usd_cum"

# Tracks: for each boundary ``since + k * step`` (the last one clamped to ``until``), the rows of
# the last tick in ``(boundary - step, boundary]``: one seek per boundary, then the tick's rows by
# primary key (CROSS JOIN keeps the boundaries the outer loop), instead of a pass over every
# row. Ticks write all their rows at one ``t``.
_TRACK_SQL = """
WITH RECURSIVE k(b) AS (SELECT 0 UNION ALL SELECT b + 1 FROM k WHERE b < :n),
at(t) AS (
    SELECT DISTINCT (SELECT t FROM {table} WHERE session_id = :session
                     AND t <= min(:since + b * :step, :until)
                     AND t > min(:since + b * :step, :until) - :step
                     ORDER BY t DESC LIMIT 1) FROM k
)
SELECT {columns} FROM at CROSS JOIN {table} r ON r.session_id = :session AND r.t = at.t{states}
ORDER BY r.{key}, r.t
"""
# Schema 5 keeps an endpoint's status, kind, model and GPUs in its row's state, and a GPU's
# energy method.
_ENDPOINT_STATE_FIELDS = frozenset(("status", "kind_id", "model_id", "gpus_id"))
_ENDPOINT_STATES_JOIN = " JOIN endpoint_states s ON s.id = r.state_id"
# energy method: read as the row's ``state_id`` and looked up in Python (``_state_methods``),
# cheaper than a join over every row of a track.


class _GpuTrackColumns(NamedTuple):
    """A GPU track's rows, transposed: one tuple per selected column."""

    gpu_id: tuple[int, ...]
    t: tuple[float, ...]
    tokens_in_cum: tuple[float, ...]
    tokens_out_cum: tuple[float, ...]
    energy_j_cum: tuple[float, ...]
    energy_counter_mj: tuple[int | None, ...]
    energy_method_id: tuple[int | None, ...]  # the label id; the state id in schema 5 (``_method_of``)


class _EndpointTrackColumns(NamedTuple):
    """An endpoint track's rows, transposed: one tuple per selected column."""

    endpoint_id: tuple[int, ...]
    t: tuple[float, ...]
    status: tuple[str, ...]
    tokens_in_cum: tuple[float, ...]
    tokens_out_cum: tuple[float, ...]
    prompt_tokens_raw: tuple[float | None, ...]
    generation_tokens_raw: tuple[float | None, ...]
    requests_finished_raw: tuple[float | None, ...]
    ttft_p50_s: tuple[float | None, ...]
    ttft_p95_s: tuple[float | None, ...]
    itl_p50_s: tuple[float | None, ...]
    kind_id: tuple[int | None, ...]
    model_id: tuple[int | None, ...]
    gpus_id: tuple[int | None, ...]


def _select(fields: tuple[str, ...], key: str, key_column: str, in_state: frozenset[str] = frozenset()) -> str:
    """``r.<field>, ...``, with ``key`` read from the column ``key_column`` (the file's name)
    and the fields ``in_state`` from the row's state (``s.<field>``)."""
    return ", ".join(f"s.{name}" if name in in_state else f"r.{key_column if name == key else name}" for name in fields)


class Reader:
    """The queries, over one connection; documented on ``Store``, which calls them."""

    def __init__(self, conn: sqlite3.Connection, names: TableNames) -> None:
        self._conn = conn
        self._db = database(conn)  # sqlite-utils where it reads well; the rest is plain SQL
        self._names = names
        ticks, key = names.endpoint_ticks, names.endpoint_id
        in_state, join = (_ENDPOINT_STATE_FIELDS, _ENDPOINT_STATES_JOIN) if names.states else (frozenset(), "")
        endpoint_columns = _select(_EndpointTrackColumns._fields, "endpoint_id", key, in_state)
        gpu_columns = _select(_GpuTrackColumns._fields, "gpu_id", "gpu_id")
        method = "state_id" if names.states else "energy_method_id"  # read in Python: _state_methods
        gpu_columns = gpu_columns.replace("r.energy_method_id", f"r.{method}")
        self._gpu_track_sql = _TRACK_SQL.format(table="gpu_ticks", columns=gpu_columns, key="gpu_id", states="")
        self._gpu_row_sql = f"SELECT {gpu_columns} FROM gpu_ticks r WHERE r.session_id = ? AND r.gpu_id = ?"
        self._energy_methods_sql = (
            "WITH spans(after, until) AS (VALUES {spans})"
            f" SELECT r.{method}, count(*) FROM spans CROSS JOIN gpu_ticks r WHERE r.session_id = ?"
            f" AND r.t > spans.after AND r.t <= spans.until AND r.gpu_id = ? GROUP BY r.{method}"
        )
        self._gpu_id_of: dict[str, int] = {}  # uuid -> id: ids never change
        self._methods: dict[int | None, str | None] = {}  # see _method_of
        self._endpoint_track_sql = _TRACK_SQL.format(table=ticks, columns=endpoint_columns, key=key, states=join)
        self._endpoint_rows_sql = (
            f"SELECT {endpoint_columns} FROM {ticks} r JOIN {names.endpoints} p ON p.id = r.{key}{join}"
            " WHERE r.session_id = :session AND r.t > :after AND r.t <= :until"
            " AND p.name = :name AND p.url = :url ORDER BY r.t"
        )

    # --- sessions and GPUs ----------------------------------------------------------------------

    def sessions(self) -> list[SessionInfo]:
        return [
            SessionInfo(
                row["id"],
                row["started_at"],
                row["ended_at"],
                row["host"],
                row["tokentop_version"],
                json.loads(row["config_json"]),
                # Files before schema 4 say neither: the origin is not known, the settings say demo.
                origin=row.get("origin"),
                simulated=bool(row["simulated"]) if "simulated" in row else config_says_demo(row["config_json"]),
            )
            for row in self._db.query("SELECT * FROM sessions ORDER BY id")
        ]

    def latest_session_id(self) -> int | None:
        found: int | None = self._conn.execute("SELECT max(id) FROM sessions").fetchone()[0]
        return found

    def gpus(self, session_id: int) -> list[GpuInfo]:
        return [
            GpuInfo(*row)
            for row in self._conn.execute(
                "SELECT g.uuid, g.name, s.gpu_index FROM session_gpus s JOIN gpus g ON g.id = s.gpu_id"
                " WHERE s.session_id = ? ORDER BY s.gpu_index IS NULL, s.gpu_index, g.uuid",
                (session_id,),
            )
        ]

    def _gpu_ids(self, session_id: int) -> list[int]:
        return [
            gpu_id
            for (gpu_id,) in self._conn.execute(
                "SELECT gpu_id FROM session_gpus WHERE session_id = ? ORDER BY gpu_id", (session_id,)
            )
        ]

    def _gpu_id(self, uuid: str) -> int | None:
        found = self._gpu_id_of.get(uuid)
        if found is None:
            row = self._conn.execute("SELECT id FROM gpus WHERE uuid = ?", (uuid,)).fetchone()
            if row is None:
                return None
            found = self._gpu_id_of[uuid] = int(row[0])
        return found

    def _method_of(self, keys: Iterable[int | None]) -> dict[int | None, str | None]:
        """What a row's ``energy_method_id`` column holds (the label id before schema 5, the
        state id in 5) -> the method's name; read again only when a key is new."""
        if any(key not in self._methods for key in keys):
            labels = self._labels()
            pairs = self._conn.execute("SELECT id, energy_method_id FROM gpu_states") if self._names.states else None
            ids = dict(pairs) if pairs is not None else {label: label for label in labels}
            self._methods = {key: labels.get(method) if method is not None else None for key, method in ids.items()}
            self._methods[None] = None
        return self._methods

    # --- chart series ----------------------------------------------------------------------------

    def gpu_series(
        self, session_id: int | None, uuid: str | None, since: float, until: float, step_s: float
    ) -> list[SeriesPoint]:
        gpu_id = None if uuid is None else self._gpu_id(uuid)
        if uuid is not None and gpu_id is None:
            return series.empty(since, until, step_s)
        return series.gpu_series(self._conn, gpu_id, session_id, since, until, step_s)

    # --- window totals --------------------------------------------------------------------------

    def window_totals(self, session_id: int, uuid: str | None, since: float, until: float) -> Window | None:
        if uuid is None:
            gpu_ids = self._gpu_ids(session_id)
        else:
            found = self._gpu_id(uuid)
            gpu_ids = [found] if found is not None else []
        if not gpu_ids:
            return None
        one = gpu_ids[0] if uuid is not None else None
        kept_points = kept_totals.gpu_points(self._conn, session_id, one) if self._names.session_totals else {}
        per_gpu = []
        for gpu_id in gpu_ids:
            kept = kept_points.get(gpu_id, ())
            start = self._cum_before(session_id, gpu_id, since, since - RAW_LOOKBACK_S, kept) or self._cum_after(
                session_id, gpu_id, since, until, kept
            )
            end = self._cum_before(session_id, gpu_id, until, since, kept)
            if start is not None and end is not None and end.t > start.t:
                per_gpu.append(window_between(start, end))
        return sum_windows(per_gpu) if per_gpu else None

    def _cum_before(
        self, session_id: int, gpu_id: int, at: float, not_before: float, kept: tuple[Point, ...]
    ) -> Point | None:
        """The GPU's last cumulative figures at or before ``at``, not older than ``not_before``.

        Raw rows first, searched back at most ``RAW_LOOKBACK_S``; then the rollups, whose last
        values are those of a raw row: exact whenever that row is over a minute old. The
        session's kept first and latest rows (``kept``) count too: a session's start and end
        stay exact once retention has deleted its raw rows."""
        row = self._conn.execute(
            f"SELECT t, {_CUM_SELECT} FROM gpu_ticks WHERE session_id = ? AND t <= ? AND t >= ?"
            " AND gpu_id = ? ORDER BY t DESC LIMIT 1",
            (session_id, at, max(not_before, at - RAW_LOOKBACK_S), gpu_id),
        ).fetchone()
        if row is None:
            row = self._conn.execute(
                f"SELECT t_last, {_CUM_SELECT} FROM gpu_rollup_1m WHERE session_id = ?"
                " AND minute <= ? AND minute >= ? AND gpu_id = ? AND t_last <= ? AND t_last >= ?"
                " ORDER BY minute DESC LIMIT 1",
                (session_id, at, minute_of(not_before), gpu_id, at, not_before),
            ).fetchone()
        found = [p for p in (_point(row), *kept) if p is not None and not_before <= p.t <= at]
        return max(found, key=lambda point: point.t) if found else None

    def _cum_after(
        self, session_id: int, gpu_id: int, at: float, not_after: float, kept: tuple[Point, ...]
    ) -> Point | None:
        """The GPU's first cumulative figures in ``[at, not_after]``: the first raw row, or the
        first minute's last values when raw rows of that time are gone, or a kept row."""
        raw = self._conn.execute(
            f"SELECT t, {_CUM_SELECT} FROM gpu_ticks WHERE session_id = ? AND t >= ?"
            " AND t <= ? AND gpu_id = ? ORDER BY t LIMIT 1",
            (session_id, at, not_after, gpu_id),
        ).fetchone()
        rollup = self._conn.execute(
            f"SELECT t_last, {_CUM_SELECT} FROM gpu_rollup_1m WHERE session_id = ?"
            " AND minute >= ? AND minute <= ? AND gpu_id = ? AND t_last >= ?"
            " AND t_last <= ? ORDER BY minute LIMIT 1",
            (session_id, minute_of(at), not_after, gpu_id, at, not_after),
        ).fetchone()
        found = [p for p in (_point(raw), _point(rollup), *kept) if p is not None and at <= p.t <= not_after]
        return min(found, key=lambda point: point.t) if found else None

    # --- a session's extent ---------------------------------------------------------------------

    def session_bounds(self, session_id: int) -> tuple[float, float] | None:
        firsts: list[float] = []
        lasts: list[float] = []
        for raw, rollup in (("gpu_ticks", "gpu_rollup_1m"), (self._names.endpoint_ticks, self._names.endpoint_rollup)):
            first, last = self._table_bounds(session_id, raw, rollup)
            if first is not None:
                firsts.append(first)
            if last is not None:
                lasts.append(last)
        if self._names.session_totals:
            kept_first, kept_last = kept_totals.bounds(self._conn, session_id)
            if kept_first is not None and kept_last is not None:  # the exact first reading
                return kept_first, max([kept_last, *lasts])
        return (min(firsts), max(lasts)) if firsts else None

    def _table_bounds(self, session_id: int, raw: str, rollup: str) -> tuple[float | None, float | None]:
        """A session's first and last times in one raw table and its rollups."""
        conn = self._conn
        raw_first, raw_last = (
            conn.execute(
                f"SELECT t FROM {raw} WHERE session_id = ? ORDER BY t{order} LIMIT 1", (session_id,)
            ).fetchone()
            for order in ("", " DESC")
        )
        first_minute, last_minute = (
            conn.execute(
                f"SELECT minute FROM {rollup} WHERE session_id = ? ORDER BY minute{order} LIMIT 1", (session_id,)
            ).fetchone()
            for order in ("", " DESC")
        )
        minute = first_minute[0] if first_minute is not None else None
        t_last = None
        if last_minute is not None:
            t_last = conn.execute(
                f"SELECT max(t_last) FROM {rollup} WHERE session_id = ? AND minute = ?", (session_id, last_minute[0])
            ).fetchone()[0]
        first = None
        if raw_first is not None and (minute is None or raw_first[0] < minute + 60):
            first = raw_first[0]  # raw rows reach back to the first minute
        elif minute is not None:
            first = float(minute)
        lasts = [t for t in (raw_last and raw_last[0], t_last) if t is not None]
        return first, (max(lasts) if lasts else None)

    def gpu_session_totals(self, session_id: int) -> list[GpuSessionTotals]:
        return kept_totals.gpus(self._conn, session_id) if self._names.session_totals else []

    def endpoint_session_totals(self, session_id: int) -> list[EndpointSessionTotals]:
        return kept_totals.endpoints(self._conn, session_id) if self._names.session_totals else []

    def raw_rows_cover(self, session_id: int, since: float) -> bool:
        first_raw = self._conn.execute(
            "SELECT t FROM gpu_ticks WHERE session_id = ? AND t >= ? ORDER BY t LIMIT 1",
            (session_id, minute_of(since)),
        ).fetchone()
        if first_raw is None:
            return False
        first_minute = self._conn.execute(
            "SELECT minute FROM gpu_rollup_1m WHERE session_id = ? AND minute >= ? ORDER BY minute LIMIT 1",
            (session_id, minute_of(since)),
        ).fetchone()
        return first_minute is None or bool(first_raw[0] < first_minute[0] + 60)

    # --- tracks -----------------------------------------------------------------------------------

    def gpu_tracks(self, session_id: int, since: float, until: float, step_s: float) -> list[GpuTrack]:
        uuids = dict(self._conn.execute("SELECT id, uuid FROM gpus"))
        rows = self._conn.execute(self._gpu_track_sql, _track_params(session_id, since, until, step_s)).fetchall()
        groups = [list(group) for _, group in itertools.groupby(rows, key=itemgetter(0))]
        # Each group is in time order: the track's first and last ticks are among their ends.
        first, last = (min(g[0][1] for g in groups), max(g[-1][1] for g in groups)) if groups else (since, until)
        columns = [
            _GpuTrackColumns(*zip(*self._own_ends(session_id, group, (first, last), (since, until))))
            for group in groups
        ]
        method_of = self._method_of({key for c in columns for key in c.energy_method_id})
        tracks = []
        for c in columns:
            methods = tuple(map(method_of.__getitem__, c.energy_method_id))
            uuid = uuids[c.gpu_id[0]]
            tracks.append(
                GpuTrack(uuid, c.t, c.tokens_in_cum, c.tokens_out_cum, c.energy_j_cum, c.energy_counter_mj, methods)
            )
        return tracks

    def _own_ends(
        self, session_id: int, rows: list[tuple[Any, ...]], bounds: tuple[float, float], span: tuple[float, float]
    ) -> list[tuple[Any, ...]]:
        """A GPU's track rows, from its own first row in the range to its own last: a GPU seen
        after the track's first tick (or no longer after its last one) has no row at those
        boundaries, and its first (last) rows would be in no window, though in its totals."""
        gpu_id, head, tail = rows[0][0], [], []
        if rows[0][1] > bounds[0]:
            head = self._conn.execute(
                f"{self._gpu_row_sql} AND r.t >= ? AND r.t < ? ORDER BY r.t LIMIT 1",
                (session_id, gpu_id, span[0], rows[0][1]),
            ).fetchall()
        if rows[-1][1] < bounds[1]:
            tail = self._conn.execute(
                f"{self._gpu_row_sql} AND r.t > ? AND r.t <= ? ORDER BY r.t DESC LIMIT 1",
                (session_id, gpu_id, rows[-1][1], span[1]),
            ).fetchall()
        return head + rows + tail

    def gpu_minutes(self, session_id: int, since: float, until: float) -> list[GpuMinutes]:
        uuids = dict(self._conn.execute("SELECT id, uuid FROM gpus"))
        rows = self._conn.execute(
            "SELECT gpu_id, minute, covered_s, tokens_in_delta, tokens_out_delta, energy_j_delta"
            " FROM gpu_rollup_1m WHERE session_id = ? AND minute >= ? AND minute < ?"
            " ORDER BY gpu_id, minute",
            (session_id, minute_of(since), until),
        ).fetchall()
        minutes = []
        for gpu_id, group in itertools.groupby(rows, key=itemgetter(0)):
            _, minute, covered_s, tokens_in, tokens_out, energy_j = zip(*group)
            minutes.append(GpuMinutes(uuids[gpu_id], minute, covered_s, tokens_in, tokens_out, energy_j))
        return minutes

    def gpu_energy_methods(
        self, session_id: int, uuid: str, spans: Sequence[tuple[float, float]]
    ) -> dict[str | None, int]:
        gpu_id = self._gpu_id(uuid)
        if gpu_id is None:
            return {}
        counts: list[tuple[int | None, int]] = []
        for first in range(0, len(spans), _SPANS_PER_QUERY):
            chunk = spans[first : first + _SPANS_PER_QUERY]
            sql = self._energy_methods_sql.format(spans=", ".join(["(?, ?)"] * len(chunk)))
            counts += self._conn.execute(sql, (*itertools.chain.from_iterable(chunk), session_id, gpu_id))
        method_of = self._method_of(key for key, _ in counts)
        found: dict[str | None, int] = {}
        for key, n in counts:
            method = method_of[key]
            found[method] = found.get(method, 0) + n
        return found

    def endpoint_tracks(self, session_id: int, since: float, until: float, step_s: float) -> list[EndpointTrack]:
        return self._endpoint_tracks(self._endpoint_track_sql, _track_params(session_id, since, until, step_s))

    def endpoint_rows(self, session_id: int, name: str, url: str, after: float, until: float) -> EndpointTrack | None:
        params = {"session": session_id, "after": after, "until": until, "name": name, "url": url}
        found = self._endpoint_tracks(self._endpoint_rows_sql, params)
        return found[0] if found else None

    def _endpoint_tracks(self, sql: str, params: dict[str, Any]) -> list[EndpointTrack]:
        names = self._conn.execute(f"SELECT id, name, url FROM {self._names.endpoints}")
        endpoints = {endpoint_id: (name, url) for endpoint_id, name, url in names}
        labels = self._labels()
        tracks = []
        for _, group in itertools.groupby(self._conn.execute(sql, params).fetchall(), key=itemgetter(0)):
            c = _EndpointTrackColumns(*zip(*group))
            kind, model, gpus = (
                next((labels[v] for v in reversed(column) if v is not None), None)
                for column in (c.kind_id, c.model_id, c.gpus_id)
            )
            name, url = endpoints[c.endpoint_id[0]]
            tracks.append(
                EndpointTrack(
                    name=name,
                    url=url,
                    kind=kind,
                    model=model,
                    gpus=tuple(gpus.split(",")) if gpus else (),
                    t=c.t,
                    status=c.status,
                    tokens_in_cum=c.tokens_in_cum,
                    tokens_out_cum=c.tokens_out_cum,
                    prompt_tokens_raw=c.prompt_tokens_raw,
                    generation_tokens_raw=c.generation_tokens_raw,
                    requests_finished_raw=c.requests_finished_raw,
                    ttft_p50_s=c.ttft_p50_s,
                    ttft_p95_s=c.ttft_p95_s,
                    itl_p50_s=c.itl_p50_s,
                )
            )
        return tracks

    def _labels(self) -> dict[int, str]:
        return dict(self._conn.execute("SELECT id, text FROM labels"))


def _point(row: tuple[Any, ...] | None) -> Point | None:
    """A row of ``(t, *cumulative columns)`` as a Point."""
    return None if row is None else Point(row[0], Totals(*row[1:]))


def _track_params(session_id: int, since: float, until: float, step_s: float) -> dict[str, Any]:
    return {
        "session": session_id,
        "since": since,
        "until": until,
        "step": step_s,
        "n": max(0, math.ceil((until - since) / step_s)),
    }
