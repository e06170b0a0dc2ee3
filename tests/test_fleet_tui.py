"""The fleet view, driven by Pilot over fleets of real demo snapshots (``fleet_factories``):
the header's sums, the hosts table, a host opened in the local view's own tables, stale and
down hosts, sorting, 100 hosts at 80x24, a source that fails, the graphs of the source's past,
the poller thread and the command's ways out."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from fleet_factories import (
    ScriptedSource,
    demo_hosts,
    demo_runs,
    demo_series,
    fleet_reading,
    host_name,
    scripted_fleet,
    seed_of,
    unopened,
)
from test_tui import screen_text
from textual.pilot import Pilot
from textual.widgets._toast import Toast

from tokentop.config import Config, PrometheusConfig
from tokentop.fleet.model import FleetHost, FleetReading
from tokentop.fleet.poller import Poller
from tokentop.fleet.prometheus_source import NOT_OPENED, PrometheusSource
from tokentop.model import Window
from tokentop.tui.engine_table import ENGINE_COLUMNS
from tokentop.tui.fleet.app import NO_PAST, FleetApp
from tokentop.tui.fleet.graph_points import SPANS, bucket_count, graph_points, graph_title
from tokentop.tui.fleet.help import FleetHelpScreen
from tokentop.tui.fleet.host_screen import HostScreen
from tokentop.tui.fleet.host_table import gpu_models
from tokentop.tui.fleet.widgets import PartsHeader, fleet_heights
from tokentop.tui.gpu_table import GPU_COLUMNS
from tokentop.tui.keys import FLEET_KEYS
from tokentop.tui.widgets.messages import MessageBar
from tokentop.units import fmt_pct, fmt_tok_s, fmt_usd, fmt_usd_per_mtok, fmt_watts


@pytest.fixture(scope="module", autouse=True)
def runs() -> None:
    demo_runs()  # the demo hosts, sampled once for the whole module


@pytest.fixture(autouse=True)
def true_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal of 16 million colours, whatever TERM the tests run under (as test_tui.py)."""
    monkeypatch.setenv("COLORTERM", "truecolor")


@asynccontextmanager
async def fleet_app(
    source: ScriptedSource, size: tuple[int, int] = (140, 45), config: Config | None = None
) -> AsyncIterator[tuple[FleetApp, Pilot[None]]]:
    """The app over ``source`` after its first reading, the graph's past read."""
    app = FleetApp(config or Config(), source, start_poller=False, handle_signals=False)
    async with app.run_test(size=size) as pilot:
        app.post_reading(source.read())
        await settle(app, pilot)
        yield app, pilot


async def settle(app: FleetApp, pilot: Pilot[None], *keys: str) -> None:
    await pilot.press(*keys)
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert condition(), "the condition never came true"


def header_text(app: FleetApp) -> str:
    return app.query_one("#header", PartsHeader).text


def line_of(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f" {name} " in line)


# --- the header and the hosts table -------------------------------------------------------------


def over(windows: list[Window], span_s: float, value: Callable[[Window], float]) -> float:
    """A fleet figure over ``span_s`` as rates add: each host's own over its window, scaled to
    the span (a host whose window is still filling adds its rate, not a fraction of it)."""
    return sum(value(w) * span_s / w.span_s for w in windows if w.span_s > 0)


