"""A session summary for people: Markdown, every figure written by ``tokentop.units`` (the
same words and styles as the live view: ``N/A`` for unknown, ``idle``, ``1h02m``). Every table
cell goes through ``tokentop.text.markdown_cell``: a name holding ``|`` cannot add a column."""

from __future__ import annotations

from typing import NamedTuple

from tokentop.report.figures import (
    ApiComparison,
    CostInputs,
    EndpointSummary,
    Figures,
    GpuSummary,
    SessionListing,
    SessionSummary,
)
from tokentop.report.notes import note_text
from tokentop.text import markdown_cell
from tokentop.units import (
    DASH,
    NA,
    fmt_count,
    fmt_duration,
    fmt_gpu_models,
    fmt_kwh,
    fmt_latency,
    fmt_local_time,
    fmt_pct,
    fmt_sig,
    fmt_usd,
    fmt_usd_per_mtok,
    fmt_window,
    gpu_labels,
)


class _Row(NamedTuple):
    """One line of the GPU tables: a GPU, or the host (``gpu`` None)."""

    label: str
    engines: str
    figures: Figures
    serving: bool  # some endpoint's tokens are attributed here
    gpu: GpuSummary | None


def render_markdown(summary: SessionSummary) -> str:
    rows = _rows(summary)
    out = _head(summary)
    if rows:
        out += _section("Tokens", _tokens_table(rows))
        out += _section("Energy and cost", _energy_cost_table(rows))
    if summary.endpoints:
        out += _section("Endpoints", _endpoints_table(summary.endpoints))
        out += [
            "",
            "TTFT and ITL: mean of the engines' rolling 1-minute percentiles, read every "
            f"{fmt_window(summary.endpoint_step_s)}.",
        ]
    if summary.api:
        out += _section("The same tokens through an API", _api_table(summary.api))
    if summary.gpus:  # without a GPU there is no cost to explain
        out += _section("Cost inputs", _cost_inputs(summary.cost_inputs))
    if summary.notes:
        out += _section("Notes", [f"- {note_text(note)}" for note in summary.notes])
    return "\n".join(out) + "\n"


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", f"## {title}", "", *lines]


def _head(summary: SessionSummary) -> list[str]:
    s = summary.session
    source = "the per-tick rows" if summary.windows_source == "raw" else "the 1-minute rollups"
    status = "closed" if s.ended_at is not None else "still open"
    whole = ", the whole session" if summary.whole_session else ""
    simulated = "; **simulated host (--demo): not real readings**" if s.simulated else ""
    return [
        title(summary),
        "",
        f"- Range: {fmt_local_time(summary.since)} to {fmt_local_time(summary.until)} "
        f"({fmt_duration(summary.until - summary.since)}){whole}",
        f"- Session: {_recorded_by(s.origin, simulated=False) + ', ' if s.origin else ''}started "
        f"{fmt_local_time(s.started_at)}, {status}; recorded with tokentop {s.tokentop_version}; history "
        f"{summary.db_path}{simulated}",
        f"- p50, p95 and peak: over {fmt_window(summary.windows_length_s)} windows of {source} (a "
        "remainder under half a window joins its neighbour). $/Mtok: cost per million output tokens, "
        "idle time included (effective) or busy seconds only (busy).",
    ]


def title(summary: SessionSummary) -> str:
    """``# tokentop session 3 on host (8× NVIDIA H200)``, with ``simulated`` for a demo host."""
    s = summary.session
    simulated = ", simulated" if s.simulated else ""
    return f"# tokentop session {s.id} on {s.host} ({fmt_gpu_models(g.name for g in summary.gpus)}){simulated}"


ORIGIN_WORDS = {
    "live": "the live view",
    "record": "tokentop record",
    "export": "tokentop export",
    "snapshot": "tokentop snapshot --record",
}


def _recorded_by(origin: str | None, *, simulated: bool) -> str:
    """``tokentop record``, ``the live view (simulated)``; ``?`` where an older file did not say."""
    words = ORIGIN_WORDS.get(origin or "", "?")
    return f"{words} (simulated)" if simulated else words


