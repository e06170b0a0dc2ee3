"""The header's content as data, without drawing it: which host, how long; what a token costs
(effective $/Mtok first, the hero of the screen, busy $/Mtok beside it, $/hour and the price in
use); what the host does (tok/s, power, NVML's util, the busy share, and the host's own CPU and
memory where there is room). ``widgets.header.HeaderBar`` draws these lines; ``tokentop --once``
prints them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rich.cells import cell_len

from tokentop.config import CostConfig
from tokentop.cost import energy_is_charged
from tokentop.model import Snapshot
from tokentop.tui.columns import GOOD, WARN, CostBands, is_filling, window_labels, with_mtok_unit
from tokentop.tui.gpu_table import gpu_summary
from tokentop.tui.host import HostUsage
from tokentop.units import (
    NA,
    WARMING,
    fmt_duration,
    fmt_gib,
    fmt_pct,
    fmt_tok_s,
    fmt_usd,
    fmt_usd_per_mtok,
    fmt_watts,
)

SEPARATOR = "  "
MIN_CUT = 16  # a part that may be cut goes on a line with at least this many cells left


@dataclass(frozen=True)
class Part:
    """A piece of a header line: labels are dim, values bold, warnings stand out."""

    pieces: tuple[tuple[str, str], ...]  # (text, kind): kind is "", "label", "value", "warn", "bad", "hero"...
    may_cut: bool = False  # the end of the line may cut it ("…") rather than wrap it

    @property
    def width(self) -> int:
        return sum(cell_len(text) for text, _ in self.pieces)


def part(*pieces: tuple[str, str]) -> Part:
    return Part(tuple(pieces))


def price_part(snapshot: Snapshot, cost: CostConfig) -> Part:
    """The cost mode and the GPU-hour price in use, or a plain warning when there is none."""
    unpriced = set(snapshot.host.unpriced_gpus)
    if unpriced:
        names = Counter(g.sample.name for g in snapshot.gpus if g.sample.uuid in unpriced)
        which = ", ".join(f"{name} ({n} GPU{'s' if n > 1 else ''})" for name, n in names.items())
        return part(
            ("⚠ NO PRICE", "bad"), (f" for {which}: $ figures are N/A; set cost.gpu_hour_usd in the config", "warn")
        )
    prices = {(g.price.usd_per_gpu_hour, g.price.source) for g in snapshot.gpus if g.price is not None}
    pieces: list[tuple[str, str]] = [("cost ", "label"), (cost.mode, "value"), (" · ", "")]
    source = ""
    if len(prices) == 1:
        usd, source = next(iter(prices))
        pieces += [(f"{fmt_usd(usd)}/GPU·h", "value")]
    elif prices:
        pieces += [(f"{len(prices)} prices", "value"), (" (d shows each GPU's)", "label")]
    else:
        pieces += [("no GPU to price", "label")]
    if energy_is_charged(cost):
        pieces += [
            (" + energy ", "label"),
            (f"{fmt_usd(cost.electricity_usd_per_kwh)}/kWh", "value"),
            (f" ×PUE {cost.pue:g} ×node {cost.node_overhead:g}", "label"),
        ]
    else:
        pieces += [(" · energy included in the rate", "label")]
    if source:
        pieces += [(f" · price from {source}", "label")]
    return Part(tuple(pieces), may_cut=True)


def cost_parts(snapshot: Snapshot, bands: CostBands) -> list[Part]:
    """Effective $/Mtok first and loudest (coloured by ``bands``), busy $/Mtok, then $/hour."""
    host = snapshot.host
    window = host.cost_window
    serving = snapshot.first_look or any(g.engines for g in snapshot.gpus) or bool(snapshot.endpoints)
    filling = is_filling(window, snapshot.cost_window_s)

    def per_mtok(value: float | None) -> str:
        return fmt_usd_per_mtok(value, tokens_out=window.tokens_out, serving=serving, filling=filling)

    hero = {GOOD: "hero-good", WARN: "hero-warn"}.get(bands.style(window.usd_per_mtok), "hero")
    effective = with_mtok_unit(per_mtok(window.usd_per_mtok))
    return [
        part((f" {effective} ", hero), (f" {window_labels(snapshot)['cost']}", "label")),
        part(("busy ", "label"), (with_mtok_unit(per_mtok(window.busy_usd_per_mtok)), "value")),
        part((fmt_usd(host.usd_per_hour_now), "value"), ("/h", "label")),
    ]


def tokens_part(snapshot: Snapshot) -> Part:
    """Output and input tok/s over the rate window."""
    window = snapshot.host.rate_window
    if window.span_s <= 0:
        return part(("tok/s ", "label"), (WARMING, "value"))
    return part(
        ("out ", "label"),
        (fmt_tok_s(window.tok_s_out), "value"),
        (" in ", "label"),
        (fmt_tok_s(window.tok_s_in), "value"),
        (f" tok/s {window_labels(snapshot)['rate']}", "label"),
    )


def work_parts(snapshot: Snapshot) -> list[Part]:
    """What the host does: output and input tok/s, power, NVML's util, the busy share."""
    host = snapshot.host
    labels = window_labels(snapshot)
    busy = WARMING if host.cost_window.span_s <= 0 else fmt_pct(host.cost_window.busy_share, fraction=True)
    return [
        tokens_part(snapshot),
        part((fmt_watts(host.power_w), "value")),
        utilisation_part(snapshot),
        part(("busy ", "label"), (busy, "value"), (f" {labels['cost']}", "label")),
    ]


