"""Session summary from the history: per GPU, for the host and per engine; Markdown, JSON, CSV.

Totals over any range are differences of the store's cumulative columns (a few index seeks per
GPU), so they equal what the live view and the exporter counted. Peaks and percentiles of tok/s
and W are taken over fixed windows (10 s from the per-tick rows; whole minutes from the 1-minute
rollups where retention has deleted the per-tick rows), read at the window boundaries only: a
day of 8 GPUs at 1 Hz is summarised in well under a second (``benchmarks/bench_summary.py``).

Host figures are sums over the GPUs: cost over tokens, never an average of per-GPU ratios.
$/Mtok counts output tokens. The JSON layout is versioned (``SCHEMA_VERSION``, README).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokentop import __version__
from tokentop.config import ApiPrice, CostConfig
from tokentop.cost import J_PER_KWH, api_equivalent_usd, energy_is_charged, price_for
from tokentop.derive import sum_windows
from tokentop.history import EndpointTrack, GpuTrack, SessionInfo, Store
from tokentop.model import Window

SCHEMA_VERSION = 1
RATE_WINDOW_S = 10.0
ROLLUP_WINDOW_S = 60.0
ENGINE_STEP_S = 60.0  # engine rows are read a minute apart (10 s apart under an hour)
SHORT_RANGE_S = 3600.0
MIN_WINDOW_SHARE = 0.5  # a window covering less than this share of its length is left out
FORMATS = ("md", "json", "csv")


class SummaryError(Exception):
    """No summary can be made; the message is one line that says why."""


# --- what a summary holds -------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One GPU's figures, or the host's (sums over its GPUs), over the summarised range."""

    duration_s: float
    tokens_in: float
    tokens_out: float
    tok_s_in_mean: float | None
    tok_s_in_p50: float | None
    tok_s_in_p95: float | None
    tok_s_in_peak: float | None
    tok_s_out_mean: float | None
    tok_s_out_p50: float | None
    tok_s_out_p95: float | None
    tok_s_out_peak: float | None
    energy_kwh: float
    power_w_mean: float | None
    power_w_peak: float | None
    tok_per_j: float | None
    j_per_tok_out: float | None
    cost_usd: float | None
    usd_per_hour_mean: float | None
    usd_per_mtok: float | None
    busy_usd_per_mtok: float | None
    busy_s: float
    utilization_pct: float | None
    idle_usd: float | None


@dataclass(frozen=True)
class GpuSummary:
    index: int | None
    uuid: str
    name: str
    engines: tuple[str, ...]
    energy_method: str | None  # "counter" | "power_integral" | "mixed" | None (no power)
    energy_integrated_ticks: int  # ticks whose energy came from power readings
    energy_unmeasured_ticks: int  # ticks with neither counter nor power (counted as 0 J)
    price_usd_per_gpu_hour: float | None
    price_source: str | None
    figures: Figures


@dataclass(frozen=True)
class EngineSummary:
    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: tuple[str, ...]  # UUIDs
    gpu_indices: tuple[int | None, ...]
    duration_s: float
    tokens_in: float
    tokens_out: float
    tok_s_in_mean: float | None
    tok_s_out_mean: float | None
    requests_completed: float | None
    ttft_p50_s_mean: float | None
    ttft_p95_s_mean: float | None
    itl_p50_s_mean: float | None


@dataclass(frozen=True)
class ApiComparison:
    name: str
    date: str
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    api_cost_usd: float
    measured_cost_usd: float | None
    saved_usd: float | None  # API cost minus measured cost; negative: the API was cheaper


@dataclass(frozen=True)
class PriceInUse:
    usd_per_gpu_hour: float
    source: str
    gpu_indices: tuple[int | None, ...]


@dataclass(frozen=True)
class CostInputs:
    recorded: bool  # False: the session's stored settings hold no usable cost section
    mode: str | None
    electricity_usd_per_kwh: float | None
    pue: float | None
    node_overhead: float | None
    energy_in_rate: bool | None
    energy_charged: bool | None
    prices: tuple[PriceInUse, ...]
    api_prices: tuple[ApiPrice, ...]


@dataclass(frozen=True)
class SessionSummary:
    db_path: str
    session: SessionInfo
    since: float
    until: float
    whole_session: bool
    windows_length_s: float
    windows_source: str  # "raw" (per-tick rows) | "rollup_1m"
    engine_step_s: float  # engines' rows read this far apart (their latencies are averaged)
    cost_inputs: CostInputs
    host: Figures | None  # None: no GPU has data in the range
    unpriced_gpus: tuple[str, ...]
    gpus: tuple[GpuSummary, ...]
    engines: tuple[EngineSummary, ...]
    api: tuple[ApiComparison, ...]
    notes: tuple[str, ...]


