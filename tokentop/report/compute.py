"""A session summary from the history: all the arithmetic, no words for people.

Totals over any range are differences of the store's cumulative columns (a few index seeks per
GPU), so they equal what the live view and the exporter counted. Peaks and percentiles of tok/s
and W are taken over fixed windows (10 s from the per-tick rows; whole minutes from the 1-minute
rollups where retention has deleted the per-tick rows), read at the window boundaries only: a
day of 8 GPUs at 1 Hz is summarised in well under a second (``benchmarks/bench_summary.py``).

Host figures are sums over the GPUs (``tokentop.derive.sum_windows``): cost over tokens, never
an average of per-GPU ratios. $/Mtok counts output tokens (``tokentop.model.usd_per_mtok``).
A GPU whose energy was never measured (no power and no counter) has unknown energy, W and tok/J,
never zero, and so has the host (as the host's cost is unknown when one GPU has no price).

Strings read from the history (names, URLs, models, UUIDs, settings) go through
``tokentop.text.safe_text`` on their way into the summary: a history written before this release
may hold control characters. The raw strings still key the store's queries.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

from tokentop.config import ApiPrice, CostConfig
from tokentop.cost import J_PER_KWH, api_equivalent_usd, energy_is_charged, price_for
from tokentop.derive import Point, sum_windows, window_between
from tokentop.history import (
    EndpointSessionTotals,
    EndpointTrack,
    GpuInfo,
    GpuSessionTotals,
    GpuTrack,
    SessionInfo,
    Store,
)
from tokentop.model import Totals, Window
from tokentop.report.errors import SummaryError
from tokentop.report.figures import (
    NOT_RECORDED,
    ApiComparison,
    CostInputs,
    EndpointSummary,
    EndpointUnmapped,
    FewWindows,
    Figures,
    GpuSummary,
    GpusUnpriced,
    GpusWithoutEnergy,
    GpuWithoutReadings,
    KeptTotals,
    NoGpu,
    Note,
    PriceInUse,
    RollupWindows,
    SessionStillOpen,
    SessionSummary,
)
from tokentop.report.kept import KeptFigures, kept_figures
from tokentop.report.tracks import (
    MIN_WINDOWS_FOR_PERCENTILES,
    NO_ENERGY_METHOD,
    NO_WINDOWS,
    RateWindows,
    distribution,
    energy_method,
    host_windows,
    mean_known,
    requests_completed,
    settled,
    windows_from_minutes,
    windows_from_track,
)
from tokentop.text import safe_optional, safe_text
from tokentop.units import fmt_local_time

RATE_WINDOW_S = 10.0
ROLLUP_WINDOW_S = 60.0
ENDPOINT_STEP_S = 60.0  # endpoint rows are read a minute apart (10 s apart under an hour)
SHORT_RANGE_S = 3600.0


@dataclass(frozen=True)
class _FixedWindows:
    """The fixed windows of peaks and percentiles, per GPU UUID, as read (``tracks.settled``
    then joins the short ones, per GPU and for the host)."""

    length_s: float
    source: str  # "raw" | "rollup_1m"
    per_gpu: dict[str, RateWindows]
    tracks: dict[str, GpuTrack]  # boundary points of the per-tick rows (energy method)
    session_totals: dict[str, GpuSessionTotals]  # their ticks by energy method, per GPU UUID


def build_summary(
    store: Store, session: SessionInfo, since: float | None = None, until: float | None = None
) -> SessionSummary:
    """Summarise ``session`` over ``[since, until]`` (default: all of it)."""
    with _collector_paused():
        return _build_summary(store, session, since, until)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused for the summary's few hundred milliseconds: a day's
    tracks are some hundred thousand tuples, all alive until the summary returns, and each
    collection the allocations set off walked them again (a tenth of the summary's time). The
    collector resumes, as it was, on return."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build_summary(store: Store, session: SessionInfo, since: float | None, until: float | None) -> SessionSummary:
    start, end = _clip_range(store, session.id, since, until)
    notes: list[Note] = []
    if session.ended_at is None:
        notes.append(SessionStillOpen(end))
    gpu_infos = store.gpus(session.id)
    cost = cost_config_of(session)
    fixed = _fixed_windows(store, session.id, gpu_infos, start, end)
    kept = kept_figures(store, session.id, whole_session=since is None and until is None)
    if fixed.source != "raw":
        notes.append(RollupWindows(kept_totals=kept.used))
    if kept.used:
        notes.append(KeptTotals())
    endpoint_step = ENDPOINT_STEP_S if end - start > SHORT_RANGE_S else RATE_WINDOW_S
    tracks = [t for t in store.endpoint_tracks(session.id, start, end, endpoint_step) if len(t.t) >= 2]
    tracks = [t for t in tracks if not kept.replaces(t)]
    named: tuple[EndpointTrack | EndpointSessionTotals, ...] = (*tracks, *kept.endpoints)
    if gpu_infos:
        notes += [EndpointUnmapped(safe_text(t.name)) for t in named if not t.gpus]
    else:  # a host without a GPU reading (no driver): the endpoints' own figures are the summary
        notes.append(NoGpu())
    span = (start, end)
    gpus, windows, rate_windows = _gpu_summaries(store, session.id, gpu_infos, span, fixed, cost, named, notes, kept)
    unpriced = tuple(g.uuid for g in gpus if g.figures.cost_usd is None)
    if unpriced:
        notes.append(GpusUnpriced(len(unpriced)))
    unmeasured = tuple(g.index for g in gpus if g.figures.energy_kwh is None)
    if unmeasured:
        notes.append(GpusWithoutEnergy(unmeasured, energy_charged=cost is not None and energy_is_charged(cost)))
    host, windows_count = _host_figures(windows, rate_windows, fixed.length_s, notes, energy_known=not unmeasured)
    index_of = {g.uuid: g.index for g in gpu_infos}
    endpoints = tuple(_endpoint_summary(store, session.id, t, index_of) for t in tracks)
    endpoints += kept.endpoint_summaries(index_of)
    if host is None and not endpoints:
        raise SummaryError(
            f"session {session.id} has no readings between {fmt_local_time(start)} and {fmt_local_time(end)}"
        )
    return SessionSummary(
        db_path=str(store.path),
        session=replace(session, host=safe_text(session.host), tokentop_version=safe_text(session.tokentop_version)),
        since=start,
        until=end,
        whole_session=since is None and until is None,
        windows_length_s=fixed.length_s,
        windows_source=fixed.source,
        windows_count=windows_count,
        endpoint_step_s=endpoint_step,
        cost_inputs=cost_inputs(cost, gpu_infos),
        host=host,
        unpriced_gpus=unpriced,
        gpus=tuple(gpus),
        endpoints=endpoints,
        api=api_comparisons(cost, host),
        notes=tuple(notes),
    )


def _clip_range(store: Store, session_id: int, since: float | None, until: float | None) -> tuple[float, float]:
    """The asked range within the session's readings; a ``SummaryError`` when nothing is left."""
    bounds = store.session_bounds(session_id)
    if bounds is None:
        raise SummaryError(f"session {session_id} has no readings: it saw no GPU and no endpoint")
    first, last = bounds
    if first == last:
        raise SummaryError(f"session {session_id} has a single reading ({fmt_local_time(first)}); a summary needs two")
    start = first if since is None else max(since, first)
    end = last if until is None else min(until, last)
    if end <= start:
        raise SummaryError(
            f"session {session_id} has no readings between {fmt_local_time(since or start)}"
            f" and {fmt_local_time(until or end)} (it ran {fmt_local_time(first)} to "
            f"{fmt_local_time(last)})"
        )
    return start, end


