"""The fleet view's widgets, each the local view's with what differs:

- ``PartsHeader``: the local ``HeaderBar`` (its drawing, styles and caching) over lines made by
  any function of the data shown (the fleet's totals, or an opened host's).
- ``FleetGraph``: the local ``HistoryGraph`` fed with a source's past; no "in tok/s" chart, the
  series has no input tokens.
- ``FleetPanels``: the hosts table first, then the graph with what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget

from tokentop.config import CostConfig
from tokentop.tui.header_parts import Part
from tokentop.tui.history import LiveHistory
from tokentop.tui.widgets.graph import SERIES, HistoryGraph, Series
from tokentop.tui.widgets.grid import GridTable
from tokentop.tui.widgets.header import HeaderBar
from tokentop.tui.widgets.panels import GRAPH_MIN

MakeRows = Callable[[Any, str, int], list[list[Part]]]  # (data, state, width) -> lines
GRAPH_AFTER_ROWS = 10  # with many hosts the graph gets its lines only while this many rows stay


class PartsHeader(HeaderBar):
    """The header's lines made by ``make_rows(data, state, width)``; redrawn when the data
    (compared by identity: readings are frozen), the state or the width change."""

    def __init__(self, make_rows: MakeRows, *, id: str | None = None) -> None:
        super().__init__("", CostConfig(), id=id)
        self.make_rows = make_rows
        self.data: Any = None
        self._made: tuple[int, Any, str, list[list[Part]]] | None = None

    def show_data(self, data: Any, state: str) -> None:
        self.data = data
        self.show(None, state)

    def rows_for(self, width: int) -> list[list[Part]]:
        made = self._made
        if made is None or made[0] != width or made[1] is not self.data or made[2] != self.state:
            made = self._made = (
                width,
                self.data,
                self.state,
                self.make_rows(self.data, self.state, max(20, width - 2)),
            )
        return made[3]


FLEET_SERIES: tuple[Series, ...] = tuple(s for s in SERIES if s.style != "in")


class FleetGraph(HistoryGraph):
    """A ``HistoryGraph`` drawn only through ``show(title, points, note)``: the app fetches the
    source's past off the event loop and hands the points over. Its charts: the local graph's
    but input tok/s (a source's past gives output tok/s, W and $/h, so $/Mtok)."""

    SERIES_DRAWN = FLEET_SERIES

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(LiveHistory(keep_s=0.0), 1.0, None, id=id)
        self.note = "waiting for the source's past…"


def fleet_heights(free: int, table_lines: int) -> tuple[int, int]:
    """Lines for (hosts table, graph): every row when the graph still gets ``GRAPH_MIN`` lines;
    else the graph's ``GRAPH_MIN`` while ``GRAPH_AFTER_ROWS`` rows stay, else all to the table."""
    free = max(0, free)
    if table_lines + GRAPH_MIN <= free:
        return table_lines, free - table_lines
    table = free - GRAPH_MIN
    if table - 3 >= GRAPH_AFTER_ROWS:  # the two header lines and the "more" line
        return table, GRAPH_MIN
    return free, 0


class FleetPanels(Widget):
    """Holds the hosts table and the graph, and sizes them with ``fleet_heights``."""

    DEFAULT_CSS = "FleetPanels { height: 1fr; layout: vertical; }"

    def __init__(self, table: GridTable[Any], graph: Widget, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._table, self._graph = table, graph
        self.heights: tuple[int, int] | None = None

    def compose(self) -> ComposeResult:
        yield self._table
        yield self._graph

    def on_resize(self, event: events.Resize) -> None:
        self.fit()

    def fit(self) -> None:
        heights = fleet_heights(self.size.height, self._table.wanted_height)
        if heights == self.heights:
            return
        self.heights = heights
        self._table.styles.height, self._graph.styles.height = heights
        self._graph.display = heights[1] > 0
