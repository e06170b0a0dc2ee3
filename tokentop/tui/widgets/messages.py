"""One line above the footer: what the user should know now (store failures, no price, log
warnings), or a quiet word on the sampling when all is well."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget


class MessageBar(Widget):
    COMPONENT_CLASSES = {"messages--warn", "messages--quiet"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.messages: tuple[str, ...] = ()
        self.quiet = ""
        self._shown: tuple[tuple[str, ...], str] | None = None
        self._styles: dict[str, Style] = {}

    def show(self, messages: tuple[str, ...], quiet: str) -> None:
        if (messages, quiet) == self._shown:
            return
        self._shown = (messages, quiet)
        self.messages, self.quiet = messages, quiet
        self.refresh()

    @property
    def text(self) -> str:
        if not self.messages:
            return self.quiet
        more = f"  (+{len(self.messages) - 1} more: ? shows all)" if len(self.messages) > 1 else ""
        return f"⚠ {self.messages[0]}{more}"

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.rich_style + self.get_component_rich_style(f"messages--{name}")
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = {}

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        style = self._style("warn" if self.messages else "quiet")
        if y > 0:
            return Strip.blank(width, self._style("quiet"))
        text = " " + self.text
        strip = Strip([Segment(text, style)])
        if strip.cell_length > width:
            strip = Strip(list(strip.crop(0, width - 1)) + [Segment("…", style)])
        return strip.extend_cell_length(width, style)
