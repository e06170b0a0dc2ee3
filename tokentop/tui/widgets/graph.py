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
from functools import lru_cache, partial

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from tokentop.model import Snapshot
from tokentop.tui.events import HistoryLoaded, HistoryRequest
from tokentop.tui.history import HOST, WINDOWS, GraphPoint, LiveHistory, buckets_for
from tokentop.tui.widgets.strips import changed_lines, fitted
from tokentop.tui.workers import SeriesStore, read_long_history
from tokentop.units import NA, fmt_tok_s, fmt_usd, fmt_watts, fmt_window, gpu_labels

LEVELS = " ▁▂▃▄▅▆▇█"
LABEL_WIDTH = 19
CHART_LINES = 3  # the fewest lines a chart is drawn on: its last, max and min values beside it
HIDDEN_NOTE = " History: a taller terminal shows it"
Line = tuple[tuple[str, str], ...]  # a line as (text, style name) pieces
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


@lru_cache(maxsize=32)
def _repeats(points: int, width: int) -> tuple[int, ...]:
    """How many of ``width`` plot columns each point takes (buckets stretched over the width;
    0: a point left out, when there are more points than columns)."""
    counts = [0] * points
    for col in range(width):
        counts[min(points - 1, col * points // width)] += 1
    return tuple(counts)


def bar_rows(values: Sequence[float | None], repeats: Sequence[int], height: int, top: float) -> list[str]:
    """``height`` lines of bar characters, top line first: each value drawn over as many plot
    columns as ``repeats`` gives it; ``top`` is the full-height value."""
    if height <= 0:
        return []
    blocks = []
    for value, repeat in zip(values, repeats, strict=True):
        if not repeat:
            continue
        if value is None or value <= 0 or top <= 0:
            blocks.append(_bar_block(0, height, repeat))
        else:
            blocks.append(_bar_block(max(1, round(min(1.0, value / top) * height * 8)), height, repeat))
    if not blocks:
        return [""] * height
    return ["".join(parts) for parts in zip(*blocks, strict=True)]


@lru_cache(maxsize=1024)
def _bar_block(eighths: int, height: int, repeat: int) -> tuple[str, ...]:
    """``repeat`` plot columns of a bar ``eighths`` eighths of a cell high, one string per line,
    top first (kept: a chart has few heights, whatever its values)."""
    full, part = divmod(eighths, 8)
    column = " " * (height - full - (1 if part else 0)) + (LEVELS[part] if part else "") + "█" * full
    return tuple(cell * repeat for cell in column)


SINGLE_CELLS = frozenset(LEVELS + "█")  # the bars' characters, each one cell wide


def _cells(text: str) -> int:
    """Cells ``text`` takes; a chart's bars and labels (block characters, ASCII) counted by
    length, the way that costs least (``cell_len`` looks at each character of a string it has
    not seen, and bars are new every tick)."""
    one_cell_each = (text.isascii() and text.isprintable()) or SINGLE_CELLS.issuperset(text)
    return len(text) if one_cell_each else cell_len(text)


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
        self._lines: list[Line] = []  # what each line shows, for the size below
        self._lines_for: Size | None = None
        self._strips: dict[int, tuple[tuple[int, Line], Strip]] = {}  # line -> ((width, line), strip)
        self._charts: dict[str, tuple[tuple[int, int, tuple[float | None, ...]], list[Line]]] = {}  # by series
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
        """New chart data; repaints only the lines that differ (a chart whose values did not
        move, a label that says the same, stay as they are)."""
        if (title, points, note) == (self.title, self.points, self.note):
            return
        self.title, self.points, self.note = title, points, note
        size = self.size
        if self._lines_for != size or not size.area:
            self._lines_for = None
            self.refresh()
            return
        lines = self._build(*size)
        regions = changed_lines(self._lines, lines, size.width)
        self._lines = lines
        if regions:
            self.refresh(*regions)

    def on_resize(self, event: events.Resize) -> None:
        self._lines_for = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
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

    def _build(self, width: int, height: int) -> list[Line]:
        """What each line shows, as (text, style) pieces: compared line by line with what is on
        screen, so only the lines that differ are made again."""
        if not self._layout(height):  # too short for one chart: say so on its first line
            return [((HIDDEN_NOTE, "note"),)] if height > 0 else []
        lines: list[Line] = [((self.title, "title"),)]
        if self.note is not None or not self.points:
            note = self.note or "no data yet"
            rows = height - len(lines)
            lines += [((f"  {note}" if i == (rows - 1) // 2 else "", "note"),) for i in range(rows)]
            return lines
        plot = max(1, width - LABEL_WIDTH - 1)
        for series, rows in self._layout(height):
            lines += self._chart(series, rows, plot)
        return lines

    def _chart(self, series: Series, rows: int, plot: int) -> list[Line]:
        """One series' lines: bars ``plot`` columns wide, its last, max and min values beside
        (kept while its values stay the same: a chart of an idle engine does not move)."""
        per_point = tuple(series.value(point) for point in self.points)
        kept = self._charts.get(series.label)
        if kept is not None and kept[0] == (rows, plot, per_point):
            return kept[1]
        repeats = _repeats(len(per_point), plot)
        values = [value for value, repeat in zip(per_point, repeats, strict=True) if repeat]  # those on screen
        known = [v for v in values if v is not None]
        top = max(known) if known else 0.0
        last = next((v for v in reversed(values) if v is not None), None)
        labels = [
            f"{series.label:<10}{series.fmt(last):>8}",
            f"{'max':<10}{series.fmt(top) if known else NA:>8}",
            f"{'min':<10}{series.fmt(min(known)) if known else NA:>8}",
        ]
        bars = bar_rows(per_point, repeats, rows, top)
        if not known:
            bars[(rows - 1) // 2] = "no data in this window".center(plot)[:plot]
        style = series.style if known else "note"
        lines: list[Line] = [
            (
                ((labels[i] if i < len(labels) else "").ljust(LABEL_WIDTH)[:LABEL_WIDTH], "label"),
                (" ", ""),
                (bars[i], style),
            )
            for i in range(rows)
        ]
        self._charts[series.label] = ((rows, plot, per_point), lines)
        return lines

    def render_lines(self, crop: Region) -> list[Strip]:
        """The lines are worked out for the size once per paint (asking a widget its size is
        not free), then drawn by ``render_line``."""
        size = self.size
        if self._lines_for != size:
            self._lines, self._lines_for = self._build(*size), size
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        lines, size = self._lines, self._lines_for
        width = size.width if size is not None else self.size.width
        if y >= len(lines):
            return Strip.blank(width, self._style(""))
        line = lines[y]
        kept = self._strips.get(y)
        if kept is not None and kept[0] == (width, line):
            return kept[1]
        segments = [Segment(text, self._style(name)) for text, name in line]
        strip = fitted(segments, width, self._style(""), length=sum(_cells(text) for text, _ in line))
        self._strips[y] = ((width, line), strip)
        return strip
