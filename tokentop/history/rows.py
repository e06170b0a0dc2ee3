"""A snapshot as the rows it becomes: small, and all a tick waiting in the writer's queue keeps
in memory."""

from __future__ import annotations

from typing import NamedTuple

from tokentop.model import EndpointFigures, GpuFigures, Snapshot, Totals


class GpuValues(NamedTuple):
    """A GPU's readings of one tick: ``gpu_ticks`` columns and its state's (``states``)."""

    gpu_index: int | None
    status: str
    error: str | None
    util_pct: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    power_w: float | None
    power_limit_w: float | None
    energy_counter_mj: int | None
    temperature_c: float | None
    sm_clock_mhz: int | None


class GpuRow(NamedTuple):
    uuid: str
    name: str
    energy_method: str | None
    engines: str  # comma-separated endpoint names
    values: GpuValues
    totals: Totals
    usd_per_hour: float | None


class EndpointValues(NamedTuple):
    """The ``endpoint_ticks`` columns prompt_tokens_raw .. itl_p50_s, in table order."""

    prompt_tokens_raw: float | None
    generation_tokens_raw: float | None
    tokens_in_cum: float
    tokens_out_cum: float
    running: float | None
    waiting: float | None
    kv_cache_fraction: float | None
    requests_finished_raw: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None


class EndpointRow(NamedTuple):
    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: str  # comma-separated GPU UUIDs
    status: str
    error: str | None
    values: EndpointValues


class Tick(NamedTuple):
    t: float  # on the session's clock (``tokentop.history.clock``)
    gpus: tuple[GpuRow, ...]
    endpoints: tuple[EndpointRow, ...]


def prepare(snapshot: Snapshot, t: float) -> Tick:
    """The rows of one snapshot, timed ``t``."""
    return Tick(t, tuple(map(_gpu_row, snapshot.gpus)), tuple(map(_endpoint_row, snapshot.endpoints)))


def _gpu_row(fig: GpuFigures) -> GpuRow:
    s = fig.sample
    values = GpuValues(
        s.index,
        s.status,
        s.error,
        s.utilization_pct,
        s.memory_used_bytes,
        s.memory_total_bytes,
        s.power_w,
        s.power_limit_w,
        s.energy_counter_mj,
        s.temperature_c,
        s.sm_clock_mhz,
    )
    return GpuRow(s.uuid, s.name, fig.energy_method, ",".join(fig.engines), values, fig.totals, fig.usd_per_hour_now)


def _endpoint_row(fig: EndpointFigures) -> EndpointRow:
    e = fig.sample
    values = EndpointValues(
        e.prompt_tokens_total,
        e.generation_tokens_total,
        fig.tokens_in_total,
        fig.tokens_out_total,
        e.running,
        e.waiting,
        e.kv_cache_fraction,
        e.requests_finished_total,
        fig.ttft_p50_s,
        fig.ttft_p95_s,
        fig.itl_p50_s,
    )
    return EndpointRow(e.name, e.url, e.kind, e.model, ",".join(fig.gpus), e.status, e.error, values)


def cum(t: Totals) -> tuple[float, float, float, float | None, float, float | None]:
    """The ``*_cum`` columns, in table order."""
    return (t.tokens_in, t.tokens_out, t.energy_j, t.cost_usd, t.busy_s, t.busy_cost_usd)
