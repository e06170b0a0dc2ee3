"""The GPU table: one row per GPU (MIG instances as sub-rows), its columns as data."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from tokentop.model import GpuFigures, Snapshot
from tokentop.tui.columns import (
    BAD,
    BAR_CELLS,
    DEFAULT_BANDS,
    DIM,
    PLAIN,
    WARN,
    Cell,
    ColumnSpec,
    CostBands,
    figure_cell,
    is_filling,
    text_cell,
    url_port,
    window_cell,
)
from tokentop.units import (
    DASH,
    NA,
    fmt_gib,
    fmt_gpu_models,
    fmt_pct,
    fmt_power_over_limit,
    fmt_share,
    fmt_temp,
    fmt_tok_per_j,
    fmt_tok_s,
    fmt_usd,
    fmt_usd_per_mtok,
    gpu_labels,
)

# --- GPU rows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRef:
    """An engine as a GPU row names it: name, port, how many GPUs share it, its status."""

    name: str
    port: str  # ":8000", or "" when the URL has none
    gpu_count: int
    status: str  # "up" | "stale" | "error"

    def label(self, port: bool = True, share: bool = True) -> str:
        parts = [self.name, self.port if port else "", fmt_share(self.gpu_count) if share else ""]
        text = " ".join(p for p in parts if p)
        if self.status == "error":
            return f"{text} (down)"
        if self.status == "stale":
            return f"{text} (stale)"
        return text


@dataclass(frozen=True)
class GpuRow:
    gpu: GpuFigures
    engines: tuple[EngineRef, ...]
    label: str  # the model as this host's table writes it (two models never share a label)
    cost_filling: bool  # the cost window is younger than its length
    bands: CostBands  # how its $/Mtok is coloured
    reading: bool = False  # a first look: the engines are still being read

    @property
    def key(self) -> str:
        return self.gpu.sample.uuid

    @property
    def serving(self) -> bool:
        return self.reading or bool(self.gpu.engines)


def gpu_rows(snapshot: Snapshot, bands: CostBands = DEFAULT_BANDS) -> list[GpuRow]:
    servers = {s.sample.name: s for s in snapshot.endpoints}
    labels = gpu_labels(g.sample.name for g in snapshot.gpus)
    rows = []
    for gpu in snapshot.gpus:
        refs = []
        for name in gpu.engines:
            server = servers.get(name)
            if server is None:
                refs.append(EngineRef(name, "", 1, "error"))
                continue
            refs.append(EngineRef(name, url_port(server.sample.url), max(1, len(server.gpus)), server.sample.status))
        filling = is_filling(gpu.cost_window, snapshot.cost_window_s)
        rows.append(GpuRow(gpu, tuple(refs), labels[gpu.sample.name], filling, bands, snapshot.first_look))
    return rows


def gpu_summary(snapshot: Snapshot) -> str:
    """``8× NVIDIA H200``, or ``8 GPUs: 7× H200, 1× H200 NVL`` on a mixed host."""
    return fmt_gpu_models(g.sample.name for g in snapshot.gpus)


def _gpu_name_cell(row: GpuRow) -> Cell:
    status = row.gpu.sample.status
    if status == "lost":
        return text_cell("LOST", BAD)
    if status != "ok":
        return text_cell("ERROR", BAD)
    return text_cell(row.label)


@lru_cache(maxsize=1024)
def _memory(used_bytes: int | None, total_bytes: int | None) -> Cell:
    """Used over total GiB (``123/141``), with a bar of the share used where there is room."""
    if used_bytes is None:
        return Cell(NA, DIM)
    if not total_bytes:
        return Cell(fmt_gib(used_bytes))
    return Cell(f"{fmt_gib(used_bytes)}/{fmt_gib(total_bytes)}", fill=used_bytes / total_bytes)


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
        return text_cell(text + "!", WARN)  # at the limit: throttling likely
    return figure_cell(text)


def _usd_per_mtok_cell(row: GpuRow) -> Cell:
    window = row.gpu.cost_window
    value = window.usd_per_mtok
    text = fmt_usd_per_mtok(value, tokens_out=window.tokens_out, serving=row.serving, filling=row.cost_filling)
    return text_cell(text, row.bands.style(value))


def _engine_cell(row: GpuRow) -> Cell:
    if row.reading:
        return text_cell("…", DIM)  # not yet known, which "—" (no engine) would not say
    return _engines_cell(row.engines)


@lru_cache(maxsize=256)
def _engines_cell(engines: tuple[EngineRef, ...]) -> Cell:
    """The engines by name, port and share; narrower forms drop the port, then the share, but
    never the name or a (down) / (stale) mark."""
    if not engines:
        return text_cell(DASH, DIM)
    forms = [
        ", ".join(e.label(port, share) for e in engines)
        for port, share in ((True, True), (False, True), (False, False))
    ]
    statuses = {e.status for e in engines}
    style = BAD if "error" in statuses else WARN if "stale" in statuses else PLAIN
    return Cell(forms[0], style, shorter=tuple(dict.fromkeys(forms[1:])))


def _usd_per_hour(row: GpuRow) -> float | None:
    return row.gpu.usd_per_hour_now


FIRST_SORT = "index"  # the column the table is first sorted by, in its own order (ascending)

GPU_COLUMNS: tuple[ColumnSpec[GpuRow], ...] = (
    ColumnSpec(
        "index",
        "#",
        "",
        2,
        0,
        lambda r: text_cell(str(r.gpu.sample.index)),
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
        help="model (with its variant: NVL, PCIe...), or LOST / ERROR when NVML could not read it this tick",
        identity=True,
    ),
    ColumnSpec(
        "util",
        "util%",
        "now",
        5,
        6,
        lambda r: figure_cell(fmt_pct(r.gpu.sample.utilization_pct)),
        lambda r: r.gpu.sample.utilization_pct,
        help="util: NVML's utilisation, the share of time a kernel ran (not the busy share)",
    ),
    ColumnSpec(
        "mem",
        "mem GiB",
        "now",
        7,
        8,
        _memory_cell,
        lambda r: r.gpu.sample.memory_used_bytes,
        flex_max=7 + 1 + BAR_CELLS,
        help="memory used over the total, in GiB; a bar of the share used where there is room",
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
        lambda r: figure_cell(fmt_temp(r.gpu.sample.temperature_c)),
        lambda r: r.gpu.sample.temperature_c,
        help="GPU temperature",
    ),
    ColumnSpec(
        "tok_in",
        "tok/s",
        "in {rate}",
        7,
        7,
        lambda r: window_cell(fmt_tok_s(r.gpu.rate_window.tok_s_in), r.gpu.rate_window),
        lambda r: r.gpu.rate_window.tok_s_in,
        help="prompt (input) tokens per second, this GPU's share",
    ),
    ColumnSpec(
        "tok_out",
        "tok/s",
        "out {rate}",
        7,
        1,
        lambda r: window_cell(fmt_tok_s(r.gpu.rate_window.tok_s_out), r.gpu.rate_window),
        lambda r: r.gpu.rate_window.tok_s_out,
        help="generated (output) tokens per second, this GPU's share",
    ),
    ColumnSpec(
        "tok_j",
        "tok/J",
        "{cost}",
        7,
        10,
        lambda r: window_cell(fmt_tok_per_j(r.gpu.cost_window.tok_per_j), r.gpu.cost_window),
        lambda r: r.gpu.cost_window.tok_per_j,
        help="output tokens per joule of board energy",
    ),
    ColumnSpec(
        "usd_h",
        "$/h",
        "now",
        6,
        11,
        lambda r: figure_cell(fmt_usd(_usd_per_hour(r))),
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
        help="effective: all cost over the window (idle included) per million output tokens; "
        "'idle': no token in the whole window, 'warming': none yet in a window still filling, "
        "'—': the GPU serves no engine",
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
        help="the engine(s) this GPU serves: name, port, share of its tensor-parallel group "
        "(a narrow screen drops the port, then the share); '—': none",
        identity=True,
    ),
)
