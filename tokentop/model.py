"""Frozen data that crosses module boundaries.

Readings come in (``GpuReading`` from ``tokentop.nvml``, ``EndpointSample`` from
``tokentop.collectors``); ``tokentop.derive`` turns them into a ``Snapshot``; the store,
the CLI and the TUI only ever read snapshots. ``None`` always means "not known"
(unsupported, failed this tick, or not published by that server), never zero.
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, dataclass, field, fields
from types import FunctionType
from typing import Any, TypeVar

_Record = TypeVar("_Record")


def stored_by_slots(cls: type[_Record]) -> type[_Record]:
    """A frozen slots dataclass with an ``__init__`` that stores each field through its slot's
    own descriptor. The one ``dataclass`` writes calls ``object.__setattr__(self, name, value)``
    for each field, to get past the frozen ``__setattr__``: it looks the name up every time, and
    costs about twice as much. These objects are built for every GPU and endpoint every tick.
    Same signature, defaults and result; fields with a default factory are not supported."""
    names, parameters, closed = [], [], {}
    for f in fields(cls):  # type: ignore[arg-type]  # only applied to dataclasses
        if f.default_factory is not MISSING or not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain fields and defaults are supported")
        names.append(f.name)
        closed[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            parameters.append(f.name)
        else:
            closed[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"        _set_{name}(self, {name})\n" for name in names) or "        pass\n"
    scope: dict[str, Any] = {}
    signature = ", ".join(["self", *parameters])
    exec(f"def make({', '.join(closed)}):\n    def __init__({signature}):\n{body}    return __init__\n", scope)
    made = scope["make"](**closed)  # the setters and defaults in its closure, not in its globals
    # the record's module as its globals, as dataclass's own: typing.get_type_hints reads them
    module = vars(sys.modules[cls.__module__])
    init: Any = FunctionType(made.__code__, module, "__init__", made.__defaults__, made.__closure__)
    init.__module__ = cls.__module__
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


MAX_COUNT = float(2**53)
"""No count, size or time a server or a GPU means comes near it: past it a float no longer
counts by ones (``collectors.plausible`` refuses what is above it)."""


# --- GPUs (NVML) -------------------------------------------------------------


@stored_by_slots
@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    used_memory_bytes: int | None


@stored_by_slots
@dataclass(frozen=True, slots=True)
class MigSample:
    """One MIG instance of a physical GPU: memory only (NVML gives MIG no power or utilisation)."""

    uuid: str
    index: int  # the slot under its parent GPU (nvmlDeviceGetMigDeviceHandleByIndex)
    memory_used_bytes: int | None
    memory_total_bytes: int | None


@stored_by_slots
@dataclass(frozen=True, slots=True)
class GpuSample:
    """One physical GPU read once through NVML."""

    uuid: str
    index: int
    name: str
    # "ok" | "lost" (the GPU is gone) | "error" (nothing could be read this tick; retried next)
    status: str = "ok"
    error: str | None = None  # why, or on an "ok" GPU the queries that failed this tick
    utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_w: float | None = None
    power_source: str | None = None  # "average_1s" | "instant"
    power_limit_w: float | None = None
    energy_counter_mj: int | None = None  # NVML total energy since driver load
    temperature_c: float | None = None
    sm_clock_mhz: int | None = None
    # None when the process list was not read this tick (it has a slower cadence).
    processes: tuple[GpuProcess, ...] | None = None
    mig: tuple[MigSample, ...] = ()  # MIG instances, when MIG mode is enabled


@stored_by_slots
@dataclass(frozen=True, slots=True)
class GpuReading:
    """All GPUs at one instant. ``available`` is False when NVML cannot be used at all."""

    t_mono: float
    gpus: tuple[GpuSample, ...]
    available: bool = True
    reason: str | None = None  # why there is no GPU panel, when not available
    driver_version: str | None = None


# --- inference servers --------------------------------------------------------


@stored_by_slots
@dataclass(frozen=True, slots=True)
class Histogram:
    """A Prometheus histogram: cumulative ``(upper_bound, count)`` pairs, +Inf last."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float


@stored_by_slots
@dataclass(frozen=True, slots=True)
class EndpointSample:
    """One endpoint read once.

    ``*_tokens_total`` are the server's own cumulative counters (summed over data-parallel
    series, one series per tensor-parallel group). ``*_tokens_in_flight`` is the progress of
    requests still running that the counters do not include yet (llama.cpp ``/slots``); it is
    None for servers whose counters move every engine step.
    """

    name: str
    url: str
    t_mono: float
    status: str  # "up" | "stale" | "error"
    error: str | None = None
    kind: str | None = None  # "vllm", "sglang", "tgi", "llamacpp", "triton", ...
    kind_detail: str | None = None  # e.g. "V1", "via Dynamo worker", "metrics off: /slots"
    model: str | None = None
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    prompt_tokens_in_flight: float | None = None
    generation_tokens_in_flight: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_fraction: float | None = None  # 0-1
    requests_finished_total: float | None = None
    process_start_time_s: float | None = None  # the engine's own start (Unix s): restart evidence
    ttft: Histogram | None = None  # seconds
    itl: Histogram | None = None  # seconds
    note: str | None = None  # plain words for the user, e.g. "Ollama publishes no token counters"


@stored_by_slots
@dataclass(frozen=True, slots=True)
class EngineMapping:
    """Which GPUs one endpoint runs on, and how we know (``tokentop.discover`` finds it)."""

    gpus: tuple[str, ...] = ()  # UUIDs
    source: str | None = None  # "process" | "config"
    pid: int | None = None