def utilisation_part(snapshot: Snapshot) -> Part:
    """NVML's utilisation, the mean over the GPUs that report it."""
    utils = [g.sample.utilization_pct for g in snapshot.gpus if g.sample.utilization_pct is not None]
    return part(("util ", "label"), (fmt_pct(sum(utils) / len(utils)) if utils else NA, "value"))


def wrap_parts(parts: list[Part], width: int) -> list[list[Part]]:
    """Parts on as few lines as fit ``width``; a part never splits, and one that may be cut is
    cut at the end of a line rather than put on a line of its own."""
    lines: list[list[Part]] = [[]]
    used = 0
    for p in parts:
        extra = p.width + (len(SEPARATOR) if lines[-1] else 0)
        room = width - used - (len(SEPARATOR) if lines[-1] else 0)
        if lines[-1] and used + extra > width and not (p.may_cut and room >= MIN_CUT):
            lines.append([])
            used, extra = 0, p.width
        lines[-1].append(p)
        used += extra
    return lines


def host_part(usage: HostUsage) -> Part:
    """The host's own CPU and memory use: ``cpu 12%  ram 48/251 GiB``."""
    cpu = fmt_pct(usage.cpu_fraction, fraction=True)
    memory = f"{fmt_gib(usage.memory_used_bytes)}/{fmt_gib(usage.memory_total_bytes)}"
    return part(("cpu ", "label"), (cpu, "value"), ("  ram ", "label"), (memory, "value"), (" GiB", "label"))


def with_room_for(rows: list[list[Part]], extra: Part, width: int) -> list[list[Part]]:
    """``extra`` at the end of the last line when it fits there; left out rather than given a
    line of its own."""
    last = rows[-1]
    used = sum(p.width for p in last) + len(SEPARATOR) * len(last)
    return rows[:-1] + [last + [extra]] if used + extra.width <= width else rows


def header_rows(
    host_name: str,
    snapshot: Snapshot | None,
    state: str | None,
    cost: CostConfig,
    bands: CostBands,
    usage: HostUsage | None,
    width: int,
) -> list[list[Part]]:
    """The header's lines at ``width``: identity and ``state`` (``live``, ``PAUSED…``; None: no
    state), cost, work (and the host's CPU and memory)."""
    identity = [part(("tokentop", "title")), part((host_name, "value"))]
    if snapshot is not None:
        identity += [
            part((gpu_summary(snapshot), "value")),
            part(("up ", "label"), (fmt_duration(snapshot.host.totals.elapsed_s), "value")),
        ]
    if state is not None:
        live = state == "live"
        identity.append(part((f"● {state}" if live else f"‖ {state}", "value" if live else "warn")))
    rows = wrap_parts(identity, width)
    if snapshot is None:
        return rows + [[part(("waiting for the first reading…", "label"))]]
    if not snapshot.gpus:
        rows += no_gpu_rows(snapshot, width)
        return rows if usage is None else with_room_for(rows, host_part(usage), width)
    price = price_part(snapshot, cost)
    if price.may_cut:
        rows += wrap_parts(cost_parts(snapshot, bands) + [price], width)
    else:  # a warning is never cut: it has a line of its own
        rows += wrap_parts(cost_parts(snapshot, bands), width) + [[price]]
    rows += wrap_parts(work_parts(snapshot), width)
    return rows if usage is None else with_room_for(rows, host_part(usage), width)


def no_gpu_rows(snapshot: Snapshot, width: int) -> list[list[Part]]:
    """A host without a GPU reading: why, that there is nothing to price or measure (cost is
    per GPU-hour, power and util are the GPUs'), and the tokens its endpoints deliver."""
    why = snapshot.gpu_reason if not snapshot.gpu_available else "NVML lists no GPU"
    return [
        [Part((("⚠ no GPU", "bad"), (f": {why or 'NVML unavailable'}", "warn")), may_cut=True)],
        [Part((("no W, util, $/h or $/Mtok without a GPU (cost is per GPU-hour)", "label"),), may_cut=True)],
        *wrap_parts([tokens_part(snapshot)], width),
    ]


def plain_text(rows: list[list[Part]]) -> str:
    """Header lines as plain text."""
    return "\n".join(SEPARATOR.join("".join(text for text, _ in p.pieces) for p in row) for row in rows)