async def test_header_gives_the_sums_of_the_hosts_with_their_windows() -> None:
    source = scripted_fleet(6, down=(4,), stale=(2,), unpriced=(5,))
    reading = source.readings[0]
    read = [h.snapshot.host for h in reading.hosts if h.snapshot is not None]
    priced = [h.snapshot.host for h in reading.hosts if h.snapshot is not None and h.name != host_name(5)]
    assert len(read) == 5 and len(priced) == 4
    rate_s, cost_s = reading.rate_window_s, reading.cost_window_s
    assert read[2].cost_window.span_s < cost_s  # the stale host's window is short: scaled, not cut
    costs, rates = [f.cost_window for f in priced], [f.rate_window for f in read]
    cost = over(costs, cost_s, lambda w: w.cost_usd or 0.0)
    busy_cost = over(costs, cost_s, lambda w: w.busy_cost_usd or 0.0)
    tokens = over(costs, cost_s, lambda w: w.tokens_out)
    every_token = over([f.cost_window for f in read], cost_s, lambda w: w.tokens_out)
    assert fmt_usd(cost / tokens * 1e6) != fmt_usd(cost / every_token * 1e6)  # leaving the unpriced host out shows
    busy = over([f.cost_window for f in read], cost_s, lambda w: w.busy_s)
    watched = over([f.cost_window for f in read], cost_s, lambda w: w.watched_gpu_s or 0.0)
    async with fleet_app(source, size=(200, 50)) as (app, _):
        header = header_text(app)
        assert f" {fmt_usd(cost / tokens * 1e6)}/Mtok  1m" in header  # effective, the hero, its window
        assert f"busy {fmt_usd(busy_cost / tokens * 1e6)}/Mtok 1m" in header
        assert f"{fmt_usd(sum(f.usd_per_hour_now or 0.0 for f in priced))}/h now" in header
        tok_out = fmt_tok_s(over(rates, rate_s, lambda w: w.tokens_out) / rate_s)
        tok_in = fmt_tok_s(over(rates, rate_s, lambda w: w.tokens_in) / rate_s)
        assert f"out {tok_out} in {tok_in} tok/s 10s" in header
        assert f"{fmt_watts(over(rates, rate_s, lambda w: w.energy_j) / rate_s)} 10s" in header
        assert f"busy {fmt_pct(busy / watched, fraction=True)} 1m" in header
        assert "hosts 4/6 up" in header and f"{8 * 5} GPUs" in header
        assert "NO PRICE on 1 host(s)" in header and host_name(5) in header
        assert "scripted test source" in header and "● live" in header
        table = app.host_table
        for host in reading.hosts:  # each row: its own snapshot's figures, as its own header gives them
            if host.snapshot is None:
                assert table.cell_text(host.name, "tok_out") == "—"
                continue
            figures = host.snapshot.host
            assert table.cell_text(host.name, "tok_out") == fmt_tok_s(figures.rate_window.tok_s_out)
            window = figures.cost_window
            expected = fmt_usd_per_mtok(window.usd_per_mtok, tokens_out=window.tokens_out)
            assert table.cell_text(host.name, "usd_mtok") == expected
        assert table.cell_text(host_name(5), "usd_mtok") == "N/A" and table.cell_text(host_name(5), "usd_h") == "N/A"
        assert table.cell_text(host_name(0), "gpus") == "8× H200"


async def test_stale_and_down_hosts_are_said_plainly_with_the_reason() -> None:
    source = scripted_fleet(8, down=(3,), stale=(5,))
    async with fleet_app(source, size=(140, 40)) as (app, pilot):
        table = app.host_table
        assert table.cell_text(host_name(3), "state") == "DOWN: connection refused"
        assert table.cell_text(host_name(5), "state") == "STALE 40s: no sample for 40 s"
        assert table.cell_text(host_name(1), "state") == "up 2s, clock +3.4s"  # over 2 s apart: said
        assert table.cell_text(host_name(0), "state") == "up 1s"  # 0.2 s: not
        assert table.cell(host_name(5), "tok_out").style == "dim"  # the last figures, kept and marked
        assert table.cell_text(host_name(5), "tok_out") != "—"
        assert table.cell(host_name(3), "state").style == "bad" and table.cell(host_name(5), "state").style == "warn"
        messages = app.query_one(MessageBar).messages
        assert messages[:2] == ("node-003 DOWN: connection refused", "node-005 STALE: no sample for 40 s")
        assert "hosts 6/8 up" in header_text(app)
        await settle(app, pilot, "down", "down", "down", "enter")  # open the down host
        assert isinstance(app.screen, HostScreen)
        text = screen_text(app)
        assert "no reading from node-003: connection refused" in text and "DOWN: connection refused" in text
    async with fleet_app(source, size=(80, 24)) as (app, _):
        text = screen_text(app)
        assert "DOWN" in line_of(text, host_name(3)) and "STALE 40s" in line_of(text, host_name(5))


async def test_a_host_going_down_and_back_is_announced_once() -> None:
    hosts = demo_hosts(3)
    down = replace(hosts[1], state="down", reason="ssh: connection timed out", snapshot=None)
    source = ScriptedSource([fleet_reading(hosts), fleet_reading([hosts[0], down, hosts[2]]), fleet_reading(hosts)])
    async with fleet_app(source) as (app, pilot):
        for _ in range(2):
            app.post_reading(source.read())
            await settle(app, pilot)
        assert list(app.announcements) == ["node-001 DOWN: ssh: connection timed out", "node-001 is back up"]