def _fixed_windows(store: Store, session_id: int, gpu_infos: list[GpuInfo], start: float, end: float) -> _FixedWindows:
    """10 s windows of the per-tick rows where they cover the range, else whole minutes of the
    1-minute rollups."""
    raw = not gpu_infos or store.raw_rows_cover(session_id, start)
    length = RATE_WINDOW_S if raw else ROLLUP_WINDOW_S
    tracks = {t.uuid: t for t in store.gpu_tracks(session_id, start, end, length)}
    if raw:
        per_gpu = {uuid: windows_from_track(t) for uuid, t in tracks.items()}
    else:
        per_gpu = {m.uuid: windows_from_minutes(m) for m in store.gpu_minutes(session_id, start, end)}
    session_totals = {g.uuid: g for g in store.gpu_session_totals(session_id)}
    return _FixedWindows(length, "raw" if raw else "rollup_1m", per_gpu, tracks, session_totals)


def _gpu_summaries(
    store: Store,
    session_id: int,
    gpu_infos: list[GpuInfo],
    span: tuple[float, float],
    fixed: _FixedWindows,
    cost: CostConfig | None,
    tracks: tuple[EndpointTrack | EndpointSessionTotals, ...],
    notes: list[Note],
    kept: KeptFigures,
) -> tuple[list[GpuSummary], list[Window], list[RateWindows]]:
    """Each GPU with readings in the range, its window over the range and its fixed windows (a
    note for the others)."""
    engines_of: dict[str, list[str]] = {}
    for endpoint in tracks:
        for uuid in endpoint.gpus:
            engines_of.setdefault(uuid, []).append(safe_text(endpoint.name))
    gpus: list[GpuSummary] = []
    windows: list[Window] = []
    rate_windows: list[RateWindows] = []
    for info in gpu_infos:
        window = store.window_totals(session_id, info.uuid, *span)
        if window is None:
            notes.append(GpuWithoutReadings(info.index, safe_text(info.uuid)))
            continue
        windows.append(window)
        rate_windows.append(fixed.per_gpu.get(info.uuid, NO_WINDOWS))
        track = fixed.tracks.get(info.uuid)
        session_totals = fixed.session_totals.get(info.uuid)
        method = energy_method(store, session_id, track, session_totals) if track is not None else NO_ENERGY_METHOD
        method = kept.energy_methods.get(info.uuid, method)
        # Never measured: no tick had power or a counter (a window without rows holds no method,
        # but energy from the rollups).
        energy_known = method.method is not None or window.energy_j > 0
        price = price_for(info.name, info.uuid, _index(info), cost) if cost is not None else None
        gpus.append(
            GpuSummary(
                index=info.index,
                uuid=safe_text(info.uuid),
                name=safe_text(info.name),
                engines=tuple(engines_of.get(info.uuid, ())),
                energy_method=method.method,
                energy_integrated_ticks=method.integrated_ticks,
                energy_unmeasured_ticks=method.unmeasured_ticks,
                price_usd_per_gpu_hour=price.usd_per_gpu_hour if price is not None else None,
                price_source=safe_text(price.source) if price is not None else None,
                figures=figures_of(
                    window,
                    settled(rate_windows[-1], fixed.length_s),
                    gpu_seconds=window.span_s,
                    energy_known=energy_known,
                ),
            )
        )
    return gpus, windows, rate_windows


