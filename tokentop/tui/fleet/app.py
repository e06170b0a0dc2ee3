"""The fleet view: a thin Textual app that draws the latest ``FleetReading``.

Threads, as in the local view: the poller (``tokentop.fleet.poller``) reads the source on its own
thread and hands each reading to ``post_reading``, which posts one replaceable message; the event
loop draws the newest inside ``batch_update``. The source's past for the graphs is read on a
worker thread and kept for a minute. Nothing here queries Prometheus or runs ssh on the loop.

Screens: the hosts (this app's own), a host opened with Enter (``HostScreen``: the local view's
GPU and engine tables over the host's snapshot), and help. Keys come from ``keys.FLEET_KEYS``.
Opening a host tells the source (``FleetSource.focus``: a Prometheus source then reads that
host's GPU rows) and has the poller read at once; Esc tells it no host is opened.
Tests drive it without threads: ``start_poller=False`` and ``post_reading`` from the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Footer

from tokentop.config import Config
from tokentop.fleet.model import FleetReading, FleetSeries, FleetSource
from tokentop.fleet.poller import Poller, windows_of
from tokentop.text import safe_text
from tokentop.tui.columns import cost_bands
from tokentop.tui.fleet.events import ReadingReady, SeriesKey, SeriesLoaded
from tokentop.tui.fleet.graph_points import SPANS, bucket_count, graph_points, graph_title
from tokentop.tui.fleet.header_parts import clock, fleet_header_rows
from tokentop.tui.fleet.help import FleetHelpScreen
from tokentop.tui.fleet.host_screen import HostScreen
from tokentop.tui.fleet.host_table import HOST_COLUMNS, HostRow, host_rows
from tokentop.tui.fleet.notices import fleet_changes, fleet_messages
from tokentop.tui.fleet.widgets import FleetGraph, FleetPanels, PartsHeader
from tokentop.tui.keys import FLEET_KEYS, bindings
from tokentop.tui.terminal_app import TERMINAL_LOST, TerminalApp
from tokentop.tui.widgets.grid import GridTable
from tokentop.tui.widgets.messages import MessageBar
from tokentop.units import fmt_window

SERIES_REFRESH_S = 60.0  # a graph's past is read again after this long (its bars are minutes wide)
NO_PAST = "no past from this source: it keeps no history, or cannot give it now"


class FleetApp(TerminalApp):
    CSS_PATH = "../tokentop.tcss"
    ENABLE_COMMAND_PALETTE = False
    TITLE = "tokentop fleet"
    BINDINGS: ClassVar[list[BindingType]] = [*bindings(FLEET_KEYS)]

    def __init__(
        self,
        config: Config,
        source: FleetSource,
        *,
        poller: Poller | None = None,
        start_poller: bool = True,
        handle_signals: bool = True,
        terminal_fd: int | None = None,
        on_end: Callable[[str, int], None] | None = None,
    ) -> None:
        """``poller``: reads ``source`` and hands readings to this app (default: one made here).
        ``terminal_fd``, ``on_end``: as ``TerminalApp`` (``on_end``: the command's watchdog)."""
        super().__init__(
            ascii_only=bool(config.ascii_only), handle_signals=handle_signals, terminal_fd=terminal_fd, on_end=on_end
        )
        self.config = config
        self.source = source
        self.bands = cost_bands(config.cost)
        self.poller = poller if poller is not None else Poller(source, windows=windows_of(config))
        self.start_poller = start_poller
        self.latest: FleetReading | None = None  # the newest reading
        self.shown: FleetReading | None = None  # the reading on screen
        self.readings = 0  # readings received (the newest's number)
        self.shown_number = 0
        self.paused = False
        self.span_index = 0  # into ``SPANS``
        self.series: dict[SeriesKey, tuple[float, FleetSeries | None, str | None]] = {}
        self._fetching: set[SeriesKey] = set()

    # -- structure --

    def compose(self) -> ComposeResult:
        yield PartsHeader(self._header_rows, id="header")
        hosts = GridTable(HOST_COLUMNS, default_sort="host", empty_text="no host yet", id="hosts")
        yield FleetPanels(hosts, FleetGraph(id="graph"), id="fleet-panels")
        yield MessageBar(id="messages")
        yield Footer(compact=True, show_command_palette=False)

    def _header_rows(self, reading: FleetReading | None, state: str, width: int) -> list[list[Any]]:
        return fleet_header_rows(reading, state, self.bands, width)

    @property
    def host_table(self) -> GridTable[HostRow]:
        return self.query_one("#hosts", GridTable)

    @property
    def graph(self) -> FleetGraph:
        return self.query_one("#graph", FleetGraph)

    @property
    def host_screen(self) -> HostScreen | None:
        """The opened host, when it is the screen on top."""
        return self.screen if isinstance(self.screen, HostScreen) else None

    def on_mount(self) -> None:
        self.host_table.focus()
        self.query_one(PartsHeader).show_data(None, "starting")
        self.watch_terminal()
        self.poller.sink = self.post_reading
        if self.start_poller:
            self.poller.start()

    def on_unmount(self) -> None:
        self.poller.sink = None
        self.unwatch_terminal()

    # -- data in (any thread) --

    def post_reading(self, reading: FleetReading) -> None:
        """The poller's sink: ask the loop to draw this reading."""
        self.post_message(ReadingReady(reading))

    def on_reading_ready(self, message: ReadingReady) -> None:
        previous, self.latest = self.latest, message.reading
        self.readings += 1
        for text, severity in fleet_changes(previous, message.reading):
            self._notify(text, severity)
        if not self.terminal_alive():
            self.end(*TERMINAL_LOST)
            return
        if self.paused:
            self._draw_header()
            return
        self.draw()

    # -- drawing --

    def _state(self) -> str:
        if self.paused:
            since = clock(self.shown.t_wall) if self.shown is not None else "the start"
            count = self.readings - self.shown_number
            return f"PAUSED since {since}, polling goes on ({count} reading{'s' * (count != 1)} since); p resumes"
        return "live" if self.latest is not None else "starting"

    def _draw_header(self) -> None:
        self.query_one(PartsHeader).show_data(self.shown, self._state())
        screen = self.host_screen
        if screen is not None:
            screen.query_one(PartsHeader).show_data(screen.query_one(PartsHeader).data, self._state())

    def draw(self) -> None:
        """Everything from the latest reading, which becomes the one shown."""
        self.shown, self.shown_number = self.latest, self.readings
        self._paint()

    def _paint(self) -> None:
        """Every panel from the reading shown; each widget redraws only what changed."""
        reading = self.shown
        if reading is None:
            return
        windows = {"rate": fmt_window(reading.rate_window_s), "cost": fmt_window(reading.cost_window_s)}
        with self.batch_update():
            self.query_one(PartsHeader).show_data(reading, self._state())
            table = self.host_table
            table.windows = table.lengths = windows
            table.set_rows(host_rows(reading, self.bands), lambda row: row.key)
            self.query_one(FleetPanels).fit()
            self.query_one(MessageBar).show(fleet_messages(reading), f"{self._quiet()} · sorted by {table.sort_label}")
            screen = self.host_screen
            if screen is not None:
                screen.show(reading, self._state(), self._quiet())
            self._draw_graph()

    def _quiet(self) -> str:
        refresh = getattr(self.source, "refresh_s", None)
        every = f"every {refresh:g} s · " if isinstance(refresh, (int, float)) else ""
        return f"reading {self.readings} · {every}{safe_text(self.source.description)}"

    # -- the graph: the source's past, read on a worker --

    def _draw_graph(self) -> None:
        """The graph on screen (the fleet's, or the opened host's) over the chosen span."""
        screen = self.host_screen
        graph, host = (screen.graph, screen.host_name) if screen is not None else (self.graph, None)
        if not graph.display:
            return
        span = SPANS[self.span_index]
        key: SeriesKey = (span.seconds, host)
        cached = self.series.get(key)
        if cached is None or time.monotonic() - cached[0] >= SERIES_REFRESH_S:
            self._fetch_series(key)
        what = "fleet (all hosts)" if host is None else f"host {host}"
        if cached is None:
            graph.show(graph_title(what, span, None, 0), [], "reading the source's past…")
            return
        _, series, error = cached
        if series is None:
            graph.show(graph_title(what, span, None, 0), [], error or NO_PAST)
            return
        buckets = bucket_count(series, graph.plot_width)
        points = graph_points(series, buckets)
        graph.show(graph_title(what, span, series, buckets), points, None if points else "no data in this span")

    def _fetch_series(self, key: SeriesKey) -> None:
        if key in self._fetching:
            return
        self._fetching.add(key)
        self.run_worker(partial(self._read_series, key), thread=True, group="series", exit_on_error=False)

    def _read_series(self, key: SeriesKey) -> None:
        """Worker thread: one ``series`` call; a source that raises anyway gives a note."""
        span_s, host = key
        try:
            series, error = self.source.series(span_s, host), None
        except Exception as exc:
            series, error = None, safe_text(f"the source's past could not be read: {type(exc).__name__}: {exc}")
        self.post_message(SeriesLoaded(key, series, error))

    def on_series_loaded(self, message: SeriesLoaded) -> None:
        self._fetching.discard(message.key)
        self.series[message.key] = (time.monotonic(), message.series, message.error)
        self._draw_graph()

    # -- keys --

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Enter opens a host from the fleet; Esc goes back from a host (each only where it can)."""
        if action == "open_host":
            return self.host_screen is None
        if action == "close_host":
            return self.host_screen is not None
        return True

    def _table(self) -> GridTable[Any]:
        screen = self.host_screen
        return screen.gpu_table if screen is not None else self.host_table

    def action_help(self) -> None:
        if isinstance(self.screen, FleetHelpScreen):
            self.screen.dismiss()
            return
        reading = self.shown
        windows = (
            {"rate": fmt_window(reading.rate_window_s), "cost": fmt_window(reading.cost_window_s)}
            if reading is not None
            else {"rate": "rate window", "cost": "cost window"}
        )
        messages = fleet_messages(reading)
        self.push_screen(FleetHelpScreen(windows, messages, (), self.bands))

    def action_sort_next(self) -> None:
        self._table().sort_next()
        self._paint()

    def action_sort_reverse(self) -> None:
        self._table().sort_reverse()
        self._paint()

    def action_sort_cost(self) -> None:
        self._table().sort_toggle("usd_mtok")
        self._paint()

    def action_open_host(self) -> None:
        """Open the host under the cursor, and ask the source for its GPU rows at once (a
        source that reads them for the opened host only has none yet)."""
        name = self.host_table.cursor_key
        if self.host_screen is not None or name is None:
            return
        self.source.focus(name)
        self.poller.refresh_now()
        self.push_screen(HostScreen(name, self.bands))
        self.call_after_refresh(self._paint)

    def action_close_host(self) -> None:
        """Back to the fleet; the source stops reading the host's rows from its next refresh."""
        if self.host_screen is not None:
            self.source.focus(None)
            self.pop_screen()
            self.call_after_refresh(self._paint)

    def action_next_window(self) -> None:
        self.span_index = (self.span_index + 1) % len(SPANS)
        self._draw_graph()

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.paused:
            self._draw_header()
        else:
            self.draw()
