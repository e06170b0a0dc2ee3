"""Details of one GPU: status, clocks, limits, energy and cost so far, price and its source,
the engines it serves and its processes. Follows the live data while open."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from tokentop.config import CostConfig
from tokentop.cost import energy_is_charged
from tokentop.model import GpuFigures, GpuProcess, GpuSample, Snapshot, Window
from tokentop.tui.columns import is_filling, url_port, with_mtok_unit
from tokentop.tui.processes import ProcessInfo
from tokentop.tui.screens.overlay import Overlay
from tokentop.units import (
    NA,
    fmt_bytes,
    fmt_duration,
    fmt_energy,
    fmt_pct,
    fmt_tok_per_j,
    fmt_tok_s,
    fmt_tokens,
    fmt_usd,
    fmt_usd_per_mtok,
    fmt_watts,
    fmt_window,
)


def _window_line(window: Window, length_s: float, serving: bool) -> str:
    """A window's figures, after its length (and while it fills, the span it covers so far)."""
    filling = is_filling(window, length_s)
    span = f"{fmt_window(length_s)}, {fmt_window(window.span_s)} so far" if filling else fmt_window(length_s)

    def per_mtok(value: float | None) -> str:
        return with_mtok_unit(fmt_usd_per_mtok(value, tokens_out=window.tokens_out, serving=serving, filling=filling))

    return (
        f"({span}) in {fmt_tok_s(window.tok_s_in)} · out {fmt_tok_s(window.tok_s_out)} tok/s · "
        f"{fmt_watts(window.watts)} · {fmt_tok_per_j(window.tok_per_j)} tok/J · "
        f"{per_mtok(window.usd_per_mtok)} (busy {per_mtok(window.busy_usd_per_mtok)}) · "
        f"busy {fmt_pct(window.busy_share, fraction=True)}"
    )