def _index(info: GpuInfo) -> int:
    return -1 if info.index is None else info.index


def _host_figures(
    windows: list[Window], per_gpu: list[RateWindows], length_s: float, notes: list[Note], *, energy_known: bool
) -> tuple[Figures | None, int | None]:
    """The host as the sum of its GPUs (``per_gpu``: their fixed windows as read), and how many
    settled windows its peaks are over (a note when too few for percentiles); (None, None) when
    no GPU has readings in the range."""
    if not windows:
        return None, None
    fixed = settled(host_windows(per_gpu), length_s)
    if len(fixed.ends) < MIN_WINDOWS_FOR_PERCENTILES:
        notes.append(FewWindows(length_s, len(fixed.ends)))
    gpu_seconds = sum(w.span_s for w in windows)
    return figures_of(sum_windows(windows), fixed, gpu_seconds=gpu_seconds, energy_known=energy_known), len(fixed.ends)


def figures_of(window: Window, fixed: RateWindows, *, gpu_seconds: float, energy_known: bool) -> Figures:
    """``window``: the totals over the range; ``fixed``: its settled fixed windows (peaks and
    percentiles), which cover the same range. ``gpu_seconds``: the time the window's GPUs were watched, summed (the busy
    share's denominator: the host's busy seconds are GPU-seconds too). ``energy_known`` False:
    energy, W and tok/J are None (the window's 0 J means "never measured")."""
    tok_s_in = distribution(fixed.per_second(fixed.tokens_in))
    tok_s_out = distribution(fixed.per_second(fixed.tokens_out))
    watts_peak = max(fixed.per_second(fixed.energy_j), default=None)
    busy_share = _ratio(window.busy_s, gpu_seconds)
    energy_j = window.energy_j if energy_known else None
    return Figures(
        duration_s=window.span_s,
        tokens_in=window.tokens_in,
        tokens_out=window.tokens_out,
        tok_s_in_mean=window.tok_s_in,
        tok_s_in_p50=tok_s_in.p50,
        tok_s_in_p95=tok_s_in.p95,
        tok_s_in_peak=tok_s_in.peak,
        tok_s_out_mean=window.tok_s_out,
        tok_s_out_p50=tok_s_out.p50,
        tok_s_out_p95=tok_s_out.p95,
        tok_s_out_peak=tok_s_out.peak,
        energy_kwh=None if energy_j is None else energy_j / J_PER_KWH,
        power_w_mean=window.watts if energy_known else None,
        power_w_peak=watts_peak if energy_known else None,
        tok_per_j=window.tok_per_j if energy_known else None,
        j_per_tok_out=_ratio(energy_j, window.tokens_out),
        cost_usd=window.cost_usd,
        usd_per_hour_mean=window.usd_per_hour,
        usd_per_mtok=window.usd_per_mtok,
        busy_usd_per_mtok=window.busy_usd_per_mtok,
        busy_s=window.busy_s,
        busy_pct=None if busy_share is None else busy_share * 100.0,
        idle_usd=window.idle_cost_usd,
    )


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def _endpoint_summary(
    store: Store, session_id: int, track: EndpointTrack, index_of: dict[str, int | None]
) -> EndpointSummary:
    """The endpoint's own totals between its first and last point in the range."""
    window = window_between(_endpoint_point(track, 0), _endpoint_point(track, -1))
    return EndpointSummary(
        name=safe_text(track.name),
        url=safe_text(track.url),
        kind=safe_optional(track.kind),
        model=safe_optional(track.model),
        gpus=tuple(map(safe_text, track.gpus)),
        gpu_indices=tuple(index_of.get(uuid) for uuid in track.gpus),
        duration_s=window.span_s,
        tokens_in=window.tokens_in,
        tokens_out=window.tokens_out,
        tok_s_in_mean=window.tok_s_in,
        tok_s_out_mean=window.tok_s_out,
        requests_completed=requests_completed(store, session_id, track),
        # Latency points after the range's first only: the first one's percentiles cover the
        # minute before it (or the server's whole life, on a session's first tick).
        ttft_p50_s_mean=mean_known(track.ttft_p50_s[1:]),
        ttft_p95_s_mean=mean_known(track.ttft_p95_s[1:]),
        itl_p50_s_mean=mean_known(track.itl_p50_s[1:]),
    )


