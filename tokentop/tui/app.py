"""The live view: a thin Textual app that draws the latest Snapshot.

Threads: the sampler ticks on its own thread and hands each snapshot to ``post_snapshot``,
which records it for the graphs (so no tick is lost) and posts one replaceable message; the
event loop draws the newest one inside ``batch_update``. Nothing here touches NVML, HTTP or
SQLite on the event loop: history for the long graph windows is read on a worker thread.

The sampler comes ready-made, or later (``attach``, any thread) from a ``startup`` hook called
once the first screen is drawn; the footer's keys then wait for the first GPU rows. That
start-up (``cli.live``) first hands over a first look (``Snapshot.first_look``: the GPUs alone,
before the sampler exists and the endpoints first answer), drawn at once and kept nowhere: not
the latest tick, not a graph point, not a tick a pause holds. A signal or a lost terminal
calls ``on_end`` at once, even when the event loop is stuck on a terminal that is gone (the
live view's watchdog then ends it).

Tests drive it without threads: ``start_sampler=False`` and ``sampler.tick()`` (or
``post_snapshot``) from the test, with a fake clock.

Beside it: ``events.py`` (the messages that cross threads), ``workers.py`` (what runs on worker
threads: store reads, the summary file), ``host.py`` (the host's CPU and memory, who runs each GPU
process), ``notices.py`` (the message line, notifications of changes, the log for the help
screen), ``terminal_app.py`` (how the app ends, ``--ascii`` and 16-colour terminals: shared with
the fleet view). The graph fetches its own data (``widgets/graph.py``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import ClassVar, Protocol

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from tokentop.changes import changes
from tokentop.config import Config
from tokentop.model import GpuProcess, Snapshot
from tokentop.tui.columns import cost_bands, window_labels, window_lengths
from tokentop.tui.engine_table import EngineRow, engine_rows
from tokentop.tui.events import LogLine, ProcessesDescribed, SnapshotReady
from tokentop.tui.gpu_table import GpuRow, gpu_rows, gpu_sub_rows
from tokentop.tui.history import LiveHistory
from tokentop.tui.host import HostReader, HostUsage, PsutilHost
from tokentop.tui.keys import bindings
from tokentop.tui.notices import current_messages, help_log
from tokentop.tui.processes import ProcessInfo, ProcessRow, process_rows
from tokentop.tui.screens.details import DetailsScreen
from tokentop.tui.screens.help import HelpScreen
from tokentop.tui.session import short_summary
from tokentop.tui.terminal_app import TERMINAL_LOST, TerminalApp
from tokentop.tui.widgets.graph import HistoryGraph
from tokentop.tui.widgets.grid import GridTable
from tokentop.tui.widgets.header import HeaderBar
from tokentop.tui.widgets.messages import MessageBar
from tokentop.tui.widgets.panels import Panels, host_panels
from tokentop.tui.workers import SeriesStore, write_summary_file

__all__ = ["LiveSource", "LogLine", "SeriesStore", "TokentopApp"]


ENGINES_BEING_READ = "reading the inference endpoints…"  # until the first tick: not yet a verdict
NO_ENGINES = "no inference endpoint yet (looking for local servers)"
KEYS_WAIT_S = 1.0  # the keys' footer comes with the first GPU rows, or after this at the latest


def keys_footer() -> Widget:
    """Textual's footer of the keys (imported when first made: not before the first screen)."""
    from textual.widgets import Footer

    return Footer(compact=True, show_command_palette=False)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class LiveSource(Protocol):
    """What the app needs from the sampler."""

    sink: Callable[[Snapshot], None] | None

    def start(self) -> None: ...


class SamplerAttached(Message):
    """The sampler (and the history it writes) built on another thread, handed to the app."""

    def __init__(self, sampler: LiveSource, store: SeriesStore | None) -> None:
        super().__init__()
        self.sampler, self.store = sampler, store


class StartFailed(Message):
    """What the app was to show could not be set up; the app ends with exit code 1."""