def gpu_label(g: GpuSummary, labels: dict[str, str]) -> str:
    """``0 H200``: the NVML index and the model as the screen names it (``labels``, from
    ``tokentop.units.gpu_labels``: two models never share a label)."""
    return f"{'?' if g.index is None else g.index} {labels.get(g.name, g.name)}"


def gpu_engines(g: GpuSummary) -> str:
    """The endpoints whose engines run on the GPU; ``—`` for a GPU that serves none."""
    return ", ".join(g.engines) or DASH


def _rows(summary: SessionSummary) -> list[_Row]:
    labels = gpu_labels(g.name for g in summary.gpus)
    rows = [_Row(gpu_label(g, labels), gpu_engines(g), g.figures, bool(g.engines), g) for g in summary.gpus]
    if summary.host is not None:
        serving = any(g.engines for g in summary.gpus)
        rows.append(_Row("**host**", f"{len(summary.gpus)} GPUs", summary.host, serving, None))
    return rows


def _table(header: list[str], rows: list[list[str]], text_columns: int = 2) -> list[str]:
    """A Markdown table; columns after the first ``text_columns`` hold numbers (right-aligned)."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in rows]
    return lines


_TOKENS_HEADER = [
    "GPU",
    "engines",
    "tokens in",
    "tokens out",
    "tok/s in mean",
    "in p50",
    "in p95",
    "in peak",
    "tok/s out mean",
    "out p50",
    "out p95",
    "out peak",
]


def _tokens_table(rows: list[_Row]) -> list[str]:
    return _table(_TOKENS_HEADER, [_tokens_cells(row.label, row.engines, row.figures) for row in rows])


def _tokens_cells(label: str, engines: str, f: Figures) -> list[str]:
    return [
        label,
        engines,
        fmt_count(f.tokens_in),
        fmt_count(f.tokens_out),
        fmt_sig(f.tok_s_in_mean),
        _percentile(f.tok_s_in_p50, f.tok_s_in_peak),
        _percentile(f.tok_s_in_p95, f.tok_s_in_peak),
        fmt_sig(f.tok_s_in_peak),
        fmt_sig(f.tok_s_out_mean),
        _percentile(f.tok_s_out_p50, f.tok_s_out_peak),
        _percentile(f.tok_s_out_p95, f.tok_s_out_peak),
        fmt_sig(f.tok_s_out_peak),
    ]


def _percentile(value: float | None, peak: float | None) -> str:
    """A percentile, or ``—`` where there were windows but too few for one (a note says so)."""
    return DASH if value is None and peak is not None else fmt_sig(value)


_ENERGY_COST_HEADER = [
    "GPU",
    "energy measured by",
    "energy kWh",
    "W mean",
    "W peak",
    "tok/J",
    "J/tok out",
    "cost",
    "$/hour",
    "$/Mtok",
    "busy $/Mtok",
    "busy",
    "idle $",
]


def _energy_cost_table(rows: list[_Row]) -> list[str]:
    return _table(_ENERGY_COST_HEADER, [_energy_cost_cells(row) for row in rows])


def _energy_cost_cells(row: _Row) -> list[str]:
    f = row.figures
    return [
        row.label,
        _method(row.gpu) if row.gpu is not None else "sum of GPUs",
        fmt_kwh(f.energy_kwh),
        fmt_sig(f.power_w_mean),
        fmt_sig(f.power_w_peak),
        fmt_sig(f.tok_per_j),
        fmt_sig(f.j_per_tok_out),
        fmt_usd(f.cost_usd),
        fmt_usd(f.usd_per_hour_mean),
        fmt_usd_per_mtok(f.usd_per_mtok, tokens_out=f.tokens_out, serving=row.serving),
        fmt_usd_per_mtok(f.busy_usd_per_mtok, tokens_out=f.tokens_out, serving=row.serving),
        fmt_pct(f.busy_pct),
        fmt_usd(f.idle_usd),
    ]


def _method(g: GpuSummary) -> str:
    """How the GPU's energy was measured, with the ticks measured otherwise."""
    if g.energy_method is None:
        return "no power reading"
    text = {"counter": "counter", "power_integral": "power integrated", "mixed": "counter"}[g.energy_method]
    if g.energy_method == "mixed":
        text += f"; {fmt_count(g.energy_integrated_ticks)} tick(s) power integrated"
    if g.energy_unmeasured_ticks:
        text += f"; {fmt_count(g.energy_unmeasured_ticks)} tick(s) unmeasured"
    return text


