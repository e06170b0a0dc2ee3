"""What a session summary holds: numbers only, as the history gave them.

``tokentop.report.compute`` fills these from the history; ``markdown`` and ``tables`` (JSON,
CSV) write them. Nothing here formats a figure or queries the store. Notes are data too: what
happened and the numbers it concerns; ``tokentop.report.notes`` words them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokentop.config import ApiPrice
from tokentop.history import SessionInfo


@dataclass(frozen=True)
class Figures:
    """One GPU's figures, or the host's (sums over its GPUs), over the summarised range."""

    duration_s: float
    tokens_in: float
    tokens_out: float
    tok_s_in_mean: float | None
    tok_s_in_p50: float | None
    tok_s_in_p95: float | None
    tok_s_in_peak: float | None
    tok_s_out_mean: float | None
    tok_s_out_p50: float | None
    tok_s_out_p95: float | None
    tok_s_out_peak: float | None
    energy_kwh: float | None  # None: never measured (no power reading and no energy counter)
    power_w_mean: float | None
    power_w_peak: float | None
    tok_per_j: float | None
    j_per_tok_out: float | None
    cost_usd: float | None
    usd_per_hour_mean: float | None
    usd_per_mtok: float | None
    busy_usd_per_mtok: float | None
    busy_s: float
    busy_pct: float | None  # busy seconds over watched seconds (not NVML's GPU utilisation)
    idle_usd: float | None


@dataclass(frozen=True)
class GpuSummary:
    index: int | None
    uuid: str
    name: str
    engines: tuple[str, ...]  # the engines running on this GPU, by their endpoints' names
    energy_method: str | None  # "counter" | "power_integral" | "mixed" | None (never measured)
    energy_integrated_ticks: int  # ticks whose energy came from power readings
    energy_unmeasured_ticks: int  # ticks with neither counter nor power (counted as 0 J)
    price_usd_per_gpu_hour: float | None
    price_source: str | None
    figures: Figures


@dataclass(frozen=True)
class EndpointSummary:
    """One endpoint's own totals (its tokens counted once, however many GPUs it spans)."""

    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: tuple[str, ...]  # UUIDs
    gpu_indices: tuple[int | None, ...]
    duration_s: float
    tokens_in: float
    tokens_out: float
    tok_s_in_mean: float | None
    tok_s_out_mean: float | None
    requests_completed: float | None
    ttft_p50_s_mean: float | None
    ttft_p95_s_mean: float | None
    itl_p50_s_mean: float | None


@dataclass(frozen=True)
class ApiComparison:
    name: str
    date: str
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    api_cost_usd: float
    measured_cost_usd: float | None
    saved_usd: float | None  # API cost minus measured cost; negative: the API was cheaper


@dataclass(frozen=True)
class PriceInUse:
    usd_per_gpu_hour: float
    source: str
    gpu_indices: tuple[int | None, ...]


@dataclass(frozen=True)
class CostInputs:
    recorded: bool  # False: the session's stored settings hold no usable cost section
    mode: str | None
    electricity_usd_per_kwh: float | None
    pue: float | None
    node_overhead: float | None
    energy_in_rate: bool | None
    energy_charged: bool | None
    prices: tuple[PriceInUse, ...]
    api_prices: tuple[ApiPrice, ...]


NOT_RECORDED = CostInputs(False, None, None, None, None, None, None, (), ())


# --- notes: what the reader of a summary should know ----------------------------------------


@dataclass(frozen=True)
class SessionStillOpen:
    """The session has no end: still recording, or it ended without closing."""

    figures_until: float  # Unix time of the last reading summarised


@dataclass(frozen=True)
class RollupWindows:
    """Per-tick rows are gone for part of the range: windows are whole minutes of rollups."""

    kept_totals: bool = False  # the energy method and endpoints come from the kept totals


@dataclass(frozen=True)
class KeptTotals:
    """Per-tick rows no longer reach a whole session's start: its energy method, engines and
    endpoint figures are the totals the history keeps for the session (``report.kept``)."""


@dataclass(frozen=True)
class FewWindows:
    """The range holds fewer than three fixed windows: no p50 or p95, only the peak (none at
    all without a window)."""

    length_s: float
    count: int


@dataclass(frozen=True)
class NoGpu:
    """No GPU was read in the session (no driver, or none visible): the summary is the
    endpoints' own figures; energy, cost and $/Mtok are not known."""


@dataclass(frozen=True)
class EndpointUnmapped:
    """An endpoint on no known GPU: its tokens are in no GPU's or the host's figures."""

    name: str


@dataclass(frozen=True)
class GpuWithoutReadings:
    index: int | None
    uuid: str


@dataclass(frozen=True)
class GpusUnpriced:
    count: int


@dataclass(frozen=True)
class GpusWithoutEnergy:
    """GPUs whose energy was never measured in the range: theirs and the host's are unknown."""

    indices: tuple[int | None, ...]
    energy_charged: bool  # their cost is then missing its energy part


Note = (
    SessionStillOpen
    | RollupWindows
    | KeptTotals
    | FewWindows
    | NoGpu
    | EndpointUnmapped
    | GpuWithoutReadings
    | GpusUnpriced
    | GpusWithoutEnergy
)


@dataclass(frozen=True)
class SessionSummary:
    db_path: str
    session: SessionInfo
    since: float
    until: float
    whole_session: bool
    windows_length_s: float
    windows_source: str  # "raw" (per-tick rows) | "rollup_1m"
    windows_count: int | None  # the host's windows in the range; None: no GPU has readings
    endpoint_step_s: float  # endpoints' rows read this far apart (their latencies are averaged)
    cost_inputs: CostInputs
    host: Figures | None  # None: no GPU has data in the range
    unpriced_gpus: tuple[str, ...]
    gpus: tuple[GpuSummary, ...]
    endpoints: tuple[EndpointSummary, ...]
    api: tuple[ApiComparison, ...]
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class SessionListing:
    """One line of ``tokentop summary --list``."""

    id: int
    host: str
    tokentop_version: str
    started_at: float
    ended_at: float | None
    first_reading: float | None
    last_reading: float | None
    gpu_count: int
    origin: str | None  # the command that recorded it; None: not known (an older file)
    simulated: bool
