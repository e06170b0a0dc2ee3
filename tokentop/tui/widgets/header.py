"""The top lines: which host, how long, the host's totals, and what a GPU-hour is priced at."""

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
from tokentop.tui.gpu_table import gpu_summary
from tokentop.units import (
    NA,
    fmt_duration,
    fmt_pct,
    fmt_tok_s,
    fmt_usd,
    fmt_usd_per_mtok,
    fmt_watts,
    fmt_window,
)

SEPARATOR = "  "


@dataclass(frozen=True)
class Part:
    """A piece of a header line: labels are dim, values bold, warnings stand out."""

    pieces: tuple[tuple[str, str], ...]  # (text, kind) with kind in "", "label", "value", "warn", "bad"

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
    return part(*pieces)


def figure_parts(snapshot: Snapshot) -> list[Part]:
    host = snapshot.host
    rate_w = fmt_window(snapshot.rate_window_s)
    cost_w = fmt_window(snapshot.cost_window_s)
    serving = any(g.engines for g in snapshot.gpus) or bool(snapshot.endpoints)
    per_mtok = fmt_usd_per_mtok(host.cost_window.usd_per_mtok, tokens_out=host.cost_window.tokens_out, serving=serving)
    return [
        part(
            ("in ", "label"),
            (fmt_tok_s(host.rate_window.tok_s_in), "value"),
            (" out ", "label"),
            (fmt_tok_s(host.rate_window.tok_s_out), "value"),
            (f" tok/s {rate_w}", "label"),
        ),
        part((fmt_watts(host.power_w), "value")),
        part((fmt_usd(host.usd_per_hour_now), "value"), ("/h", "label")),
        part((per_mtok, "value"), (f"{'/Mtok' if per_mtok.startswith('$') else ' $/Mtok'} {cost_w}", "label")),
        part(
            ("busy ", "label"), (fmt_pct(host.cost_window.busy_share, fraction=True), "value"), (f" {cost_w}", "label")
        ),
    ]


def utilisation_part(snapshot: Snapshot) -> Part:
    utils = [g.sample.utilization_pct for g in snapshot.gpus if g.sample.utilization_pct is not None]
    return part(("util ", "label"), (fmt_pct(sum(utils) / len(utils)) if utils else NA, "value"))


def wrap_parts(parts: list[Part], width: int) -> list[list[Part]]:
    """Parts on as few lines as fit ``width``; a part never splits."""
    lines: list[list[Part]] = [[]]
    used = 0
    for p in parts:
        extra = p.width + (len(SEPARATOR) if lines[-1] else 0)
        if lines[-1] and used + extra > width:
            lines.append([])
            used, extra = 0, p.width
        lines[-1].append(p)
        used += extra
    return lines


class HeaderBar(Widget):
    """Drawn line by line from cached styles: it changes every second, so it stays cheap."""

    COMPONENT_CLASSES = {"header--title", "header--label", "header--value", "header--warn", "header--bad"}

    def __init__(self, host_name: str, cost: CostConfig, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.host_name = host_name
        self.cost = cost
        self.snapshot: Snapshot | None = None
        self.state = "starting"
        self._rows: list[list[Part]] = []
        self._strips: list[Strip] = []
        self._styles: dict[str, Style] = {}

    def show(self, snapshot: Snapshot | None, state: str) -> None:
        """Redraw from a snapshot; ``state`` is the status at the end of the first line."""
        self.snapshot, self.state = snapshot, state
        self._rebuild()

    def on_resize(self, event: events.Resize) -> None:
        self._rebuild(force=True)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}
        if self.is_mounted:
            self._rebuild(force=True)

    def _style(self, kind: str) -> Style:
        style = self._styles.get(kind)
        if style is None:
            style = self.rich_style
            if kind:
                style += self.get_component_rich_style(f"header--{kind}")
            self._styles[kind] = style
        return style

    def rows(self, width: int) -> list[list[Part]]:
        snap = self.snapshot
        identity = [part(("tokentop", "title")), part((self.host_name, "value"))]
        if snap is not None:
            identity += [
                part((gpu_summary(snap), "value")),
                utilisation_part(snap),
                part(("up ", "label"), (fmt_duration(snap.host.totals.elapsed_s), "value")),
            ]
        live = self.state == "live"
        identity.append(part((f"● {self.state}" if live else f"‖ {self.state}", "value" if live else "warn")))
        rows = wrap_parts(identity, width)
        if snap is None:
            return rows + [[part(("waiting for the first reading…", "label"))]]
        if not snap.gpu_available:
            rows.append([part(("⚠ GPUs: N/A", "bad"), (f" — {snap.gpu_reason or 'NVML unavailable'}", "warn"))])
        rows += wrap_parts(figure_parts(snap), width)
        rows.append([price_part(snap, self.cost)])
        return rows

    @property
    def text(self) -> str:
        """The header as plain text (for tests and logs)."""
        return "\n".join(SEPARATOR.join("".join(t for t, _ in p.pieces) for p in row) for row in self._rows)

    def _rebuild(self, force: bool = False) -> None:
        width = self.size.width or 80
        rows = self.rows(max(20, width - 2))
        if rows == self._rows and not force:
            return
        layout_changed = len(rows) != len(self._rows)
        changed_lines = [y for y, row in enumerate(rows) if y >= len(self._rows) or row != self._rows[y]]
        self._rows = rows
        base = self._style("")
        strips = []
        for row in rows:
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
        self._strips = strips
        if layout_changed or force:
            self.refresh(layout=layout_changed)
        else:
            self.refresh(*(Region(0, y, width, 1) for y in changed_lines))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self._rows))

    def render_line(self, y: int) -> Strip:
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self._style(""))
