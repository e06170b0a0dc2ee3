"""How a ``GridTable`` draws its lines: the two header lines and the rows, as strips.

A monitor's table changes a few cells a second, so each part is kept until what it shows
changes: a row's strip until one of its cells does, a cell's segments until its text, width
or cursor does (a row with one new figure remakes one cell), and each header line apart (the
windows' spans change while they fill; the titles and the sort arrow seldom do).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from tokentop.tui.columns import PADDING, Cell, ColumnSpec, fit_text, title_text
from tokentop.tui.widgets.strips import fitted

PAD = " " * PADDING
CELLS_KEPT = 2048  # cells' segments kept at most: those on screen (some 700 on a tall terminal), ticks before

Columns = Sequence[tuple[ColumnSpec[Any], int]]  # the columns shown and their widths


class GridLines:
    """The lines of one table, made from ``style`` (a cell style name -> the table's style;
    ``cursor+bad``: both) and kept until what they show changes; ``clear`` when the columns,
    their widths or the styles change."""

    def __init__(self, style: Callable[[str], Style]) -> None:
        self._style = style
        self._rows: dict[str, tuple[Any, Strip]] = {}  # row key -> (what it shows, strip)
        # (width, right, cursor, id of the cell) -> (the cell, its segments): cells are kept
        # objects (``columns.text_cell``), so one that did not change is found by identity
        self._cells: dict[tuple[int, bool, bool, int], tuple[Cell, list[Segment]]] = {}
        self._titles: tuple[Any, Strip] | None = None
        self._windows: tuple[Any, Strip] | None = None

    def keep(self, keys: Collection[str]) -> None:
        """Forget the lines of rows no longer in the table (ended processes, dropped engines)."""
        for key in self._rows.keys() - keys:
            del self._rows[key]

    def clear(self) -> None:
        self._rows.clear()
        self._cells.clear()
        self._titles = self._windows = None

    def titles(self, columns: Columns, width: int, sorted_by: str | None, descending: bool) -> Strip:
        """The first header line: each column's title, the sort column's with its arrow."""
        shown = (width, sorted_by, descending)
        if self._titles is not None and self._titles[0] == shown:
            return self._titles[1]
        base = self._style("header")
        sorted_style = self._style("header+sorted")
        arrow = "▼" if descending else "▲"
        segments = []
        for spec, col_width in columns:
            sorted_here = spec.key == sorted_by
            text = title_text(spec.title, col_width, spec.right, arrow if sorted_here else None)
            segments.append(Segment(text, sorted_style if sorted_here else base))
        strip = fitted(segments, width, base, simplify=True)
        self._titles = (shown, strip)
        return strip

    def windows(self, columns: Columns, width: int, windows: Mapping[str, str], sorted_by: str | None) -> Strip:
        """The second header line: each column's window (``in 1m``, ``now``)."""
        shown = (width, tuple(windows.items()), sorted_by)
        if self._windows is not None and self._windows[0] == shown:
            return self._windows[1]
        base = self._style("header")
        sorted_style = self._style("header+sorted")
        segments = [
            Segment(
                PAD + fit_text(spec.window.format(**windows), col_width, spec.right) + PAD,
                sorted_style if spec.key == sorted_by else base,
            )
            for spec, col_width in columns
        ]
        strip = fitted(segments, width, base, simplify=True)
        self._windows = (shown, strip)
        return strip

    def row(self, key: str, cells: Mapping[str, Cell], columns: Columns, width: int, cursor: bool) -> Strip:
        """One row: its cells, each padded to its column."""
        row_cells = tuple(cells[spec.key] for spec, _ in columns)
        shown = (width, cursor, row_cells)
        kept = self._rows.get(key)
        if kept is not None and kept[0] == shown:
            return kept[1]
        if len(self._cells) > CELLS_KEPT:
            self._cells.clear()
        segments: list[Segment] = []
        length = 0
        for (spec, col_width), cell in zip(columns, row_cells, strict=True):
            segments += self._cell(cell, col_width, spec.right, cursor)
            length += col_width + 2 * PADDING
        strip = fitted(segments, width, self._style("cursor" if cursor else ""), simplify=True, length=length)
        self._rows[key] = (shown, strip)
        return strip

    def _cell(self, cell: Cell, width: int, right: bool, cursor: bool) -> list[Segment]:
        """A cell's segments in ``width`` cells and its padding; a bar (memory) in its own style."""
        made_for = (width, right, cursor, id(cell))
        kept = self._cells.get(made_for)
        if kept is not None and kept[0] is cell:
            return kept[1]
        base = self._style("cursor" if cursor else "")
        style = (self._style(f"cursor+{cell.style}") if cursor else self._style(cell.style)) if cell.style else base
        bar, text = cell.with_bar(width)
        if bar:
            text = fit_text(bar + text, width, right)
            split = max(0, len(text) - len(cell.text)) if right else min(len(bar), len(text))
            bar_style = self._style("cursor+bar" if cursor else "bar")
            made = [Segment(PAD, base), Segment(text[:split], bar_style), Segment(text[split:] + PAD, style)]
        else:
            made = [Segment(PAD + fit_text(cell.fitting(width), width, right) + PAD, style)]
        self._cells[made_for] = (cell, made)
        return made
