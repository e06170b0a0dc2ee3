"""``tokentop --once``: one reading as plain text on standard output, for scripts and cron (as
``nvitop -1`` does): the live view's header, GPU table, engine table and processes.

It takes ``ONCE_TICKS`` ticks so that every rate exists, writes no history and never loads
Textual: the rows, columns and header lines come from the live view's modules that only make
them (``tokentop.tui.gpu_table`` and its neighbours), written here as text. At the terminal's
width on a terminal; every column, at full width, into a pipe or a file. ASCII only with
``--ascii`` (or a locale that is not UTF-8).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from tokentop.cli.output import write_stdout
from tokentop.cli.runtime import UsageError, build_runtime
from tokentop.config import Config
from tokentop.model import GpuProcess, Snapshot
from tokentop.sampler import Sampler
from tokentop.tui.columns import Cell, ColumnSpec, content_widths, cost_bands, fit_columns, fit_text, window_labels
from tokentop.tui.engine_table import ENGINE_COLUMNS, engine_rows
from tokentop.tui.gpu_table import GPU_COLUMNS, gpu_rows, gpu_sub_rows
from tokentop.tui.header_parts import header_rows, plain_text
from tokentop.tui.host import DemoProcessHost, HostReader, PsutilHost
from tokentop.tui.processes import PROCESS_COLUMNS, process_rows
from tokentop.units import to_ascii

R = TypeVar("R")

ONCE_TICKS = 3  # two measured intervals: every rate exists (as ``tokentop snapshot``)
PADDING = 1
UNLIMITED = 10_000  # columns when the output is no terminal: every column, none cut
COMMON_OPTIONS = ("--demo", "--endpoint", "--interval", "--config", "--seed")


def run(args: argparse.Namespace, config: Config) -> int:
    runtime = build_runtime(config)
    sampler = Sampler(runtime.config, runtime.gpus)
    processes: dict[str, tuple[GpuProcess, ...]] = {}  # lists come every few seconds: the last of each

    def keep_processes(snapshot: Snapshot) -> None:
        processes.update({g.sample.uuid: g.sample.processes for g in snapshot.gpus if g.sample.processes is not None})

    host = DemoProcessHost(config.seed) if config.demo else PsutilHost()
    host.usage()  # the CPU's busy share is taken over the ticks below
    try:
        if not runtime.config.endpoints and runtime.config.discover:
            sampler.discover_once()
        snapshot = sampler.run(threading.Event(), ticks=ONCE_TICKS, on_tick=keep_processes)
    finally:
        sampler.stop()
        runtime.close()
    if snapshot is None:
        raise UsageError("no reading could be taken (see the log above)")
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else UNLIMITED
    text = reading_text(snapshot, runtime.config, processes, host, width)
    write_stdout(to_ascii(text) if runtime.config.ascii_only else text)
    return 0


def reading_text(
    snapshot: Snapshot,
    config: Config,
    processes: dict[str, tuple[GpuProcess, ...]],
    host: HostReader,
    width: int,
) -> str:
    """The header, then the GPU, engine and process tables, as the live view draws them;
    ``host``: the CPU and memory use, and who runs each process."""
    windows, bands, usage = window_labels(snapshot), cost_bands(config.cost), host.usage()
    header = plain_text(header_rows(socket.gethostname(), snapshot, None, config.cost, bands, usage, min(width, 200)))
    if width < UNLIMITED:  # a terminal: what does not fit is cut, as on the screen
        header = "\n".join(fit_text(line, width, False).rstrip() for line in header.splitlines())
    pids = sorted({p.pid for listed in processes.values() for p in listed})
    sections = [
        header,
        table_text(
            GPU_COLUMNS, gpu_rows(snapshot, bands), width, windows, gpu_sub_rows, empty=f"no GPU: {snapshot.gpu_reason}"
        ),
        table_text(ENGINE_COLUMNS, engine_rows(snapshot), width, windows, empty="no inference endpoint found"),
        table_text(
            PROCESS_COLUMNS,
            process_rows(snapshot, processes, host.processes(pids)),
            width,
            windows,
            empty="no process holds GPU memory",
        ),
    ]
    return "\n\n".join(sections) + "\n"


def table_text(
    specs: Sequence[ColumnSpec[R]],
    rows: Sequence[R],
    width: int,
    windows: dict[str, str],
    sub_rows_of: Callable[[R], Sequence[tuple[str, dict[str, Cell]]]] | None = None,
    *,
    empty: str,
) -> str:
    """A table as lines of text: two header lines (quantity and unit, then window), one line a
    row; the columns that fit ``width``, by the live view's priorities."""
    lines: list[dict[str, Cell]] = []
    blank = Cell("")
    for row in rows:
        lines.append({spec.key: replace(spec.cell(row), fill=None) for spec in specs})  # text, no bars
        for _, cells in sub_rows_of(row) if sub_rows_of else ():
            lines.append({spec.key: replace(cells.get(spec.key, blank), fill=None) for spec in specs})
    columns = fit_columns(specs, width, PADDING, content_widths(specs, lines), windows)
    pad = " " * PADDING

    def line(texts: list[tuple[str, int, bool]]) -> str:
        return "".join(pad + fit_text(text, cells, right) + pad for text, cells, right in texts).rstrip()

    out = [
        line([(spec.title, cells, spec.right) for spec, cells in columns]),
        line([(spec.window.format(**windows), cells, spec.right) for spec, cells in columns]),
    ]
    out += [line([(row[spec.key].fitting(cells), cells, spec.right) for spec, cells in columns]) for row in lines]
    return "\n".join(out if lines else [*out, pad + empty])
