"""A fleet summary from a Prometheus: each host's figures over ``[since, until]`` from
``increase()`` over that range, evaluated at ``until`` (three queries, whatever the fleet's size).

With tokentop's exporters the counters are each host's session totals, so a host's tokens,
energy, cost and busy seconds here are what its own ``tokentop summary`` says over the same range,
to within what one scrape interval at each end explains (``increase()`` extrapolates from the
samples nearest the ends; the history takes the ticks nearest them). Agentless fleets get the
same figures from dcgm-exporter and the servers' counters (``tokentop.fleet.agentless``). Peaks
and percentiles are left unknown (``None``): they need every sample, which this does not read.
"""

from __future__ import annotations

import time

from tokentop.config import Config
from tokentop.cost import J_PER_KWH
from tokentop.fleet import promql
from tokentop.fleet.agentless import Agentless
from tokentop.fleet.prom_exporters import HostRead, read_hosts
from tokentop.fleet.prometheus_api import PromClient, PromError
from tokentop.fleet.prometheus_source import MODES
from tokentop.fleet.summary import FleetSummary, HostSummary, fleet_summary
from tokentop.model import EndpointFigures, GpuFigures, Window, usd_per_mtok
from tokentop.report import EndpointSummary, Figures, GpuSummary, SummaryError
from tokentop.units import fmt_duration

DEFAULT_SPAN_S = 3600.0
NOTE = "figures are increase() over the range at its end; Prometheus keeps no per-second peaks here (shown unknown)"


def summarize(config: Config, since: float | None, until: float | None) -> FleetSummary:
    """The fleet over ``[since, until]`` (not given: now, and an hour before ``until``);
    ``SummaryError`` when Prometheus cannot say."""
    until = time.time() if until is None else until
    since = until - DEFAULT_SPAN_S if since is None else since
    if until <= since:
        raise SummaryError("--until must be later than --since")
    client = PromClient(config.prometheus)
    try:
        mode, reads, notes = _read(client, config, since, until)
    except PromError as exc:
        raise SummaryError(str(exc)) from None
    finally:
        client.close()
    hosts = [_host(r, until - since) for r in reads]
    return fleet_summary(f"prometheus {client.shown} ({MODES[mode]})", mode, since, until, hosts, notes + [NOTE])


def _read(client: PromClient, config: Config, since: float, until: float) -> tuple[str, list[HostRead], list[str]]:
    span = until - since
    parts = client.instant(promql.detect_query(span), at=until).parts()
    found = {name for name, samples in parts.items() if any(s.value for s in samples)}
    if "tokentop" in found:
        window = client.instant(promql.tokentop_window(span), at=until).parts()
        latest = client.instant(promql.tokentop_latest(span), at=until).parts()
        return "tokentop", read_hosts(window, window, latest, span, span), []
    if "dcgm" in found:
        window = client.instant(promql.agentless_window(span, busy=True), at=until).parts()
        latest = client.instant(promql.agentless_latest(span), at=until).parts()
        agentless = Agentless(window, window, latest, span, span, config.cost, until, span)
        reads, messages = agentless.hosts()
        return "agentless", reads, messages
    raise SummaryError(
        f"Prometheus at {client.shown} holds no tokentop_* or DCGM_FI_DEV_POWER_USAGE series "
        f"in the {fmt_duration(span)} before --until"
    )


def _host(read: HostRead, span_s: float) -> HostSummary:
    gpus = tuple(_gpu(g) for g in read.gpus)
    measured = all(g.energy_method is not None for g in read.gpus)
    duration = min(span_s, max((_watched(g.cost_window) for g in read.gpus), default=span_s))
    figures = figures_of(read.figures.cost_window, duration, measured)
    return HostSummary(
        name=read.name,
        state="ok",
        reason=None,
        gpu_count=len(read.gpus),
        figures=figures if read.gpus else None,
        unpriced_gpus=read.figures.unpriced_gpus,
        gpus=gpus,
        endpoints=tuple(_endpoint(e, read.gpus, span_s) for e in read.endpoints),
    )


def _watched(window: Window) -> float:
    """The seconds a GPU was watched in the range (its exporter's own count), else the range."""
    return min(window.span_s, window.watched_gpu_s) if window.watched_gpu_s else window.span_s


def _gpu(gpu: GpuFigures) -> GpuSummary:
    window = gpu.cost_window
    return GpuSummary(
        index=gpu.sample.index if gpu.sample.index >= 0 else None,
        uuid=gpu.sample.uuid,
        name=gpu.sample.name,
        engines=gpu.engines,
        energy_method=gpu.energy_method,
        energy_integrated_ticks=0,
        energy_unmeasured_ticks=0,
        price_usd_per_gpu_hour=gpu.price.usd_per_gpu_hour if gpu.price else None,
        price_source=gpu.price.source if gpu.price else None,
        figures=figures_of(window, _watched(window), gpu.energy_method is not None),
    )


def figures_of(window: Window, duration_s: float, measured: bool) -> Figures:
    """A summary's figures from a window's sums; rates are means over ``duration_s``."""
    energy_kwh = window.energy_j / J_PER_KWH if measured else None
    tokens = window.tokens_out
    idle = None if window.cost_usd is None or window.busy_cost_usd is None else window.cost_usd - window.busy_cost_usd
    watched = window.watched_gpu_s if window.watched_gpu_s is not None else window.span_s
    return Figures(
        duration_s=duration_s,
        tokens_in=window.tokens_in,
        tokens_out=tokens,
        tok_s_in_mean=window.tokens_in / duration_s if duration_s > 0 else None,
        tok_s_in_p50=None,
        tok_s_in_p95=None,
        tok_s_in_peak=None,
        tok_s_out_mean=tokens / duration_s if duration_s > 0 else None,
        tok_s_out_p50=None,
        tok_s_out_p95=None,
        tok_s_out_peak=None,
        energy_kwh=energy_kwh,
        power_w_mean=window.energy_j / duration_s if measured and duration_s > 0 else None,
        power_w_peak=None,
        tok_per_j=tokens / window.energy_j if measured and window.energy_j > 0 else None,
        j_per_tok_out=window.energy_j / tokens if measured and tokens > 0 else None,
        cost_usd=window.cost_usd,
        usd_per_hour_mean=None if window.cost_usd is None or duration_s <= 0 else window.cost_usd / duration_s * 3600,
        usd_per_mtok=usd_per_mtok(window.cost_usd, tokens),
        busy_usd_per_mtok=usd_per_mtok(window.busy_cost_usd, tokens),
        busy_s=window.busy_s,
        busy_pct=window.busy_s / watched * 100.0 if watched > 0 else None,
        idle_usd=idle,
    )


def _endpoint(endpoint: EndpointFigures, gpus: tuple[GpuFigures, ...], span_s: float) -> EndpointSummary:
    index = {g.sample.uuid: g.sample.index for g in gpus}
    rate_in = endpoint.tok_s_in
    rate_out = endpoint.tok_s_out
    return EndpointSummary(
        name=endpoint.sample.name,
        url=endpoint.sample.url,
        kind=endpoint.sample.kind,
        model=endpoint.sample.model,
        gpus=endpoint.gpus,
        gpu_indices=tuple(index.get(u) for u in endpoint.gpus),
        duration_s=span_s,
        tokens_in=rate_in * span_s if rate_in is not None else 0.0,
        tokens_out=rate_out * span_s if rate_out is not None else 0.0,
        tok_s_in_mean=rate_in,
        tok_s_out_mean=rate_out,
        requests_completed=None,
        ttft_p50_s_mean=None,
        ttft_p95_s_mean=None,
        itl_p50_s_mean=None,
    )