async def test_a_remote_reason_is_shown_as_text_never_as_markup() -> None:
    """ssh's stderr is the remote's to write: brackets in it neither style, act nor raise."""
    hosts = demo_hosts(2)
    reason = "ssh: [/x] [@click=app.quit]quit[/] [link=http://x]"
    down = replace(hosts[1], state="down", reason=reason, snapshot=None)
    source = ScriptedSource([fleet_reading(hosts), fleet_reading([hosts[0], down])])
    app = FleetApp(Config(), source, start_poller=False, handle_signals=False)
    async with app.run_test(size=(140, 45), notifications=True) as pilot:  # toasts drawn, as for a user
        for _ in range(2):
            app.post_reading(source.read())
            await settle(app, pilot)
        assert list(app.announcements) == [f"node-001 DOWN: {reason}"]
        toast = app.screen.query_one(Toast)
        assert str(toast.render()) == f"node-001 DOWN: {reason}"  # the toast, as written
        assert app.is_running and app.return_code is None


# --- opening a host -------------------------------------------------------------------------------


async def test_enter_opens_a_host_in_the_local_tables_and_esc_goes_back() -> None:
    source = scripted_fleet(5)
    reading = source.readings[0]
    async with fleet_app(source) as (app, pilot):
        await settle(app, pilot, "down", "down")
        assert app.host_table.cursor_key == host_name(2)
        await settle(app, pilot, "enter")
        screen = app.screen
        assert isinstance(screen, HostScreen) and screen.host_name == host_name(2)
        snapshot = reading.hosts[2].snapshot
        assert snapshot is not None
        assert screen.gpu_table.specs == GPU_COLUMNS and screen.engine_table.specs == ENGINE_COLUMNS
        assert screen.gpu_table.row_keys == [g.sample.uuid for g in sorted(snapshot.gpus, key=lambda g: g.sample.index)]
        for gpu in snapshot.gpus:
            assert screen.gpu_table.cell_text(gpu.sample.uuid, "tok_out") == fmt_tok_s(gpu.rate_window.tok_s_out)
        assert screen.engine_table.row_keys == sorted(e.sample.name for e in snapshot.endpoints)
        text = screen_text(app)
        assert "node-002" in text and "8× H200" in text and "llama-70b :8000 1/4" in text
        assert "Esc back" in text.splitlines()[-1] and "Enter open" not in text.splitlines()[-1]
        # the next reading redraws the opened host from its new snapshot
        later = demo_runs()[seed_of(2)][-30]
        moved = [replace(h, snapshot=later) if h.name == host_name(2) else h for h in reading.hosts]
        app.post_reading(fleet_reading(moved))
        await settle(app, pilot)
        first = next(g for g in later.gpus if g.sample.index == 0)
        assert screen.gpu_table.cell_text(first.sample.uuid, "power") == f"{first.sample.power_w:.0f}/700"
        await settle(app, pilot, "escape")
        assert not isinstance(app.screen, HostScreen) and app.host_table.cursor_key == host_name(2)
        assert "Enter open" in screen_text(app).splitlines()[-1]


def _idle(host: FleetHost) -> FleetHost:
    """``host`` with no output token over its cost window (its engines up, nothing asked)."""
    assert host.snapshot is not None
    figures = host.snapshot.host
    quiet = replace(figures, cost_window=replace(figures.cost_window, tokens_out=0.0))
    return replace(host, snapshot=replace(host.snapshot, host=quiet))


