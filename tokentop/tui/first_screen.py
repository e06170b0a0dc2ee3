"""The live view's first screen as plain text, made without Textual: the header's lines and the
GPU table as ``widgets.header`` and ``widgets.grid`` lay them out, from the same parts
(``header_parts``, ``gpu_table``, ``columns``), so that the two never disagree; no colour.
``cli.first_frame`` writes it on the terminal before Textual is loaded.
"""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size

from tokentop.config import Config
from tokentop.model import Snapshot
from tokentop.tui.columns import (
    PADDING,
    Cell,
    CostBands,
    content_widths,
    cost_bands,
    fit_columns,
    fit_text,
    sort_rows,
    title_text,
    window_labels,
    window_lengths,
)
from tokentop.tui.gpu_table import FIRST_SORT, GPU_COLUMNS, gpu_rows, gpu_sub_rows
from tokentop.tui.header_parts import SEPARATOR, header_rows
from tokentop.units import to_ascii

PAD = " " * PADDING


def header_lines(host_name: str, snapshot: Snapshot | None, config: Config, bands: CostBands, width: int) -> list[str]:
    """The header's lines as ``widgets.header.HeaderBar`` lays them out: a space first, cut
    with an ellipsis at the terminal's width; state ``starting``, no CPU or memory yet."""
    rows = header_rows(host_name, snapshot, "starting", config.cost, bands, None, max(20, width - 2))
    texts = [" " + SEPARATOR.join("".join(text for text, _ in p.pieces) for p in row) for row in rows]
    return [fit_text(text, width, False) if cell_len(text) > width else text for text in texts]


def gpu_lines(snapshot: Snapshot, bands: CostBands, width: int) -> list[str]:
    """The GPU table as ``widgets.grid`` draws it: titles (the sort arrow on ``#``), windows,
    one line a GPU (bars in the memory column), MIG instances under their GPU."""
    spec = next(s for s in GPU_COLUMNS if s.key == FIRST_SORT)
    cells: list[dict[str, Cell]] = []
    blank = Cell("")
    for row in sort_rows(gpu_rows(snapshot, bands), spec.sort_value, spec.descending):
        cells.append({s.key: s.cell(row) for s in GPU_COLUMNS})
        cells += [{s.key: sub.get(s.key, blank) for s in GPU_COLUMNS} for _, sub in gpu_sub_rows(row)]
    columns = fit_columns(GPU_COLUMNS, width, PADDING, content_widths(GPU_COLUMNS, cells), window_lengths(snapshot))
    windows = window_labels(snapshot)
    titles = "".join(title_text(s.title, w, s.right, "▲" if s.key == FIRST_SORT else None) for s, w in columns)
    lines = [titles, "".join(PAD + fit_text(s.window.format(**windows), w, s.right) + PAD for s, w in columns)]
    lines += ["".join(_cell(row[s.key], w, s.right) for s, w in columns) for row in cells]
    return [set_cell_size(line, width) if cell_len(line) > width else line for line in lines]


def _cell(cell: Cell, width: int, right: bool) -> str:
    bar, text = cell.with_bar(width)
    return PAD + fit_text(bar + text if bar else cell.fitting(width), width, right) + PAD


def frame_lines(config: Config, host_name: str, snapshot: Snapshot | None, width: int, height: int) -> list[str]:
    """The whole frame at ``width`` x ``height``: the header, then (with a reading) the GPU table;
    ASCII only when the live view would draw so (``--ascii``, or a locale that is not UTF-8)."""
    bands = cost_bands(config.cost)
    lines = header_lines(host_name, snapshot, config, bands, width)
    if snapshot is not None and snapshot.gpus:
        lines += gpu_lines(snapshot, bands, width)
    lines = [line.rstrip() for line in lines[:height]]
    return [to_ascii(line) for line in lines] if config.ascii_only else lines


def screen_text(lines: list[str], width: int, height: int) -> str:
    """What writes ``lines`` from the top left, each line ended (``ESC [K``: not a line that fills
    the width, whose last cell that would erase), and clears the rows below them: none where they
    fill the height (the terminal would move the cursor only as far as the last line, and erase it)."""
    out = [f"\x1b[{y};1H{line}" + ("\x1b[K" if cell_len(line) < width else "") for y, line in enumerate(lines, 1)]
    if len(lines) < height:
        out.append(f"\x1b[{len(lines) + 1};1H\x1b[J")
    return "".join(out)
