"""The processes panel: one row per process on a GPU (PID, user, GPU, its GPU memory, the engine
it belongs to, its command), its columns as data, and where user and command come from.

The process lists are the sampler's (``GpuSample.processes``, read every few seconds); who runs
each process and with what command comes from /proc through psutil (``describe_processes``), on
a worker thread. No Textual here: ``tokentop --once`` prints the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tokentop.model import GpuProcess, Snapshot
from tokentop.text import safe_text
from tokentop.tui.columns import DIM, PLAIN, Cell, ColumnSpec, figure_cell
from tokentop.units import DASH, NA, fmt_gib

NOT_VISIBLE = "(not visible)"  # gone, or another user's process in a container


@dataclass(frozen=True)
class ProcessInfo:
    """What /proc says of one process; text made safe (a process names itself what it likes)."""

    name: str
    user: str
    command: str
    ancestors: tuple[int, ...] = ()  # parent, grandparent, ...: finds the engine behind a worker


UNKNOWN = ProcessInfo(NOT_VISIBLE, NA, NOT_VISIBLE)


def describe_processes(pids: Iterable[int]) -> dict[int, ProcessInfo]:
    """Name, user, command line and ancestors of each process (reads /proc: off the event loop)."""
    import psutil

    out = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                name = process.name()
                command = " ".join(process.cmdline()) or name
                user = process.username()
                ancestors = tuple(p.pid for p in process.parents())
            out[pid] = ProcessInfo(safe_text(name), safe_text(user), safe_text(command), ancestors)
        except (psutil.Error, OSError, KeyError):  # gone, hidden, or a uid without a name
            out[pid] = UNKNOWN
    return out


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    gpu_index: int
    gpu_uuid: str
    used_memory_bytes: int | None
    info: ProcessInfo | None  # None: not read yet
    engine: str  # the engine it belongs to, "" when none

    @property
    def key(self) -> str:
        return f"{self.gpu_uuid}/{self.pid}"


def process_engine(
    pid: int, info: ProcessInfo | None, engine_pids: Mapping[int, str], gpu_engines: tuple[str, ...]
) -> str:
    """The engine whose server process is this one or one of its ancestors; else the engines the
    GPU serves (a worker tokentop could not trace, as in a container); else none."""
    for candidate in (pid, *(info.ancestors if info else ())):
        if candidate in engine_pids:
            return engine_pids[candidate]
    return ", ".join(gpu_engines)


def process_rows(
    snapshot: Snapshot, processes: Mapping[str, tuple[GpuProcess, ...]], infos: Mapping[int, ProcessInfo]
) -> list[ProcessRow]:
    """One row per process on each GPU of ``snapshot``, from the last list read for each GPU."""
    engine_pids: dict[int, str] = {}
    for endpoint in snapshot.endpoints:  # one server may answer on several endpoints
        if endpoint.pid is not None:
            names = engine_pids.get(endpoint.pid)
            engine_pids[endpoint.pid] = endpoint.sample.name if names is None else f"{names}, {endpoint.sample.name}"
    rows = []
    for gpu in snapshot.gpus:
        for process in processes.get(gpu.sample.uuid, ()):
            info = infos.get(process.pid)
            engine = process_engine(process.pid, info, engine_pids, gpu.engines)
            rows.append(
                ProcessRow(process.pid, gpu.sample.index, gpu.sample.uuid, process.used_memory_bytes, info, engine)
            )
    return rows


def _info_cell(row: ProcessRow, text: str) -> Cell:
    return Cell("…", DIM) if row.info is None else Cell(text, DIM if text in (NA, NOT_VISIBLE) else PLAIN)


PROCESS_COLUMNS: tuple[ColumnSpec[ProcessRow], ...] = (
    ColumnSpec(
        "pid",
        "PID",
        "",
        7,
        0,
        lambda r: Cell(str(r.pid)),
        lambda r: r.pid,
        descending=False,
        help="process ID",
    ),
    ColumnSpec(
        "user",
        "user",
        "",
        8,
        3,
        lambda r: _info_cell(r, r.info.user if r.info else ""),
        lambda r: r.info.user if r.info else None,
        descending=False,
        right=False,
        help="who runs it",
    ),
    ColumnSpec(
        "gpu",
        "GPU",
        "",
        3,
        1,
        lambda r: Cell(str(r.gpu_index)),
        lambda r: (r.gpu_index, r.pid),
        descending=False,
        help="NVML index of the GPU it holds memory on (a process on several GPUs has a row on each)",
    ),
    ColumnSpec(
        "mem",
        "GPU mem",
        "GiB now",
        7,
        2,
        lambda r: figure_cell(fmt_gib(r.used_memory_bytes)),
        lambda r: r.used_memory_bytes,
        help="GPU memory it holds on that GPU",
    ),
    ColumnSpec(
        "engine",
        "engine",
        "",
        10,
        4,
        lambda r: Cell(r.engine or DASH, PLAIN if r.engine else DIM),
        lambda r: r.engine or None,
        descending=False,
        right=False,
        flex_max=24,
        help="the engine it belongs to: its server process or one started by it, else the engine "
        "its GPU serves; '—': none",
        identity=True,
    ),
    ColumnSpec(
        "command",
        "command",
        "",
        12,
        5,
        lambda r: _info_cell(r, r.info.command if r.info else ""),
        lambda r: r.info.command if r.info else None,
        descending=False,
        right=False,
        flex_max=200,
        help="its command line (control characters shown as \N{REPLACEMENT CHARACTER})",
    ),
)