async def test_a_host_is_read_in_full_only_while_it_is_opened() -> None:
    """A source that reads GPU rows for the opened host only (as Prometheus's for the screen):
    the hosts table from each host's counts, the opened host's rows from the next reading."""
    hosts = demo_hosts(4)
    source = ScriptedSource([fleet_reading([_idle(hosts[0]), *hosts[1:]])], focused=True)
    async with fleet_app(source) as (app, pilot):
        assert source.focus_calls == []
        table = app.host_table
        shown = app.shown
        assert shown is not None and all(h.snapshot and not h.snapshot.gpus for h in shown.hosts)
        assert [table.cell_text(h.name, "gpus") for h in shown.hosts] == ["8× H200"] * 4  # from the counts
        assert table.cell_text(host_name(0), "usd_mtok") == "idle"  # engines known: idle, not "—"
        await settle(app, pilot, "down", "enter")
        screen = app.screen
        assert isinstance(screen, HostScreen) and source.focus_calls == [host_name(1)]
        text = screen_text(app)
        assert NOT_OPENED in text and "no GPU" not in text  # coming, not missing
        assert "the engine rows come with the next refresh" in text
        app.post_reading(source.read())  # the next refresh, with the opened host's rows
        await settle(app, pilot)
        snapshot = hosts[1].snapshot
        assert snapshot is not None and len(screen.gpu_table.row_keys) == len(snapshot.gpus) == 8
        assert screen.engine_table.row_keys == sorted(e.sample.name for e in snapshot.endpoints)
        await settle(app, pilot, "escape")
        assert not isinstance(app.screen, HostScreen) and source.focus_calls == [host_name(1), None]


async def test_opening_a_host_has_the_poller_read_at_once() -> None:
    """The real poller thread, refreshing once an hour: opening a host reads again now."""
    source = ScriptedSource([fleet_reading(demo_hosts(3))], focused=True, refresh_s=3600.0)
    app = FleetApp(Config(), source, handle_signals=False)
    try:
        async with app.run_test(size=(140, 45)) as pilot:
            await until(lambda: app.shown is not None)
            await settle(app, pilot, "down", "enter")
            screen = app.screen
            assert isinstance(screen, HostScreen)
            await until(lambda: len(screen.gpu_table.row_keys) == 8)
            assert source.reads == 2 and source.focus_calls == [host_name(1)]
    finally:
        app.poller.stop()


def test_a_hosts_gpus_are_said_from_its_counts_when_its_rows_are_not_read() -> None:
    (host,) = demo_hosts(1)
    bare = unopened(host)
    assert bare.snapshot is not None and bare.snapshot.gpus == () and bare.snapshot.host.gpu_count == 8
    assert gpu_models(bare) == ("8× H200", ())
    mixed = replace(bare, model_counts=(("NVIDIA H200", 4), ("NVIDIA L40S", 4)))
    assert gpu_models(mixed) == ("4× H200, 4× L40S", ("8 GPUs",))  # as a host whose rows are read
    models_only = replace(mixed, model_counts=(), models=("NVIDIA H200", "NVIDIA L40S"))
    assert gpu_models(models_only) == ("8 GPUs: H200, L40S", ())
    assert gpu_models(replace(models_only, models=("NVIDIA H200",))) == ("8× H200", ())
    no_gpu = replace(bare, snapshot=replace(bare.snapshot, host=replace(bare.snapshot.host, gpu_count=0)))
    assert gpu_models(no_gpu) == ("no GPU", ())


# --- keys and sorting ------------------------------------------------------------------------------


def _column(app: FleetApp, key: str, reading: FleetReading) -> list[float | None]:
    hosts = {h.name: h for h in reading.hosts}
    out = []
    for name in app.host_table.row_keys:
        snapshot = hosts[name].snapshot
        out.append(None if snapshot is None else snapshot.host.cost_window.usd_per_mtok if key == "usd_mtok" else 0)
    return out


async def test_sorting_keys_are_the_local_views() -> None:
    source = scripted_fleet(9, down=(4,))
    reading = source.readings[0]
    async with fleet_app(source) as (app, pilot):
        table = app.host_table
        assert table.sort_key == "host" and table.row_keys == [host_name(i) for i in range(9)]
        await settle(app, pilot, "m")
        values = _column(app, "usd_mtok", reading)
        assert table.sort_key == "usd_mtok" and table.sort_descending
        known = [v for v in values if v is not None]
        assert values[-1] is None and known == sorted(known, reverse=True) and known[0] > known[-1]
        assert "sorted by $/Mtok 1m ▼" in app.query_one(MessageBar).quiet  # the message line says it when quiet
        await settle(app, pilot, "m")  # again: cheapest first, the unknown still last
        values = _column(app, "usd_mtok", reading)
        assert not table.sort_descending and values[-1] is None and values[:-1] == sorted(values[:-1])  # type: ignore[type-var]
        await settle(app, pilot, "s")
        assert table.sort_key == "busy" and table.sort_descending  # the next visible column, busiest first
        await settle(app, pilot, "S")
        assert table.sort_key == "busy" and not table.sort_descending
        app.post_reading(source.read())  # a new reading keeps the order chosen
        await settle(app, pilot)
        assert table.sort_key == "busy" and not table.sort_descending
        await settle(app, pilot, "home", "enter", "m")  # in a host, the same key sorts its GPUs
        screen = app.screen
        assert isinstance(screen, HostScreen) and screen.gpu_table.sort_key == "usd_mtok"