# --- derived figures ---------------------------------------------------------


@stored_by_slots
@dataclass(frozen=True, slots=True)
class Price:
    """The hourly rate in use for one GPU and where it came from."""

    usd_per_gpu_hour: float  # hardware/rental part, without energy
    source: str  # "built-in table (on-demand, spring 2026): H200" / "config: gpu_hour_usd.H200" ...
    mode: str  # "cloud" | "owned"


def usd_per_mtok(cost_usd: float | None, tokens_out: float) -> float | None:
    """$ per million output tokens: the one place this ratio is computed. None when the cost is
    unknown or no token was delivered (idle is never infinity)."""
    if cost_usd is None or tokens_out <= 0:
        return None
    return cost_usd / tokens_out * 1e6


@stored_by_slots
@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative since the session started (monotonic; survive counter resets)."""

    tokens_in: float = 0.0
    tokens_out: float = 0.0
    energy_j: float = 0.0
    cost_usd: float | None = 0.0  # None: no price known
    busy_s: float = 0.0  # busy GPU-seconds: summed over the GPUs for the host
    busy_cost_usd: float | None = 0.0
    elapsed_s: float = 0.0
    # GPU-seconds watched, the busy share's denominator: set for the host (summed over its GPUs);
    # None for one GPU or an endpoint, watched for ``elapsed_s``.
    watched_gpu_s: float | None = None


@stored_by_slots
@dataclass(frozen=True, slots=True)
class Window:
    """Figures over a measured span that ends now. ``span_s`` is the span actually covered."""

    span_s: float
    tokens_in: float
    tokens_out: float
    energy_j: float
    cost_usd: float | None
    busy_s: float  # busy GPU-seconds: summed over the GPUs for the host
    busy_cost_usd: float | None
    watched_gpu_s: float | None = None  # GPU-seconds watched (the host's); None: ``span_s``

    @property
    def tok_s_in(self) -> float | None:
        return self.tokens_in / self.span_s if self.span_s > 0 else None

    @property
    def tok_s_out(self) -> float | None:
        return self.tokens_out / self.span_s if self.span_s > 0 else None

    @property
    def watts(self) -> float | None:
        return self.energy_j / self.span_s if self.span_s > 0 else None

    @property
    def tok_per_j(self) -> float | None:
        """Output tokens per joule of board energy (ML.ENERGY convention)."""
        return self.tokens_out / self.energy_j if self.energy_j > 0 else None

    @property
    def usd_per_hour(self) -> float | None:
        if self.cost_usd is None or self.span_s <= 0:
            return None
        return self.cost_usd / self.span_s * 3600.0

    @property
    def usd_per_mtok(self) -> float | None:
        """Effective $ per million output tokens: all cost, idle included. None when idle."""
        return usd_per_mtok(self.cost_usd, self.tokens_out)

    @property
    def busy_usd_per_mtok(self) -> float | None:
        return usd_per_mtok(self.busy_cost_usd, self.tokens_out)

    @property
    def busy_share(self) -> float | None:
        """Share of the window in which tokens flowed or requests were running (not NVML's
        GPU utilisation): busy GPU-seconds over watched GPU-seconds."""
        watched = self.span_s if self.watched_gpu_s is None else self.watched_gpu_s
        return self.busy_s / watched if watched > 0 else None

    @property
    def idle_cost_usd(self) -> float | None:
        if self.cost_usd is None or self.busy_cost_usd is None:
            return None
        return self.cost_usd - self.busy_cost_usd


@stored_by_slots
@dataclass(frozen=True, slots=True)
class GpuFigures:
    sample: GpuSample
    engines: tuple[str, ...]  # names of the endpoints whose tokens are attributed here
    price: Price | None  # None: no price for this GPU model (say so, never invent one)
    energy_method: str | None  # "counter" | "power_integral" | None (no power at all)
    usd_per_hour_now: float | None  # cost rate of the last tick
    totals: Totals
    rate_window: Window  # short window for tok/s and W (``Snapshot.rate_window_s``)
    cost_window: Window  # longer window for $/Mtok, tok/J, busy share (``Snapshot.cost_window_s``)


@stored_by_slots
@dataclass(frozen=True, slots=True)
class EndpointFigures:
    sample: EndpointSample
    gpus: tuple[str, ...]  # GPU UUIDs this endpoint runs on
    mapping: str | None  # "process" | "config" | None (not mapped to a GPU)
    pid: int | None  # the listening process, when found
    tokens_in_total: float  # delivered since the session started (resets handled)
    tokens_out_total: float
    tok_s_in: float | None  # over the rate window
    tok_s_out: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None


@stored_by_slots
@dataclass(frozen=True, slots=True)
class HostFigures:
    gpu_count: int
    power_w: float | None  # sum of the GPUs' latest readings
    usd_per_hour_now: float | None
    totals: Totals
    rate_window: Window
    cost_window: Window
    unpriced_gpus: tuple[str, ...] = ()  # UUIDs with no known price


@stored_by_slots
@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    t_wall: float  # Unix time of the reading
    t_mono: float
    dt_s: float | None  # measured time since the previous tick; None on the first
    rate_window_s: float
    cost_window_s: float
    gpu_available: bool
    gpu_reason: str | None
    gpus: tuple[GpuFigures, ...]
    endpoints: tuple[EndpointFigures, ...]
    host: HostFigures
    messages: tuple[str, ...] = field(default=())  # things the user should know this tick
    first_look: bool = False  # GPUs alone, shown while the first endpoint reads are under way; never stored
