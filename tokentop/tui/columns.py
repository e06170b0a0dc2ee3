"""What a table column is, as data: ``ColumnSpec``, and how columns fit and sort.

A spec says what its header reads (quantity and unit on the first line, window on the second),
how wide it is, how important it is when the terminal is narrow (``priority``: lower stays
longer), how to write a cell and how to sort by it. ``fit_columns`` picks the columns that fit.
The two tables' columns are in ``gpu_table`` and ``engine_table``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from tokentop.model import Snapshot
from tokentop.units import (
    NA,
    fmt_window,
)

R = TypeVar("R")

# Cell styles, resolved by the table from its component classes (so themes decide colours).
PLAIN, BAD, WARN, DIM, GOOD = "", "bad", "warn", "dim", "good"


@dataclass(frozen=True)
class Cell:
    text: str
    style: str = PLAIN
    bar: str = ""  # drawn before the text in the table's bar style (memory)


@dataclass(frozen=True)
class ColumnSpec(Generic[R]):
    key: str
    title: str  # first header line: the quantity and its unit
    window: str  # second header line: "now", or "{rate}" / "{cost}" (filled from the snapshot)
    width: int  # content cells, padding not included
    priority: int  # lower is kept longer on narrow terminals
    cell: Callable[[R], Cell]
    sort_value: Callable[[R], Any] | None = None  # None: not sortable
    descending: bool = True  # the natural order when the sort moves to this column
    right: bool = True
    flex_max: int = 0  # > 0: grows into the leftover width, up to this many cells
    help: str = ""


def fit_columns(specs: Sequence[ColumnSpec[R]], available: int, padding: int) -> list[tuple[ColumnSpec[R], int]]:
    """The columns that fit ``available`` cells, most important first, shown in spec order.

    A column that does not fit is skipped and narrower, less important ones may still be
    taken. Flexible columns then share what is left.
    """
    chosen: set[str] = set()
    used = 0
    for spec in sorted(specs, key=lambda s: s.priority):
        need = spec.width + 2 * padding
        if used + need <= available:
            chosen.add(spec.key)
            used += need
    leftover = available - used
    widths = {spec.key: spec.width for spec in specs if spec.key in chosen}
    for spec in reversed(specs):  # the last flexible column (the widest text) grows first
        if spec.key in chosen and spec.flex_max > spec.width and leftover > 0:
            extra = min(leftover, spec.flex_max - spec.width)
            widths[spec.key] += extra
            leftover -= extra
    return [(spec, widths[spec.key]) for spec in specs if spec.key in chosen]


def sort_rows(rows: Sequence[R], value: Callable[[R], Any] | None, descending: bool) -> list[R]:
    """Rows ordered by ``value``; unknown (None) values always last, whatever the direction."""
    if value is None:
        return list(rows)
    known = [r for r in rows if value(r) is not None]
    unknown = [r for r in rows if value(r) is None]
    return sorted(known, key=value, reverse=descending) + unknown


def window_labels(snapshot: Snapshot | None) -> dict[str, str]:
    """What ``{rate}`` and ``{cost}`` in column headers read as: ``10s``, ``1m``."""
    if snapshot is None:
        return {"rate": "", "cost": ""}
    return {"rate": fmt_window(snapshot.rate_window_s), "cost": fmt_window(snapshot.cost_window_s)}


def figure_cell(text: str) -> Cell:
    """A figure: dimmed when it is N/A so that the known ones stand out."""
    return Cell(text, DIM if text == NA else PLAIN)


def url_port(url: str) -> str:
    try:
        port = urlsplit(url).port
    except ValueError:
        return ""
    return f":{port}" if port else ""
