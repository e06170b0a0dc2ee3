"""Hosts of tokentop exporters read as per-host aggregates (``promql.host_*_parts``): the figures
the hosts table and the fleet header show, at about twenty series a host instead of twenty-five a
GPU, and per-GPU detail for the one host the user has opened.

A host read this way carries its ``HostFigures`` (windows, totals, power, $/h, GPU count, unpriced
GPUs), its GPUs by model and its engines up/known, but no GPU or endpoint rows. The sums are the
ones ``prom_exporters.host_figures`` makes over a host's GPUs, done by Prometheus: a cost (or $/h)
is known only when every GPU of the host has one, as there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from tokentop.fleet.model import sum_windows
from tokentop.fleet.prom_exporters import HostRead, Parts, counters, read_hosts, totals, window
from tokentop.fleet.prometheus_api import Sample
from tokentop.model import HostFigures, Window
from tokentop.text import safe_text

HOST_KEY = ("host",)


def _by_host(samples: list[Sample] | None) -> dict[str, float | None]:
    return {s.labels.get("host", ""): s.value for s in samples or ()}


def _unpriced(samples: list[Sample] | None) -> dict[str, list[str]]:
    """host -> UUIDs of its GPUs without a cost counter (``h_unpriced`` parts)."""
    out: dict[str, list[str]] = defaultdict(list)
    for s in samples or ():
        out[s.labels.get("host", "")].append(safe_text(s.labels.get("uuid", "")))
    return out


def _window(values: dict[str, float | None], unpriced: bool, span_s: float) -> Window:
    known = {**values, "cost": None} if unpriced else values
    return sum_windows((window(known, span_s),), span_s)


def _models(samples: list[Sample] | None) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for s in samples or ():
        out[s.labels.get("host", "")].append((safe_text(s.labels.get("name") or "unknown GPU"), int(s.value or 0)))
    return {host: sorted(models) for host, models in out.items()}


def read_host_totals(
    cost: Parts, rate: Parts, latest: Parts, rate_window_s: float, cost_window_s: float
) -> list[HostRead]:
    """Every host the aggregate parts name, with host-level figures and no GPU or endpoint rows."""
    cost_h, rate_h = counters(cost, "h_", HOST_KEY), counters(rate, "h_", HOST_KEY)
    total_h = counters(latest, "h_total_", HOST_KEY)
    unpriced_cost, unpriced_rate = _unpriced(cost.get("h_unpriced")), _unpriced(rate.get("h_unpriced"))
    unpriced_total = _unpriced(latest.get("h_total_unpriced"))
    models = _models(latest.get("h_models"))
    power, usd_h = _by_host(latest.get("h_power")), _by_host(latest.get("h_usd_h"))
    usd_h_count = _by_host(latest.get("h_usd_h_count"))
    elapsed = _by_host(latest.get("h_total_elapsed"))
    ep_up, ep_total = _by_host(latest.get("h_ep_up")), _by_host(latest.get("h_ep_total"))
    seen, up = _by_host(latest.get("seen")), _by_host(latest.get("up"))
    names = set(models) | set(seen) | {k[0] for k in total_h} | set(ep_total)
    reads = []
    for name in sorted(names):
        gpu_count = sum(n for _, n in models.get(name, ()))
        values = total_h.get((name,), {})
        known_cost = {"cost": None} if name in unpriced_total else {}
        host_totals = totals({**values, "watched": elapsed.get(name), **known_cost})
        figures = HostFigures(
            gpu_count=gpu_count,
            power_w=power.get(name),
            usd_per_hour_now=usd_h.get(name) if gpu_count and usd_h_count.get(name) == gpu_count else None,
            totals=replace(host_totals, watched_gpu_s=values.get("watched") or 0.0),
            rate_window=_window(rate_h.get((name,), {}), name in unpriced_rate, rate_window_s),
            cost_window=_window(cost_h.get((name,), {}), name in unpriced_cost, cost_window_s),
            unpriced_gpus=tuple(unpriced_cost.get(name, ())),
        )
        reads.append(
            HostRead(
                name=name,
                gpus=(),
                endpoints=(),
                figures=figures,
                models=tuple(m for m, _ in models.get(name, ())),
                seen_t=seen.get(name),
                scraped=None if up.get(name) is None else up.get(name) == 1.0,
                model_counts=tuple(models.get(name, ())),
                engines=(int(ep_up.get(name) or 0), int(ep_total.get(name) or 0)),
            )
        )
    return reads


def read_focused(
    cost: Parts, rate: Parts, latest: Parts, focus: str | None, rate_window_s: float, cost_window_s: float
) -> list[HostRead]:
    """Every host from its aggregates; ``focus`` (the opened host) with its GPU and endpoint rows
    from the per-GPU parts, which name only that host."""
    hosts = read_host_totals(cost, rate, latest, rate_window_s, cost_window_s)
    if focus is None:
        return hosts
    detail_latest = {k: v for k, v in latest.items() if not k.startswith("h_") and k not in ("seen", "up")}
    detail = {r.name: r for r in read_hosts(cost, rate, detail_latest, rate_window_s, cost_window_s)}
    opened = detail.get(focus)
    if opened is None:
        return hosts
    return [replace(opened, seen_t=h.seen_t, scraped=h.scraped) if h.name == focus else h for h in hosts]
