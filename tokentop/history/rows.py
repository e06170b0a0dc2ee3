"""A snapshot as the rows it becomes: small, and all a tick waiting in the writer's queue keeps
in memory.

Each row carries a ``key``: the strings and state values its ids stand for, as read. The writer
finds a key's ids (the GPU's or endpoint's, its state's) with one dict lookup per row and tick;
a key it has not seen is resolved once through the tables (``ticks.TickRows``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tokentop.history.states import memory_columns, power_column
from tokentop.model import EndpointFigures, GpuFigures, Snapshot, Totals

# A GPU's reading of one tick, ``(key, columns, usd_per_hour, totals, power_w)``: a plain tuple,
# made and taken apart for every GPU every second (a NamedTuple's constructor and its fields
# cost several times more). ``key``: uuid, name, then its state (``gpu_states``) as read:
# gpu_index, status, error, mem_total_bytes, mem_used_unit, power_limit_w, the engines' names
# (a tuple), the energy method, and whether it is unpriced (a state's NULL rate means "unpriced"
# only for those). ``columns``: util_pct .. busy_cost_usd_cum as stored (``gpu_ticks``, after
# state_id).
GpuRow = tuple[tuple[Any, ...], tuple[Any, ...], float | None, Totals, float | None]
GPU_KEY_STATE = slice(2, 8)  # the key's state columns stored as they are
GPU_KEY_INDEX, GPU_KEY_ENGINES, GPU_KEY_METHOD = 2, 8, 9

# An endpoint's reading of one tick, ``(key, values)``. ``key``: name, url, then its state as
# read: status, error, kind, model and the GPUs' UUIDs (a tuple). ``values``: the
# ``endpoint_ticks`` columns prompt_tokens_raw .. itl_p50_s.
EndpointRow = tuple[tuple[Any, ...], tuple[Any, ...]]
ENDPOINT_KEY_STATUS = 2
VALUE_TOKENS_IN, VALUE_TOKENS_OUT, VALUE_RUNNING, VALUE_WAITING, VALUE_KV = 2, 3, 4, 5, 6


class Tick(NamedTuple):
    seq: int  # the snapshot's
    t: float  # on the session's clock (``tokentop.history.clock``)
    gpus: tuple[GpuRow, ...]
    endpoints: tuple[EndpointRow, ...]


def prepare(snapshot: Snapshot, t: float) -> Tick:
    """The rows of one snapshot, timed ``t``."""
    return Tick(snapshot.seq, t, tuple(map(_gpu_row, snapshot.gpus)), tuple(map(_endpoint_row, snapshot.endpoints)))


def _gpu_row(fig: GpuFigures) -> GpuRow:
    s = fig.sample
    t = fig.totals
    mem_used, unit = memory_columns(s.memory_used_bytes)
    power = s.power_w
    usd_per_hour = fig.usd_per_hour_now
    # fmt: off
    key = (
        s.uuid, s.name, s.index, s.status, s.error, s.memory_total_bytes, unit, s.power_limit_w, fig.engines,
        fig.energy_method, usd_per_hour is None,
    )
    columns = (
        s.utilization_pct, mem_used, power_column(power), s.energy_counter_mj, s.temperature_c, s.sm_clock_mhz,
        t.tokens_in, t.tokens_out, t.energy_j, t.cost_usd, t.busy_s, t.busy_cost_usd,
    )
    # fmt: on
    return key, columns, usd_per_hour, t, power


def _endpoint_row(fig: EndpointFigures) -> EndpointRow:
    e = fig.sample
    values = (
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
    return (e.name, e.url, e.status, e.error, e.kind, e.model, fig.gpus), values


def cum(t: Totals) -> tuple[float, float, float, float | None, float, float | None]:
    """The ``*_cum`` columns, in table order."""
    return (t.tokens_in, t.tokens_out, t.energy_j, t.cost_usd, t.busy_s, t.busy_cost_usd)
