"""The lines between the header and the message line, shared by the GPU table, the processes
panel (when shown), the engine panel and the graph, in that order of importance.

CSS can cap a panel's height but cannot say "every GPU row first, then the processes asked for,
then the engines, then the graph only if it gets enough lines to mean something", so this
container gives each panel its height whenever its own size (a resize, a header that grew) or
the tables' rows change.
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget

from tokentop.tui.engine_table import ENGINE_COLUMNS
from tokentop.tui.gpu_table import FIRST_SORT, GPU_COLUMNS
from tokentop.tui.processes import PROCESS_COLUMNS
from tokentop.tui.widgets.grid import HEADER_HEIGHT, GridTable

GRAPH_MIN = 4  # the graph's title and three lines of one chart; less is no chart at all
GPU_ROWS_FIRST = 16  # up to this many GPU rows come before the other panels
TABLE_MIN = HEADER_HEIGHT + 1  # a table that cannot show one row is left out


def _table_lines(wanted: int, free: int) -> int:
    lines = min(wanted, free)
    return lines if lines >= TABLE_MIN else 0


def panel_heights(free: int, gpu_lines: int, engine_lines: int, process_lines: int = 0) -> tuple[int, int, int, int]:
    """Lines for (GPU table, processes panel, engine panel, graph) out of ``free``: every GPU row
    if it fits (the first ``GPU_ROWS_FIRST`` of many before the rest), then the processes (0
    lines: hidden), then every engine, then the rest to the graph, which draws a chart from
    ``GRAPH_MIN`` lines up."""
    free = max(0, free)
    gpus = min(gpu_lines, free)
    if gpus > HEADER_HEIGHT + GPU_ROWS_FIRST:  # many GPUs: the other panels keep their rows too
        gpus = max(HEADER_HEIGHT + GPU_ROWS_FIRST, min(gpus, free - engine_lines - process_lines))
    processes = _table_lines(process_lines, free - gpus)
    engines = _table_lines(engine_lines, free - gpus - processes)
    return gpus, processes, engines, free - gpus - processes - engines


class Panels(Widget):
    """Holds the tables and the graph and sizes them with ``panel_heights``."""

    def __init__(
        self,
        gpus: GridTable[Any],
        processes: GridTable[Any],
        engines: GridTable[Any],
        graph: Widget,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._gpus, self._processes, self._engines, self._graph = gpus, processes, engines, graph
        self.heights: tuple[int, int, int, int] | None = None

    def compose(self) -> ComposeResult:
        yield self._gpus
        yield self._processes
        yield self._engines
        yield self._graph

    def on_resize(self, event: events.Resize) -> None:
        self.fit()

    def fit(self) -> None:
        """Give each panel its lines; nothing happens when they are the same as before."""
        processes = self._processes.wanted_height if self._processes.display else 0
        heights = panel_heights(self.size.height, self._gpus.wanted_height, self._engines.wanted_height, processes)
        if heights == self.heights:
            return
        self.heights = heights
        for widget, lines in zip((self._gpus, self._processes, self._engines, self._graph), heights, strict=True):
            widget.styles.height = lines


def host_panels(graph: Widget, *, gpus_empty: str, engines_empty: str, processes_empty: str, id: str) -> Panels:
    """A host's panels, in the local view and in a fleet's opened host: the GPU table (the one
    with the cursor: ids ``gpus``, ``processes``, ``engines``), the process table, hidden until
    shown, the engine table, and ``graph``."""
    gpus = GridTable(GPU_COLUMNS, default_sort=FIRST_SORT, empty_text=gpus_empty, id="gpus")
    engines = GridTable(
        ENGINE_COLUMNS, default_sort="name", id="engines", show_cursor=False, show_sort=False, empty_text=engines_empty
    )
    processes = GridTable(
        PROCESS_COLUMNS,
        default_sort="gpu",
        id="processes",
        show_cursor=False,
        show_sort=False,
        empty_text=processes_empty,
    )
    engines.can_focus = processes.can_focus = False
    processes.display = False
    return Panels(gpus, processes, engines, graph, id=id)
