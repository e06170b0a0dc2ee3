"""A small, cheap table drawn line by line (Textual's line API).

Why not ``DataTable``: its render cache is dropped whenever any cell changes, and it sizes
columns from content. A monitor redraws every second, so this table keeps one ready-made
``Strip`` per row and rebuilds only rows whose text changed; columns have fixed widths and
give way by priority on narrow terminals (``fit_columns``). The header is two lines (quantity
and unit, then window) and stays put while the rows scroll.

A row may carry sub-rows (a GPU's MIG instances): drawn right under it, moved with it when
sorting, never selected themselves (the cursor skips them; a click selects their parent).

When the rows do not all fit, the last line says how many are above and below ("▼ 6 more
below"), and the cursor, the wheel or a click on that line scrolls. Column widths follow the
content: a cell may offer shorter forms (``Cell.shorter``) and identity columns keep room for
their shortest, so a narrow table drops less important columns before a row's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tokentop.tui.columns import (
    PADDING,
    Cell,
    ColumnSpec,
    ContentWidth,
    content_widths,
    fit_columns,
    fit_text,
    sort_rows,
)
from tokentop.tui.widgets.grid_lines import GridLines

R = TypeVar("R")
SubRows = Sequence[tuple[str, dict[str, Cell]]]  # (sub-row key, column key -> cell)

HEADER_HEIGHT = 2


class _Frame(NamedTuple):
    """What every line of one paint shares."""

    width: int
    top: int  # the first row shown
    body_rows: int  # lines for rows
    overflows: bool  # the last line says how many rows are hidden
    focused: bool  # the cursor shows


class GridTable(ScrollView, Generic[R], can_focus=True):
    """Rows of ``R`` under ``ColumnSpec`` columns, with a row cursor kept on a row *key*."""

    COMPONENT_CLASSES = {
        "grid--header",
        "grid--sorted",
        "grid--cursor",
        "grid--bad",
        "grid--warn",
        "grid--dim",
        "grid--good",
        "grid--empty",
        "grid--bar",
        "grid--more",
    }

    BINDINGS = [
        Binding("up", "cursor(-1)", "up", show=False),
        Binding("down", "cursor(1)", "down", show=False),
        Binding("pageup", "cursor(-10)", show=False),
        Binding("pagedown", "cursor(10)", show=False),
        Binding("home", "cursor(-1000000)", show=False),
        Binding("end", "cursor(1000000)", show=False),
    ]

    class Selected(Message):
        """The cursor moved to another row."""

        def __init__(self, table: GridTable[Any], key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

    def __init__(
        self,
        specs: Sequence[ColumnSpec[R]],
        *,
        default_sort: str,
        empty_text: str = "",
        id: str | None = None,
        show_cursor: bool = True,
        show_sort: bool = True,
    ) -> None:
        super().__init__(id=id)
        self.specs = tuple(specs)
        self.sort_key = default_sort
        spec = self._spec(default_sort)
        self.sort_descending = spec.descending if spec else False
        self.empty_text = empty_text
        self.show_cursor = show_cursor
        self.show_sort = show_sort
        self.cursor_key: str | None = None
        self._windows: dict[str, str] = {"rate": "", "cost": ""}
        self._lengths: dict[str, str] = {}
        self._items: dict[str, R] = {}
        self._keys: list[str] = []
        self._cells: dict[str, dict[str, Cell]] = {}  # row key -> column key -> cell
        self._children: dict[str, list[str]] = {}  # row key -> its sub-row keys, in order
        self._parent_of: dict[str, str] = {}  # sub-row key -> row key
        self._columns: list[tuple[ColumnSpec[R], int]] = []
        self._content: dict[str, ContentWidth] = {}
        self._fitted_for: tuple[int, dict[str, ContentWidth], dict[str, str]] | None = None
        self._styles: dict[str, Style] = {}
        self._lines = GridLines(self._style)
        self._frame: _Frame | None = None  # the geometry of the paint under way

    # -- data in --

    @property
    def windows(self) -> dict[str, str]:
        """What ``{rate}`` and ``{cost}`` in the headers read as (the spans change while the
        windows fill): the header lines are redrawn when they change, even if no row does."""
        return self._windows

    @windows.setter
    def windows(self, windows: dict[str, str]) -> None:
        if windows != self._windows:
            self._windows = dict(windows)
            self.refresh(Region(0, 1, self.size.width, 1))  # the header's window line (it stays put while rows scroll)

    @property
    def lengths(self) -> dict[str, str]:
        """The windows' full lengths (``columns.window_lengths``): columns are made wide enough
        for their headers with these, never cut."""
        return self._lengths

    @lengths.setter
    def lengths(self, lengths: dict[str, str]) -> None:
        if lengths != self._lengths:
            self._lengths = dict(lengths)
            self._fit()
            self.refresh()

    def _spec(self, key: str) -> ColumnSpec[R] | None:
        return next((s for s in self.specs if s.key == key), None)

    def set_rows(
        self,
        items: Sequence[R],
        key_of: Callable[[R], str],
        sub_rows_of: Callable[[R], SubRows] | None = None,
    ) -> None:
        """New data for every row; only rows whose cells changed are redrawn.

        ``sub_rows_of`` gives a row's sub-rows; a column a sub-row does not fill is blank.
        """
        self._items = {key_of(item): item for item in items}
        cells = {key: {spec.key: spec.cell(item) for spec in self.specs} for key, item in self._items.items()}
        self._children, self._parent_of = {}, {}
        if sub_rows_of is not None:
            blank = Cell("")
            for key, item in self._items.items():
                for sub_key, sub_cells in sub_rows_of(item):
                    self._children.setdefault(key, []).append(sub_key)
                    self._parent_of[sub_key] = key
                    cells[sub_key] = {spec.key: sub_cells.get(spec.key, blank) for spec in self.specs}
        changed = [key for key, row in cells.items() if row != self._cells.get(key)]
        self._cells = cells
        self._lines.keep(cells.keys())
        content = content_widths(self.specs, cells.values())
        order = self._sorted_keys()
        if order != self._keys or content != self._content:
            resized = len(order) != len(self._keys)
            self._keys, self._content = order, content
            self._update_virtual_size()
            self.refresh(layout=resized)
        elif changed:  # same rows in the same order: repaint only the rows on screen that changed
            top, rows, width = self._top(), self._body_rows(), self.size.width
            lines = (order.index(key) - top for key in changed)
            regions = [Region(0, HEADER_HEIGHT + line, width, 1) for line in lines if 0 <= line < rows]
            if regions:
                self.refresh(*regions)
        if self.cursor_key not in self._items:
            self.cursor_key = order[0] if order else None
            self.post_message(self.Selected(self, self.cursor_key))

    def _sorted_keys(self) -> list[str]:
        """Display order: the rows sorted, each followed by its sub-rows."""
        spec = self._spec(self.sort_key)
        if spec is None or spec.sort_value is None:
            rows = list(self._items)
        else:
            value = spec.sort_value
            rows = sort_rows(list(self._items), lambda key: value(self._items[key]), self.sort_descending)
        if not self._children:
            return rows
        return [shown for key in rows for shown in (key, *self._children.get(key, ()))]

    def _resort(self) -> None:
        self._keys = self._sorted_keys()
        self._scroll_cursor_into_view()
        self.refresh()

    # -- sorting --

    def sortable_keys(self) -> list[str]:
        """Keys of the visible columns that can sort, in display order."""
        return [spec.key for spec, _ in self._columns if spec.sort_value is not None] or [
            s.key for s in self.specs if s.sort_value is not None
        ]

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        spec = self._spec(key)
        if spec is None or spec.sort_value is None:
            return
        self.sort_key = key
        self.sort_descending = spec.descending if descending is None else descending
        self._resort()

    def sort_next(self) -> None:
        keys = self.sortable_keys()
        position = keys.index(self.sort_key) if self.sort_key in keys else -1
        self.sort_by(keys[(position + 1) % len(keys)])

    def sort_reverse(self) -> None:
        self.sort_by(self.sort_key, not self.sort_descending)

    def sort_toggle(self, key: str) -> None:
        """Sort by ``key`` in its natural order; reverse when it is already the sort column."""
        if key == self.sort_key:
            self.sort_reverse()
        else:
            self.sort_by(key)

    @property
    def sort_label(self) -> str:
        """What the table is sorted by, as its header says it: ``$/Mtok 1m ▼``."""
        spec = self._spec(self.sort_key)
        if spec is None:
            return ""
        words = f"{spec.title} {spec.window.format(**self.windows)}".strip()
        return f"{words} {'▼' if self.sort_descending else '▲'}"

    @property
    def row_keys(self) -> list[str]:
        """Row keys in display order, sub-rows included."""
        return list(self._keys)

    def parent_of(self, key: str) -> str | None:
        """The row a sub-row belongs to; None for a row."""
        return self._parent_of.get(key)

    @property
    def visible_columns(self) -> list[str]:
        return [spec.key for spec, _ in self._columns]

    def cell(self, row_key: str, column_key: str) -> Cell:
        return self._cells[row_key][column_key]

    def cell_text(self, row_key: str, column_key: str) -> str:
        return self.cell(row_key, column_key).text

    # -- cursor --

    def select(self, key: str | None) -> None:
        """Put the cursor on ``key`` (on its parent row when it is a sub-row)."""
        key = self._parent_of.get(key, key) if key is not None else None
        if key == self.cursor_key or (key is not None and key not in self._items):
            return
        self.cursor_key = key
        self._scroll_cursor_into_view()
        self.refresh()
        self.post_message(self.Selected(self, key))

    def action_cursor(self, step: int) -> None:
        rows = [key for key in self._keys if key not in self._parent_of] if self._parent_of else self._keys
        if not rows:
            return
        position = rows.index(self.cursor_key) if self.cursor_key in rows else 0
        self.select(rows[max(0, min(len(rows) - 1, position + step))])

    def _scroll_cursor_into_view(self) -> None:
        if self.cursor_key not in self._keys:
            return
        position = self._keys.index(self.cursor_key)
        rows = max(1, self._body_rows())
        top = self._top()
        if position < top:
            self.scroll_to(y=position, animate=False)
        elif position >= top + rows:
            self.scroll_to(y=position - rows + 1, animate=False)

    def on_click(self, event: events.Click) -> None:
        if event.y < HEADER_HEIGHT:
            x = 0
            for spec, width in self._columns:
                x += width + 2 * PADDING
                if event.x < x:
                    self.sort_toggle(spec.key)
                    return
            return
        line = event.y - HEADER_HEIGHT
        rows = self._body_rows()
        if line >= rows and self._overflows():  # the "more" line: a page down, or back to the top
            below = len(self._keys) - self._top() - rows
            self.scroll_to(y=self._top() + max(1, rows) if below > 0 else 0, animate=False)
            return
        position = self._top() + line
        if 0 <= position < len(self._keys):
            self.select(self._keys[position])

    # -- layout --

    @property
    def wanted_height(self) -> int:
        """Lines to show every row: the two header lines and one per row (or the empty text)."""
        return HEADER_HEIGHT + max(1, len(self._keys))

    def _overflows(self) -> bool:
        return self._shown_rows(self.size.height)[0]

    def _body_rows(self) -> int:
        return self._shown_rows(self.size.height)[1]

    def _top(self) -> int:
        return self._shown_rows(self.size.height)[2]

    def _shown_rows(self, height: int) -> tuple[bool, int, int]:
        """At ``height`` lines: whether the rows overflow, the lines for rows (all below the
        header, less the "more" line when they do not all fit) and the first row shown (the
        scroll offset, kept within the rows)."""
        overflows = len(self._keys) > height - HEADER_HEIGHT
        body = max(0, height - HEADER_HEIGHT)
        body_rows = body - 1 if overflows and body > 0 else body
        return overflows, body_rows, max(0, min(self.scroll_offset.y, len(self._keys) - body_rows))

    @property
    def allow_vertical_scroll(self) -> bool:
        """The wheel scrolls rows that do not all fit (there is no scrollbar: the last line says
        how many are hidden)."""
        return not self.disabled and self.max_scroll_y > 0

    def _update_virtual_size(self) -> None:
        more = 1 if self._overflows() else 0
        self.virtual_size = Size(self.size.width, HEADER_HEIGHT + max(1, len(self._keys)) + more)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.wanted_height

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()
        self._fit()

    def _fit(self) -> None:
        width = self.scrollable_content_region.width
        if self._fitted_for != (width, self._content, self._lengths):
            self._fitted_for = (width, self._content, dict(self._lengths))
            self._columns = fit_columns(self.specs, width, PADDING, self._content, self._lengths)
            self._lines.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()
        self._styles.clear()

    # -- drawing --

    def _style(self, name: str) -> Style:
        """The widget's style plus a component class (cached: resolving styles is not cheap)."""
        style = self._styles.get(name)
        if style is None:
            base = self.rich_style
            for part in name.split("+") if name else ():
                base += self.get_component_rich_style(f"grid--{part}")
            style = self._styles[name] = base
        return style

    @property
    def has_focus_within_app(self) -> bool:
        """The cursor shows while this table is the focused one (or nothing else is)."""
        focused = self.screen.focused if self.is_attached else None
        return focused is None or focused is self

    def more_text(self) -> str:
        """What the last line says when the rows do not all fit: how many are hidden where."""
        top, rows = self._top(), self._body_rows()
        below = len(self._keys) - top - rows
        parts = ([f"▼ {below} more below"] if below > 0 else []) + ([f"▲ {top} more above"] if top > 0 else [])
        how = "(↑↓, wheel)" if self.can_focus else "(wheel)"
        return f" {' · '.join(parts)}  {how}" if parts else ""

    def _measure(self) -> _Frame:
        self._fit()
        overflows, body_rows, top = self._shown_rows(self.size.height)
        width = self.scrollable_content_region.width
        return _Frame(width, top, body_rows, overflows, self.has_focus_within_app)

    def render_lines(self, crop: Region) -> list[Strip]:
        """Work out the geometry once per paint, not once per line: asking a widget its size
        or focus is not free."""
        self._frame = self._measure()
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int) -> Strip:
        frame = self._frame or self._measure()  # measured here when called outside a paint
        width, top, body_rows = frame.width, frame.top, frame.body_rows
        if y < HEADER_HEIGHT:
            sorted_by = self.sort_key if self.show_sort else None
            if y == 0:
                return self._lines.titles(self._columns, width, sorted_by, self.sort_descending)
            return self._lines.windows(self._columns, width, self.windows, sorted_by)
        line = y - HEADER_HEIGHT
        if line == body_rows and frame.overflows:
            return Strip([Segment(fit_text(self.more_text(), width, False), self._style("more"))])
        position = top + line
        if 0 <= position < len(self._keys) and line < body_rows:
            key = self._keys[position]
            cursor = self.show_cursor and key == self.cursor_key and frame.focused
            return self._lines.row(key, self._cells[key], self._columns, width, cursor)
        if position == 0 and self.empty_text:
            return Strip([Segment(fit_text(" " + self.empty_text, width, False), self._style("empty"))])
        return Strip.blank(width, self._style(""))

    def on_focus(self) -> None:
        self.refresh()  # the cursor shows or hides

    def on_blur(self) -> None:
        self.refresh()