async def test_help_lists_every_fleet_key_and_q_quits() -> None:
    source = scripted_fleet(3)
    async with fleet_app(source, size=(120, 80)) as (app, pilot):
        footer = screen_text(app).splitlines()[-1]
        for key in FLEET_KEYS:
            if key.footer and key.action != "close_host":
                assert f"{key.display} {key.footer}" in footer
        await settle(app, pilot, "question_mark")
        assert isinstance(app.screen, FleetHelpScreen)
        text = " ".join(screen_text(app).split())
        for key in FLEET_KEYS:
            assert " ".join(key.help.split())[:40] in text, key.keys
        assert "Hosts table" in text and "A host's GPU table" in text and "STALE" in text
        await settle(app, pilot, "escape")
        assert not isinstance(app.screen, FleetHelpScreen)
        await settle(app, pilot, "q")
    assert app.return_code == 0


async def test_pause_keeps_the_reading_on_screen_while_polling_goes_on() -> None:
    source = scripted_fleet(4)
    later = fleet_reading(demo_hosts(4, stale=(0,)))
    async with fleet_app(source) as (app, pilot):
        before = app.host_table.cell_text(host_name(0), "state")
        await settle(app, pilot, "p")
        app.post_reading(later)
        await settle(app, pilot)
        assert app.latest is later and app.host_table.cell_text(host_name(0), "state") == before
        assert "PAUSED since" in header_text(app) and "(1 reading since)" in header_text(app)
        await settle(app, pilot, "p")
        assert app.host_table.cell_text(host_name(0), "state").startswith("STALE") and "● live" in header_text(app)


# --- size -------------------------------------------------------------------------------------------


async def test_100_hosts_at_80x24_scroll_and_no_figure_is_cut() -> None:
    source = scripted_fleet(100, down=(17, 60), stale=(33,))
    reading = source.readings[0]
    async with fleet_app(source, size=(80, 24)) as (app, pilot):
        text = screen_text(app)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 80
        assert "more below" in text and f"hosts 97/100 up  {reading.fleet.gpu_count} GPUs" in header_text(app)
        table = app.host_table
        visible = table.visible_columns
        assert {"host", "tok_out", "usd_mtok", "state"} <= set(visible)
        figures = [c for c in ("gpus", "tok_out", "power", "usd_h", "usd_mtok", "busy", "engines") if c in visible]
        shown = [line for line in lines if re.match(r"^ node-\d{3} ", line)]
        assert len(shown) >= 10
        for line in shown:  # each figure whole, as the row has it
            name = line.split()[0]
            for column in figures:
                assert f" {table.cell_text(name, column)} " in f"{line} ", (name, column, line)
        assert "History" in text  # the fleet's graph keeps its title and one chart
        await settle(app, pilot, "end")
        text = screen_text(app)
        assert table.cursor_key == host_name(99) and " node-099 " in text and "more above" in text
        await settle(app, pilot, "enter")
        text = screen_text(app)
        assert "node-099" in text and max(len(line) for line in text.splitlines()) <= 80
        assert all(f"  {i}  H200" in text for i in range(8))  # every GPU of the host on screen


async def test_ascii_only_draws_only_ascii_on_every_screen() -> None:
    source = scripted_fleet(5, down=(1,), stale=(2,))
    source.focused = True  # the hosts' GPUs said from their counts; the opened host's rows read next
    screens = []
    async with fleet_app(source, size=(120, 40), config=Config(ascii_only=True)) as (app, pilot):
        screens.append(screen_text(app))
        await settle(app, pilot, "enter")
        screens.append(screen_text(app))  # its rows are coming
        app.post_reading(source.read())
        await settle(app, pilot)
        screens.append(screen_text(app))  # they came
        for keys in (("question_mark",), ("escape", "escape", "p")):
            await settle(app, pilot, *keys)
            screens.append(screen_text(app))
    assert "* live" in screens[0] and "8x H200" in screens[0] and "| PAUSED" in screens[-1]
    assert "  0  H200" in screens[2]
    assert [i for i, screen in enumerate(screens) if not screen.isascii()] == []