def details_table(
    snapshot: Snapshot,
    gpu: GpuFigures,
    cost: CostConfig,
    processes: tuple[GpuProcess, ...] | None,
    process_info: Mapping[int, ProcessInfo],
) -> Table:
    """The details of one GPU as a two-column table, section after section."""
    table = Table(show_header=False, box=None, padding=(0, 1), expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    _add_readings(table, gpu.sample)
    _add_engines(table, snapshot, gpu)
    _add_processes(table, processes, process_info)
    _add_totals(table, gpu)
    _add_price(table, gpu, cost)
    serving = bool(gpu.engines)
    table.add_row("rate window", _window_line(gpu.rate_window, snapshot.rate_window_s, serving))
    table.add_row("cost window", _window_line(gpu.cost_window, snapshot.cost_window_s, serving))
    table.add_row("UUID", gpu.sample.uuid)
    return table


def _add_readings(table: Table, s: GpuSample) -> None:
    """What NVML reads now: status, util, memory, power, temperature, clock."""
    status = s.status.upper() if s.status != "ok" else "ok"
    table.add_row("status", status + (f": {s.error}" if s.error else ""))
    table.add_row("util", f"{fmt_pct(s.utilization_pct)} (NVML: the share of time a kernel ran)")
    used, total = s.memory_used_bytes, s.memory_total_bytes
    share = fmt_pct(used / total, fraction=True) if used is not None and total else NA
    table.add_row("memory", f"{fmt_bytes(used)} of {fmt_bytes(total)} ({share})")
    source = f" ({s.power_source.replace('_', ' ')})" if s.power_source else ""
    table.add_row("power", f"{fmt_watts(s.power_w)}{source}, limit {fmt_watts(s.power_limit_w)}")
    table.add_row("temperature", NA if s.temperature_c is None else f"{s.temperature_c:.0f} °C")
    table.add_row("SM clock", NA if s.sm_clock_mhz is None else f"{s.sm_clock_mhz} MHz")


def _add_engines(table: Table, snapshot: Snapshot, gpu: GpuFigures) -> None:
    """One row per engine this GPU serves, with how the GPU was mapped to it."""
    endpoints = {x.sample.name: x for x in snapshot.endpoints}
    for name in gpu.engines or ("",):
        endpoint = endpoints.get(name)
        if endpoint is None:
            table.add_row("engine", "none" if not name else f"{name} (not polled)")
            continue
        parts = len(endpoint.gpus) or 1
        mapped = {"process": "found by process", "config": "from the config"}.get(endpoint.mapping or "", "not mapped")
        table.add_row(
            "engine",
            f"{name} {endpoint.sample.kind or ''} {url_port(endpoint.sample.url)} · "
            f"{parts} GPU{'s' if parts > 1 else ''} (this GPU gets 1/{parts} of its tokens) · "
            f"{endpoint.sample.status} · {mapped}",
        )


def _add_processes(
    table: Table, processes: tuple[GpuProcess, ...] | None, process_info: Mapping[int, ProcessInfo]
) -> None:
    """One row per process on the GPU: its user and name where /proc told us (P: all of them)."""
    if processes is None:
        table.add_row("processes", "not read yet (every few seconds)")
    elif not processes:
        table.add_row("processes", "none")
    else:
        for i, proc in enumerate(processes):
            info = process_info.get(proc.pid)
            who = f"{info.user} {info.name}" if info else ""
            table.add_row(
                "processes" if i == 0 else "",
                f"PID {proc.pid} {who} · {fmt_bytes(proc.used_memory_bytes)}".replace("  ", " "),
            )


def _add_totals(table: Table, gpu: GpuFigures) -> None:
    """Energy, tokens and cost since the session began, and the cost rate now."""
    totals = gpu.totals
    method = {"counter": "NVML energy counter", "power_integral": "power readings integrated"}.get(
        gpu.energy_method or "", "no power reading"
    )
    table.add_row("energy so far", f"{fmt_energy(totals.energy_j)} ({method}) over {fmt_duration(totals.elapsed_s)}")
    table.add_row("tokens so far", f"in {fmt_tokens(totals.tokens_in)} · out {fmt_tokens(totals.tokens_out)}")
    table.add_row("cost so far", f"{fmt_usd(totals.cost_usd)} (while busy {fmt_usd(totals.busy_cost_usd)})")
    table.add_row("cost rate now", f"{fmt_usd(gpu.usd_per_hour_now)}/h")


def _add_price(table: Table, gpu: GpuFigures, cost: CostConfig) -> None:
    """The GPU-hour price, its source, and whether electricity is added to it."""
    if gpu.price is None:
        table.add_row("price", Text("none for this GPU model: set cost.gpu_hour_usd in the config", style="bold"))
    else:
        table.add_row("price", f"{fmt_usd(gpu.price.usd_per_gpu_hour)}/GPU·h, {gpu.price.mode} mode")
        table.add_row("price source", gpu.price.source)
    if energy_is_charged(cost):
        table.add_row(
            "electricity",
            f"{fmt_usd(cost.electricity_usd_per_kwh)}/kWh × PUE {cost.pue:g} × node overhead "
            f"{cost.node_overhead:g}, added to the rate",
        )
    else:
        table.add_row("electricity", "included in the GPU-hour rate")


class DetailsScreen(Overlay):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("d", "close", "close")]

    def __init__(self, uuid: str, cost: CostConfig) -> None:
        super().__init__()
        self.uuid = uuid
        self.cost = cost
        self._body = Static(id="details-text")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="details-body") as body:
            body.border_subtitle = "Esc or d closes · q quits"
            yield self._body

    def on_mount(self) -> None:
        self.query_one("#details-body").focus()  # the scroll keys go to the text

    def show(
        self,
        snapshot: Snapshot | None,
        processes: tuple[GpuProcess, ...] | None,
        process_info: Mapping[int, ProcessInfo],
    ) -> None:
        gpu = None if snapshot is None else next((g for g in snapshot.gpus if g.sample.uuid == self.uuid), None)
        container = self.query_one("#details-body")
        if snapshot is None or gpu is None:
            container.border_title = "GPU details"
            self._body.update("This GPU is no longer reported.")
            return
        container.border_title = f"GPU {gpu.sample.index} · {gpu.sample.name}"
        self._body.update(details_table(snapshot, gpu, self.cost, processes, process_info))
