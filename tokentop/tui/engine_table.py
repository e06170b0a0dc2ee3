"""The engine panel: one row per endpoint, describing the engine behind it; its columns as data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from tokentop.model import EndpointFigures, Snapshot
from tokentop.tui.columns import BAD, DIM, GOOD, PLAIN, WARMING_CELL, WARN, Cell, ColumnSpec, figure_cell, text_cell
from tokentop.units import (
    DASH,
    NA,
    fmt_latency,
    fmt_pct,
    fmt_tok_s,
)

# Parts of a model name that say how it was tuned or packed, not which model it is.
_FILLER_PARTS = re.compile(r"^(instruct|chat|it|hf|base)$", re.IGNORECASE)
_SIZE_PART = re.compile(r"^\d+(\.\d+)?[bm]$", re.IGNORECASE)  # 70B, 8b, 1.5B, 350M

# --- engine rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRow:
    endpoint: EndpointFigures
    gpu_indices: str  # "0-3", "4,5", "" when not mapped
    warming: bool = False  # the first tick: no rate yet

    @property
    def key(self) -> str:
        return self.endpoint.sample.name


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
    warming = snapshot.host.rate_window.span_s <= 0
    return [
        EngineRow(s, _index_list([index_of[u] for u in s.gpus if u in index_of]), warming) for s in snapshot.endpoints
    ]


def engine_status(endpoint: EndpointFigures) -> Cell:
    s = endpoint.sample
    if s.status == "error":
        return text_cell(f"error: {s.error}" if s.error else "error", BAD)
    text = "stale" if s.status == "stale" else "up"
    if s.status == "stale" and s.error:
        text += f": {s.error}"
    detail = "; ".join(x for x in (s.kind_detail, s.note) if x)
    if detail:
        text += f" · {detail}"
    return text_cell(text, WARN if s.status == "stale" else GOOD)


def model_forms(model: str | None) -> tuple[str, ...]:
    """A model's name, then shorter forms that keep what tells it apart, its size above all:
    ``Llama-3.3-70B-Instruct``, ``Llama-3.3-70B``."""
    if not model:
        return (NA,)
    name = model.rsplit("/", 1)[-1]
    parts = name.split("-")
    kept = [p for p in parts if not _FILLER_PARTS.match(p)] or parts
    forms = [name, "-".join(kept)]
    size = next((i for i, p in enumerate(kept) if _SIZE_PART.match(p)), None)
    if size is not None:
        forms.append("-".join(kept[: size + 1]))
    return tuple(dict.fromkeys(forms))


def _model_cell(row: EngineRow) -> Cell:
    return _model_cell_of(row.endpoint.sample.model)


@lru_cache(maxsize=256)
def _model_cell_of(model: str | None) -> Cell:
    full, *shorter = model_forms(model)
    return Cell(full, DIM if full == NA else PLAIN, shorter=tuple(shorter))


def _rate_cell(row: EngineRow, value: float | None) -> Cell:
    return WARMING_CELL if row.warming else figure_cell(fmt_tok_s(value))


def _count(value: float | None) -> str:
    return NA if value is None else f"{value:.0f}"


ENGINE_COLUMNS: tuple[ColumnSpec[EngineRow], ...] = (
    ColumnSpec(
        "name",
        "engine",
        "",
        10,
        0,
        lambda r: text_cell(r.endpoint.sample.name),
        lambda r: r.endpoint.sample.name,
        descending=False,
        right=False,
        flex_max=16,
        help="endpoint name",
        identity=True,
    ),
    ColumnSpec(
        "kind",
        "kind",
        "",
        6,
        9,
        lambda r: figure_cell(r.endpoint.sample.kind or NA),
        lambda r: r.endpoint.sample.kind,
        descending=False,
        right=False,
        help="endpoint software",
    ),
    ColumnSpec(
        "model",
        "model",
        "",
        12,
        1,
        _model_cell,
        lambda r: r.endpoint.sample.model,
        descending=False,
        right=False,
        flex_max=28,
        help="model served (last part of its name; a narrow screen drops words such as Instruct, never the size)",
        identity=True,
    ),
    ColumnSpec(
        "gpus",
        "GPUs",
        "",
        4,
        8,
        lambda r: text_cell(r.gpu_indices or DASH, PLAIN if r.gpu_indices else DIM),
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
        3,
        lambda r: figure_cell(_count(r.endpoint.sample.running)),
        lambda r: r.endpoint.sample.running,
        help="requests running",
    ),
    ColumnSpec(
        "waiting",
        "wait",
        "now",
        4,
        4,
        lambda r: figure_cell(_count(r.endpoint.sample.waiting)),
        lambda r: r.endpoint.sample.waiting,
        help="requests waiting in the queue",
    ),
    ColumnSpec(
        "kv",
        "KV%",
        "now",
        4,
        6,
        lambda r: figure_cell(fmt_pct(r.endpoint.sample.kv_cache_fraction, fraction=True)),
        lambda r: r.endpoint.sample.kv_cache_fraction,
        help="KV-cache in use",
    ),
    ColumnSpec(
        "ttft50",
        "TTFT",
        "p50 {cost}",
        6,
        5,
        lambda r: figure_cell(fmt_latency(r.endpoint.ttft_p50_s)),
        lambda r: r.endpoint.ttft_p50_s,
        help="time to first token, median over the window",
    ),
    ColumnSpec(
        "ttft95",
        "TTFT",
        "p95 {cost}",
        6,
        10,
        lambda r: figure_cell(fmt_latency(r.endpoint.ttft_p95_s)),
        lambda r: r.endpoint.ttft_p95_s,
        help="time to first token, 95th percentile",
    ),
    ColumnSpec(
        "itl50",
        "ITL",
        "p50 {cost}",
        6,
        7,
        lambda r: figure_cell(fmt_latency(r.endpoint.itl_p50_s)),
        lambda r: r.endpoint.itl_p50_s,
        help="inter-token latency, median",
    ),
    ColumnSpec(
        "tok_in",
        "tok/s",
        "in {rate}",
        7,
        8,
        lambda r: _rate_cell(r, r.endpoint.tok_s_in),
        lambda r: r.endpoint.tok_s_in,
        help="prompt tokens per second",
    ),
    ColumnSpec(
        "tok_out",
        "tok/s",
        "out {rate}",
        7,
        2,
        lambda r: _rate_cell(r, r.endpoint.tok_s_out),
        lambda r: r.endpoint.tok_s_out,
        help="generated tokens per second",
    ),
    ColumnSpec(
        "status",
        "status",
        "",
        8,
        0,
        lambda r: engine_status(r.endpoint),
        lambda r: r.endpoint.sample.status,
        descending=False,
        right=False,
        flex_max=60,
        help="up, stale (no fresh reading) or error with its reason; then the server's notes, "
        "such as Ollama's 'no token counters'",
    ),
)
