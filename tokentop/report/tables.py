"""A session summary for programs: JSON (the layout the README documents, units in every key)
and CSV (one row per GPU, then a ``total`` row for the host). Figures are written as they are,
never rounded; a figure that is not known is ``null`` (JSON) or an empty cell (CSV). CSV text
cells go through ``tokentop.text.csv_cell`` so that a spreadsheet never runs a name as a
formula; numbers are written as numbers (``-1.5`` is a number, not a formula).

``SCHEMA_VERSION`` 2: the list ``engines`` became ``endpoints`` (each GPU keeps ``engines``,
the names of the endpoints whose engines run on it), ``utilization_pct`` became ``busy_pct`` (JSON
and CSV), ``rate_windows.engine_step_s`` became ``rate_windows.endpoint_step_s``, ``busy_s``
became ``busy_gpu_s`` (JSON and CSV: busy GPU-seconds, summed over the GPUs for the host, as in
the snapshot's ``session.busy_gpu_s``; its share is ``busy_pct``). Added within version 2 (new
keys, none renamed): ``session.origin`` and ``session.simulated``, ``rate_windows.count``, and
in the session list ``origin`` and ``simulated``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from tokentop import __version__
from tokentop.history import SessionInfo
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
from tokentop.text import csv_cell

SCHEMA_VERSION = 2


def render_json(summary: SessionSummary) -> str:
    return json.dumps(to_json_dict(summary), indent=2, allow_nan=False) + "\n"


def to_json_dict(summary: SessionSummary) -> dict[str, Any]:
    """The documented JSON layout (README, "tokentop summary"), units in every key."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tokentop_version": __version__,
        "db_path": summary.db_path,
        "session": _session_json(summary.session),
        "range": _range_json(summary),
        "rate_windows": {
            "length_s": summary.windows_length_s,
            "source": summary.windows_source,
            "endpoint_step_s": summary.endpoint_step_s,
            "count": summary.windows_count,
        },
        "cost_inputs": _cost_inputs_json(summary.cost_inputs),
        "host": _host_json(summary),
        "gpus": [gpu_json(g) for g in summary.gpus],
        "endpoints": [endpoint_json(e) for e in summary.endpoints],
        "api_equivalent": [_api_json(a) for a in summary.api],
        "notes": [note_text(note) for note in summary.notes],
    }