def _endpoint_point(track: EndpointTrack, i: int) -> Point:
    """An endpoint's cumulative tokens at its ``i``-th point (it has no energy or cost)."""
    totals = Totals(track.tokens_in_cum[i], track.tokens_out_cum[i], cost_usd=None, busy_cost_usd=None)
    return Point(track.t[i], totals)


# --- cost settings and comparisons ----------------------------------------------------------


def cost_config_of(session: SessionInfo) -> CostConfig | None:
    """The cost settings the session recorded with; None when they are missing or unusable."""
    raw = session.config.get("cost") if isinstance(session.config, dict) else None
    if not isinstance(raw, dict):
        return None
    known = {f.name for f in fields(CostConfig)} - {"api_prices"}
    try:
        api = tuple(_safe_api_price(ApiPrice(**p)) for p in raw.get("api_prices") or ())
        return CostConfig(**{k: v for k, v in raw.items() if k in known}, api_prices=api)
    except (TypeError, ValueError):
        return None


def _safe_api_price(price: ApiPrice) -> ApiPrice:
    """An API price as stored in the history, its words made safe (see the module's docstring)."""
    return replace(price, name=safe_text(price.name), date=safe_text(price.date))


def cost_inputs(cost: CostConfig | None, gpus: list[GpuInfo]) -> CostInputs:
    """The settings the cost figures used, with the GPUs each hourly rate applies to."""
    if cost is None:
        return NOT_RECORDED
    prices: dict[tuple[float, str], list[int | None]] = {}
    for info in gpus:
        price = price_for(info.name, info.uuid, _index(info), cost)
        if price is not None:
            prices.setdefault((price.usd_per_gpu_hour, price.source), []).append(info.index)
    return CostInputs(
        recorded=True,
        mode=cost.mode,
        electricity_usd_per_kwh=cost.electricity_usd_per_kwh,
        pue=cost.pue,
        node_overhead=cost.node_overhead,
        energy_in_rate=cost.energy_in_rate,
        energy_charged=energy_is_charged(cost),
        prices=tuple(PriceInUse(usd, safe_text(source), tuple(indices)) for (usd, source), indices in prices.items()),
        api_prices=cost.api_prices,
    )


def api_comparisons(cost: CostConfig | None, host: Figures | None) -> tuple[ApiComparison, ...]:
    """The host's tokens at each configured API price, against what they cost here."""
    if cost is None or host is None:
        return ()
    return tuple(_compare(price, host) for price in cost.api_prices)


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
