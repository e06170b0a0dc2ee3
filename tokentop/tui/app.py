"""The live view: a thin Textual app that draws the latest Snapshot.

Threads: the sampler ticks on its own thread and hands each snapshot to ``post_snapshot``,
which records it for the graphs (so no tick is lost) and posts one replaceable message; the
event loop draws the newest one inside ``batch_update``. Nothing here touches NVML, HTTP or
SQLite on the event loop: history for the long graph windows is read on a worker thread.

Tests drive it without threads: ``start_sampler=False`` and ``sampler.tick()`` (or
``post_snapshot``) from the test, with a fake clock.

Beside it: ``events.py`` (the messages that cross threads), ``workers.py`` (what runs on worker
threads: store reads, process names, the summary file) and ``notices.py`` (the message line,
notifications of changes, the log for the help screen).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import ClassVar, Protocol

from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.widgets import Footer

from tokentop.config import Config
from tokentop.model import GpuProcess, Snapshot
from tokentop.tui.columns import cost_bands, window_labels
from tokentop.tui.engine_table import ENGINE_COLUMNS, EngineRow, engine_rows
from tokentop.tui.events import HistoryLoaded, HistoryRequest, LogLine, ProcessNames, SnapshotReady
from tokentop.tui.gpu_table import GPU_COLUMNS, GpuRow, gpu_rows, gpu_sub_rows
from tokentop.tui.history import HOST, WINDOWS, GraphPoint, LiveHistory, buckets_for
from tokentop.tui.keys import bindings
from tokentop.tui.notices import changes, current_messages, help_log
from tokentop.tui.screens.details import DetailsScreen
from tokentop.tui.screens.help import HelpScreen
from tokentop.tui.session import short_summary
from tokentop.tui.widgets.graph import HistoryGraph
from tokentop.tui.widgets.grid import GridTable
from tokentop.tui.widgets.header import HeaderBar
from tokentop.tui.widgets.messages import MessageBar
from tokentop.tui.widgets.panels import Panels
from tokentop.tui.workers import SeriesStore, process_names, read_long_history, write_summary_file
from tokentop.units import fmt_window, gpu_labels

__all__ = ["LiveSource", "LogLine", "SeriesStore", "TokentopApp"]

LONG_REFRESH_S = 60.0  # the store's rollups are per minute: reading them more often shows nothing new


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class LiveSource(Protocol):
    """What the app needs from the sampler."""

    sink: Callable[[Snapshot], None] | None

    def start(self) -> None: ...


class TokentopApp(App[None]):
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
        usd_per_mtok_thresholds: tuple[float, float] | None = None,
    ) -> None:
        """``terminal_fd``: the terminal to watch for an SSH drop (default: standard input when
        it is a terminal and the app is not headless). ``usd_per_mtok_thresholds``: $/Mtok at or
        below the first is drawn as good, at or above the second as a warning (default: relative
        to the configured API prices, see ``columns.cost_bands``)."""
        super().__init__()
        self.config = config
        self.bands = cost_bands(usd_per_mtok_thresholds, config.cost)
        self.sampler = sampler
        self.store = store
        self.host_name = host_name or socket.gethostname()
        self.summary_dir = summary_dir or Path.cwd()
        self.start_sampler = start_sampler
        self.handle_signals = handle_signals
        self.history = LiveHistory()
        self.latest: Snapshot | None = None  # the newest tick sampled
        self.shown: Snapshot | None = None  # the tick on screen: every panel draws this one
        self.paused = False
        self.window_index = 0
        self.scope = "gpu"  # or "host"
        self.selected: str | None = None  # UUID of the selected GPU
        self.announcements: deque[str] = deque(maxlen=100)  # what was notified, newest last
        self.log_lines: deque[tuple[float, int, str]] = deque(maxlen=100)
        self.processes: dict[str, tuple[GpuProcess, ...]] = {}  # last list read, per UUID
        self.process_names: dict[int, str] = {}
        self.ended_by: str | None = None
        self.summary_path: Path | None = None
        self._long: dict[tuple[str, int, int], tuple[float, list[GraphPoint], str | None]] = {}
        self._loading: set[tuple[str, int, int]] = set()
        self._tty_fd = terminal_fd
        self._signals: list[int] = []

    # -- structure --

    def compose(self) -> ComposeResult:
        yield HeaderBar(self.host_name, self.config.cost, self.bands, id="header")
        gpus = GridTable(GPU_COLUMNS, default_sort="index", empty_text="no GPU reported", id="gpus")
        engines = GridTable(
            ENGINE_COLUMNS,
            default_sort="name",
            id="engines",
            show_cursor=False,
            show_sort=False,
            empty_text="no inference endpoint yet (looking for local servers)",
        )
        engines.can_focus = False
        yield Panels(gpus, engines, HistoryGraph(id="graph"), id="panels")
        yield MessageBar(id="messages")
        yield Footer(compact=True, show_command_palette=False)

    @property
    def gpu_table(self) -> GridTable[GpuRow]:
        return self.query_one("#gpus", GridTable)

    @property
    def engine_table(self) -> GridTable[EngineRow]:
        return self.query_one("#engines", GridTable)

    @property
    def graph(self) -> HistoryGraph:
        return self.query_one("#graph", HistoryGraph)

    def on_mount(self) -> None:
        self.gpu_table.focus()
        self.query_one(HeaderBar).show(None, "starting")
        if self.handle_signals:
            self._install_signal_handlers()
        if self._tty_fd is None and not self.is_headless:
            fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else -1
            self._tty_fd = fd if fd >= 0 and os.isatty(fd) else None
        if self.sampler is not None:
            self.sampler.sink = self.post_snapshot
            if self.start_sampler:
                self.sampler.start()

    def on_unmount(self) -> None:
        if self.sampler is not None:
            self.sampler.sink = None
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)

    # -- ending --

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, why, code in ((signal.SIGHUP, "hangup", 129), (signal.SIGTERM, "terminated", 143)):
            try:
                loop.add_signal_handler(sig, self.end, why, code)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no such signal
                continue
            self._signals.append(sig)

    def end(self, why: str, code: int) -> None:
        """Leave the app because of something outside it (a signal, a lost terminal)."""
        self.ended_by = why
        self.exit(return_code=code)

    def _terminal_alive(self) -> bool:
        """False once the controlling terminal is gone (an SSH drop): its ioctls fail."""
        if self._tty_fd is None:
            return True
        try:
            os.get_terminal_size(self._tty_fd)
        except OSError:
            return False
        return True

    # -- data in (any thread) --

    def post_snapshot(self, snapshot: Snapshot) -> None:
        """The sampler's sink: keep what every tick brings (graph data, process lists, which
        come only every few seconds), then ask the loop to draw the tick."""
        self.history.add(snapshot)
        for gpu in snapshot.gpus:
            if gpu.sample.processes is not None:
                self.processes[gpu.sample.uuid] = gpu.sample.processes  # one atomic dict store
        self.post_message(SnapshotReady(snapshot))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        snapshot = message.snapshot
        previous, self.latest = self.latest, snapshot
        self._announce_changes(previous, snapshot)
        if not self._terminal_alive():
            self.end("terminal lost", 129)
            return
        if self.paused:  # the screen keeps the tick it shows; only the banner counts on
            self.query_one(HeaderBar).show(self.shown, self._state())
            return
        self.draw()

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

    def draw(self) -> None:
        """Everything from the latest snapshot, which becomes the one shown; each widget redraws
        only what changed."""
        snapshot = self.shown = self.latest
        if snapshot is None:
            return
        windows = window_labels(snapshot)
        with self.batch_update():
            self.query_one(HeaderBar).show(snapshot, self._state())
            gpus, engines = self.gpu_table, self.engine_table
            gpus.windows = engines.windows = windows
            gpus.empty_text = "no GPU reported" if snapshot.gpu_available else f"no GPU: {snapshot.gpu_reason}"
            gpus.set_rows(gpu_rows(snapshot, self.bands), lambda row: row.key, gpu_sub_rows)
            engines.set_rows(engine_rows(snapshot), lambda row: row.key)
            self.query_one(Panels).fit()
            self.selected = gpus.cursor_key
            self._draw_graph()
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

    def _graph_key(self) -> str:
        if self.scope == "host" or self.selected is None:
            return HOST
        return self.selected

    def _graph_title(self, buckets: int) -> str:
        window = WINDOWS[self.window_index]
        key = self._graph_key()
        if key == HOST:
            what = "host (all GPUs)"
        else:
            gpus = self.shown.gpus if self.shown else ()
            gpu = next((g for g in gpus if g.sample.uuid == key), None)
            labels = gpu_labels(g.sample.name for g in gpus)
            what = f"GPU {gpu.sample.index} {labels[gpu.sample.name]}" if gpu else "GPU"
        step_s = window.seconds / max(1, buckets)
        if window.from_store:  # the store reads 1-minute rollups: whole minutes per bar
            step_s = math.ceil(step_s / 60.0) * 60.0
        step = fmt_window(step_s)
        return f" History · {what} · last {window.label} · {step} per bar · w: window  g: GPU/host"

    def _draw_graph(self) -> None:
        snapshot = self.shown
        graph = self.graph
        if snapshot is None:
            return
        window = WINDOWS[self.window_index]
        buckets = buckets_for(window, graph.plot_width, self.config.interval_s)
        title = self._graph_title(buckets)
        key = self._graph_key()
        if not window.from_store:
            points = self.history.series(key, window.seconds, buckets, snapshot.t_mono, self.config.interval_s)
            graph.show(title, points)
            return
        if self.store is None:
            graph.show(title, [], "no history (database off)")
            return
        cache_key = (key, self.window_index, buckets)
        cached = self._long.get(cache_key)
        if cached is None or snapshot.t_wall - cached[0] >= LONG_REFRESH_S:
            self._load_long(cache_key, snapshot.t_wall)
        if cached is None:
            graph.show(title, [], "loading history…")
        else:
            graph.show(title, cached[1], cached[2])

    def _load_long(self, cache_key: tuple[str, int, int], until: float) -> None:
        if cache_key in self._loading:
            return
        self._loading.add(cache_key)
        self.run_worker(
            partial(self._read_long, (*cache_key, until)), thread=True, group="history", exit_on_error=False
        )

    def _read_long(self, request: HistoryRequest) -> None:
        """Worker thread: one store query; the answer comes back as a message."""
        store = self.store
        assert store is not None
        points, note = read_long_history(store, request)
        self.post_message(HistoryLoaded(request, points, note))

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        key, window_index, buckets, until = message.request
        self._loading.discard((key, window_index, buckets))
        self._long[(key, window_index, buckets)] = (until, message.points, message.note)
        if not self.paused:
            self._draw_graph()

    # -- notifications --

    def _notify(self, text: str, severity: str = "information") -> None:
        self.announcements.append(text)
        self.notify(text, severity=severity, timeout=6)  # type: ignore[arg-type]

    def _announce_changes(self, previous: Snapshot | None, snapshot: Snapshot) -> None:
        """Say once when an endpoint goes down or comes back, a GPU is lost or returns, or a
        new message appears; the screen shows the lasting state."""
        for text, severity in changes(previous, snapshot):
            self._notify(text, severity)

    # -- keys --

    def on_grid_table_selected(self, message: GridTable.Selected) -> None:
        if message.table.id != "gpus":
            return
        self.selected = message.key
        if self.shown is not None:
            self._draw_graph()

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
        self.window_index = (self.window_index + 1) % len(WINDOWS)
        self._draw_graph()

    def action_toggle_scope(self) -> None:
        self.scope = "host" if self.scope == "gpu" else "gpu"
        self._draw_graph()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.query_one(HeaderBar).show(self.shown, self._state())
        if not self.paused:
            self.draw()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

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
        screen.process_names = self.process_names
        screen.show(self.shown, processes)
        unknown = [p.pid for p in processes or () if p.pid not in self.process_names]
        if unknown:  # psutil reads /proc: off the loop
            self.run_worker(
                partial(self._read_process_names, unknown), thread=True, group="processes", exit_on_error=False
            )

    def _read_process_names(self, pids: list[int]) -> None:
        self.post_message(ProcessNames(process_names(pids)))

    def on_process_names(self, message: ProcessNames) -> None:
        self.process_names.update(message.names)
        if isinstance(self.screen, DetailsScreen):
            self.screen.process_names = self.process_names
            self.screen.show(self.shown, self.processes.get(self.screen.uuid))

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