class TokentopApp(TerminalApp):
    CSS_PATH = "tokentop.tcss"
    ENABLE_COMMAND_PALETTE = False
    TITLE = "tokentop"
    BINDINGS: ClassVar[list[BindingType]] = [*bindings()]

    def __init__(
        self,
        config: Config,
        *,
        sampler: LiveSource | None = None,
        store: SeriesStore | None = None,
        host_name: str | None = None,
        summary_dir: Path | None = None,
        start_sampler: bool = True,
        handle_signals: bool = True,
        terminal_fd: int | None = None,
        host: HostReader | None = None,
        startup: Callable[[TokentopApp], None] | None = None,
        on_end: Callable[[str, int], None] | None = None,
    ) -> None:
        """``host``: where the host's CPU and memory and the GPU processes' owners are read
        (default: this machine, through psutil). ``startup``: called on the event loop once the
        first screen is drawn, to build the sampler and hand it over with ``attach`` (when
        ``sampler`` is not given). ``terminal_fd``, ``on_end``: as ``TerminalApp``."""
        super().__init__(
            ascii_only=bool(config.ascii_only), handle_signals=handle_signals, terminal_fd=terminal_fd, on_end=on_end
        )
        self.config = config
        self.bands = cost_bands(config.cost)  # how $/Mtok is coloured
        self.sampler = sampler
        self.store = store
        self.host_name = host_name or socket.gethostname()
        self.summary_dir = summary_dir or Path.cwd()
        self._summary_dir_given = summary_dir is not None
        self._startup = startup
        self._keys_line: Static | None = None  # where the footer goes once the GPUs are drawn
        self.start_sampler = start_sampler
        self.history = LiveHistory()
        self.latest: Snapshot | None = None  # the newest tick sampled
        self.shown: Snapshot | None = None  # the tick on screen: every panel draws this one
        self.paused = False
        self.selected: str | None = None  # UUID of the selected GPU
        self.log_lines: deque[tuple[float, int, str]] = deque(maxlen=100)
        self.processes: dict[str, tuple[GpuProcess, ...]] = {}  # last list read, per UUID
        self.host = host or PsutilHost()
        self.host_usage: HostUsage | None = None  # read with the last tick
        self.process_info: dict[int, ProcessInfo] = {}  # who runs each GPU process, by PID
        self._describing: set[int] = set()  # PIDs being read on a worker
        self.show_processes = False
        self.summary_path: Path | None = None

    # -- structure --

    def compose(self) -> ComposeResult:
        yield HeaderBar(self.host_name, self.config.cost, self.bands, id="header")
        graph = HistoryGraph(self.history, self.config.interval_s, self.store, id="graph")
        yield host_panels(  # the process table hidden: P shows it
            graph,
            gpus_empty="reading the GPUs…",
            engines_empty=ENGINES_BEING_READ,
            processes_empty="no process holds GPU memory, or the lists are not read yet (every few seconds)",
            id="panels",
        )
        yield MessageBar(id="messages")
        if self._startup is None:
            yield keys_footer()
        else:  # its dozen keys (about 60 ms of widgets) come after the first GPU rows: its line is kept
            self._keys_line = Static(id="keys-line")
            self._keys_line.styles.dock, self._keys_line.styles.height = "bottom", 1
            yield self._keys_line

    @property
    def gpu_table(self) -> GridTable[GpuRow]:
        return self.query_one("#gpus", GridTable)

    @property
    def engine_table(self) -> GridTable[EngineRow]:
        return self.query_one("#engines", GridTable)

    @property
    def process_table(self) -> GridTable[ProcessRow]:
        return self.query_one("#processes", GridTable)

    @property
    def graph(self) -> HistoryGraph:
        return self.query_one("#graph", HistoryGraph)

    def on_mount(self) -> None:
        self.gpu_table.focus()
        self.query_one(HeaderBar).show(None, "starting")
        self.watch_terminal()
        if self.sampler is not None:
            self._use_sampler(self.sampler, self.store)
        if self._startup is not None:
            self.call_after_refresh(self._startup, self)
            self.set_timer(KEYS_WAIT_S, self._show_keys)

    async def _show_keys(self) -> None:
        """The keys' footer in the line kept for it (once)."""
        line, self._keys_line = self._keys_line, None
        if line is None or line.parent is None:
            return
        screen = line.screen
        await screen.mount(keys_footer(), after=line)
        await line.remove()
        screen.refresh_bindings()  # the footer lists the keys it was mounted after

    def on_unmount(self) -> None:
        if self.sampler is not None:
            self.sampler.sink = None
        self.unwatch_terminal()

    # -- the sampler, when it is built after the first screen --

    def attach(self, sampler: LiveSource, store: SeriesStore | None) -> None:
        """Hand over the sampler and its history (any thread); the app starts it."""
        self.post_message(SamplerAttached(sampler, store))

    def warn(self, text: str) -> None:
        """A warning for the message line (any thread)."""
        self.post_message(LogLine(logging.WARNING, text, time.time()))

    def start_failed(self) -> None:
        """The sampler could not be built (any thread): the app ends, exit code 1."""
        self.post_message(StartFailed())

    def on_sampler_attached(self, message: SamplerAttached) -> None:
        self._use_sampler(message.sampler, message.store)
        self._draw_messages()

    def on_start_failed(self, message: StartFailed) -> None:
        self.exit(return_code=1)

    def _use_sampler(self, sampler: LiveSource, store: SeriesStore | None) -> None:
        self.sampler, self.store = sampler, store
        self.graph.store = store
        if not self._summary_dir_given and store is not None and hasattr(store, "path"):
            self.summary_dir = Path(store.path).parent
        sampler.sink = self.post_snapshot
        if self.start_sampler:
            sampler.start()

    def _engines_read(self) -> None:
        """From the first tick on, an engine panel without rows means none was found (before
        it, that the endpoints are being read)."""
        table = self.engine_table
        if table.empty_text != NO_ENGINES:
            table.empty_text = NO_ENGINES
            table.refresh()

    # -- data in (any thread) --

    def post_snapshot(self, snapshot: Snapshot) -> None:
        """The sampler's sink: keep what every tick brings (graph data, process lists, which
        come only every few seconds), read the host's CPU and memory (/proc: on this thread,
        never the event loop), then ask the loop to draw the tick. A first look (the GPUs
        alone, before the endpoints first answer) is only drawn: nothing of it is kept."""
        self.host_usage = self.host.usage()
        if snapshot.first_look:
            self.post_message(SnapshotReady(snapshot))
            return
        self.history.add(snapshot)
        for gpu in snapshot.gpus:
            if gpu.sample.processes is not None:
                self.processes[gpu.sample.uuid] = gpu.sample.processes  # one atomic dict store
        self.post_message(SnapshotReady(snapshot))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        snapshot = message.snapshot
        if not snapshot.first_look:
            previous, self.latest = self.latest, snapshot
            self._announce_changes(previous, snapshot)
        if not self.terminal_alive():
            self.end(*TERMINAL_LOST)
            return
        if snapshot.first_look:  # drawn until the first tick comes; never the latest, never held
            if self.latest is None and not self.paused:
                self.draw(snapshot)
                self.call_after_refresh(self._show_keys)
            return
        self._engines_read()
        if self.paused and not (self.shown is not None and self.shown.first_look):
            self.query_one(HeaderBar).show(self.shown, self._state())  # the screen keeps its tick
            return
        self.draw()
        if self._keys_line is not None:
            self.call_after_refresh(self._show_keys)

    def on_log_line(self, message: LogLine) -> None:
        self.log_lines.append((message.created, message.level, message.text))
        if message.level >= logging.ERROR:  # warnings stay in the message line; the screen says the rest
            self._notify(message.text, "error")
        if not self.paused:
            self._draw_messages()

    # -- drawing --

    @property
    def ticks_while_paused(self) -> int:
        """Ticks sampled since the one on screen (counted by number: a tick the loop had no
        time to draw is replaced by the next, yet counts)."""
        if self.latest is None or self.shown is None:
            return 0
        return self.latest.seq - self.shown.seq

    def _state(self) -> str:
        if self.paused:
            since = time.strftime("%H:%M:%S", time.localtime(self.shown.t_wall)) if self.shown else "the start"
            ticks = plural(self.ticks_while_paused, "tick")
            return f"PAUSED since {since}, sampling goes on ({ticks} since); p resumes"
        return "live" if self.latest is not None else "starting"

    def draw(self, snapshot: Snapshot | None = None) -> None:
        """Everything from ``snapshot`` (default: the latest), which becomes the one shown; each
        widget redraws only what changed."""
        snapshot = snapshot or self.latest
        if snapshot is None:
            return
        self.shown = snapshot
        windows = window_labels(snapshot)
        with self.batch_update():
            self.query_one(HeaderBar).show(snapshot, self._state(), self.host_usage)
            gpus, engines = self.gpu_table, self.engine_table
            gpus.windows = engines.windows = windows
            gpus.lengths = engines.lengths = window_lengths(snapshot)
            gpus.empty_text = "no GPU reported" if snapshot.gpu_available else f"no GPU: {snapshot.gpu_reason}"
            gpus.set_rows(gpu_rows(snapshot, self.bands), lambda row: row.key, gpu_sub_rows)
            engines.set_rows(engine_rows(snapshot), lambda row: row.key)
            if self.show_processes:
                self._draw_processes(snapshot)
            self.query_one(Panels).fit()
            self.selected = gpus.cursor_key
            self.graph.follow(snapshot, self.selected)
            self._draw_messages()
            if isinstance(self.screen, DetailsScreen):
                self._show_details(self.screen)

    def current_messages(self) -> tuple[str, ...]:
        """What is wrong as of the tick on screen (and recent log warnings)."""
        return current_messages(self.shown, self.log_lines)

    def _draw_messages(self) -> None:
        snapshot = self.shown
        if snapshot is None:
            quiet = "waiting for the first reading…"
        else:
            where = "history off" if self.store is None else f"history in {getattr(self.store, 'path', 'database')}"
            quiet = (
                f"tick {snapshot.seq} · every {self.config.interval_s:g} s · {where} · "
                f"sorted by {self.gpu_table.sort_label}"
            )
        self.query_one(MessageBar).show(self.current_messages(), quiet)

    def _draw_processes(self, snapshot: Snapshot) -> None:
        """The processes panel from the lists last read; owners not known yet are read on a
        worker and drawn when they come."""
        rows = process_rows(snapshot, self.processes, self.process_info)
        self.process_table.set_rows(rows, lambda row: row.key)
        self._describe(row.pid for row in rows if row.info is None)

    def _describe(self, pids: Iterable[int]) -> None:
        """Read who runs these processes (psutil reads /proc: on a worker), each PID once."""
        wanted = sorted({pid for pid in pids if pid not in self.process_info} - self._describing)
        if wanted:
            self._describing.update(wanted)
            self.run_worker(partial(self._read_processes, wanted), thread=True, group="processes", exit_on_error=False)

    def _read_processes(self, pids: list[int]) -> None:
        self.post_message(ProcessesDescribed(self.host.processes(pids)))

    def on_processes_described(self, message: ProcessesDescribed) -> None:
        self._describing.difference_update(message.infos)
        listed = {p.pid for processes in self.processes.values() for p in processes}
        self.process_info = {pid: info for pid, info in self.process_info.items() if pid in listed}  # ended: gone
        self.process_info.update(message.infos)
        if self.shown is not None and self.show_processes:
            self._draw_processes(self.shown)
        if isinstance(self.screen, DetailsScreen):
            self.screen.show(self.shown, self.processes.get(self.screen.uuid), self.process_info)

    # -- notifications --

    def _announce_changes(self, previous: Snapshot | None, snapshot: Snapshot) -> None:
        """Say once when an endpoint goes down or comes back, a GPU is lost or returns, or a
        new message appears; the screen shows the lasting state."""
        for change in changes(previous, snapshot):
            self._notify(change.text, change.severity)

    # -- keys --

    def on_grid_table_selected(self, message: GridTable.Selected) -> None:
        if message.table.id != "gpus":
            return
        self.selected = message.key
        if self.shown is not None:
            self.graph.follow(self.shown, self.selected)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
            return
        log = help_log(self.log_lines)
        self.push_screen(HelpScreen(window_labels(self.shown), self.current_messages(), log, self.bands))

    def action_sort_next(self) -> None:
        self.gpu_table.sort_next()
        self._draw_messages()

    def action_sort_reverse(self) -> None:
        self.gpu_table.sort_reverse()
        self._draw_messages()

    def action_sort_cost(self) -> None:
        self.gpu_table.sort_toggle("usd_mtok")
        self._draw_messages()

    def action_next_window(self) -> None:
        self.graph.next_window()

    def action_toggle_scope(self) -> None:
        self.graph.toggle_scope()

    def action_toggle_processes(self) -> None:
        self.show_processes = self.process_table.display = not self.show_processes
        if self.show_processes and self.shown is not None:
            self._draw_processes(self.shown)
        self.query_one(Panels).fit()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.query_one(HeaderBar).show(self.shown, self._state())
        if not self.paused:
            self.draw()

    def action_details(self) -> None:
        if isinstance(self.screen, DetailsScreen):
            self.screen.dismiss()
            return
        if self.selected is None:
            self._notify("no GPU to show", "warning")
            return
        screen = DetailsScreen(self.selected, self.config.cost)
        self.push_screen(screen)
        self.call_after_refresh(self._show_details, screen)

    def _show_details(self, screen: DetailsScreen) -> None:
        processes = self.processes.get(screen.uuid)
        screen.show(self.shown, processes, self.process_info)
        self._describe(p.pid for p in processes or ())

    def action_write_summary(self) -> None:
        short = short_summary(self.latest, self.host_name)
        t_wall = self.latest.t_wall if self.latest is not None else 0.0
        self.run_worker(partial(self._write_summary, short, t_wall), thread=True, group="summary", exit_on_error=False)

    def _write_summary(self, short: str, t_wall: float) -> None:
        """Worker thread: the full summary from the history (read here, off the event loop)
        when there is one; the short one from the last snapshot otherwise."""
        path, notice, severity = write_summary_file(self.store, short, self.summary_dir, t_wall)
        if path is not None:
            self.summary_path = path
        self.call_from_thread(self._notify, notice, severity)
