"""The top lines: which host, how long; what a token costs (effective $/Mtok first, the hero
of the screen, busy $/Mtok beside it, $/hour and the price in use); what the host does (tok/s,
power, NVML's util and the busy share)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from tokentop.config import CostConfig
from tokentop.cost import energy_is_charged
from tokentop.model import Snapshot
from tokentop.tui.columns import DEFAULT_BANDS, GOOD, WARN, CostBands, is_filling, window_labels, with_mtok_unit
from tokentop.tui.gpu_table import gpu_summary
from tokentop.units import (
    NA,
    WARMING,
    fmt_duration,
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
    serving = any(g.engines for g in snapshot.gpus) or bool(snapshot.endpoints)
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


def work_parts(snapshot: Snapshot) -> list[Part]:
    """What the host does: output and input tok/s, power, NVML's util, the busy share."""
    host = snapshot.host
    labels = window_labels(snapshot)
    if host.rate_window.span_s <= 0:
        tokens = part(("tok/s ", "label"), (WARMING, "value"))
    else:
        tokens = part(
            ("out ", "label"),
            (fmt_tok_s(host.rate_window.tok_s_out), "value"),
            (" in ", "label"),
            (fmt_tok_s(host.rate_window.tok_s_in), "value"),
            (f" tok/s {labels['rate']}", "label"),
        )
    busy = WARMING if host.cost_window.span_s <= 0 else fmt_pct(host.cost_window.busy_share, fraction=True)
    return [
        tokens,
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


class HeaderBar(Widget):
    """Drawn line by line from cached styles: it changes every second, so it stays cheap."""

    COMPONENT_CLASSES = {
        "header--title",
        "header--label",
        "header--value",
        "header--warn",
        "header--bad",
        "header--hero",
        "header--hero-good",
        "header--hero-warn",
    }

    def __init__(
        self, host_name: str, cost: CostConfig, bands: CostBands = DEFAULT_BANDS, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.host_name = host_name
        self.cost = cost
        self.bands = bands
        self.snapshot: Snapshot | None = None
        self.state = "starting"
        self._rows: tuple[int, Snapshot | None, str, list[list[Part]]] | None = None  # width, snapshot, state: rows
        self._shown: list[list[Part]] = []
        self._strips: tuple[int, list[Strip]] | None = None  # (width, strips)
        self._styles: dict[str, Style] = {}

    def show(self, snapshot: Snapshot | None, state: str) -> None:
        """Redraw from a snapshot; ``state`` is the status at the end of the first line."""
        self.snapshot, self.state = snapshot, state
        width = self.size.width or 80
        rows = self.rows_for(width)
        if rows == self._shown:
            return
        changed = [y for y, row in enumerate(rows) if y >= len(self._shown) or row != self._shown[y]]
        layout = len(rows) != len(self._shown)
        self._shown, self._strips = rows, None
        if layout:
            self.refresh(layout=True)
        else:
            self.refresh(*(Region(0, y, width, 1) for y in changed))

    def on_resize(self, event: events.Resize) -> None:
        self._strips = None
        self._shown = self.rows_for(event.size.width)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}
        self._strips = None
        self.refresh()

    def _style(self, kind: str) -> Style:
        style = self._styles.get(kind)
        if style is None:
            style = self.rich_style
            if kind:
                style += self.get_component_rich_style(f"header--{kind}")
            self._styles[kind] = style
        return style

    def rows_for(self, width: int) -> list[list[Part]]:
        """The header's lines at ``width`` (kept for the last width, snapshot and state asked)."""
        kept = self._rows
        if kept is None or kept[0] != width or kept[1] is not self.snapshot or kept[2] != self.state:
            kept = self._rows = (width, self.snapshot, self.state, self.rows(max(20, width - 2)))
        return kept[3]

    def rows(self, width: int) -> list[list[Part]]:
        snap = self.snapshot
        identity = [part(("tokentop", "title")), part((self.host_name, "value"))]
        if snap is not None:
            identity += [
                part((gpu_summary(snap), "value")),
                part(("up ", "label"), (fmt_duration(snap.host.totals.elapsed_s), "value")),
            ]
        live = self.state == "live"
        identity.append(part((f"● {self.state}" if live else f"‖ {self.state}", "value" if live else "warn")))
        rows = wrap_parts(identity, width)
        if snap is None:
            return rows + [[part(("waiting for the first reading…", "label"))]]
        if not snap.gpu_available:
            rows.append([part(("⚠ GPUs: N/A", "bad"), (f" — {snap.gpu_reason or 'NVML unavailable'}", "warn"))])
        price = price_part(snap, self.cost)
        if price.may_cut:
            rows += wrap_parts(cost_parts(snap, self.bands) + [price], width)
        else:  # a warning is never cut: it has a line of its own
            rows += wrap_parts(cost_parts(snap, self.bands), width) + [[price]]
        rows += wrap_parts(work_parts(snap), width)
        return rows

    @property
    def text(self) -> str:
        """The header as plain text (for tests and logs)."""
        rows = self.rows_for(self.size.width or 80)
        return "\n".join(SEPARATOR.join("".join(t for t, _ in p.pieces) for p in row) for row in rows)

    def _build_strips(self, width: int) -> list[Strip]:
        base = self._style("")
        strips = []
        for row in self.rows_for(width):
            segments = [Segment(" ", base)]
            for j, p in enumerate(row):
                if j:
                    segments.append(Segment(SEPARATOR, base))
                segments += [Segment(text, self._style(kind)) for text, kind in p.pieces]
            strip = Strip(segments)
            if strip.cell_length > width:
                strip = strip.crop(0, width - 1).extend_cell_length(width - 1, base)
                strip = Strip(list(strip) + [Segment("…", base)])
            strips.append(strip.extend_cell_length(width, base))
        return strips

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """Asked by the layout for the width it is about to give: right after any resize."""
        return max(1, len(self.rows_for(width)))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._strips is None or self._strips[0] != width:
            self._strips = (width, self._build_strips(width))
        strips = self._strips[1]
        return strips[y] if y < len(strips) else Strip.blank(width, self._style(""))
