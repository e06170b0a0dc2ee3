"""The fleet header's content as data (``Part``s, as ``tokentop.tui.header_parts`` makes for one
host): the source and its state; what a token costs across the fleet (effective $/Mtok first,
busy $/Mtok, $/hour); what the fleet does (hosts up, GPUs, tok/s, power, busy share); and the
source's trouble, with the last good figures marked stale. Every figure names its window.

An opened host gets the local view's cost and work lines for its snapshot, under a line that
says which host, its state and the age of its sample."""

from __future__ import annotations

import time

from tokentop.fleet.model import FleetHost, FleetReading
from tokentop.model import Snapshot
from tokentop.tui.columns import GOOD, WARN, CostBands, with_mtok_unit
from tokentop.tui.fleet.host_table import gpu_models, state_forms
from tokentop.tui.header_parts import Part, cost_parts, part, work_parts, wrap_parts
from tokentop.units import fmt_pct, fmt_tok_s, fmt_usd, fmt_usd_per_mtok, fmt_watts, fmt_window


def clock(t_wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t_wall))


def _identity(title: str, what: str, state: str | None) -> list[Part]:
    parts = [part(("tokentop", "title")), part((title, "value"))]
    if what:
        parts.append(Part(((what, "label"),), may_cut=True))
    if state is not None:
        live = state == "live"
        parts.append(part((f"● {state}" if live else f"‖ {state}", "value" if live else "warn")))
    return parts


def fleet_power_w(reading: FleetReading) -> tuple[float | None, str]:
    """The fleet's power and its window: energy over the rate window, or the latest readings
    summed ("now") when the source gives power only."""
    window = reading.fleet.rate_window
    if window.energy_j > 0:
        return window.watts, fmt_window(reading.rate_window_s)
    return reading.fleet.power_w, "now"


def fleet_cost_parts(reading: FleetReading, bands: CostBands) -> list[Part]:
    """Effective $/Mtok of the priced hosts (the hero), busy $/Mtok, $/hour now."""
    fleet = reading.fleet
    window = fleet.priced_window
    serving = fleet.engines_total > 0 or window.tokens_out > 0

    def per_mtok(value: float | None) -> str:
        return with_mtok_unit(fmt_usd_per_mtok(value, tokens_out=window.tokens_out, serving=serving))

    hero = {GOOD: "hero-good", WARN: "hero-warn"}.get(bands.style(fleet.usd_per_mtok), "hero")
    cost = fmt_window(reading.cost_window_s)
    parts = [
        part((f" {per_mtok(fleet.usd_per_mtok)} ", hero), (f" {cost}", "label")),
        part(("busy ", "label"), (per_mtok(fleet.busy_usd_per_mtok), "value"), (f" {cost}", "label")),
        part(
            (fmt_usd(fleet.usd_per_hour_now), "value"),
            ("/h now" if fleet.usd_per_hour_now is not None else " $/h", "label"),
        ),
    ]
    if fleet.unpriced_hosts:
        names = ", ".join(fleet.unpriced_hosts)
        parts.append(
            Part(
                (("⚠ NO PRICE", "bad"), (f" on {len(fleet.unpriced_hosts)} host(s), left out of $: {names}", "warn")),
                may_cut=True,
            )
        )
    return parts


def fleet_work_parts(reading: FleetReading) -> list[Part]:
    """Hosts up of all, GPUs, output and input tok/s, power, busy share."""
    fleet = reading.fleet
    rate, cost = fmt_window(reading.rate_window_s), fmt_window(reading.cost_window_s)
    watts, watts_window = fleet_power_w(reading)
    return [
        part(("hosts ", "label"), (f"{fleet.hosts_up}/{fleet.host_count}", "value"), (" up", "label")),
        part((f"{fleet.gpu_count}", "value"), (" GPUs", "label")),
        part(
            ("out ", "label"),
            (fmt_tok_s(fleet.rate_window.tok_s_out), "value"),
            (" in ", "label"),
            (fmt_tok_s(fleet.rate_window.tok_s_in), "value"),
            (f" tok/s {rate}", "label"),
        ),
        part((fmt_watts(watts), "value"), (f" {watts_window}", "label")),
        part(
            ("busy ", "label"), (fmt_pct(fleet.cost_window.busy_share, fraction=True), "value"), (f" {cost}", "label")
        ),
    ]


def status_part(reading: FleetReading) -> Part | None:
    """The source's trouble, and whether the figures are this refresh's."""
    if reading.status is None and not reading.stale:
        return None
    pieces: list[tuple[str, str]] = [("⚠ ", "bad"), (reading.status or "the source gave no fresh figures", "warn")]
    if reading.stale:
        pieces.append((f" · figures are the last good ones, from {clock(reading.t_wall)} (stale)", "warn"))
    return Part(tuple(pieces), may_cut=True)


def fleet_header_rows(
    reading: FleetReading | None, state: str | None, bands: CostBands, width: int
) -> list[list[Part]]:
    """The fleet header's lines at ``width``; before any reading, one line saying so."""
    source = reading.source if reading is not None else ""
    rows = wrap_parts(_identity("fleet", source, state), width)
    if reading is None:
        return rows + [[part(("waiting for the first reading…", "label"))]]
    rows += wrap_parts(fleet_cost_parts(reading, bands), width)
    rows += wrap_parts(fleet_work_parts(reading), width)
    trouble = status_part(reading)
    return rows + [[trouble]] if trouble is not None else rows


def host_header_rows(
    host: FleetHost | None, name: str, state: str | None, bands: CostBands, width: int
) -> list[list[Part]]:
    """An opened host: its name, GPUs and state (age, reason, clock offset), then the local
    view's cost and work lines for its snapshot."""
    identity = _identity(name, "" if host is None else gpu_models(host)[0], state)
    rows = wrap_parts(identity, width)
    if host is None:
        return rows + [[part(("⚠ ", "bad"), ("this host is no longer in the fleet's readings", "warn"))]]
    kind = {"up": "value", "connecting": "label"}.get(host.state, "warn")
    rows.append([Part(((state_forms(host)[0], kind),), may_cut=True)])
    snapshot: Snapshot | None = host.snapshot
    if snapshot is None:
        return rows + [[part(("no reading from this host yet", "label"))]]
    return rows + wrap_parts(cost_parts(snapshot, bands), width) + wrap_parts(work_parts(snapshot), width)
