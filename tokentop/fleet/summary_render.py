"""A fleet summary written out: JSON (hosts, each in the single-host summary's layout, and the
fleet), CSV (a row per GPU, per host, then the fleet) and Markdown (the fleet, then a table of
hosts). Figures as they are, never rounded; unknown is ``null`` or an empty cell."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from tokentop import __version__
from tokentop.fleet.summary import FleetSummary, HostSummary
from tokentop.report.figures import Figures
from tokentop.report.tables import FIGURE_KEYS, csv_number, endpoint_json, figures_csv, figures_json, gpu_json, iso_utc
from tokentop.text import csv_cell, markdown_cell
from tokentop.units import fmt_count, fmt_duration, fmt_kwh, fmt_pct, fmt_sig, fmt_usd, fmt_usd_per_mtok

SCHEMA_VERSION = 1
"""Of the fleet summary (``"kind": "fleet"``); each host's part follows the host summary's schema."""


def render_fleet(summary: FleetSummary, fmt: str) -> str:
    """``fmt``: ``md``, ``json`` or ``csv``."""
    if fmt == "json":
        return json.dumps(fleet_json(summary), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return fleet_csv(summary)
    return fleet_markdown(summary)


def fleet_json(summary: FleetSummary) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "fleet",
        "tokentop_version": __version__,
        "source": summary.source,
        "mode": summary.mode,
        "range": {
            "since_unix_s": summary.since,
            "since_utc": iso_utc(summary.since),
            "until_unix_s": summary.until,
            "until_utc": iso_utc(summary.until),
            "duration_s": summary.until - summary.since,
        },
        "fleet": None
        if summary.fleet is None
        else {
            "host_count": len(summary.hosts),
            "hosts_summarised": sum(h.figures is not None for h in summary.hosts),
            "gpu_count": summary.gpu_count,
            "unpriced_hosts": list(summary.unpriced_hosts),
            **figures_json(summary.fleet),
        },
        "hosts": [_host_json(h) for h in summary.hosts],
        "notes": list(summary.notes),
    }


def _host_json(host: HostSummary) -> dict[str, Any]:
    return {
        "name": host.name,
        "state": host.state,
        "reason": host.reason,
        "host": None
        if host.figures is None
        else {"gpu_count": host.gpu_count, "unpriced_gpus": list(host.unpriced_gpus), **figures_json(host.figures)},
        "gpus": [gpu_json(g) for g in host.gpus],
        "endpoints": [endpoint_json(e) for e in host.endpoints],
    }


CSV_COLUMNS = ("scope", "host", "gpu_index", "uuid", "name", "price_usd_per_gpu_hour", *FIGURE_KEYS.values())


def fleet_csv(summary: FleetSummary) -> str:
    """A row per GPU, then one per host (``host``), then the fleet (``fleet``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for host in summary.hosts:
        for g in host.gpus:
            lead = ["gpu", csv_cell(host.name), g.index, csv_cell(g.uuid), csv_cell(g.name)]
            writer.writerow([*lead, csv_number(g.price_usd_per_gpu_hour), *figures_csv(g.figures)])
        if host.figures is not None:
            lead = ["host", csv_cell(host.name), "", "", f"{host.gpu_count} GPUs", ""]
            writer.writerow(lead + figures_csv(host.figures))
    if summary.fleet is not None:
        lead = ["fleet", "", "", "", f"{len(summary.hosts)} hosts, {summary.gpu_count} GPUs", ""]
        writer.writerow(lead + figures_csv(summary.fleet))
    return out.getvalue()


_HOSTS_HEADER = [
    "host",
    "GPUs",
    "tokens out",
    "tok/s out mean",
    "energy kWh",
    "W mean",
    "tok/J",
    "cost",
    "$/hour",
    "$/Mtok",
    "busy $/Mtok",
    "busy",
]


def fleet_markdown(summary: FleetSummary) -> str:
    lines = [
        f"# Fleet summary: {_count(len(summary.hosts), 'host')}, {_count(summary.gpu_count, 'GPU')}",
        "",
        f"- Source: {markdown_cell(summary.source)}",
        f"- Range: {iso_utc(summary.since)} to {iso_utc(summary.until)} "
        f"({fmt_duration(summary.until - summary.since)})",
        "- Fleet figures are sums over hosts; $/Mtok is summed cost over summed output tokens of the priced hosts.",
        "",
        "| " + " | ".join(_HOSTS_HEADER) + " |",
        "|---|" + "---:|" * (len(_HOSTS_HEADER) - 1),
    ]
    for host in summary.hosts:
        lines.append(_row(markdown_cell(host.name), host.gpu_count, host.figures, host.reason))
    if summary.fleet is not None:
        lines.append(_row("**fleet**", summary.gpu_count, summary.fleet, None))
    if summary.notes:
        lines += ["", "## Notes", "", *(f"- {markdown_cell(n)}" for n in summary.notes)]
    return "\n".join(lines) + "\n"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _row(label: str, gpus: int, f: Figures | None, reason: str | None) -> str:
    """A row of the hosts table; ``label`` is Markdown already (the fleet's is bold)."""
    if f is None:
        cells = [label, str(gpus), f"not summarised: {reason or 'no reading'}"] + [""] * (len(_HOSTS_HEADER) - 3)
    else:
        cells = [
            label,
            str(gpus),
            fmt_count(f.tokens_out),
            fmt_sig(f.tok_s_out_mean),
            fmt_kwh(f.energy_kwh),
            fmt_sig(f.power_w_mean),
            fmt_sig(f.tok_per_j),
            fmt_usd(f.cost_usd),
            fmt_usd(f.usd_per_hour_mean),
            fmt_usd_per_mtok(f.usd_per_mtok, tokens_out=f.tokens_out, serving=True),
            fmt_usd_per_mtok(f.busy_usd_per_mtok, tokens_out=f.tokens_out, serving=True),
            fmt_pct(f.busy_pct),
        ]
    return "| " + " | ".join(markdown_cell(c) if i else c for i, c in enumerate(cells)) + " |"
