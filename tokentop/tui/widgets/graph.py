"""Bar charts of tok/s, W and $/Mtok over a window, for one GPU or the host.

Drawn with eighth blocks, one bucket per column (or stretched when there are fewer buckets
than columns). A gap (no data: no ticks, idle $/Mtok, no price) is blank; the last, largest
and smallest values are written beside each chart, so nothing depends on colour. Each chart
gets at least ``CHART_LINES`` lines (a one-line chart is a row of solid blocks that says
nothing): fewer lines show fewer charts, and under a title and one chart, none.

The graph fetches what it draws (``follow``): the last minutes from the app's ``LiveHistory``,
hours and days from the history store, read on a worker thread and kept for a minute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.strip import Strip
from textual.widget import Widget

from tokentop.model import Snapshot
from tokentop.tui.events import HistoryLoaded, HistoryRequest
from tokentop.tui.history import HOST, WINDOWS, GraphPoint, LiveHistory, buckets_for
from tokentop.tui.workers import SeriesStore, read_long_history
from tokentop.units import NA, fmt_tok_s, fmt_usd, fmt_watts, fmt_window, gpu_labels

LEVELS = " ▁▂▃▄▅▆▇█"
LABEL_WIDTH = 19
CHART_LINES = 3  # the fewest lines a chart is drawn on: its last, max and min values beside it
HIDDEN_NOTE = " History: a taller terminal shows it"
LONG_REFRESH_S = 60.0  # the store's rollups are per minute: reading them more often shows nothing new


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


def without_gpu(points: list[GraphPoint]) -> list[GraphPoint]:
    """A host without a GPU reading has no power and no cost: unknown, never 0 W."""
    return [replace(p, watts=None, usd_per_mtok=None) for p in points]


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
    SERIES_DRAWN: tuple[Series, ...] = SERIES  # the charts it may draw, those that fit by rank

    def __init__(
        self, history: LiveHistory, interval_s: float, store: SeriesStore | None = None, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.history, self.interval_s, self.store = history, interval_s, store
        self.window_index = 0  # into ``WINDOWS``
        self.scope = "gpu"  # or "host"
        self._snapshot: Snapshot | None = None  # the tick the graph ends at
        self._selected: str | None = None  # UUID of the GPU to graph
        self._long: dict[tuple[str, int, int], tuple[float, list[GraphPoint], str | None]] = {}
        self._loading: set[tuple[str, int, int]] = set()
        self.title = ""
        self.points: list[GraphPoint] = []
        self.note: str | None = "waiting for the first readings…"
        self._strips: list[Strip] = []
        self._built_for: tuple[int, int] | None = None
        self._styles: dict[str, Style] = {}

    @property
    def plot_width(self) -> int:
        return max(1, self.size.width - LABEL_WIDTH - 1)

    # -- what to draw: the selected GPU or the host, over the chosen window --

    @property
    def key(self) -> str:
        """What is graphed: a GPU's UUID, or ``HOST``."""
        return HOST if self.scope == "host" or self._selected is None else self._selected

    def follow(self, snapshot: Snapshot | None, selected: str | None) -> None:
        """Graph ``selected`` (or the host) over the window that ends at ``snapshot``."""
        self._snapshot, self._selected = snapshot, selected
        if snapshot is None:
            return
        window = WINDOWS[self.window_index]
        buckets = buckets_for(window, self.plot_width, self.interval_s)
        title, key = self._title(snapshot, buckets), self.key
        if not window.from_store:
            points = self.history.series(key, window.seconds, buckets, snapshot.t_mono, self.interval_s)
            self.show(title, without_gpu(points) if not snapshot.gpus else points)
        elif self.store is None:
            self.show(title, [], "no history (database off)")
        else:
            cached = self._long.get((key, self.window_index, buckets))
            if cached is None or snapshot.t_wall - cached[0] >= LONG_REFRESH_S:
                self._load_long((key, self.window_index, buckets, snapshot.t_wall))
            points, note = (cached[1], cached[2]) if cached else ([], "loading history…")
            self.show(title, without_gpu(points) if not snapshot.gpus else points, note)

    def next_window(self) -> None:
        self.window_index = (self.window_index + 1) % len(WINDOWS)
        self.follow(self._snapshot, self._selected)

    def toggle_scope(self) -> None:
        self.scope = "host" if self.scope == "gpu" else "gpu"
        self.follow(self._snapshot, self._selected)

    def _title(self, snapshot: Snapshot, buckets: int) -> str:
        window = WINDOWS[self.window_index]
        if self.key == HOST:
            what = "host (all GPUs)" if snapshot.gpus else "host (no GPU: no W or $/Mtok)"
        else:
            gpu = next((g for g in snapshot.gpus if g.sample.uuid == self.key), None)
            labels = gpu_labels(g.sample.name for g in snapshot.gpus)
            what = f"GPU {gpu.sample.index} {labels[gpu.sample.name]}" if gpu else "GPU"
        step_s = window.seconds / max(1, buckets)
        if window.from_store:  # the store reads 1-minute rollups: whole minutes per bar
            step_s = math.ceil(step_s / 60.0) * 60.0
        step = fmt_window(step_s)
        return f" History · {what} · last {window.label} · {step} per bar · w: window  g: GPU/host"

    def _load_long(self, request: HistoryRequest) -> None:
        """Read one long window from the store on a worker thread (once at a time)."""
        if request[:3] in self._loading or self.store is None:
            return
        self._loading.add(request[:3])
        read = partial(read_long_history, self.store, request)
        self.run_worker(partial(self._read_long, read, request), thread=True, group="history", exit_on_error=False)

    def _read_long(self, read: Callable[[], tuple[list[GraphPoint], str | None]], request: HistoryRequest) -> None:
        """Worker thread: one store query; the answer comes back as a message."""
        points, note = read()
        self.post_message(HistoryLoaded(request, points, note))

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        key, window_index, buckets, until = message.request
        self._loading.discard((key, window_index, buckets))
        self._long[(key, window_index, buckets)] = (until, message.points, message.note)
        self.follow(self._snapshot, self._selected)

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
        drawn = self.SERIES_DRAWN
        count = min(len(drawn), rows // CHART_LINES)
        if count <= 0:
            return []
        kept = sorted(drawn, key=lambda s: s.rank)[:count]
        shown = [s for s in drawn if s in kept]
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
