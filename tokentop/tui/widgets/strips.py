"""Lines for the line-API widgets, made cheaply: each ``Strip`` carries seven caches of its own,
so a line is built as one ``Strip`` of exactly the width (not padded, then cropped, then
simplified, each a new ``Strip``), and only the lines that changed are repainted."""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.strip import Strip


def fitted(
    segments: list[Segment], width: int, pad: Style, *, simplify: bool = False, length: int | None = None
) -> Strip:
    """``segments`` in exactly ``width`` cells: padded with ``pad`` (appended to ``segments``) or cropped; ``simplify``
    joins neighbours of the same style (fewer segments for the compositor to cut). ``length``:
    the segments' cells, when the caller knows it."""
    if length is None:
        length = Segment.get_line_length(segments)
    if length < width:
        segments.append(Segment(" " * (width - length), pad))
    if simplify:
        segments = joined(segments)
    if length > width:
        return Strip(segments, length).crop(0, width)
    return Strip(segments, width)


def joined(segments: list[Segment]) -> list[Segment]:
    """Neighbours of the same style as one segment. Styles come from the widgets' caches, so
    the same style is the same object: compared by identity (``Segment.simplify`` compares
    them by value, a call each)."""
    out: list[Segment] = []
    texts: list[str] = []
    style: Style | None = None
    for text, segment_style, _ in segments:
        if texts and segment_style is style:
            texts.append(text)
            continue
        if texts:
            out.append(Segment("".join(texts), style))
        texts, style = [text], segment_style
    if texts:
        out.append(Segment("".join(texts), style))
    return out


def changed_lines(old: Sequence[object], new: Sequence[object], width: int) -> list[Region]:
    """One region per line that differs between two drawings of a widget (a line only one has
    differs): what to repaint, rather than the whole widget."""
    return [
        Region(0, y, width, 1)
        for y in range(max(len(old), len(new)))
        if y >= len(old) or y >= len(new) or old[y] != new[y]
    ]