# --- the source in trouble ---------------------------------------------------------------------------


async def test_a_source_status_marks_the_last_good_figures_stale() -> None:
    source = scripted_fleet(3)
    status = "Prometheus http://127.0.0.1:9/ unreachable: connection refused"
    source.readings.append(replace(source.readings[0], status=status, stale=True))
    async with fleet_app(source) as (app, pilot):
        assert "⚠" not in header_text(app)
        app.post_reading(source.read())
        await settle(app, pilot)
        header = header_text(app)
        assert f"⚠ {status} · figures are the last good ones, from" in header and "(stale)" in header
        assert app.query_one(MessageBar).messages[0] == status
        assert status in app.announcements
        assert app.host_table.cell_text(host_name(0), "tok_out") != "—"  # the figures stay


def test_the_poller_turns_a_raising_read_into_a_status_and_goes_on() -> None:
    source = scripted_fleet(3)
    got: list[FleetReading] = []
    poller = Poller(source, got.append, windows=(10.0, 60.0))
    good = poller.poll_once()
    source.read_error = RuntimeError("boom")
    bad = poller.poll_once()
    assert good.status is None and not good.stale
    assert bad.stale and bad.status == "scripted test source (3 demo hosts): reading failed: RuntimeError: boom"
    assert bad.hosts == good.hosts and bad.fleet == good.fleet and got == [good, bad]
    # before any good reading: an empty fleet that says why
    fresh = Poller(ScriptedSource([], read_error=OSError("no route to host")), windows=(60.0, 900.0)).poll_once()
    assert fresh.hosts == () and fresh.fleet.host_count == 0 and fresh.stale
    assert fresh.status is not None and fresh.status.endswith("OSError: no route to host")
    assert (fresh.rate_window_s, fresh.cost_window_s) == (60.0, 900.0)


def test_the_poller_thread_survives_raising_reads_and_sinks_and_stops() -> None:
    source = scripted_fleet(2)
    source.read_error = RuntimeError("boom")
    source.refresh_s = 0.01

    def sink(reading: FleetReading) -> None:
        raise RuntimeError("the app is gone")

    poller = Poller(source, sink)
    poller.start()
    deadline = time.monotonic() + 30
    while poller.reads < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert poller.reads >= 5 and poller.running  # every read raised, so did the sink: still alive
    poller.stop(join_s=30)
    assert not poller.running


def test_the_poller_reads_at_once_when_asked() -> None:
    source = scripted_fleet(2)
    source.refresh_s = 3600.0
    poller = Poller(source)
    poller.start()
    try:
        deadline = time.monotonic() + 30
        while poller.reads < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        poller.refresh_now()
        while poller.reads < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert poller.reads == 2  # an hour before the next refresh was due
    finally:
        poller.stop(join_s=30)
    assert not poller.running


# --- the graphs ----------------------------------------------------------------------------------------


async def test_graphs_read_the_past_off_the_loop_for_each_span_and_host() -> None:
    source = scripted_fleet(4)
    async with fleet_app(source) as (app, pilot):
        span, host, thread = source.series_calls[0]
        assert (span, host) == (3600.0, None) and thread != threading.main_thread().name
        series = demo_series([seed_of(i) for i in range(4)], 3600.0, points=120)
        assert app.graph.points == graph_points(series, bucket_count(series, app.graph.plot_width))
        assert any(p.tok_s_out for p in app.graph.points) and any(p.usd_per_mtok for p in app.graph.points)
        assert "History · fleet (all hosts) · last 1 h" in screen_text(app)
        await settle(app, pilot, "w")
        assert source.series_calls[-1][:2] == (86_400.0, None) and "last 24 h" in screen_text(app)
        await settle(app, pilot, "w")
        assert source.series_calls[-1][:2] == (604_800.0, None) and "last 7 d" in screen_text(app)
        await settle(app, pilot, "w")  # back to 1 h: read a minute ago, kept
        assert len(source.series_calls) == 3 and "last 1 h" in screen_text(app)
        await settle(app, pilot, "down", "enter")
        assert source.series_calls[-1][:2] == (3600.0, host_name(1))
        assert "History · host node-001 · last 1 h" in screen_text(app)