_ENDPOINTS_HEADER = [
    "endpoint",
    "kind",
    "model",
    "GPUs",
    "tokens in",
    "tokens out",
    "tok/s out",
    "requests",
    "TTFT p50",
    "TTFT p95",
    "ITL p50",
]


def _endpoints_table(endpoints: tuple[EndpointSummary, ...]) -> list[str]:
    return _table(_ENDPOINTS_HEADER, [_endpoint_cells(e) for e in endpoints], text_columns=4)


def _endpoint_cells(e: EndpointSummary) -> list[str]:
    return [
        e.name,
        e.kind or NA,
        e.model or NA,
        _indices(e.gpu_indices) or "not mapped",
        fmt_count(e.tokens_in),
        fmt_count(e.tokens_out),
        fmt_sig(e.tok_s_out_mean),
        fmt_count(e.requests_completed),
        fmt_latency(e.ttft_p50_s_mean),
        fmt_latency(e.ttft_p95_s_mean),
        fmt_latency(e.itl_p50_s_mean),
    ]


def _indices(indices: tuple[int | None, ...], sep: str = ",") -> str:
    return sep.join("?" if i is None else str(i) for i in indices)


def _api_table(api: tuple[ApiComparison, ...]) -> list[str]:
    header = ["API", "price date", "$/M in", "$/M out", "API cost", "measured cost", "saved"]
    rows = [
        [
            a.name,
            a.date or NA,
            fmt_usd(a.usd_per_mtok_in),
            fmt_usd(a.usd_per_mtok_out),
            fmt_usd(a.api_cost_usd),
            fmt_usd(a.measured_cost_usd),
            fmt_usd(a.saved_usd),
        ]
        for a in api
    ]
    return _table(header, rows)


def _cost_inputs(c: CostInputs) -> list[str]:
    if not c.recorded:
        return ["- not recorded with this session; cost figures are those stored per tick"]
    energy = (
        "energy charged on top: board energy x node overhead x PUE x tariff"
        if c.energy_charged
        else "energy included in the hourly rate (shown, not added)"
    )
    lines = [
        f"- mode {c.mode}; electricity {fmt_usd(c.electricity_usd_per_kwh)}/kWh; PUE "
        f"{fmt_sig(c.pue)}; node overhead {fmt_sig(c.node_overhead)}; {energy}"
    ]
    lines += [
        f"- {fmt_usd(p.usd_per_gpu_hour)} per GPU-hour for GPU {_indices(p.gpu_indices, ', ')}: {p.source}"
        for p in c.prices
    ]
    lines += [
        f"- API {p.name}: {fmt_usd(p.usd_per_mtok_in)}/M in, "
        f"{fmt_usd(p.usd_per_mtok_out)}/M out ({p.date or 'no date given'})"
        for p in c.api_prices
    ]
    return lines


def session_list_markdown(listings: list[SessionListing]) -> str:
    header = ["session", "recorded by", "host", "started", "ended", "readings span", "GPUs", "tokentop"]
    rows = [
        [
            str(item.id),
            _recorded_by(item.origin, simulated=item.simulated),
            item.host,
            fmt_local_time(item.started_at),
            "open" if item.ended_at is None else fmt_local_time(item.ended_at),
            _readings_span(item),
            str(item.gpu_count),
            item.tokentop_version,
        ]
        for item in listings
    ]
    return "\n".join(_table(header, rows, text_columns=6)) + "\n"


def _readings_span(item: SessionListing) -> str:
    if item.first_reading is None or item.last_reading is None:
        return "no readings"
    return fmt_duration(item.last_reading - item.first_reading)
