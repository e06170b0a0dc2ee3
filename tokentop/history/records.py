"""What the queries return: frozen records, one per session, GPU, chart point or track."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SessionInfo:
    id: int
    started_at: float
    ended_at: float | None  # None: still running, or the process died
    host: str
    tokentop_version: str
    config: dict[str, Any]
    origin: str | None = None  # the command that opened it (``schema.ORIGINS``); None: not known
    simulated: bool = False  # a --demo host: not real readings


@dataclass(frozen=True)
class GpuInfo:
    uuid: str
    name: str
    index: int | None  # NVML index in the latest raw row; None once raw rows are gone


@dataclass(frozen=True)
class SeriesPoint:
    """One chart bucket ``[t, t + step)``; ``None`` where no rows fell in it."""

    t: float
    tok_s_in: float | None
    tok_s_out: float | None
    watts: float | None
    usd_per_mtok: float | None  # None also when no tokens flowed (idle) or a GPU has no price


@dataclass(frozen=True)
class GpuTrack:
    """One GPU's cumulative figures at a series of ticks, column by column (tens of thousands
    of points cost no more than a few tuples). ``energy_method`` is that of each tick's own
    interval; ``energy_counter_mj`` the raw NVML counter (None where it was not read)."""

    uuid: str
    t: tuple[float, ...]
    tokens_in_cum: tuple[float, ...]
    tokens_out_cum: tuple[float, ...]
    energy_j_cum: tuple[float, ...]
    energy_counter_mj: tuple[int | None, ...]
    energy_method: tuple[str | None, ...]


@dataclass(frozen=True)
class GpuMinutes:
    """One GPU's 1-minute rollups: what each minute delivered and the seconds it covered."""

    uuid: str
    minute: tuple[int, ...]
    covered_s: tuple[float, ...]
    tokens_in_delta: tuple[float, ...]
    tokens_out_delta: tuple[float, ...]
    energy_j_delta: tuple[float, ...]


@dataclass(frozen=True)
class EndpointTrack:
    """One endpoint's rows at a series of ticks, column by column. ``kind``, ``model`` and
    ``gpus`` are those of its last row in the track."""

    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: tuple[str, ...]
    t: tuple[float, ...]
    status: tuple[str, ...]
    tokens_in_cum: tuple[float, ...]
    tokens_out_cum: tuple[float, ...]
    prompt_tokens_raw: tuple[float | None, ...]
    generation_tokens_raw: tuple[float | None, ...]
    requests_finished_raw: tuple[float | None, ...]
    ttft_p50_s: tuple[float | None, ...]
    ttft_p95_s: tuple[float | None, ...]
    itl_p50_s: tuple[float | None, ...]


@dataclass(frozen=True)
class GpuSessionTotals:
    """One GPU over its whole session, as the session's totals keep it (retention deletes them
    only with the session): the times of its first and latest rows, its ticks after the first by
    how their energy was measured, and whether its per-tick rows still reach back to the first.
    The latest row is that of the last refresh (every minute and at close)."""

    uuid: str
    t_first: float
    t_last: float
    counter_ticks: int
    integrated_ticks: int
    unmeasured_ticks: int  # neither the counter nor a power reading
    raw_from_first: bool


@dataclass(frozen=True)
class EndpointSessionTotals:
    """One endpoint over its whole session, as the session's totals keep it: its tokens between
    its first and latest rows, the requests it completed (tick by tick, a restart counting from
    zero; None: no such counter), its latencies' means over its rows after the first, and
    whether its per-tick rows still reach back to the first. ``kind``, ``model`` and ``gpus``
    are the latest known."""

    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: tuple[str, ...]
    t_first: float
    t_last: float
    tokens_in: float
    tokens_out: float
    requests_completed: float | None
    ttft_p50_s_mean: float | None
    ttft_p95_s_mean: float | None
    itl_p50_s_mean: float | None
    raw_from_first: bool
