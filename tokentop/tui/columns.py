"""What a table column is, as data: ``ColumnSpec``, and how columns fit and sort.

A spec says what its header reads (quantity and unit on the first line, window on the second),
how wide it is, how important it is when the terminal is narrow (``priority``: lower stays
longer), how to write a cell and how to sort by it. A cell may offer shorter forms of its text
(an engine without its port), and an ``identity`` column (what tells a row apart: a GPU model,
an engine, a model) is never made narrower than its cells' shortest forms: other columns give
way first. ``fit_columns`` picks the columns that fit. The two tables' columns are in
``gpu_table`` and ``engine_table``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from rich.cells import cell_len, set_cell_size

from tokentop.config import CostConfig
from tokentop.model import Snapshot, Window
from tokentop.units import NA, WARMING, bar, fmt_usd, fmt_window

R = TypeVar("R")

# Cell styles, resolved by the table from its component classes (so themes decide colours).
PLAIN, BAD, WARN, DIM, GOOD = "", "bad", "warn", "dim", "good"

IDENTITY_MAX = 20  # an identity column is kept this wide at most before it is cropped
PADDING = 1  # a table cell's padding on each side, in cells (the widgets' and the first frame's)


BAR_CELLS = 5  # the widest a cell's bar is drawn


@dataclass(frozen=True)
class Cell:
    text: str
    style: str = PLAIN
    fill: float | None = None  # a share drawn as a bar before the text, in the room it leaves (memory)
    shorter: tuple[str, ...] = ()  # shorter forms of ``text``, longest first, for narrow columns

    def with_bar(self, width: int) -> tuple[str, str]:
        """(bar, text) in ``width`` cells: the bar takes what the text leaves, up to
        ``BAR_CELLS`` and a space; none when that is under two cells."""
        room = min(BAR_CELLS, width - cell_len(self.text) - 1)
        if self.fill is None or room < 2:
            return "", self.text
        return bar(self.fill, room) + " ", self.text

    @property
    def widest(self) -> int:
        """Cells for the text and its whole bar."""
        return cell_len(self.text) + (BAR_CELLS + 1 if self.fill is not None else 0)

    def fitting(self, width: int) -> str:
        """The longest form that fits ``width`` cells; the shortest when none does."""
        for form in (self.text, *self.shorter):
            if cell_len(form) <= width:
                return form
        return self.shorter[-1] if self.shorter else self.text

    @property
    def least(self) -> str:
        return self.shorter[-1] if self.shorter else self.text


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
    identity: bool = False  # never narrower than its cells' shortest forms (up to IDENTITY_MAX)


@dataclass(frozen=True)
class ContentWidth:
    """How wide a column's cells are: the widest shortest form, and the widest full text."""

    least: int
    most: int


def _base_width(spec: ColumnSpec[R], content: ContentWidth | None, windows: Mapping[str, str]) -> int:
    """The spec's width, wide enough for its window as the header writes it (``p50 30s``: a
    window is never cut) and, for an identity column, for its cells' shortest forms."""
    width = max(spec.width, cell_len(spec.window.format(**windows))) if windows else spec.width
    if not spec.identity or content is None:
        return width
    return max(width, min(content.least, max(IDENTITY_MAX, width)))


def fit_columns(
    specs: Sequence[ColumnSpec[R]],
    available: int,
    padding: int,
    content: Mapping[str, ContentWidth] | None = None,
    windows: Mapping[str, str] | None = None,
) -> list[tuple[ColumnSpec[R], int]]:
    """The columns that fit ``available`` cells, most important first, shown in spec order.

    A column that does not fit is skipped and narrower, less important ones may still be
    taken. Flexible columns then share what is left, most important first, each up to its
    widest text when ``content`` says how wide that is. ``windows`` fills the headers'
    ``{rate}`` and ``{cost}``.
    """
    content = content or {}
    windows = windows or {}
    widths: dict[str, int] = {}
    used = 0
    by_priority = sorted(specs, key=lambda s: s.priority)
    for spec in by_priority:
        need = _base_width(spec, content.get(spec.key), windows) + 2 * padding
        if used + need <= available:
            widths[spec.key] = need - 2 * padding
            used += need
    leftover = available - used
    for spec in by_priority:
        if spec.key not in widths or spec.flex_max <= spec.width or leftover <= 0:
            continue
        known = content.get(spec.key)
        most = spec.flex_max if known is None else min(spec.flex_max, max(known.most, spec.width))
        extra = min(leftover, max(0, most - widths[spec.key]))
        widths[spec.key] += extra
        leftover -= extra
    return [(spec, widths[spec.key]) for spec in specs if spec.key in widths]


def fit_text(text: str, width: int, right: bool) -> str:
    """Exactly ``width`` cells: cropped with an ellipsis, or padded on the left or right."""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)
    return " " * (width - length) + text if right else text + " " * (width - length)


def title_text(title: str, width: int, right: bool, arrow: str | None) -> str:
    """A column's title in its cell, padding included; ``arrow``: the sort column's, right
    before the title in its column, or in the padding before it when the title fills it."""
    pad = " " * PADDING
    if arrow is None:
        return pad + fit_text(title, width, right) + pad
    if cell_len(title) < width:
        return pad + fit_text(arrow + title, width, right) + pad
    return arrow + fit_text(title, width, right) + pad


