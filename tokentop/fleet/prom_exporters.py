"""Hosts from the series of tokentop's own exporters in Prometheus (``tokentop_*``): exact.

The counters are each host's session totals, so ``increase()`` over a window is what that host
counted in the window; every figure of a host's ``Snapshot`` is built from those increases, the
hosts' own gauges and its GPUs' descriptions (``tokentop_gpu_info``), the same shape the local
view draws. Nothing here talks to Prometheus: it reads the answers of ``tokentop.fleet.promql``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tokentop.fleet.model import sum_windows
from tokentop.fleet.prometheus_api import Sample
from tokentop.model import (
    EndpointFigures,
    EndpointSample,
    GpuFigures,
    GpuSample,
    HostFigures,
    Price,
    Totals,
    Window,
)
from tokentop.text import safe_text

Parts = dict[str, list[Sample]]
GpuKey = tuple[str, str]  # host, uuid
_GPU_GAUGES = ("power", "util", "usd_h", "memory_used", "memory_total", "temperature")  # ``promql`` parts


@dataclass(frozen=True)
class HostRead:
    """One host as read: its figures and what the state logic needs."""

    name: str
    gpus: tuple[GpuFigures, ...]
    endpoints: tuple[EndpointFigures, ...]
    figures: HostFigures
    models: tuple[str, ...]
    seen_t: float | None  # the host's latest snapshot time (its own clock)
    scraped: bool | None  # Prometheus's ``up`` for the host's exporter; None: not known
    join: str | None = None  # agentless: how GPUs were joined to servers ("pod", "host", "pod+host")
    key: str | None = None  # agentless: the instance's host, which selects the host's series
    # Read as per-host aggregates (``tokentop.fleet.prom_hosts``): no GPU or endpoint rows, so
    # the GPUs by model and the engines are said here. None: count ``gpus`` and ``endpoints``.
    model_counts: tuple[tuple[str, int], ...] | None = None
    engines: tuple[int, int] | None = None  # (up, total)

    @property
    def detailed(self) -> bool:
        """Whether the host has its GPU and endpoint rows (False: host-level figures only)."""
        return self.model_counts is None


def counters(parts: Parts, prefix: str, key_of: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, float | None]]:
    """The counter parts (``tokens``, ``energy``…, with ``prefix``) by the labels ``key_of``."""
    out: dict[tuple[str, ...], dict[str, float | None]] = defaultdict(dict)
    for name in ("tokens", "energy", "cost", "busy", "busy_cost", "watched"):
        for sample in parts.get(prefix + name, ()):
            key = tuple(sample.labels.get(k, "") for k in key_of)
            field_name = f"tokens_{sample.labels.get('direction')}" if name == "tokens" else name
            out[key][field_name] = sample.value
    return out


def window(values: dict[str, float | None], span_s: float, *, watched: bool = True) -> Window:
    def num(name: str) -> float:
        return values.get(name) or 0.0

    return Window(
        span_s=span_s,
        tokens_in=num("tokens_in"),
        tokens_out=num("tokens_out"),
        energy_j=num("energy"),
        cost_usd=values.get("cost"),
        busy_s=num("busy"),
        busy_cost_usd=values.get("busy_cost") if values.get("cost") is not None else None,
        watched_gpu_s=values.get("watched") if watched else None,
    )


def totals(values: dict[str, float | None]) -> Totals:
    return Totals(
        tokens_in=values.get("tokens_in") or 0.0,
        tokens_out=values.get("tokens_out") or 0.0,
        energy_j=values.get("energy") or 0.0,
        cost_usd=values.get("cost"),
        busy_s=values.get("busy") or 0.0,
        busy_cost_usd=values.get("busy_cost") if values.get("cost") is not None else None,
        elapsed_s=values.get("watched") or 0.0,
    )


def _one(parts: Parts, name: str, key_of: tuple[str, ...]) -> dict[tuple[str, ...], Sample]:
    return {tuple(s.labels.get(k, "") for k in key_of): s for s in parts.get(name, ())}


def read_hosts(cost: Parts, rate: Parts, latest: Parts, rate_window_s: float, cost_window_s: float) -> list[HostRead]:
    """Every host the answers name, with its GPUs and endpoints."""
    gkey = ("host", "uuid")
    cost_gpu, rate_gpu = counters(cost, "", gkey), counters(rate, "", gkey)
    total_gpu = counters(latest, "total_", gkey)
    info = _one(latest, "info", gkey)
    gauges = {name: _one(latest, name, gkey) for name in _GPU_GAUGES}
    gpus_by_host: dict[str, list[GpuFigures]] = defaultdict(list)
    for key in sorted(set(cost_gpu) | set(total_gpu) | set(info), key=lambda k: (k[0], _index(info.get(k)))):
        figures = _gpu(
            (key[0], key[1]),
            info.get(key),
            {name: (table[key].value if key in table else None) for name, table in gauges.items()},
            window(rate_gpu.get(key, {}), rate_window_s),
            window(cost_gpu.get(key, {}), cost_window_s),
            totals(total_gpu.get(key, {})),
        )
        gpus_by_host[key[0]].append(figures)
    endpoints = _endpoints(cost, rate, latest, rate_window_s, gpus_by_host)
    seen = {s.labels.get("host", ""): s.value for s in latest.get("seen", ())}
    up = {s.labels.get("host", ""): s.value for s in latest.get("up", ())}
    hosts = []
    for name in sorted(set(gpus_by_host) | set(seen) | set(endpoints)):
        gpus = tuple(gpus_by_host.get(name, ()))
        hosts.append(
            HostRead(
                name=name,
                gpus=gpus,
                endpoints=tuple(endpoints.get(name, ())),
                figures=host_figures(gpus, rate_window_s, cost_window_s),
                models=tuple(sorted({g.sample.name for g in gpus})),
                seen_t=seen.get(name),
                scraped=None if up.get(name) is None else up.get(name) == 1.0,
            )
        )
    return hosts


def _index(sample: Sample | None) -> int:
    try:
        return int(sample.labels.get("gpu", "")) if sample else 1 << 30
    except ValueError:
        return 1 << 30


def _gpu(
    key: GpuKey, info: Sample | None, gauge: dict[str, float | None], rate: Window, cost: Window, total: Totals
) -> GpuFigures:
    labels = info.labels if info else {}
    util = gauge["util"]
    sample = GpuSample(
        uuid=safe_text(key[1]),
        index=_index(info) if info else -1,
        name=safe_text(labels.get("name") or "unknown GPU"),
        utilization_pct=None if util is None else util * 100.0,
        memory_used_bytes=_bytes(gauge["memory_used"]),
        memory_total_bytes=_bytes(gauge["memory_total"]),
        power_w=gauge["power"],
        temperature_c=gauge["temperature"],
    )
    source = labels.get("price_source", "none")
    price = None
    if source != "none" and cost.cost_usd is not None and cost.watched_gpu_s:
        mode = "owned" if source.startswith(("owned", "owner")) else "cloud"
        rate_usd = cost.cost_usd / cost.watched_gpu_s * 3600.0
        price = Price(rate_usd, f"{safe_text(source)} (as the host charges it)", mode)
    method = labels.get("energy_method")
    return GpuFigures(
        sample=sample,
        engines=tuple(safe_text(e) for e in labels.get("engines", "").split(",") if e),
        price=price,
        energy_method=None if method in (None, "none") else method,
        usd_per_hour_now=gauge["usd_h"],
        totals=total,
        rate_window=rate,
        cost_window=cost,
    )


def _bytes(value: float | None) -> int | None:
    return None if value is None or not 0 <= value < 2**63 else round(value)


def host_figures(gpus: tuple[GpuFigures, ...], rate_window_s: float, cost_window_s: float) -> HostFigures:
    """A host's figures as sums over its GPUs (cost unknown when any GPU's is)."""
    powers = [g.sample.power_w for g in gpus if g.sample.power_w is not None]
    rates = [g.usd_per_hour_now for g in gpus]
    costs = [g.totals.cost_usd for g in gpus]
    cost_unknown = None in costs or not gpus
    return HostFigures(
        gpu_count=len(gpus),
        power_w=sum(powers) if powers else None,
        usd_per_hour_now=None if not gpus or None in rates else sum(r for r in rates if r is not None),
        totals=Totals(
            tokens_in=sum(g.totals.tokens_in for g in gpus),
            tokens_out=sum(g.totals.tokens_out for g in gpus),
            energy_j=sum(g.totals.energy_j for g in gpus),
            cost_usd=None if cost_unknown else sum(c for c in costs if c is not None),
            busy_s=sum(g.totals.busy_s for g in gpus),
            busy_cost_usd=None if cost_unknown else sum(g.totals.busy_cost_usd or 0.0 for g in gpus),
            elapsed_s=max((g.totals.elapsed_s for g in gpus), default=0.0),
            watched_gpu_s=sum(g.totals.elapsed_s for g in gpus),
        ),
        rate_window=sum_windows((g.rate_window for g in gpus), rate_window_s),
        cost_window=sum_windows((g.cost_window for g in gpus), cost_window_s),
        unpriced_gpus=tuple(g.sample.uuid for g in gpus if g.cost_window.cost_usd is None),
    )


def _endpoints(
    cost: Parts, rate: Parts, latest: Parts, rate_window_s: float, gpus_by_host: dict[str, list[GpuFigures]]
) -> dict[str, list[EndpointFigures]]:
    ekey = ("host", "endpoint", "kind")
    up = _one(latest, "ep_up", ekey)
    info = _one(latest, "ep_info", ekey)
    totals_ = counters({"tokens": latest.get("ep_total", [])}, "", ekey)
    rates = counters({"tokens": rate.get("ep_tokens", [])}, "", ekey)
    gauges = {name: _one(latest, name, ekey) for name in ("ep_running", "ep_waiting")}
    quantiles: dict[tuple[str, ...], dict[str, float | None]] = defaultdict(dict)
    for name in ("ep_ttft", "ep_itl"):
        for s in latest.get(name, ()):
            quantiles[tuple(s.labels.get(k, "") for k in ekey)][f"{name}_{s.labels.get('quantile')}"] = s.value
    out: dict[str, list[EndpointFigures]] = defaultdict(list)
    for key in sorted(set(up) | set(totals_)):
        host, name, kind = key
        total, per, q = totals_.get(key, {}), rates.get(key, {}), quantiles.get(key, {})
        running = gauges["ep_running"].get(key)
        waiting = gauges["ep_waiting"].get(key)
        state, described = up.get(key), info.get(key)
        sample = EndpointSample(
            name=safe_text(name),
            url="",
            t_mono=0.0,
            status="up" if state is not None and state.value == 1.0 else "error",
            kind=None if kind in ("", "unknown") else safe_text(kind),
            model=safe_text(described.labels["model"]) if described and described.labels.get("model") else None,
            prompt_tokens_total=total.get("tokens_in"),
            generation_tokens_total=total.get("tokens_out"),
            running=running.value if running else None,
            waiting=waiting.value if waiting else None,
        )
        out[host].append(
            EndpointFigures(
                sample=sample,
                gpus=tuple(g.sample.uuid for g in gpus_by_host.get(host, ()) if name in g.engines),
                mapping="exporter",
                pid=None,
                tokens_in_total=total.get("tokens_in") or 0.0,
                tokens_out_total=total.get("tokens_out") or 0.0,
                tok_s_in=None if per.get("tokens_in") is None else (per.get("tokens_in") or 0.0) / rate_window_s,
                tok_s_out=None if per.get("tokens_out") is None else (per.get("tokens_out") or 0.0) / rate_window_s,
                ttft_p50_s=q.get("ep_ttft_0.5"),
                ttft_p95_s=q.get("ep_ttft_0.95"),
                itl_p50_s=q.get("ep_itl_0.5"),
            )
        )
    return out