@pytest.mark.parametrize("trouble", ["none", "raises"])
async def test_a_source_without_a_past_says_so(trouble: str) -> None:
    source = scripted_fleet(2)
    source.past = False
    if trouble == "raises":
        source.series_error = RuntimeError("range query refused")
    async with fleet_app(source) as (app, _):
        if trouble == "none":
            assert app.graph.note == NO_PAST and "no past from this source" in screen_text(app)
        else:
            assert app.graph.note == "the source's past could not be read: RuntimeError: range query refused"
        assert app.is_running


def test_graph_buckets_add_what_points_stand_for_and_divide_at_the_end() -> None:
    series = demo_series([seed_of(0), seed_of(1)], 3600.0, points=120)
    (whole,) = graph_points(series, 1)
    tokens = sum(t for t in series.tok_s_out if t is not None) * series.step_s
    cost = sum(u for u in series.usd_per_hour if u is not None) * series.step_s / 3600
    assert whole.usd_per_mtok == pytest.approx(cost / tokens * 1e6)
    assert whole.tok_s_out == pytest.approx(tokens / series.span_s)
    ratios = [u / 3600 / t * 1e6 for t, u in zip(series.tok_s_out, series.usd_per_hour) if t and u]
    assert whole.usd_per_mtok != pytest.approx(sum(ratios) / len(ratios), rel=1e-4)  # not a mean of ratios


def test_a_graph_of_a_source_that_keeps_less_says_what_it_shows() -> None:
    kept = replace(demo_series([seed_of(0)], 900.0, points=100), span_s=900.0)
    assert "last 15m (all kept)" in graph_title("fleet", SPANS[2], kept, 100)
    assert "last 1 h ·" in graph_title("fleet", SPANS[0], demo_series([seed_of(0)], 3600.0, points=100), 100)


def test_the_hosts_table_comes_first_and_the_graph_takes_what_is_left() -> None:
    assert fleet_heights(30, 10) == (10, 20)
    assert fleet_heights(17, 103) == (13, 4)  # 10 rows and the graph's title and one chart
    assert fleet_heights(15, 103) == (15, 0)  # too few rows left: no graph


# --- the command --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["quit", "sigterm"])
def test_run_live_closes_the_source_on_every_way_out(
    ending: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokentop.cli import fleet

    source = scripted_fleet(3)
    built: list[bool] = []

    def build_source(config: Config, *, live: bool = False) -> ScriptedSource:
        built.append(live)
        return source

    monkeypatch.setattr(fleet, "build_source", build_source)
    original_run = FleetApp.run

    def headless_run(self: FleetApp, **kwargs: object) -> None:
        def when_read() -> None:
            if self.latest is None:
                return
            if ending == "quit":
                self.exit()
            else:
                os.kill(os.getpid(), signal.SIGTERM)

        self.call_later(lambda: self.set_interval(0.05, when_read))
        original_run(self, headless=True)

    monkeypatch.setattr(FleetApp, "run", headless_run)
    before = set(threading.enumerate())
    config = Config(prometheus=PrometheusConfig(url="http://127.0.0.1:9"))
    assert fleet.run_live(config) == (0 if ending == "quit" else 143)
    assert source.closed and built == [True]  # the screen's source: GPU rows for the opened host only
    assert not [t for t in set(threading.enumerate()) - before if t.name == "tokentop-fleet-poller" and t.is_alive()]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    out = capsys.readouterr().out
    assert out.startswith("tokentop fleet, last reading at ") and "hosts 3/3 up" in out


def test_the_screen_reads_prometheus_per_opened_host_and_snapshot_every_gpu() -> None:
    from tokentop.cli.fleet import build_source

    config = Config(prometheus=PrometheusConfig(url="http://127.0.0.1:9"))
    live, full = build_source(config, live=True), build_source(config)
    try:
        assert isinstance(live, PrometheusSource) and isinstance(full, PrometheusSource)
        assert live.detail == "focused" and full.detail == "all"
    finally:
        live.close()
        full.close()


def test_run_live_says_in_one_line_when_the_source_cannot_be_had(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokentop.cli import fleet

    monkeypatch.setitem(sys.modules, "tokentop.fleet.prometheus_source", None)  # an import that fails
    config = Config(prometheus=PrometheusConfig(url="http://127.0.0.1:9"))
    assert fleet.run_live(config) == 1
    err = capsys.readouterr().err
    assert err.startswith("tokentop: the prometheus fleet source is not available:") and err.count("\n") == 1