def sized_by_content(spec: ColumnSpec[R]) -> bool:
    """Whether ``fit_columns`` sizes the column from its cells: an identity column (never
    narrower than their shortest forms) or a flexible one (up to their widest)."""
    return spec.identity or spec.flex_max > spec.width


def content_widths(specs: Sequence[ColumnSpec[R]], rows: Iterable[Mapping[str, Cell]]) -> dict[str, ContentWidth]:
    """How wide the cells of each column sized by them are (their shortest forms, their whole
    text and bar); the other columns' widths do not depend on their cells."""
    rows = list(rows)
    return {
        spec.key: ContentWidth(
            max((cell_len(row[spec.key].least) for row in rows), default=0),
            max((row[spec.key].widest for row in rows), default=0),
        )
        for spec in specs
        if sized_by_content(spec)
    }


def sort_rows(rows: Sequence[R], value: Callable[[R], Any] | None, descending: bool) -> list[R]:
    """Rows ordered by ``value``; unknown (None) values always last, whatever the direction."""
    if value is None:
        return list(rows)
    known = [r for r in rows if value(r) is not None]
    unknown = [r for r in rows if value(r) is None]
    return sorted(known, key=value, reverse=descending) + unknown


# --- windows ------------------------------------------------------------------------------


def is_filling(window: Window, length_s: float) -> bool:
    """True while a window covers less than its length (the session is younger than it)."""
    return window.span_s < length_s * (1 - 1e-6)


def window_label(window: Window, length_s: float) -> str:
    """A window as headers write it: its length (``1m``), or while it fills the span it
    really covers (``12s``)."""
    return fmt_window(window.span_s if is_filling(window, length_s) else length_s)


def window_labels(snapshot: Snapshot | None) -> dict[str, str]:
    """What ``{rate}`` and ``{cost}`` in column headers read as: ``10s``, ``1m`` (the host's
    windows: every GPU's fill with it)."""
    if snapshot is None:
        return {"rate": "", "cost": ""}
    host = snapshot.host
    return {
        "rate": window_label(host.rate_window, snapshot.rate_window_s),
        "cost": window_label(host.cost_window, snapshot.cost_window_s),
    }


def window_lengths(snapshot: Snapshot | None) -> dict[str, str]:
    """The windows' full lengths as headers write them (``1m``, ``15m``): what a column is made
    wide enough for, so that a window is never cut and columns do not move while one fills."""
    if snapshot is None:
        return {}
    return {"rate": fmt_window(snapshot.rate_window_s), "cost": fmt_window(snapshot.cost_window_s)}


# --- cells --------------------------------------------------------------------------------


def with_mtok_unit(text: str) -> str:
    """A $/Mtok figure with its unit: ``$1.77/Mtok``, ``idle $/Mtok``."""
    return f"{text}/Mtok" if text.startswith("$") else f"{text} $/Mtok"


@lru_cache(maxsize=2048)
def text_cell(text: str, style: str = PLAIN) -> Cell:
    """One ``Cell`` per text and style, kept: a cell that did not change is the same object as
    the tick before, which the table tells apart from a changed one at once (and makes no new
    one every second)."""
    return Cell(text, style)


def figure_cell(text: str) -> Cell:
    """A figure: dimmed when it is N/A so that the known ones stand out."""
    return text_cell(text, DIM if text == NA else PLAIN)


WARMING_CELL = Cell(WARMING, DIM)


def window_cell(text: str, window: Window) -> Cell:
    """A figure over a window: ``warming`` while the window covers no time at all yet (the
    first tick), rather than N/A."""
    return WARMING_CELL if window.span_s <= 0 else figure_cell(text)


@dataclass(frozen=True)
class CostBands:
    """How $/Mtok cells are coloured: at or below ``good``, good; at or above ``warn``, a warning."""

    good: float
    warn: float

    def style(self, usd_per_mtok: float | None) -> str:
        if usd_per_mtok is None:
            return DIM
        if usd_per_mtok <= self.good:
            return GOOD
        return WARN if usd_per_mtok >= self.warn else PLAIN

    def describe(self) -> str:
        return f"good at or below {fmt_usd(self.good)}, a warning at or above {fmt_usd(self.warn)}"


DEFAULT_BANDS = CostBands(1.0, 5.0)


def cost_bands(cost: CostConfig) -> CostBands:
    """The bands the settings give (``usd_per_mtok_thresholds``); else relative to the cheapest
    API price configured (good at or below it, a warning at twice it); else ``DEFAULT_BANDS``."""
    if cost.usd_per_mtok_thresholds is not None:
        return CostBands(*cost.usd_per_mtok_thresholds)
    if cost.api_prices:
        api = min(price.usd_per_mtok_out for price in cost.api_prices)
        return CostBands(api, 2 * api)
    return DEFAULT_BANDS


def url_port(url: str) -> str:
    try:
        port = urlsplit(url).port
    except ValueError:
        return ""
    return f":{port}" if port else ""