# --- arithmetic ------------------------------------------------------------------------------


# What one GPU (or the host) delivered over one window: (span_s, tokens_in, tokens_out, energy_j).
# Plain tuples: a day holds tens of thousands of them.
_Span = tuple[float, float, float, float]


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (NumPy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def _figures(window: Window, spans: list[_Span], *, gpu_seconds: float) -> Figures:
    """``gpu_seconds``: the time the window's GPUs were watched, summed (the utilisation
    denominator: the host's busy seconds are GPU-seconds too)."""
    tok_s_in = [tin / span for span, tin, _, _ in spans]
    tok_s_out = [tout / span for span, _, tout, _ in spans]
    watts = [energy / span for span, _, _, energy in spans]
    busy_share = _ratio(window.busy_s, gpu_seconds)
    return Figures(
        duration_s=window.span_s,
        tokens_in=window.tokens_in,
        tokens_out=window.tokens_out,
        tok_s_in_mean=window.tok_s_in,
        tok_s_in_p50=percentile(tok_s_in, 0.5),
        tok_s_in_p95=percentile(tok_s_in, 0.95),
        tok_s_in_peak=max(tok_s_in, default=None),
        tok_s_out_mean=window.tok_s_out,
        tok_s_out_p50=percentile(tok_s_out, 0.5),
        tok_s_out_p95=percentile(tok_s_out, 0.95),
        tok_s_out_peak=max(tok_s_out, default=None),
        energy_kwh=window.energy_j / J_PER_KWH,
        power_w_mean=window.watts,
        power_w_peak=max(watts, default=None),
        tok_per_j=window.tok_per_j,
        j_per_tok_out=_ratio(window.energy_j, window.tokens_out),
        cost_usd=window.cost_usd,
        usd_per_hour_mean=window.usd_per_hour,
        usd_per_mtok=window.usd_per_mtok,
        busy_usd_per_mtok=window.busy_usd_per_mtok,
        busy_s=window.busy_s,
        utilization_pct=None if busy_share is None else busy_share * 100.0,
        idle_usd=window.idle_cost_usd,
    )


def _spans_from_track(track: GpuTrack, length_s: float) -> dict[float, _Span]:
    """Differences between consecutive points, keyed by the window's end (a tick time);
    windows shorter than ``MIN_WINDOW_SHARE`` of the length (the range's end) left out."""
    t, tin, tout, energy = track.t, track.tokens_in_cum, track.tokens_out_cum, track.energy_j_cum
    shortest = length_s * MIN_WINDOW_SHARE
    return {
        t[i]: (t[i] - t[i - 1], tin[i] - tin[i - 1], tout[i] - tout[i - 1], energy[i] - energy[i - 1])
        for i in range(1, len(t))
        if t[i] - t[i - 1] >= shortest
    }


def _host_spans(per_gpu: list[dict[float, _Span]]) -> list[_Span]:
    """Per window: the GPUs' deliveries summed over the longest span among them."""
    merged: dict[float, list[float]] = {}
    for spans in per_gpu:
        for key, (span, tin, tout, energy) in spans.items():
            m = merged.get(key)
            if m is None:
                merged[key] = [span, tin, tout, energy]
            else:
                m[0] = max(m[0], span)
                m[1] += tin
                m[2] += tout
                m[3] += energy
    return [(m[0], m[1], m[2], m[3]) for m in merged.values()]


def _counter_explains(track: GpuTrack, i: int) -> bool:
    """Whether the energy between points i-1 and i is exactly the NVML counter's difference,
    i.e. every tick in between was measured by the counter."""
    a, b = track.energy_counter_mj[i - 1], track.energy_counter_mj[i]
    if a is None or b is None or b < a:
        return False
    energy = track.energy_j_cum[i] - track.energy_j_cum[i - 1]
    return math.isclose((b - a) / 1000.0, energy, rel_tol=1e-9, abs_tol=1e-3)


@dataclass(frozen=True)
class _EnergyMethod:
    method: str | None
    integrated_ticks: int
    unmeasured_ticks: int


def _energy_method(store: Store, session_id: int, track: GpuTrack) -> _EnergyMethod:
    """Counter windows need no reading; the rest (resets, GPUs without a counter, missing
    readings) are counted tick by tick, consecutive ones in one read."""
    counts: dict[str | None, int] = {}
    by_counter = False
    start = None
    for i in range(1, len(track.t) + 1):
        explained = i < len(track.t) and _counter_explains(track, i)
        by_counter |= explained
        if i < len(track.t) and not explained:
            start = track.t[i - 1] if start is None else start
        elif start is not None:
            for method, n in store.gpu_energy_methods(session_id, track.uuid, start, track.t[i - 1]).items():
                counts[method] = counts.get(method, 0) + n
            start = None
    integrated, unmeasured = counts.get("power_integral", 0), counts.get(None, 0)
    has_counter = by_counter or counts.get("counter", 0) > 0
    if has_counter and integrated:
        method = "mixed"
    elif has_counter:
        method = "counter"
    elif integrated:
        method = "power_integral"
    else:
        method = None
    return _EnergyMethod(method, integrated, unmeasured)


def _requests_completed(store: Store, session_id: int, track: EndpointTrack) -> float | None:
    """Increase of the finished-requests counter, a restart counting its new value from zero.

    Between two boundary points the plain difference is right unless the engine restarted in
    between: the counter went down, appeared or vanished, or its token counters moved otherwise
    than the delivered tokens. Runs of such windows are read row by row, in one read each."""
    values = track.requests_finished_raw
    total, known = 0.0, False

    def exact(first: int, last: int) -> None:
        nonlocal total, known
        rows = store.endpoint_rows(session_id, track.name, track.url, track.t[first], track.t[last])
        previous = values[first]
        for raw in rows.requests_finished_raw if rows is not None else ():
            if raw is None:
                continue
            if previous is not None:
                total += raw - previous if raw >= previous else raw
                known = True
            previous = raw

    pending = None  # first point of a run of windows to read row by row
    for i in range(1, len(values)):
        a, b = values[i - 1], values[i]
        if (a is None) != (b is None) or (a is not None and b is not None and (b < a or _restart_suspected(track, i))):
            pending = i - 1 if pending is None else pending
            continue
        if pending is not None:
            exact(pending, i - 1)
            pending = None
        if a is not None and b is not None:
            total += b - a
            known = True
    if pending is not None:
        exact(pending, len(values) - 1)
    return total if known else None


def _restart_suspected(track: EndpointTrack, i: int) -> bool:
    for raw, delivered in (
        (track.prompt_tokens_raw, track.tokens_in_cum),
        (track.generation_tokens_raw, track.tokens_out_cum),
    ):
        a, b = raw[i - 1], raw[i]
        if a is None or b is None:
            continue
        if b < a or not math.isclose(b - a, delivered[i] - delivered[i - 1], rel_tol=1e-9, abs_tol=1e-6):
            return True
    return False


def _mean(values: tuple[float | None, ...]) -> float | None:
    """Mean of the known values. Latency points after the range's first only: the first one's
    percentiles cover the minute before it (or the server's whole life, on a session's first
    tick)."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _engine(store: Store, session_id: int, track: EndpointTrack, index_of: dict[str, int | None]) -> EngineSummary:
    duration = track.t[-1] - track.t[0]
    tokens_in = track.tokens_in_cum[-1] - track.tokens_in_cum[0]
    tokens_out = track.tokens_out_cum[-1] - track.tokens_out_cum[0]
    return EngineSummary(
        name=track.name,
        url=track.url,
        kind=track.kind,
        model=track.model,
        gpus=track.gpus,
        gpu_indices=tuple(index_of.get(uuid) for uuid in track.gpus),
        duration_s=duration,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tok_s_in_mean=_ratio(tokens_in, duration),
        tok_s_out_mean=_ratio(tokens_out, duration),
        requests_completed=_requests_completed(store, session_id, track),
        ttft_p50_s_mean=_mean(track.ttft_p50_s[1:]),
        ttft_p95_s_mean=_mean(track.ttft_p95_s[1:]),
        itl_p50_s_mean=_mean(track.itl_p50_s[1:]),
    )


def cost_config_of(session: SessionInfo) -> CostConfig | None:
    """The cost settings the session recorded with; None when they are missing or unusable."""
    raw = session.config.get("cost") if isinstance(session.config, dict) else None
    if not isinstance(raw, dict):
        return None
    known = {f.name for f in fields(CostConfig)} - {"api_prices"}
    try:
        api = tuple(ApiPrice(**p) for p in raw.get("api_prices") or ())
        return CostConfig(**{k: v for k, v in raw.items() if k in known}, api_prices=api)
    except (TypeError, ValueError):
        return None


def _cost_inputs(cost: CostConfig | None, gpus: list[tuple[str, str, int | None]]) -> CostInputs:
    if cost is None:
        return CostInputs(False, None, None, None, None, None, None, (), ())
    prices: dict[tuple[float, str], list[int | None]] = {}
    for uuid, name, index in gpus:
        price = price_for(name, uuid, -1 if index is None else index, cost)
        if price is not None:
            prices.setdefault((price.usd_per_gpu_hour, price.source), []).append(index)
    return CostInputs(
        recorded=True,
        mode=cost.mode,
        electricity_usd_per_kwh=cost.electricity_usd_per_kwh,
        pue=cost.pue,
        node_overhead=cost.node_overhead,
        energy_in_rate=cost.energy_in_rate,
        energy_charged=energy_is_charged(cost),
        prices=tuple(PriceInUse(usd, source, tuple(indices)) for (usd, source), indices in prices.items()),
        api_prices=cost.api_prices,
    )


# --- building a summary ----------------------------------------------------------------------


def build_summary(
    store: Store, session: SessionInfo, since: float | None = None, until: float | None = None
) -> SessionSummary:
    """Summarise ``session`` over ``[since, until]`` (default: all of it)."""
    bounds = store.session_bounds(session.id)
    if bounds is None:
        raise SummaryError(f"session {session.id} has no readings")
    if bounds[0] == bounds[1]:
        raise SummaryError(f"session {session.id} has a single reading ({_when(bounds[0])}); a summary needs two")
    start = bounds[0] if since is None else max(since, bounds[0])
    end = bounds[1] if until is None else min(until, bounds[1])
    if end <= start:
        raise SummaryError(
            f"session {session.id} has no readings between {_when(since or start)}"
            f" and {_when(until or end)} (it ran {_when(bounds[0])} to "
            f"{_when(bounds[1])})"
        )
    notes: list[str] = []
    if session.ended_at is None:
        notes.append(
            f"the session was still open: still recording, or it ended without closing; figures up to {_when(end)}"
        )
    gpu_infos = store.gpus(session.id)
    index_of = {g.uuid: g.index for g in gpu_infos}
    cost = cost_config_of(session)
    raw = not gpu_infos or store.raw_rows_cover(session.id, start)
    length = RATE_WINDOW_S if raw else ROLLUP_WINDOW_S
    tracks = {t.uuid: t for t in store.gpu_tracks(session.id, start, end, length)}
    if raw:
        spans = {uuid: _spans_from_track(t, length) for uuid, t in tracks.items()}
    else:
        notes.append(
            "per-tick rows are gone for part of the range (retention): peaks and "
            "percentiles are over whole minutes of the 1-minute rollups; the energy "
            "method and the engine figures cover the per-tick rows that remain"
        )
        spans = {
            m.uuid: {
                float(minute): (cov, tin, tout, e)
                for minute, cov, tin, tout, e in zip(
                    m.minute, m.covered_s, m.tokens_in_delta, m.tokens_out_delta, m.energy_j_delta, strict=True
                )
                if cov >= length * MIN_WINDOW_SHARE
            }
            for m in store.gpu_minutes(session.id, start, end)
        }

    engine_step = ENGINE_STEP_S if end - start > SHORT_RANGE_S else RATE_WINDOW_S
    endpoint_tracks = [t for t in store.endpoint_tracks(session.id, start, end, engine_step) if len(t.t) >= 2]
    engines_of: dict[str, list[str]] = {}
    for track in endpoint_tracks:
        for uuid in track.gpus:
            engines_of.setdefault(uuid, []).append(track.name)
        if not track.gpus:
            notes.append(
                f"engine {track.name} is not mapped to a GPU here: its tokens are not in the GPU and host figures"
            )

    gpus: list[GpuSummary] = []
    windows: list[Window] = []
    for info in gpu_infos:
        window = store.window_totals(session.id, info.uuid, start, end)
        if window is None:
            notes.append(f"GPU {info.index} ({info.uuid}) has no readings in the range")
            continue
        windows.append(window)
        track = tracks.get(info.uuid)
        method = _energy_method(store, session.id, track) if track is not None else _EnergyMethod(None, 0, 0)
        price = (
            price_for(info.name, info.uuid, -1 if info.index is None else info.index, cost)
            if cost is not None
            else None
        )
        gpu_spans = list(spans.get(info.uuid, {}).values())
        gpus.append(
            GpuSummary(
                index=info.index,
                uuid=info.uuid,
                name=info.name,
                engines=tuple(engines_of.get(info.uuid, ())),
                energy_method=method.method,
                energy_integrated_ticks=method.integrated_ticks,
                energy_unmeasured_ticks=method.unmeasured_ticks,
                price_usd_per_gpu_hour=price.usd_per_gpu_hour if price is not None else None,
                price_source=price.source if price is not None else None,
                figures=_figures(window, gpu_spans, gpu_seconds=window.span_s),
            )
        )

    unpriced = tuple(g.uuid for g in gpus if g.figures.cost_usd is None)
    if unpriced:
        notes.append(
            f"{len(unpriced)} GPU(s) have no price (set cost.gpu_hour_usd in the "
            "config): host cost and $/Mtok are not shown"
        )
    host = None
    if windows:
        host = _figures(
            sum_windows(windows),
            _host_spans([spans.get(g.uuid, {}) for g in gpus]),
            gpu_seconds=sum(w.span_s for w in windows),
        )
    engines = tuple(_engine(store, session.id, t, index_of) for t in endpoint_tracks)
    if host is None and not engines:
        raise SummaryError(f"session {session.id} has no readings between {_when(start)} and {_when(end)}")

    api = ()
    if cost is not None and host is not None:
        api = tuple(_compare(p, host) for p in cost.api_prices)
    return SessionSummary(
        db_path=str(store.path),
        session=session,
        since=start,
        until=end,
        whole_session=since is None and until is None,
        windows_length_s=length,
        windows_source="raw" if raw else "rollup_1m",
        engine_step_s=engine_step,
        cost_inputs=_cost_inputs(cost, [(g.uuid, g.name, g.index) for g in gpu_infos]),
        host=host,
        unpriced_gpus=unpriced,
        gpus=tuple(gpus),
        engines=engines,
        api=api,
        notes=tuple(notes),
    )


def _compare(price: ApiPrice, host: Figures) -> ApiComparison:
    api_usd = api_equivalent_usd(host.tokens_in, host.tokens_out, price.usd_per_mtok_in, price.usd_per_mtok_out)
    return ApiComparison(
        name=price.name,
        date=price.date,
        usd_per_mtok_in=price.usd_per_mtok_in,
        usd_per_mtok_out=price.usd_per_mtok_out,
        api_cost_usd=api_usd,
        measured_cost_usd=host.cost_usd,
        saved_usd=None if host.cost_usd is None else api_usd - host.cost_usd,
    )


# --- choosing what to summarise ---------------------------------------------------------------


@contextmanager
def open_history(db_path: Path) -> Iterator[Store]:
    """The history opened read-only, with a message that says what to do when it is missing."""
    path = Path(db_path).expanduser()
    if not path.exists():
        raise SummaryError(f"no history at {path}; record one with `tokentop record` (or give --db)")
    store = Store.open_readonly(path)
    try:
        yield store
    finally:
        store.close()


def choose_session(store: Store, session_id: int | None, since: float | None, until: float | None) -> SessionInfo:
    """The session asked for; else the latest one with readings in the range."""
    sessions = store.sessions()
    if not sessions:
        raise SummaryError(f"history {store.path} has no sessions yet; record one with `tokentop record`")
    if session_id is not None:
        for session in sessions:
            if session.id == session_id:
                return session
        known = ", ".join(str(s.id) for s in sessions[-10:])
        raise SummaryError(
            f"no session {session_id} in {store.path} (latest: {known}; `tokentop summary --list` lists them)"
        )
    for session in reversed(sessions):
        bounds = store.session_bounds(session.id)
        if bounds is None:
            continue
        if (since is None or bounds[1] >= since) and (until is None or bounds[0] <= until):
            return session
    if since is None and until is None:
        raise SummaryError(f"history {store.path} has no readings yet")
    raise SummaryError(
        f"no session in {store.path} has readings between "
        f"{_when(since) if since is not None else 'the start'} and "
        f"{_when(until) if until is not None else 'now'}"
    )


def summarize(
    db_path: Path, session_id: int | None = None, since: float | None = None, until: float | None = None
) -> SessionSummary:
    """Open the history read-only (another process may be writing it) and summarise."""
    with open_history(db_path) as store:
        return build_summary(store, choose_session(store, session_id, since, until), since, until)


_RELATIVE = re.compile(
    r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
    r"(?:(\d+(?:\.\d+)?)s)?$"
)


def parse_time(text: str, now: float) -> float:
    """Unix seconds from an ISO time (local when it has no offset) or a time ago: ``2h``,
    ``30m``, ``1h30m``, ``45s``, ``2d``."""
    text = text.strip()
    match = _RELATIVE.match(text.lower())
    try:
        if text and match and any(match.groups()):
            days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            when = now - (days * 86400 + hours * 3600 + minutes * 60 + seconds)
        else:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text).timestamp()
        time.localtime(when)  # a time the summary can print
    except (ValueError, OverflowError, OSError):
        raise SummaryError(
            f"cannot read the time {text[:40]!r}: give an ISO time "
            "(2026-04-01T12:00, local unless it has an offset) or a time ago "
            "(2h, 30m, 1h30m, 45s, 2d)"
        ) from None
    return when


# --- rendering -------------------------------------------------------------------------------


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _figures_dict(figures: Figures | None) -> dict[str, Any] | None:
    if figures is None:
        return None
    return {f.name: getattr(figures, f.name) for f in fields(Figures)}


def to_json_dict(summary: SessionSummary) -> dict[str, Any]:
    """The documented JSON layout (README, "tokentop summary"), units in every key."""
    s, c = summary.session, summary.cost_inputs
    return {
        "schema_version": SCHEMA_VERSION,
        "tokentop_version": __version__,
        "db_path": summary.db_path,
        "session": {
            "id": s.id,
            "host": s.host,
            "tokentop_version": s.tokentop_version,
            "started_unix_s": s.started_at,
            "started_utc": _iso(s.started_at),
            "ended_unix_s": s.ended_at,
            "ended_utc": _iso(s.ended_at),
            "open": s.ended_at is None,
        },
        "range": {
            "since_unix_s": summary.since,
            "since_utc": _iso(summary.since),
            "until_unix_s": summary.until,
            "until_utc": _iso(summary.until),
            "duration_s": summary.until - summary.since,
            "whole_session": summary.whole_session,
        },
        "rate_windows": {
            "length_s": summary.windows_length_s,
            "source": summary.windows_source,
            "engine_step_s": summary.engine_step_s,
        },
        "cost_inputs": {
            "recorded": c.recorded,
            "mode": c.mode,
            "electricity_usd_per_kwh": c.electricity_usd_per_kwh,
            "pue": c.pue,
            "node_overhead": c.node_overhead,
            "energy_in_rate": c.energy_in_rate,
            "energy_charged": c.energy_charged,
            "prices": [
                {"usd_per_gpu_hour": p.usd_per_gpu_hour, "source": p.source, "gpu_indices": list(p.gpu_indices)}
                for p in c.prices
            ],
            "api_prices": [
                {
                    "name": p.name,
                    "usd_per_mtok_in": p.usd_per_mtok_in,
                    "usd_per_mtok_out": p.usd_per_mtok_out,
                    "date": p.date,
                }
                for p in c.api_prices
            ],
        },
        "host": None
        if summary.host is None
        else {
            "gpu_count": len(summary.gpus),
            "unpriced_gpus": list(summary.unpriced_gpus),
            **(_figures_dict(summary.host) or {}),
        },
        "gpus": [
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "engines": list(g.engines),
                "energy_method": g.energy_method,
                "energy_integrated_ticks": g.energy_integrated_ticks,
                "energy_unmeasured_ticks": g.energy_unmeasured_ticks,
                "price_usd_per_gpu_hour": g.price_usd_per_gpu_hour,
                "price_source": g.price_source,
                **(_figures_dict(g.figures) or {}),
            }
            for g in summary.gpus
        ],
        "engines": [
            {
                "name": e.name,
                "url": e.url,
                "kind": e.kind,
                "model": e.model,
                "gpus": list(e.gpus),
                "gpu_indices": list(e.gpu_indices),
                "duration_s": e.duration_s,
                "tokens_in": e.tokens_in,
                "tokens_out": e.tokens_out,
                "tok_s_in_mean": e.tok_s_in_mean,
                "tok_s_out_mean": e.tok_s_out_mean,
                "requests_completed": e.requests_completed,
                "ttft_p50_s_mean": e.ttft_p50_s_mean,
                "ttft_p95_s_mean": e.ttft_p95_s_mean,
                "itl_p50_s_mean": e.itl_p50_s_mean,
            }
            for e in summary.engines
        ],
        "api_equivalent": [
            {
                "name": a.name,
                "date": a.date,
                "usd_per_mtok_in": a.usd_per_mtok_in,
                "usd_per_mtok_out": a.usd_per_mtok_out,
                "api_cost_usd": a.api_cost_usd,
                "measured_cost_usd": a.measured_cost_usd,
                "saved_usd": a.saved_usd,
            }
            for a in summary.api
        ],
        "notes": list(summary.notes),
    }


CSV_LEAD = (
    "scope",
    "gpu_index",
    "uuid",
    "name",
    "engines",
    "energy_method",
    "energy_integrated_ticks",
    "price_usd_per_gpu_hour",
)
CSV_COLUMNS = CSV_LEAD + tuple(f.name for f in fields(Figures))


def render_csv(summary: SessionSummary) -> str:
    """One row per GPU, then a ``total`` row for the host."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in summary.gpus:
        writer.writerow(
            [
                "gpu",
                g.index,
                g.uuid,
                g.name,
                " ".join(g.engines),
                g.energy_method or "",
                g.energy_integrated_ticks,
                _csv(g.price_usd_per_gpu_hour),
                *(_csv(getattr(g.figures, f.name)) for f in fields(Figures)),
            ]
        )
    if summary.host is not None:
        writer.writerow(
            [
                "total",
                "",
                "",
                f"{len(summary.gpus)} GPUs",
                "",
                "",
                sum(g.energy_integrated_ticks for g in summary.gpus),
                "",
                *(_csv(getattr(summary.host, f.name)) for f in fields(Figures)),
            ]
        )
    return out.getvalue()


def _csv(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _sig(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (more when it is large), no exponent."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1:
        return f"{sign}${value:,.2f}"
    return f"{sign}${_sig(value, 3)}"


def _per_mtok(value: float | None, tokens_out: float, priced: bool) -> str:
    if value is None and priced and tokens_out <= 0:
        return "idle"
    return _usd(value)


def _count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _short(name: str) -> str:
    return name.removeprefix("NVIDIA ").strip()


def _method(g: GpuSummary) -> str:
    if g.energy_method is None:
        return "no power reading"
    text = {"counter": "counter", "power_integral": "power integrated", "mixed": "counter"}[g.energy_method]
    if g.energy_method == "mixed":
        text += f"; {g.energy_integrated_ticks} tick(s) power integrated"
    if g.energy_unmeasured_ticks:
        text += f"; {g.energy_unmeasured_ticks} tick(s) unmeasured"
    return text


def _table(header: list[str], rows: list[list[str]], text_columns: int = 2) -> list[str]:
    """A Markdown table; columns after the first ``text_columns`` hold numbers (right-aligned)."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(summary: SessionSummary) -> str:
    s = summary.session
    models: dict[str, int] = {}
    for g in summary.gpus:
        models[_short(g.name)] = models.get(_short(g.name), 0) + 1
    gpus = ", ".join(f"{n}x {name}" for name, n in models.items()) if summary.gpus else "no GPU readings"
    window = (
        f"{summary.windows_length_s:g} s windows of the per-tick rows"
        if summary.windows_source == "raw"
        else f"{summary.windows_length_s:g} s windows of the 1-minute rollups"
    )
    status = "closed" if s.ended_at is not None else "still open"
    out = [
        f"# tokentop session {s.id} on {s.host} ({gpus})",
        "",
        f"- Range: {_when(summary.since)} to {_when(summary.until)} "
        f"({_duration(summary.until - summary.since)})" + (", the whole session" if summary.whole_session else ""),
        f"- Session: started {_when(s.started_at)}, {status}; recorded by tokentop "
        f"{s.tokentop_version}; history {summary.db_path}",
        f"- p50, p95 and peak: over {window}. $/Mtok: cost per million output tokens, idle "
        "time included (effective) or busy seconds only (busy).",
    ]
    rows = [(f"{g.index} {_short(g.name)}", ", ".join(g.engines) or "idle", g.figures, g) for g in summary.gpus]
    if summary.host is not None:
        rows.append(("**host**", f"{len(summary.gpus)} GPUs", summary.host, None))
    if rows:
        out += ["", "## Tokens", ""]
        out += _table(
            [
                "GPU",
                "engines",
                "tokens in",
                "tokens out",
                "tok/s in mean",
                "in p50",
                "in p95",
                "in peak",
                "tok/s out mean",
                "out p50",
                "out p95",
                "out peak",
            ],
            [
                [
                    label,
                    engines,
                    _count(f.tokens_in),
                    _count(f.tokens_out),
                    _sig(f.tok_s_in_mean),
                    _sig(f.tok_s_in_p50),
                    _sig(f.tok_s_in_p95),
                    _sig(f.tok_s_in_peak),
                    _sig(f.tok_s_out_mean),
                    _sig(f.tok_s_out_p50),
                    _sig(f.tok_s_out_p95),
                    _sig(f.tok_s_out_peak),
                ]
                for label, engines, f, _ in rows
            ],
        )
        out += ["", "## Energy and cost", ""]
        out += _table(
            [
                "GPU",
                "energy measured by",
                "energy kWh",
                "W mean",
                "W peak",
                "tok/J",
                "J/tok out",
                "cost",
                "$/hour",
                "$/Mtok",
                "busy $/Mtok",
                "utilisation",
                "idle $",
            ],
            [
                [
                    label,
                    _method(g) if g is not None else "sum of GPUs",
                    _sig(f.energy_kwh, 4),
                    _sig(f.power_w_mean),
                    _sig(f.power_w_peak),
                    _sig(f.tok_per_j),
                    _sig(f.j_per_tok_out),
                    _usd(f.cost_usd),
                    _usd(f.usd_per_hour_mean),
                    _per_mtok(f.usd_per_mtok, f.tokens_out, f.cost_usd is not None),
                    _per_mtok(f.busy_usd_per_mtok, f.tokens_out, f.cost_usd is not None),
                    _pct(f.utilization_pct),
                    _usd(f.idle_usd),
                ]
                for label, _, f, g in rows
            ],
        )
    if summary.engines:
        out += ["", "## Engines", ""]
        out += _table(
            [
                "engine",
                "kind",
                "model",
                "GPUs",
                "tokens in",
                "tokens out",
                "tok/s out",
                "requests",
                "TTFT p50",
                "TTFT p95",
                "ITL p50",
            ],
            [
                [
                    e.name,
                    e.kind or "—",
                    e.model or "—",
                    ",".join("?" if i is None else str(i) for i in e.gpu_indices) or "not mapped",
                    _count(e.tokens_in),
                    _count(e.tokens_out),
                    _sig(e.tok_s_out_mean),
                    _count(e.requests_completed),
                    _seconds(e.ttft_p50_s_mean),
                    _seconds(e.ttft_p95_s_mean),
                    _seconds(e.itl_p50_s_mean),
                ]
                for e in summary.engines
            ],
            text_columns=4,
        )
        out += [
            "",
            f"TTFT and ITL: mean of the engine's rolling 1-minute percentiles, read every {summary.engine_step_s:g} s.",
        ]
    if summary.api:
        out += ["", "## The same tokens through an API", ""]
        out += _table(
            ["API", "price date", "$/M in", "$/M out", "API cost", "measured cost", "saved"],
            [
                [
                    a.name,
                    a.date or "—",
                    _usd(a.usd_per_mtok_in),
                    _usd(a.usd_per_mtok_out),
                    _usd(a.api_cost_usd),
                    _usd(a.measured_cost_usd),
                    _usd(a.saved_usd),
                ]
                for a in summary.api
            ],
            text_columns=2,
        )
    out += ["", "## Cost inputs", ""]
    c = summary.cost_inputs
    if not c.recorded:
        out.append("- not recorded with this session; cost figures are those stored per tick")
    else:
        energy = (
            "energy charged on top: board energy x node overhead x PUE x tariff"
            if c.energy_charged
            else "energy included in the hourly rate (shown, not added)"
        )
        out.append(
            f"- mode {c.mode}; electricity {_usd(c.electricity_usd_per_kwh)}/kWh; PUE "
            f"{c.pue:g}; node overhead {c.node_overhead:g}; {energy}"
        )
        for p in c.prices:
            which = ", ".join("?" if i is None else str(i) for i in p.gpu_indices)
            out.append(f"- {_usd(p.usd_per_gpu_hour)} per GPU-hour for GPU {which}: {p.source}")
        for p in c.api_prices:
            out.append(
                f"- API {p.name}: {_usd(p.usd_per_mtok_in)}/M in, "
                f"{_usd(p.usd_per_mtok_out)}/M out ({p.date or 'no date given'})"
            )
    if summary.notes:
        out += ["", "## Notes", ""] + [f"- {note}" for note in summary.notes]
    return "\n".join(out) + "\n"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def render(summary: SessionSummary, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(to_json_dict(summary), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return render_csv(summary)
    if fmt == "md":
        return render_markdown(summary)
    raise SummaryError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_session_list(store: Store, fmt: str) -> str:
    items = []
    for session in store.sessions():
        bounds = store.session_bounds(session.id)
        items.append(
            {
                "id": session.id,
                "host": session.host,
                "tokentop_version": session.tokentop_version,
                "started_unix_s": session.started_at,
                "ended_unix_s": session.ended_at,
                "first_reading_unix_s": bounds[0] if bounds else None,
                "last_reading_unix_s": bounds[1] if bounds else None,
                "gpu_count": len(store.gpus(session.id)),
            }
        )
    if not items:
        raise SummaryError(f"history {store.path} has no sessions yet; record one with `tokentop record`")
    if fmt == "json":
        return json.dumps({"schema_version": SCHEMA_VERSION, "sessions": items}, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(items[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
        return out.getvalue()
    rows = []
    for item in items:
        first, last = item["first_reading_unix_s"], item["last_reading_unix_s"]
        rows.append(
            [
                str(item["id"]),
                item["host"],
                _when(item["started_unix_s"]),
                "open" if item["ended_unix_s"] is None else _when(item["ended_unix_s"]),
                _duration(last - first) if first is not None else "no readings",
                str(item["gpu_count"]),
                item["tokentop_version"],
            ]
        )
    return (
        "\n".join(
            _table(["session", "host", "started", "ended", "readings span", "GPUs", "tokentop"], rows, text_columns=5)
        )
        + "\n"
    )
