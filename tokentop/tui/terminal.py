"""What the terminal can show: only ASCII (``--ascii``), or only the 16 ANSI colours.

``AsciiFilter`` turns everything drawn into ASCII as it leaves for the terminal, with
``units.ASCII_GLYPHS``: tokentop's own glyphs, Textual's frames and bars, and text from
outside (model and process names) alike, cell for cell.

On a 16-colour terminal (``TERM=xterm``, ``linux``, ``vt100``: Rich's "standard" colour
system) the default themes' orange warning and red error both come out as bright red. There the
app uses ``ANSI_THEMES``, whose accents are the terminal's own green, yellow and red.
"""

from __future__ import annotations

from dataclasses import replace

from rich.segment import Segment
from textual.color import Color
from textual.filter import LineFilter
from textual.theme import BUILTIN_THEMES, Theme

from tokentop.units import to_ascii

SIXTEEN_COLOURS = ("standard", "windows")  # Rich's colour systems of 8 or 16 colours


class AsciiFilter(LineFilter):
    """Every line drawn, in ASCII (``units.to_ascii``), for terminals without Unicode."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [
            segment
            if segment.control or segment.text.isascii()
            else Segment(to_ascii(segment.text), segment.style, segment.control)
            for segment in segments
        ]


def _ansi_theme(base: str, name: str, accent: str) -> Theme:
    """One of Textual's ANSI themes with tokentop's accents: good, warning and bad are green,
    yellow and red, and the accent (titles, the sorted column) is none of those."""
    return replace(
        BUILTIN_THEMES[base], name=name, success="ansi_green", warning="ansi_yellow", error="ansi_red", accent=accent
    )


ANSI_THEMES: dict[bool, Theme] = {  # by dark
    True: _ansi_theme("ansi-dark", "tokentop-ansi-dark", "ansi_cyan"),
    False: _ansi_theme("ansi-light", "tokentop-ansi-light", "ansi_magenta"),
}
TRUE_COLOUR_THEMES: dict[bool, str] = {True: "textual-dark", False: "textual-light"}


def theme_for(dark: bool, colour_system: str | None) -> str:
    """The theme to draw with: the terminal's own colours where it has only 16."""
    return ANSI_THEMES[dark].name if colour_system in SIXTEEN_COLOURS else TRUE_COLOUR_THEMES[dark]
