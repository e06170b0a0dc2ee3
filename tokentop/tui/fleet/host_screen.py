"""One host of the fleet, opened with Enter: its GPUs and engines in the local view's own tables
(``gpu_table``, ``engine_table``, sized by the local ``Panels``), fed with the host's
``model.Snapshot``, under a header that says which host, its state and its figures; its graph
reads the source's past for this host. Esc goes back to the fleet."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from tokentop.fleet.model import FleetHost, FleetReading
from tokentop.model import Snapshot
from tokentop.tui.columns import CostBands, window_labels, window_lengths
from tokentop.tui.engine_table import engine_rows
from tokentop.tui.fleet.header_parts import host_header_rows
from tokentop.tui.fleet.widgets import FleetGraph, PartsHeader
from tokentop.tui.gpu_table import gpu_rows, gpu_sub_rows
from tokentop.tui.widgets.grid import GridTable
from tokentop.tui.widgets.messages import MessageBar
from tokentop.tui.widgets.panels import Panels, host_panels

NO_ENGINE = "no inference endpoint on this host"
GPU_ROWS_COMING = "the GPU rows come with the next refresh"
ENGINE_ROWS_COMING = "the engine rows come with the next refresh"


def host_of(reading: FleetReading | None, name: str) -> FleetHost | None:
    if reading is None:
        return None
    return next((h for h in reading.hosts if h.name == name), None)


def _host_messages(host: FleetHost | None) -> tuple[str, ...]:
    """The host's own trouble: its state's reason, then its snapshot's messages."""
    if host is None:
        return ()
    said = (f"{host.name} {host.state.upper()}: {host.reason}",) if host.reason and host.state != "up" else ()
    snapshot = host.snapshot
    if snapshot is None:
        return said
    failing = tuple(
        f"{e.sample.name}: {e.sample.error or 'down'}" for e in snapshot.endpoints if e.sample.status == "error"
    )
    return said + tuple(snapshot.messages) + failing


def _empty_texts(snapshot: Snapshot) -> tuple[str, str]:
    """What the GPU and engine tables say when empty. A host whose GPUs are counted but whose
    rows were not read (the source reads them for the opened host only, from its next refresh)
    says they are coming, not that there is no GPU or engine."""
    if snapshot.gpu_available:
        return "no GPU reported", NO_ENGINE
    if snapshot.host.gpu_count > 0:
        return snapshot.gpu_reason or GPU_ROWS_COMING, ENGINE_ROWS_COMING
    return f"no GPU: {snapshot.gpu_reason}", NO_ENGINE


class HostScreen(Screen[None]):
    """The opened host; the app calls ``show`` with each reading it draws."""

    def __init__(self, host_name: str, bands: CostBands) -> None:
        super().__init__()
        self.host_name = host_name
        self.bands = bands

    def compose(self) -> ComposeResult:
        yield PartsHeader(self._header_rows, id="host-header")
        graph = FleetGraph(id="host-graph")
        yield host_panels(  # the process table stays hidden: a source gives no process list
            graph, gpus_empty="no GPU reported", engines_empty=NO_ENGINE, processes_empty="", id="host-panels"
        )
        yield MessageBar(id="host-messages")
        yield Footer(compact=True, show_command_palette=False)

    def _header_rows(self, host: FleetHost | None, state: str, width: int) -> list[list[Any]]:
        return host_header_rows(host, self.host_name, state, self.bands, width)

    def on_mount(self) -> None:
        self.gpu_table.focus()

    @property
    def gpu_table(self) -> GridTable[Any]:
        return self.query_one("#gpus", GridTable)

    @property
    def engine_table(self) -> GridTable[Any]:
        return self.query_one("#engines", GridTable)

    @property
    def graph(self) -> FleetGraph:
        return self.query_one("#host-graph", FleetGraph)

    def show(self, reading: FleetReading | None, state: str, quiet: str) -> None:
        """Draw the host as ``reading`` has it (its last figures when stale; none when down)."""
        host = host_of(reading, self.host_name)
        self.query_one(PartsHeader).show_data(host, state)
        snapshot = host.snapshot if host is not None else None
        gpus, engines = self.gpu_table, self.engine_table
        if snapshot is None:
            why = "no longer in the fleet's readings" if host is None else host.reason or "no reading yet"
            gpus.empty_text = f"no reading from {self.host_name}: {why}"
            gpus.set_rows([], lambda row: row.key)
            engines.set_rows([], lambda row: row.key)
        else:
            gpus.windows = engines.windows = window_labels(snapshot)
            gpus.lengths = engines.lengths = window_lengths(snapshot)
            gpus.empty_text, engines.empty_text = _empty_texts(snapshot)
            gpus.set_rows(gpu_rows(snapshot, self.bands), lambda row: row.key, gpu_sub_rows)
            engines.set_rows(engine_rows(snapshot), lambda row: row.key)
        self.query_one(Panels).fit()
        self.query_one(MessageBar).show(_host_messages(host), f"{quiet} · sorted by {gpus.sort_label}")
