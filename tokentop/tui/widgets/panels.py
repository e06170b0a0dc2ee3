"""The lines between the header and the message line, shared by the GPU table, the engine panel
and the graph, in that order of importance.

CSS can cap a panel's height but cannot say "every GPU row first, then the engines, then the
graph only if it gets enough lines to mean something", so this container gives each panel its
height whenever its own size (a resize, a header that grew) or the tables' rows change.
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget

from tokentop.tui.widgets.grid import HEADER_HEIGHT, GridTable

GRAPH_MIN = 4  # the graph's title and three lines of one chart; less is no chart at all
GPU_ROWS_FIRST = 16  # up to this many GPU rows come before the engine panel
TABLE_MIN = HEADER_HEIGHT + 1  # a table that cannot show one row is left out


def panel_heights(free: int, gpu_lines: int, engine_lines: int) -> tuple[int, int, int]:
    """Lines for (GPU table, engine panel, graph) out of ``free``: every GPU row if it fits
    (the first ``GPU_ROWS_FIRST`` of many before any engine), then every engine, then the rest
    to the graph, which draws a chart from ``GRAPH_MIN`` lines up."""
    free = max(0, free)
    gpus = min(gpu_lines, free)
    if gpus > HEADER_HEIGHT + GPU_ROWS_FIRST:  # many GPUs: the engine panel keeps its rows too
        gpus = max(HEADER_HEIGHT + GPU_ROWS_FIRST, min(gpus, free - engine_lines))
    engines = min(engine_lines, free - gpus)
    if engines < TABLE_MIN:
        engines = 0
    return gpus, engines, free - gpus - engines


class Panels(Widget):
    """Holds the two tables and the graph and sizes them with ``panel_heights``."""

    def __init__(self, gpus: GridTable[Any], engines: GridTable[Any], graph: Widget, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._gpus, self._engines, self._graph = gpus, engines, graph
        self.heights: tuple[int, int, int] | None = None

    def compose(self) -> ComposeResult:
        yield self._gpus
        yield self._engines
        yield self._graph

    def on_resize(self, event: events.Resize) -> None:
        self.fit()

    def fit(self) -> None:
        """Give each panel its lines; nothing happens when they are the same as before."""
        heights = panel_heights(self.size.height, self._gpus.wanted_height, self._engines.wanted_height)
        if heights == self.heights:
            return
        self.heights = heights
        for widget, lines in zip((self._gpus, self._engines, self._graph), heights):
            widget.styles.height = lines
