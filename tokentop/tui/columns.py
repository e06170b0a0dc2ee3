"""What the two tables show, as data: one ``ColumnSpec`` per column.

A spec says what its header reads (quantity and unit on the first line, window on the second),
how wide it is, how important it is when the terminal is narrow (``priority``: lower stays
longer), how to write a cell and how to sort by it. ``fit_columns`` picks the columns that fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from tokentop.model import EndpointFigures, GpuFigures, Snapshot
from tokentop.units import (
    DASH,
    NA,
    bar,
    fmt_gib,
    fmt_gpu_models,
    fmt_latency,
    fmt_pct,
    fmt_power_over_limit,
    fmt_share,
    fmt_temp,
    fmt_tok_per_j,
    fmt_tok_s,
    fmt_usd,
    fmt_usd_per_mtok,
    fmt_window,
    short_gpu_name,
)

R = TypeVar("R")

# Cell styles, resolved by the table from its component classes (so themes decide colours).
PLAIN, BAD, WARN, DIM, GOOD = "", "bad", "warn", "dim", "good"


@dataclass(frozen=True)
class Cell:
    text: str
    style: str = PLAIN
    bar: str = ""  # drawn before the text in the table's bar style (memory)


@dataclass(frozen=True)
class ColumnSpec(Generic[R]):
    key: str
    title: str  # first header line: the quantity and its unit
    window: str  # second header line: "now", or "{rate}" / "{cost}" (filled from the snapshot)
    width: int  # content cells, padding not included
    priority: int  # lower is kept longer on narrow terminals
    cell: Callable[[R], Cell]
    sort_value: Callable[[R], Any] | None = None  # None: not sortable
    descending: bool = True  # the natural order when the sort moves to this column
    right: bool = True
    flex_max: int = 0  # > 0: grows into the leftover width, up to this many cells
    help: str = ""


def fit_columns(specs: Sequence[ColumnSpec[R]], available: int, padding: int) -> list[tuple[ColumnSpec[R], int]]:
    """The columns that fit ``available`` cells, most important first, shown in spec order.

    A column that does not fit is skipped and narrower, less important ones may still be
    taken. Flexible columns then share what is left.
    """
    chosen: set[str] = set()
    used = 0
    for spec in sorted(specs, key=lambda s: s.priority):
        need = spec.width + 2 * padding
        if used + need <= available:
            chosen.add(spec.key)
            used += need
    leftover = available - used
    widths = {spec.key: spec.width for spec in specs if spec.key in chosen}
    for spec in reversed(specs):  # the last flexible column (the widest text) grows first
        if spec.key in chosen and spec.flex_max > spec.width and leftover > 0:
            extra = min(leftover, spec.flex_max - spec.width)
            widths[spec.key] += extra
            leftover -= extra
    return [(spec, widths[spec.key]) for spec in specs if spec.key in chosen]


def sort_rows(rows: Sequence[R], value: Callable[[R], Any] | None, descending: bool) -> list[R]:
    """Rows ordered by ``value``; unknown (None) values always last, whatever the direction."""
    if value is None:
        return list(rows)
    known = [r for r in rows if value(r) is not None]
    unknown = [r for r in rows if value(r) is None]
    return sorted(known, key=value, reverse=descending) + unknown


def window_labels(snapshot: Snapshot | None) -> dict[str, str]:
    """What ``{rate}`` and ``{cost}`` in column headers read as: ``10s``, ``1m``."""
    if snapshot is None:
        return {"rate": "", "cost": ""}
    return {"rate": fmt_window(snapshot.rate_window_s), "cost": fmt_window(snapshot.cost_window_s)}


def _value(text: str) -> Cell:
    """A figure: dimmed when it is N/A so that the known ones stand out."""
    return Cell(text, DIM if text == NA else PLAIN)


# --- GPU rows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRef:
    """An engine as a GPU row names it: name, port, how many GPUs share it, its status."""

    name: str
    port: str  # ":8000", or "" when the URL has none
    gpu_count: int
    status: str  # "up" | "stale" | "error"

    def label(self) -> str:
        text = f"{self.name} {self.port} {fmt_share(self.gpu_count)}".replace("  ", " ")
        if self.status == "error":
            return f"{text} (down)"
        if self.status == "stale":
            return f"{text} (stale)"
        return text


@dataclass(frozen=True)
class GpuRow:
    gpu: GpuFigures
    engines: tuple[EngineRef, ...]

    @property
    def key(self) -> str:
        return self.gpu.sample.uuid

    @property
    def serving(self) -> bool:
        return bool(self.gpu.engines)


def url_port(url: str) -> str:
    try:
        port = urlsplit(url).port
    except ValueError:
        return ""
    return f":{port}" if port else ""


def gpu_rows(snapshot: Snapshot) -> list[GpuRow]:
    servers = {s.sample.name: s for s in snapshot.endpoints}
    rows = []
    for gpu in snapshot.gpus:
        refs = []
        for name in gpu.engines:
            server = servers.get(name)
            if server is None:
                refs.append(EngineRef(name, "", 1, "error"))
                continue
            refs.append(EngineRef(name, url_port(server.sample.url), max(1, len(server.gpus)), server.sample.status))
        rows.append(GpuRow(gpu, tuple(refs)))
    return rows


def gpu_summary(snapshot: Snapshot) -> str:
    """``8× NVIDIA H200``, or ``3 GPUs: 2× H100, 1× L4`` on a mixed host."""
    return fmt_gpu_models(g.sample.name for g in snapshot.gpus)


def _gpu_name_cell(row: GpuRow) -> Cell:
    status = row.gpu.sample.status
    if status == "lost":
        return Cell("LOST", BAD)
    if status != "ok":
        return Cell("ERROR", BAD)
    return Cell(short_gpu_name(row.gpu.sample.name))


def _memory(used_bytes: int | None, total_bytes: int | None) -> Cell:
    if used_bytes is None:
        return Cell(NA, DIM)
    fraction = used_bytes / total_bytes if total_bytes else None
    return Cell(f" {fmt_gib(used_bytes):>3}", bar=bar(fraction, 5))


def _memory_cell(row: GpuRow) -> Cell:
    return _memory(row.gpu.sample.memory_used_bytes, row.gpu.sample.memory_total_bytes)


def gpu_sub_rows(row: GpuRow) -> list[tuple[str, dict[str, Cell]]]:
    """One sub-row per MIG instance, keyed by its UUID: its memory only (NVML has no MIG
    utilisation, and power, energy and tokens belong to the physical GPU)."""
    return [
        (
            mig.uuid,
            {
                "index": Cell("└", DIM),
                "gpu": Cell(f"MIG {mig.index}", DIM),
                "mem": _memory(mig.memory_used_bytes, mig.memory_total_bytes),
            },
        )
        for mig in row.gpu.sample.mig
    ]


def _power_cell(row: GpuRow) -> Cell:
    s = row.gpu.sample
    text = fmt_power_over_limit(s.power_w, s.power_limit_w)
    if s.power_w is not None and s.power_limit_w and s.power_w >= 0.97 * s.power_limit_w:
        return Cell(text + "!", WARN)  # at the limit: throttling likely
    return _value(text)


def _usd_per_mtok_cell(row: GpuRow) -> Cell:
    window = row.gpu.cost_window
    text = fmt_usd_per_mtok(window.usd_per_mtok, tokens_out=window.tokens_out, serving=row.serving)
    return Cell(text, PLAIN if window.usd_per_mtok is not None else DIM)


def _engine_cell(row: GpuRow) -> Cell:
    if not row.engines:
        return Cell(DASH, DIM)
    text = ", ".join(e.label() for e in row.engines)
    statuses = {e.status for e in row.engines}
    return Cell(text, BAD if "error" in statuses else WARN if "stale" in statuses else PLAIN)


def _usd_per_hour(row: GpuRow) -> float | None:
    return row.gpu.usd_per_hour_now


GPU_COLUMNS: tuple[ColumnSpec[GpuRow], ...] = (
    ColumnSpec(
        "index",
        "#",
        "",
        2,
        0,
        lambda r: Cell(str(r.gpu.sample.index)),
        lambda r: r.gpu.sample.index,
        descending=False,
        help="NVML index of the GPU",
    ),
    ColumnSpec(
        "gpu",
        "GPU",
        "",
        6,
        3,
        _gpu_name_cell,
        lambda r: (r.gpu.sample.status, r.gpu.sample.name),
        descending=False,
        right=False,
        flex_max=14,
        help="model, or LOST / ERROR when NVML could not read it this tick",
    ),
    ColumnSpec(
        "util",
        "util%",
        "now",
        5,
        6,
        lambda r: _value(fmt_pct(r.gpu.sample.utilization_pct)),
        lambda r: r.gpu.sample.utilization_pct,
        help="NVML utilisation: share of time a kernel ran",
    ),
    ColumnSpec(
        "mem",
        "mem GiB",
        "now",
        9,
        8,
        _memory_cell,
        lambda r: r.gpu.sample.memory_used_bytes,
        right=False,
        help="memory used, as a bar of the total and in GiB",
    ),
    ColumnSpec(
        "power",
        "W/limit",
        "now",
        8,
        4,
        _power_cell,
        lambda r: r.gpu.sample.power_w,
        help="board power over the enforced power limit; '!' at 97 % of the limit or more",
    ),
    ColumnSpec(
        "temp",
        "°C",
        "now",
        3,
        9,
        lambda r: _value(fmt_temp(r.gpu.sample.temperature_c)),
        lambda r: r.gpu.sample.temperature_c,
        help="GPU temperature",
    ),
    ColumnSpec(
        "tok_in",
        "tok/s",
        "in {rate}",
        6,
        7,
        lambda r: _value(fmt_tok_s(r.gpu.rate_window.tok_s_in)),
        lambda r: r.gpu.rate_window.tok_s_in,
        help="prompt (input) tokens per second, this GPU's share",
    ),
    ColumnSpec(
        "tok_out",
        "tok/s",
        "out {rate}",
        7,
        1,
        lambda r: _value(fmt_tok_s(r.gpu.rate_window.tok_s_out)),
        lambda r: r.gpu.rate_window.tok_s_out,
        help="generated (output) tokens per second, this GPU's share",
    ),
    ColumnSpec(
        "tok_j",
        "tok/J",
        "{cost}",
        5,
        10,
        lambda r: _value(fmt_tok_per_j(r.gpu.cost_window.tok_per_j)),
        lambda r: r.gpu.cost_window.tok_per_j,
        help="output tokens per joule of board energy",
    ),
    ColumnSpec(
        "usd_h",
        "$/h",
        "now",
        6,
        11,
        lambda r: _value(fmt_usd(_usd_per_hour(r))),
        _usd_per_hour,
        help="what this GPU costs per hour at the last reading (rate + electricity)",
    ),
    ColumnSpec(
        "usd_mtok",
        "$/Mtok",
        "{cost}",
        7,
        2,
        _usd_per_mtok_cell,
        lambda r: r.gpu.cost_window.usd_per_mtok,
        help="all cost over the window (idle included) per million output tokens; "
        "'idle': no tokens in the window, '—': serves no engine",
    ),
    ColumnSpec(
        "engine",
        "engine",
        "port share",
        10,
        5,
        _engine_cell,
        lambda r: ",".join(e.name for e in r.engines) or None,
        descending=False,
        right=False,
        flex_max=40,
        help="the engine(s) this GPU serves: name, port, share of its tensor-parallel group",
    ),
)


# --- engine rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRow:
    server: EndpointFigures
    gpu_indices: str  # "0-3", "4,5", "" when not mapped

    @property
    def key(self) -> str:
        return self.server.sample.name


def _index_list(indices: list[int]) -> str:
    """``[0, 1, 2, 3]`` -> ``0-3``; ``[4, 6]`` -> ``4,6``."""
    if not indices:
        return ""
    indices = sorted(indices)
    if len(indices) > 2 and indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}"
    return ",".join(str(i) for i in indices)


def engine_rows(snapshot: Snapshot) -> list[EngineRow]:
    index_of = {g.sample.uuid: g.sample.index for g in snapshot.gpus}
    return [EngineRow(s, _index_list([index_of[u] for u in s.gpus if u in index_of])) for s in snapshot.endpoints]


def engine_status(server: EndpointFigures) -> Cell:
    s = server.sample
    if s.status == "error":
        return Cell(f"error: {s.error}" if s.error else "error", BAD)
    text = "stale" if s.status == "stale" else "up"
    if s.status == "stale" and s.error:
        text += f": {s.error}"
    detail = "; ".join(x for x in (s.kind_detail, s.note) if x)
    if detail:
        text += f" · {detail}"
    return Cell(text, WARN if s.status == "stale" else GOOD)


def _model_name(server: EndpointFigures) -> str:
    model = server.sample.model
    return model.rsplit("/", 1)[-1] if model else NA


def _count(value: float | None) -> str:
    return NA if value is None else f"{value:.0f}"


ENGINE_COLUMNS: tuple[ColumnSpec[EngineRow], ...] = (
    ColumnSpec(
        "name",
        "engine",
        "",
        10,
        0,
        lambda r: Cell(r.server.sample.name),
        lambda r: r.server.sample.name,
        descending=False,
        right=False,
        flex_max=16,
        help="endpoint name",
    ),
    ColumnSpec(
        "kind",
        "kind",
        "",
        6,
        8,
        lambda r: _value(r.server.sample.kind or NA),
        lambda r: r.server.sample.kind,
        descending=False,
        right=False,
        help="server software",
    ),
    ColumnSpec(
        "model",
        "model",
        "",
        12,
        10,
        lambda r: _value(_model_name(r.server)),
        lambda r: r.server.sample.model,
        descending=False,
        right=False,
        flex_max=28,
        help="model served (last part of its name)",
    ),
    ColumnSpec(
        "gpus",
        "GPUs",
        "",
        4,
        7,
        lambda r: Cell(r.gpu_indices or DASH, PLAIN if r.gpu_indices else DIM),
        lambda r: r.gpu_indices or None,
        descending=False,
        right=False,
        help="NVML indices of the GPUs it runs on",
    ),
    ColumnSpec(
        "running",
        "run",
        "now",
        4,
        2,
        lambda r: _value(_count(r.server.sample.running)),
        lambda r: r.server.sample.running,
        help="requests running",
    ),
    ColumnSpec(
        "waiting",
        "wait",
        "now",
        4,
        3,
        lambda r: _value(_count(r.server.sample.waiting)),
        lambda r: r.server.sample.waiting,
        help="requests waiting in the queue",
    ),
    ColumnSpec(
        "kv",
        "KV%",
        "now",
        4,
        5,
        lambda r: _value(fmt_pct(r.server.sample.kv_cache_fraction, fraction=True)),
        lambda r: r.server.sample.kv_cache_fraction,
        help="KV-cache in use",
    ),
    ColumnSpec(
        "ttft50",
        "TTFT",
        "p50 {cost}",
        6,
        4,
        lambda r: _value(fmt_latency(r.server.ttft_p50_s)),
        lambda r: r.server.ttft_p50_s,
        help="time to first token, median over the window",
    ),
    ColumnSpec(
        "ttft95",
        "TTFT",
        "p95 {cost}",
        6,
        9,
        lambda r: _value(fmt_latency(r.server.ttft_p95_s)),
        lambda r: r.server.ttft_p95_s,
        help="time to first token, 95th percentile",
    ),
    ColumnSpec(
        "itl50",
        "ITL",
        "p50 {cost}",
        6,
        6,
        lambda r: _value(fmt_latency(r.server.itl_p50_s)),
        lambda r: r.server.itl_p50_s,
        help="inter-token latency, median",
    ),
    ColumnSpec(
        "tok_in",
        "tok/s",
        "in {rate}",
        6,
        7,
        lambda r: _value(fmt_tok_s(r.server.tok_s_in)),
        lambda r: r.server.tok_s_in,
        help="prompt tokens per second",
    ),
    ColumnSpec(
        "tok_out",
        "tok/s",
        "out {rate}",
        7,
        1,
        lambda r: _value(fmt_tok_s(r.server.tok_s_out)),
        lambda r: r.server.tok_s_out,
        help="generated tokens per second",
    ),
    ColumnSpec(
        "status",
        "status",
        "",
        8,
        0,
        lambda r: engine_status(r.server),
        lambda r: r.server.sample.status,
        descending=False,
        right=False,
        flex_max=60,
        help="up / stale (no fresh reading) / error with its reason; notes such as Ollama's",
    ),
)
