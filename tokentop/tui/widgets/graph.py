"""Bar charts of tok/s, W and $/Mtok over a window, for one GPU or the host.

Drawn with eighth blocks, one bucket per column (or stretched when there are fewer buckets
than columns). A gap (no data: no ticks, idle $/Mtok, no price) is blank; the last, largest
and smallest values are written beside each chart, so nothing depends on colour. Each chart
gets at least ``CHART_LINES`` lines (a one-line chart is a row of solid blocks that says
nothing): fewer lines show fewer charts, and under a title and one chart, none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.strip import Strip
from textual.widget import Widget

from tokentop.tui.history import GraphPoint
from tokentop.units import NA, fmt_tok_s, fmt_usd, fmt_watts

LEVELS = " ▁▂▃▄▅▆▇█"
LABEL_WIDTH = 19
CHART_LINES = 3  # the fewest lines a chart is drawn on: its last, max and min values beside it
HIDDEN_NOTE = " History: a taller terminal shows it"


@dataclass(frozen=True)
class Series:
    label: str
    value: Callable[[GraphPoint], float | None]
    fmt: Callable[[float | None], str]
    style: str  # component class suffix
    rank: int  # which series stay when there is little height (lower stays)


SERIES: tuple[Series, ...] = (
    Series("out tok/s", lambda p: p.tok_s_out, fmt_tok_s, "out", 0),
    Series("in tok/s", lambda p: p.tok_s_in, fmt_tok_s, "in", 3),
    Series("W", lambda p: p.watts, fmt_watts, "power", 1),
    Series("$/Mtok", lambda p: p.usd_per_mtok, fmt_usd, "cost", 2),
)


def column_values(
    points: Sequence[GraphPoint], value: Callable[[GraphPoint], float | None], width: int
) -> list[float | None]:
    """One value per plot column: buckets stretched over the width."""
    n = len(points)
    if n == 0 or width <= 0:
        return [None] * max(0, width)
    return [value(points[min(n - 1, col * n // width)]) for col in range(width)]


def bar_rows(values: Sequence[float | None], height: int, top: float) -> list[str]:
    """``height`` lines of bar characters, top line first; ``top`` is the full-height value."""
    if height <= 0:
        return []
    columns = []
    blank = " " * height
    for value in values:
        if value is None or value <= 0 or top <= 0:
            columns.append(blank)
            continue
        eighths = max(1, round(min(1.0, value / top) * height * 8))
        full, part = divmod(eighths, 8)
        column = (LEVELS[part] if part else "") + "█" * full
        columns.append(" " * (height - len(column)) + column)
    return ["".join(row) for row in zip(*columns, strict=True)] if columns else [""] * height


class HistoryGraph(Widget):
    COMPONENT_CLASSES = {
        "graph--title",
        "graph--label",
        "graph--note",
        "graph--out",
        "graph--in",
        "graph--power",
        "graph--cost",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = ""
        self.points: list[GraphPoint] = []
        self.note: str | None = "waiting for the first readings…"
        self._strips: list[Strip] = []
        self._built_for: tuple[int, int] | None = None
        self._styles: dict[str, Style] = {}

    @property
    def plot_width(self) -> int:
        return max(1, self.size.width - LABEL_WIDTH - 1)

    def show(self, title: str, points: list[GraphPoint], note: str | None = None) -> None:
        """New chart data; redraws only when something differs."""
        if (title, points, note) == (self.title, self.points, self.note):
            return
        self.title, self.points, self.note = title, points, note
        self._built_for = None
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._built_for = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._built_for = None
        self._styles = {}

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.rich_style
            if name:
                style += self.get_component_rich_style(f"graph--{name}")
            self._styles[name] = style
        return style

    def _layout(self, height: int) -> list[tuple[Series, int]]:
        """Which series get how many lines under the title: each at least ``CHART_LINES``."""
        rows = height - 1
        count = min(len(SERIES), rows // CHART_LINES)
        if count <= 0:
            return []
        kept = sorted(SERIES, key=lambda s: s.rank)[:count]
        shown = [s for s in SERIES if s in kept]
        each, extra = divmod(rows, count)
        return [(s, each + (1 if i < extra else 0)) for i, s in enumerate(shown)]

    def _build(self, width: int, height: int) -> list[Strip]:
        base = self._style("")
        if not self._layout(height):  # too short for one chart: say so on its first line
            hidden = Strip([Segment(HIDDEN_NOTE, self._style("note"))])
            return [hidden.extend_cell_length(width, base).crop(0, width)] if height > 0 else []
        title = Strip([Segment(self.title, self._style("title"))])
        strips: list[Strip] = [title.extend_cell_length(width, base).crop(0, width)]
        plot = max(1, width - LABEL_WIDTH - 1)
        label_style = self._style("label")
        if self.note is not None or not self.points:
            note = self.note or "no data yet"
            lines = height - len(strips)
            for i in range(lines):
                text = f"  {note}" if i == (lines - 1) // 2 else ""
                line = Strip([Segment(text, self._style("note"))])
                strips.append(line.extend_cell_length(width, base).crop(0, width))
            return strips
        for series, lines in self._layout(height):
            values = column_values(self.points, series.value, plot)
            known = [v for v in values if v is not None]
            top = max(known) if known else 0.0
            last = next((v for v in reversed(values) if v is not None), None)
            labels = [
                f"{series.label:<10}{series.fmt(last):>8}",
                f"{'max':<10}{series.fmt(top) if known else NA:>8}",
                f"{'min':<10}{series.fmt(min(known)) if known else NA:>8}",
            ]
            bars = bar_rows(values, lines, top)
            if not known:
                middle = (lines - 1) // 2
                bars[middle] = "no data in this window".center(plot)[:plot]
            for i in range(lines):
                label = labels[i] if i < len(labels) else ""
                strips.append(
                    Strip(
                        [
                            Segment(label.ljust(LABEL_WIDTH)[:LABEL_WIDTH], label_style),
                            Segment(" ", base),
                            Segment(bars[i], self._style(series.style) if known else self._style("note")),
                        ]
                    )
                    .extend_cell_length(width, base)
                    .crop(0, width)
                )
        return strips

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self._built_for != (width, height):
            self._strips = self._build(width, height)
            self._built_for = (width, height)
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self._style(""))
