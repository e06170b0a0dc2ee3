"""The top lines (``header_parts`` says what they hold), drawn line by line from cached styles:
they change every second, so drawing them stays cheap."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from tokentop.config import CostConfig
from tokentop.model import Snapshot
from tokentop.tui.columns import DEFAULT_BANDS, CostBands
from tokentop.tui.header_parts import SEPARATOR, Part, header_rows, plain_text
from tokentop.tui.host import HostUsage
from tokentop.tui.widgets.strips import changed_lines, fitted


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
        self.usage: HostUsage | None = None  # the host's CPU and memory, shown where there is room
        self.state = "starting"
        # (width, snapshot, state, usage) asked, and the rows made for them
        self._rows: tuple[tuple[int, Snapshot | None, str, HostUsage | None], list[list[Part]]] | None = None
        self._shown: list[list[Part]] = []
        self._strips: dict[int, tuple[tuple[int, list[Part]], Strip]] = {}  # line -> ((width, parts), strip)
        self._styles: dict[str, Style] = {}

    def show(self, snapshot: Snapshot | None, state: str, usage: HostUsage | None = None) -> None:
        """Redraw from a snapshot; ``state`` is the status at the end of the first line."""
        self.snapshot, self.state, self.usage = snapshot, state, usage
        width = self.size.width or 80
        rows = self.rows_for(width)
        if rows == self._shown:
            return
        old, self._shown = self._shown, rows
        if len(rows) != len(old):
            self.refresh(layout=True)
        else:
            self.refresh(*changed_lines(old, rows, width))

    def on_resize(self, event: events.Resize) -> None:
        self._shown = self.rows_for(event.size.width)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}
        self._strips.clear()
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
        asked = (width, self.snapshot, self.state, self.usage)
        if kept is None or kept[0] != asked:
            kept = self._rows = (asked, self.rows(max(20, width - 2)))
        return kept[1]

    def rows(self, width: int) -> list[list[Part]]:
        return header_rows(self.host_name, self.snapshot, self.state, self.cost, self.bands, self.usage, width)

    @property
    def text(self) -> str:
        """The header as plain text (for tests and logs)."""
        return plain_text(self.rows_for(self.size.width or 80))

    def _line(self, row: list[Part], width: int) -> Strip:
        base = self._style("")
        segments = [Segment(" ", base)]
        for j, p in enumerate(row):
            if j:
                segments.append(Segment(SEPARATOR, base))
            segments += [Segment(text, self._style(kind)) for text, kind in p.pieces]
        if Segment.get_line_length(segments) > width:  # cut: an ellipsis in the last cell
            strip = Strip(segments).crop(0, width - 1).extend_cell_length(width - 1, base)
            return Strip([*strip, Segment("…", base)], width)
        return fitted(segments, width, base)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """Asked by the layout for the width it is about to give: right after any resize."""
        return max(1, len(self.rows_for(width)))

    def render_line(self, y: int) -> Strip:
        """Each line is made again only when what it shows changes (the uptime line every
        second, the cost line seldom)."""
        width = self.size.width
        rows = self.rows_for(width)
        if y >= len(rows):
            return Strip.blank(width, self._style(""))
        shown = (width, rows[y])
        kept = self._strips.get(y)
        if kept is None or kept[0] != shown:
            kept = self._strips[y] = (shown, self._line(rows[y], width))
        return kept[1]