def iso_utc(t: float | None) -> str | None:
    """UTC, to the second: ``2026-04-01T12:00:00Z``."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _session_json(s: SessionInfo) -> dict[str, Any]:
    return {
        "id": s.id,
        "host": s.host,
        "tokentop_version": s.tokentop_version,
        "started_unix_s": s.started_at,
        "started_utc": iso_utc(s.started_at),
        "ended_unix_s": s.ended_at,
        "ended_utc": iso_utc(s.ended_at),
        "open": s.ended_at is None,
        "origin": s.origin,
        "simulated": s.simulated,
    }


def _range_json(summary: SessionSummary) -> dict[str, Any]:
    return {
        "since_unix_s": summary.since,
        "since_utc": iso_utc(summary.since),
        "until_unix_s": summary.until,
        "until_utc": iso_utc(summary.until),
        "duration_s": summary.until - summary.since,
        "whole_session": summary.whole_session,
    }


def _cost_inputs_json(c: CostInputs) -> dict[str, Any]:
    return {
        "recorded": c.recorded,
        "mode": c.mode,
        "electricity_usd_per_kwh": c.electricity_usd_per_kwh,
        "pue": c.pue,
        "node_overhead": c.node_overhead,
        "energy_in_rate": c.energy_in_rate,
        "energy_charged": c.energy_charged,
        "prices": [
            {"usd_per_gpu_hour": p.usd_per_gpu_hour, "source": p.source, "gpu_indices": list(p.gpu_indices)}
            for p in c.prices
        ],
        "api_prices": [
            {
                "name": p.name,
                "usd_per_mtok_in": p.usd_per_mtok_in,
                "usd_per_mtok_out": p.usd_per_mtok_out,
                "date": p.date,
            }
            for p in c.api_prices
        ],
    }


# The key (JSON) and column (CSV) of each figure: its field name, but for busy time, which the
# key says is in GPU-seconds.
FIGURE_KEYS = {f.name: {"busy_s": "busy_gpu_s"}.get(f.name, f.name) for f in fields(Figures)}


def figures_json(figures: Figures) -> dict[str, Any]:
    return {key: getattr(figures, name) for name, key in FIGURE_KEYS.items()}


def _host_json(summary: SessionSummary) -> dict[str, Any] | None:
    if summary.host is None:
        return None
    return {
        "gpu_count": len(summary.gpus),
        "unpriced_gpus": list(summary.unpriced_gpus),
        **figures_json(summary.host),
    }


def gpu_json(g: GpuSummary) -> dict[str, Any]:
    return {
        "index": g.index,
        "uuid": g.uuid,
        "name": g.name,
        "engines": list(g.engines),
        "energy_method": g.energy_method,
        "energy_integrated_ticks": g.energy_integrated_ticks,
        "energy_unmeasured_ticks": g.energy_unmeasured_ticks,
        "price_usd_per_gpu_hour": g.price_usd_per_gpu_hour,
        "price_source": g.price_source,
        **figures_json(g.figures),
    }


def endpoint_json(e: EndpointSummary) -> dict[str, Any]:
    """Every field, under its own name (tuples as lists)."""
    return {f.name: _plain(getattr(e, f.name)) for f in fields(EndpointSummary)}


def _api_json(a: ApiComparison) -> dict[str, Any]:
    return {f.name: getattr(a, f.name) for f in fields(ApiComparison)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- CSV -------------------------------------------------------------------------------------

CSV_LEAD = (
    "scope",
    "gpu_index",
    "uuid",
    "name",
    "engines",
    "energy_method",
    "energy_integrated_ticks",
    "price_usd_per_gpu_hour",
)
CSV_COLUMNS = CSV_LEAD + tuple(FIGURE_KEYS.values())


def render_csv(summary: SessionSummary) -> str:
    """One row per GPU, then a ``total`` row for the host."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in summary.gpus:
        lead = [
            "gpu",
            g.index,
            csv_cell(g.uuid),
            csv_cell(g.name),
            csv_cell(" ".join(g.engines)),
            g.energy_method or "",
            g.energy_integrated_ticks,
            csv_number(g.price_usd_per_gpu_hour),
        ]
        writer.writerow(lead + figures_csv(g.figures))
    if summary.host is not None:
        integrated = sum(g.energy_integrated_ticks for g in summary.gpus)
        lead = ["total", "", "", f"{len(summary.gpus)} GPUs", "", "", integrated, ""]
        writer.writerow(lead + figures_csv(summary.host))
    return out.getvalue()


def figures_csv(figures: Figures) -> list[str]:
    return [csv_number(getattr(figures, f.name)) for f in fields(Figures)]


def csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# --- the session list ------------------------------------------------------------------------


def _listing_json(item: SessionListing) -> dict[str, Any]:
    return {
        "id": item.id,
        "host": item.host,
        "tokentop_version": item.tokentop_version,
        "started_unix_s": item.started_at,
        "ended_unix_s": item.ended_at,
        "first_reading_unix_s": item.first_reading,
        "last_reading_unix_s": item.last_reading,
        "gpu_count": item.gpu_count,
        "origin": item.origin,
        "simulated": item.simulated,
    }


def session_list_json(listings: list[SessionListing]) -> str:
    return (
        json.dumps({"schema_version": SCHEMA_VERSION, "sessions": [_listing_json(i) for i in listings]}, indent=2)
        + "\n"
    )


def session_list_csv(listings: list[SessionListing]) -> str:
    rows = [
        _listing_json(i) | {"host": csv_cell(i.host), "tokentop_version": csv_cell(i.tokentop_version)}
        for i in listings
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
