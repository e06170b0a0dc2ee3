"""A Snapshot as plain JSON-ready data, units in every key (``tokentop snapshot --json``).

The schema is documented in the README; bump ``SCHEMA_VERSION`` on any incompatible change.
Version 2: ``session.busy_s`` became ``session.busy_gpu_s``, busy GPU-seconds (for the host
the sum over its GPUs, as in the summary; version 1 gave the host the GPUs' mean).
"""

from __future__ import annotations

from typing import Any

from tokentop import __version__
from tokentop.config import CostConfig
from tokentop.model import EndpointFigures, GpuFigures, HostFigures, Snapshot, Totals, Window

SCHEMA_VERSION = 2


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100.0


def window_dict(window: Window) -> dict[str, Any]:
    return {
        "span_s": window.span_s,
        "tok_s_in": window.tok_s_in,
        "tok_s_out": window.tok_s_out,
        "power_w": window.watts,
        "tok_per_j": window.tok_per_j,
        "usd_per_hour": window.usd_per_hour,
        "usd_per_mtok": window.usd_per_mtok,
        "busy_usd_per_mtok": window.busy_usd_per_mtok,
        "busy_pct": _pct(window.busy_share),
        "idle_usd": window.idle_cost_usd,
        "tokens_in": window.tokens_in,
        "tokens_out": window.tokens_out,
        "energy_j": window.energy_j,
        "cost_usd": window.cost_usd,
    }


def session_dict(totals: Totals) -> dict[str, Any]:
    """Cumulative since the session started; busy time in GPU-seconds (summed over the host's
    GPUs: the same figure the summary's ``busy_gpu_s`` gives)."""
    return {
        "tokens_in": totals.tokens_in,
        "tokens_out": totals.tokens_out,
        "energy_j": totals.energy_j,
        "cost_usd": totals.cost_usd,
        "busy_gpu_s": totals.busy_s,
        "busy_cost_usd": totals.busy_cost_usd,
        "elapsed_s": totals.elapsed_s,
    }


def gpu_dict(gpu: GpuFigures) -> dict[str, Any]:
    s = gpu.sample
    return {
        "index": s.index,
        "uuid": s.uuid,
        "name": s.name,
        "status": s.status,
        "error": s.error,
        "utilization_pct": s.utilization_pct,
        "memory_used_bytes": s.memory_used_bytes,
        "memory_total_bytes": s.memory_total_bytes,
        "power_w": s.power_w,
        "power_source": s.power_source,
        "power_limit_w": s.power_limit_w,
        "energy_counter_mj": s.energy_counter_mj,
        "energy_method": gpu.energy_method,
        "temperature_c": s.temperature_c,
        "sm_clock_mhz": s.sm_clock_mhz,
        "engines": list(gpu.engines),
        "price_usd_per_gpu_hour": gpu.price.usd_per_gpu_hour if gpu.price else None,
        "price_source": gpu.price.source if gpu.price else None,
        "usd_per_hour_now": gpu.usd_per_hour_now,
        "rate_window": window_dict(gpu.rate_window),
        "cost_window": window_dict(gpu.cost_window),
        "session": session_dict(gpu.totals),
    }


def endpoint_dict(server: EndpointFigures) -> dict[str, Any]:
    s = server.sample
    return {
        "name": s.name,
        "url": s.url,
        "kind": s.kind,
        "kind_detail": s.kind_detail,
        "model": s.model,
        "status": s.status,
        "error": s.error,
        "note": s.note,
        "gpus": list(server.gpus),
        "gpu_mapping": server.mapping,
        "pid": server.pid,
        "prompt_tokens_counter": s.prompt_tokens_total,
        "generation_tokens_counter": s.generation_tokens_total,
        "prompt_tokens_in_flight": s.prompt_tokens_in_flight,
        "generation_tokens_in_flight": s.generation_tokens_in_flight,
        "session_tokens_in": server.tokens_in_total,
        "session_tokens_out": server.tokens_out_total,
        "tok_s_in": server.tok_s_in,
        "tok_s_out": server.tok_s_out,
        "requests_running": s.running,
        "requests_waiting": s.waiting,
        "kv_cache_pct": _pct(s.kv_cache_fraction),
        "ttft_p50_s": server.ttft_p50_s,
        "ttft_p95_s": server.ttft_p95_s,
        "itl_p50_s": server.itl_p50_s,
    }


def host_dict(host: HostFigures) -> dict[str, Any]:
    return {
        "gpu_count": host.gpu_count,
        "power_w_now": host.power_w,
        "usd_per_hour_now": host.usd_per_hour_now,
        "unpriced_gpus": list(host.unpriced_gpus),
        "rate_window": window_dict(host.rate_window),
        "cost_window": window_dict(host.cost_window),
        "session": session_dict(host.totals),
    }


def snapshot_dict(snapshot: Snapshot, cost: CostConfig) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tokentop_version": __version__,
        "time_unix_s": snapshot.t_wall,
        "tick": snapshot.seq,
        "tick_interval_measured_s": snapshot.dt_s,
        "rate_window_s": snapshot.rate_window_s,
        "cost_window_s": snapshot.cost_window_s,
        "gpu_available": snapshot.gpu_available,
        "gpu_unavailable_reason": snapshot.gpu_reason,
        "cost_inputs": {
            "mode": cost.mode,
            "electricity_usd_per_kwh": cost.electricity_usd_per_kwh,
            "pue": cost.pue,
            "node_overhead": cost.node_overhead,
            "energy_in_rate": cost.energy_in_rate,
        },
        "host": host_dict(snapshot.host),
        "gpus": [gpu_dict(g) for g in snapshot.gpus],
        "endpoints": [endpoint_dict(s) for s in snapshot.endpoints],
        "messages": list(snapshot.messages),
    }
