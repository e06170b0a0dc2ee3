"""The summary printed when the live view or ``record`` ends, made to fit the terminal it lands
on: the host block first (duration, tokens, effective and busy $/Mtok, cost, kWh, tok/J, busy
share), in lines that fit 80 columns; then a narrow per-GPU table (or, on a host without a GPU,
one per endpoint) only when it fits the width; the notes wrapped; where every table is.

The full Markdown (``markdown``) stays what files get (``e`` in the live view, ``summary
--output``) and what ``--summary full`` prints.
"""

from __future__ import annotations

import shlex
import textwrap

from tokentop.report.figures import Figures, SessionSummary
from tokentop.report.markdown import gpu_engines, gpu_label, title
from tokentop.report.notes import note_text
from tokentop.text import markdown_cell
from tokentop.units import (
    NA,
    fmt_count,
    fmt_duration,
    fmt_kwh,
    fmt_latency,
    fmt_pct,
    fmt_sig,
    fmt_usd,
    fmt_usd_per_mtok,
    gpu_labels,
)

LABEL_WIDTH = 10  # "  tokens    in ..." : the host block's labels, padded


def render_short(summary: SessionSummary, width: int) -> str:
    """The short summary, every line within ``width`` columns where words allow (a table that
    does not fit is left out and said so)."""
    width = max(width, 40)
    lines = _wrap(title(summary), width)
    lines += [""] + (_host_block(summary, width) if summary.host is not None else _endpoints_block(summary, width))
    table = _gpu_table(summary) if summary.gpus else _endpoint_table(summary)
    if table and max(map(len, table)) <= width:
        lines += ["", *table]
    elif table:
        lines += [""] + _wrap(
            f"(the per-{'GPU' if summary.gpus else 'endpoint'} table needs {max(map(len, table))} "
            f"columns; --summary full prints every table)",
            width,
        )
    for note in summary.notes:
        lines += _wrap(f"- {note_text(note)}", width, indent="  ")
    every = f"Every table: tokentop summary --session {summary.session.id} --db {shlex.quote(summary.db_path)}"
    lines += [""] + _wrap(every, width, indent="  ")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` in lines of at most ``width`` (a word longer than that, a path, stays whole)."""
    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def _line(label: str, value: str, width: int) -> list[str]:
    return _wrap(f"  {label:<{LABEL_WIDTH}}{value}", width, indent=" " * (LABEL_WIDTH + 2))


def _host_block(summary: SessionSummary, width: int) -> list[str]:
    host = summary.host
    assert host is not None
    serving = any(g.engines for g in summary.gpus)
    per_mtok = fmt_usd_per_mtok(host.usd_per_mtok, tokens_out=host.tokens_out, serving=serving)
    busy_per_mtok = fmt_usd_per_mtok(host.busy_usd_per_mtok, tokens_out=host.tokens_out, serving=serving)
    energy = NA if host.energy_kwh is None else f"{fmt_kwh(host.energy_kwh)} kWh, {fmt_sig(host.tok_per_j)} tok/J"
    return [
        *_line("duration", _duration(summary), width),
        *_line("tokens", _tokens(host), width),
        *_line("$/Mtok", f"{per_mtok} effective, {busy_per_mtok} busy (per million output tokens)", width),
        *_line("cost", f"{fmt_usd(host.cost_usd)} ({fmt_usd(host.usd_per_hour_mean)}/hour)", width),
        *_line("energy", energy, width),
        *_line("busy", f"{fmt_pct(host.busy_pct)} of GPU time", width),
    ]


def _duration(summary: SessionSummary) -> str:
    whole = "" if summary.whole_session else " (a range of the session)"
    return fmt_duration(summary.until - summary.since) + whole


def _tokens(f: Figures) -> str:
    return f"in {fmt_count(f.tokens_in)}, out {fmt_count(f.tokens_out)} ({fmt_sig(f.tok_s_out_mean)} tok/s out)"


def _endpoints_block(summary: SessionSummary, width: int) -> list[str]:
    """A host without a GPU reading: what its endpoints delivered, their own counts."""
    tokens_in = sum(e.tokens_in for e in summary.endpoints)
    tokens_out = sum(e.tokens_out for e in summary.endpoints)
    seconds = summary.until - summary.since
    rate = fmt_sig(tokens_out / seconds) if seconds > 0 else NA
    return [
        *_line("duration", _duration(summary), width),
        *_line("tokens", f"in {fmt_count(tokens_in)}, out {fmt_count(tokens_out)} ({rate} tok/s out)", width),
        *_line("$/Mtok", "not known: no GPU was read, so no energy and no cost", width),
    ]


def _gpu_table(summary: SessionSummary) -> list[str]:
    labels = gpu_labels(g.name for g in summary.gpus)
    rows = [
        [
            gpu_label(g, labels),
            gpu_engines(g),
            fmt_sig(g.figures.tok_s_out_mean),
            fmt_sig(g.figures.power_w_mean),
            fmt_usd_per_mtok(g.figures.usd_per_mtok, tokens_out=g.figures.tokens_out, serving=bool(g.engines)),
            fmt_pct(g.figures.busy_pct),
        ]
        for g in summary.gpus
    ]
    return aligned_table(["GPU", "engines", "tok/s out", "W", "$/Mtok", "busy"], rows)


def _endpoint_table(summary: SessionSummary) -> list[str]:
    rows = [
        [
            e.name,
            e.kind or NA,
            fmt_count(e.tokens_out),
            fmt_sig(e.tok_s_out_mean),
            fmt_count(e.requests_completed),
            fmt_latency(e.ttft_p50_s_mean),
        ]
        for e in summary.endpoints
    ]
    return aligned_table(["endpoint", "kind", "tokens out", "tok/s out", "requests", "TTFT p50"], rows) if rows else []


def aligned_table(header: list[str], rows: list[list[str]], text_columns: int = 2) -> list[str]:
    """A Markdown table padded so that its columns line up on a terminal; columns after the
    first ``text_columns`` hold numbers (right-aligned)."""
    cells = [header, *([markdown_cell(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        padded = (c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|" + "|".join("-" * (w + 2) if i < text_columns else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    )
    return [line(header), rule, *map(line, cells[1:])]
