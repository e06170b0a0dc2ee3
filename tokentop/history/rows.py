"""A snapshot as the rows it becomes: small, and all a tick waiting in the writer's queue keeps
in memory."""

from __future__ import annotations

from typing import Any, NamedTuple

from tokentop.history.states import memory_columns, power_column
from tokentop.model import EndpointFigures, GpuFigures, Snapshot, Totals


class GpuRow(NamedTuple):
    """A GPU's reading of one tick as its ``gpu_ticks`` row and its state's (``gpu_states``)
    columns, the strings its ids stand for, and what its rollup adds up."""

    uuid: str
    name: str
    energy_method: str | None
    engines: str  # comma-separated endpoint names
    state: tuple[Any, ...]  # gpu_index, status, error, mem_total_bytes, mem_used_unit, power_limit_w
    columns: tuple[Any, ...]  # util_pct .. busy_cost_usd_cum as stored (``gpu_ticks``, after state_id)
    usd_per_hour: float | None
    totals: Totals
    power_w: float | None
    util_pct: float | None


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
    t = fig.totals
    mem_used, unit = memory_columns(s.memory_used_bytes)
    power = s.power_w
    # fmt: off
    columns = (
        s.utilization_pct, mem_used, power_column(power), s.energy_counter_mj, s.temperature_c, s.sm_clock_mhz,
        t.tokens_in, t.tokens_out, t.energy_j, t.cost_usd, t.busy_s, t.busy_cost_usd,
    )
    # fmt: on
    state = (s.index, s.status, s.error, s.memory_total_bytes, unit, s.power_limit_w)
    engines = ",".join(fig.engines)
    return GpuRow(
        s.uuid, s.name, fig.energy_method, engines, state, columns, fig.usd_per_hour_now, t, power, s.utilization_pct
    )


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
