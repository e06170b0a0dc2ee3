"""A fleet summary: each host's summary over one range, and the fleet's figures summed from them.

Sources fill ``HostSummary`` (over ssh from each host's own ``summary --format json``; from a
Prometheus from ``increase()`` over the range); ``combine`` adds them up. Fleet figures are
sums: tokens, energy, cost, busy GPU-seconds, and the means of rates (tok/s, W, $/h), which add
across hosts that cover the range. $/Mtok is the summed cost over the summed output tokens of
the hosts that have a price (``model.usd_per_mtok``), never an average of the hosts' ratios;
tok/J likewise over the hosts whose energy was measured. Percentiles and peaks are left out at
fleet level (``None``): the hosts' seconds are not aligned, and a sum of peaks is no peak.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokentop.model import usd_per_mtok
from tokentop.report.figures import EndpointSummary, Figures, GpuSummary

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class HostSummary:
    name: str
    state: str  # "ok" | "down" (could not be summarised: ``reason`` says why)
    reason: str | None
    gpu_count: int
    figures: Figures | None  # the host's figures over the range; None when down or empty
    unpriced_gpus: tuple[str, ...] = ()
    gpus: tuple[GpuSummary, ...] = ()
    endpoints: tuple[EndpointSummary, ...] = ()


@dataclass(frozen=True)
class FleetSummary:
    source: str  # "prometheus http://…:9090 (tokentop exporters)", "ssh: gpu-1, gpu-2"
    mode: str  # "tokentop" | "agentless" | "ssh"
    since: float
    until: float
    hosts: tuple[HostSummary, ...]
    fleet: Figures | None  # None when no host could be summarised
    gpu_count: int
    unpriced_hosts: tuple[str, ...]  # left out of both sides of $/Mtok
    notes: tuple[str, ...] = ()


def fleet_summary(
    source: str, mode: str, since: float, until: float, hosts: Sequence[HostSummary], notes: Sequence[str] = ()
) -> FleetSummary:
    """The summary of ``hosts`` with the fleet's figures added up (``combine``)."""
    fleet, unpriced = combine(hosts)
    more = list(notes)
    if unpriced:
        more.append(
            f"{len(unpriced)} host(s) without a price for every GPU, left out of both sides of the fleet's $/Mtok: "
            + ", ".join(unpriced)
        )
    down = [h.name for h in hosts if h.state != "ok"]
    if down:
        more.append(f"not summarised: {', '.join(down)} (see each host's reason)")
    return FleetSummary(
        source=source,
        mode=mode,
        since=since,
        until=until,
        hosts=tuple(hosts),
        fleet=fleet,
        gpu_count=sum(h.gpu_count for h in hosts if h.figures is not None),
        unpriced_hosts=unpriced,
        notes=tuple(more),
    )


def combine(hosts: Sequence[HostSummary]) -> tuple[Figures | None, tuple[str, ...]]:
    """The fleet's figures from its hosts', and the hosts left out of $/Mtok (no price)."""
    read = [h for h in hosts if h.figures is not None]
    figures = [h.figures for h in read if h.figures is not None]
    if not figures:
        return None, ()
    priced = [f for f in figures if f.cost_usd is not None]
    unpriced = tuple(h.name for h in read if h.figures is not None and h.figures.cost_usd is None)
    measured = [f for f in figures if f.energy_kwh is not None]
    energy_kwh = sum(f.energy_kwh for f in measured if f.energy_kwh is not None) if measured else None
    energy_j = energy_kwh * J_PER_KWH if energy_kwh is not None else None
    measured_tokens = sum(f.tokens_out for f in measured)
    cost = sum(f.cost_usd for f in priced if f.cost_usd is not None) if priced else None
    priced_tokens = sum(f.tokens_out for f in priced)
    idle = [f.idle_usd for f in priced]
    idle_usd = sum(i for i in idle if i is not None) if priced and None not in idle else None
    busy_cost = None if cost is None or idle_usd is None else cost - idle_usd
    busy_s = sum(f.busy_s for f in figures)
    watched = sum(_watched_gpu_s(h) for h in read)
    return (
        Figures(
            duration_s=max(f.duration_s for f in figures),
            tokens_in=sum(f.tokens_in for f in figures),
            tokens_out=sum(f.tokens_out for f in figures),
            tok_s_in_mean=_sum_known(f.tok_s_in_mean for f in figures),
            tok_s_in_p50=None,
            tok_s_in_p95=None,
            tok_s_in_peak=None,
            tok_s_out_mean=_sum_known(f.tok_s_out_mean for f in figures),
            tok_s_out_p50=None,
            tok_s_out_p95=None,
            tok_s_out_peak=None,
            energy_kwh=energy_kwh,
            power_w_mean=_sum_known(f.power_w_mean for f in measured),
            power_w_peak=None,
            tok_per_j=measured_tokens / energy_j if energy_j else None,
            j_per_tok_out=energy_j / measured_tokens if energy_j is not None and measured_tokens > 0 else None,
            cost_usd=cost,
            usd_per_hour_mean=_sum_known(f.usd_per_hour_mean for f in priced),
            usd_per_mtok=usd_per_mtok(cost, priced_tokens),
            busy_usd_per_mtok=usd_per_mtok(busy_cost, priced_tokens),
            busy_s=busy_s,
            busy_pct=busy_s / watched * 100.0 if watched > 0 else None,
            idle_usd=idle_usd,
        ),
        unpriced,
    )


def _watched_gpu_s(host: HostSummary) -> float:
    """GPU-seconds the host was watched: what its busy share divides by, recovered from the
    share when it is not zero; else its GPUs times the range (a host with no GPU counts as one
    unit, as its own summary does)."""
    f = host.figures
    if f is None:
        return 0.0
    if f.busy_pct:
        return f.busy_s / (f.busy_pct / 100.0)
    return max(host.gpu_count, 1) * f.duration_s


def _sum_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
