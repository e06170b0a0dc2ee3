"""The live view, driven by Pilot over the demo host (fake NVML, real loopback servers, real
sampler ticked by hand with a fake clock), plus SVG snapshots of its look."""

from __future__ import annotations

import ast
import asyncio
import html
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
import pytest
from factories import build_snapshot
from rich.cells import cell_len
from rich.color import ColorSystem
from textual.pilot import Pilot
from textual.widgets._toast import Toast

import tokentop
from tokentop.config import ApiPrice, Config, CostConfig
from tokentop.demo import DemoGpuReader, DemoHost, SimulatedClock, simulated_snapshots
from tokentop.history import Store
from tokentop.model import EndpointFigures, EndpointSample, HostFigures, Snapshot, Totals, Window
from tokentop.nvml.fake import MIB, FakeMig, FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import FIRST_INTERVAL_S, Sampler
from tokentop.tui import logs_on_screen
from tokentop.tui.app import TokentopApp
from tokentop.tui.columns import DEFAULT_BANDS, Cell, CostBands, cost_bands, fit_columns
from tokentop.tui.engine_table import ENGINE_COLUMNS, engine_status, model_forms
from tokentop.tui.events import LogLine
from tokentop.tui.gpu_table import GPU_COLUMNS, gpu_rows
from tokentop.tui.history import HOST, WINDOWS, LiveHistory
from tokentop.tui.host import FixedHost, HostUsage, PsutilHost
from tokentop.tui.keys import KEYS
from tokentop.tui.processes import ProcessInfo, describe_processes, process_engine
from tokentop.tui.screens.details import DetailsScreen
from tokentop.tui.screens.help import HelpScreen
from tokentop.tui.widgets.header import HeaderBar
from tokentop.tui.widgets.messages import MessageBar
from tokentop.tui.widgets.panels import panel_heights
from tokentop.units import (
    ASCII_GLYPHS,
    bar,
    fmt_gib,
    fmt_tok_s,
    fmt_usd,
    fmt_usd_per_mtok,
    gpu_labels,
    short_gpu_name,
    to_ascii,
)

FakeClock = SimulatedClock
WALL_START = SimulatedClock.WALL_START
GIB = 2**30
HOST_USAGE = HostUsage(0.12, 48 * GIB, 251 * GIB)
# The demo's engines as processes (the demo lists PIDs 4000-4002 on their GPUs); 4002 is not visible.
DEMO_PROCESSES = {
    4000: ProcessInfo("python3", "serve", "python3 -m vllm.entrypoints.openai.api_server --tensor-parallel-size 4"),
    4001: ProcessInfo("python3", "serve", "python3 -m vllm.entrypoints.openai.api_server --tensor-parallel-size 2"),
}


def fixed_app(config: Config | None = None, host_name: str = "gpu-node-01", **options: object) -> TokentopApp:
    """The app with a fixed host (CPU, memory, process owners): the look does not depend on this machine."""
    return TokentopApp(
        config or Config(),
        host_name=host_name,
        handle_signals=False,
        host=FixedHost(HOST_USAGE, DEMO_PROCESSES),
        **options,  # type: ignore[arg-type]
    )


@dataclass
class Rig:
    host: DemoHost
    sampler: Sampler
    clock: FakeClock
    config: Config
    stopped: set[str] = field(default_factory=set)
    """Engines this test stopped and has not started again: rig_on starts them afterwards."""

    def stop_engine(self, name: str) -> None:
        self.host.stop_engine(name)
        self.stopped.add(name)

    def start_engine(self, name: str) -> None:
        self.host.start_engine(name)
        self.stopped.discard(name)

    def tick(self, count: int = 1) -> Snapshot:
        snapshot = None
        for _ in range(count):
            self.clock.t += 1.0
            snapshot = self.sampler.tick()
        assert snapshot is not None
        return snapshot

    def app(self, **kwargs: object) -> TokentopApp:
        options: dict[str, object] = {
            "sampler": self.sampler,
            "host_name": "gpu-node-01",
            "start_sampler": False,
            "handle_signals": False,
            "host": FixedHost(HOST_USAGE, DEMO_PROCESSES),
        }
        options.update(kwargs)
        return TokentopApp(self.config, **options)  # type: ignore[arg-type]


@dataclass
class DemoUnderTest:
    host: DemoHost
    clock: FakeClock
    endpoints: tuple


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoUnderTest]:
    """One demo host for the module: its loopback servers take half a second each to stop."""
    clock = FakeClock()
    host = DemoHost(seed=7, clock=clock)
    endpoints = host.serve()
    yield DemoUnderTest(host, clock, endpoints)
    host.close()


@contextmanager
def rig_on(demo: DemoUnderTest, store: Store | None = None, gpu_name: str | None = None) -> Iterator[Rig]:
    """A fresh sampler over the shared demo; every fault knob is put back afterwards."""
    config = Config(endpoints=demo.endpoints, http_timeout_s=5.0)
    names = [gpu.name for gpu in demo.host.fake.gpus]
    for gpu in demo.host.fake.gpus:
        gpu.name = gpu_name or gpu.name  # NVML names are read when the sampler opens the reader
    sampler = Sampler(config, DemoGpuReader(demo.host), store=store, clock=demo.clock, wall_clock=demo.clock.wall)
    rig = Rig(demo.host, sampler, demo.clock, config)
    try:
        yield rig
    finally:
        sampler.stop()
        for gpu, name in zip(demo.host.fake.gpus, names, strict=True):
            gpu.lost, gpu.name = False, name
        for engine in sorted(rig.stopped):
            rig.start_engine(engine)


@pytest.fixture(autouse=True)
def true_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal of 16 million colours, whatever TERM the tests run under: the app picks its
    colours from the terminal's (16-colour tests set their own)."""
    monkeypatch.setenv("COLORTERM", "truecolor")


@pytest.fixture
def rig(demo: DemoUnderTest) -> Iterator[Rig]:
    with rig_on(demo) as r:
        yield r


SVG_TEXT = re.compile(r'<text [^>]*\bx="([0-9.]+)"[^>]*\btextLength="([0-9.]+)"[^>]*-line-(\d+)\)"[^>]*>(.*?)</text>')


def screen_text(app: TokentopApp) -> str:
    """What a person sees, as plain text: the characters of ``app.export_screenshot()``.

    The screenshot (Textual's public way to see the whole screen, modal screens over the ones
    below included) places each run of text at ``x = column * cell width`` on a numbered line.
    """
    width, height = app.size
    rows = [[" "] * width for _ in range(height)]
    runs = SVG_TEXT.findall(app.export_screenshot())
    assert runs, "no text found in the screenshot: has the layout of Rich's SVG changed?"
    for x, length, line, escaped in runs:
        text = html.unescape(escaped.replace("&#160;", " "))  # the SVG writes every space as &#160;
        column = round(float(x) / (float(length) / len(text)))
        for char in text:
            rows[int(line)][column] = char
            if cell_len(char) == 2:
                rows[int(line)][column + 1] = ""
            column += cell_len(char)
    return "\n".join("".join(row) for row in rows)


def row_of(app: TokentopApp, index: int) -> str:
    snapshot = app.latest
    assert snapshot is not None
    return next(g.sample.uuid for g in snapshot.gpus if g.sample.index == index)


@asynccontextmanager
async def fake_gpus_app(
    names: list[str], size: tuple[int, int], ticks: int = 3
) -> AsyncIterator[tuple[TokentopApp, Pilot[None]]]:
    """The app over fake GPUs with these NVML names (no endpoint), after ``ticks`` ticks."""
    clock = FakeClock()
    fake = FakeNvml.healthy(count=len(names))
    for gpu, name in zip(fake.gpus, names, strict=True):
        gpu.name = name
    config = Config(discover=False)
    sampler = Sampler(config, NvmlReader(lib=fake), clock=clock, wall_clock=clock.wall)
    try:
        app = fixed_app(config, "big-box", sampler=sampler, start_sampler=False)
        async with app.run_test(size=size) as pilot:
            for _ in range(ticks):
                clock.t += 1
                sampler.tick()
            await pilot.pause()
            yield app, pilot
    finally:
        sampler.stop()


def gpu_header_line(app: TokentopApp) -> int:
    """The screen line of the GPU table's first header line."""
    return next(i for i, line in enumerate(screen_text(app).splitlines()) if " GPU " in line and "#" in line)


# --- what the screen shows ---------------------------------------------------------------------


async def test_ticks_fill_every_panel_with_the_snapshot_figures(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        snapshot = rig.tick(15)
        await pilot.pause()
        table = app.gpu_table
        assert len(table.row_keys) == 8
        gpu6 = next(g for g in snapshot.gpus if g.sample.index == 6)
        assert table.cell_text(gpu6.sample.uuid, "tok_out") == fmt_tok_s(gpu6.rate_window.tok_s_out)
        assert table.cell_text(row_of(app, 7), "usd_mtok") == "—"  # serves no engine
        port = rig.host.endpoints[0].url.split(":")[2].split("/")[0]
        assert table.cell_text(row_of(app, 0), "engine") == f"llama-70b :{port} 1/4"
        assert [app.engine_table.cell_text(k, "status") for k in app.engine_table.row_keys] == ["up · V1"] * 3
        text = screen_text(app)
        assert "8× NVIDIA H200" in text and "gpu-node-01" in text and "● live" in text
        assert "$3.50/GPU·h" in text  # the price in use
        assert "tok/s" in text and "$/Mtok" in text
        assert app.graph.points and any(p.tok_s_out for p in app.graph.points)


async def test_every_column_header_names_its_unit_and_window(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(200, 50)) as pilot:
        rig.tick(62)
        await pilot.pause()
        assert app.gpu_table.visible_columns == [spec.key for spec in GPU_COLUMNS]
        lines = screen_text(app).splitlines()
        header = next(i for i, line in enumerate(lines) if "W/limit" in line)
        assert "in 10s" in lines[header + 1] and "out 10s" in lines[header + 1] and " 1m " in lines[header + 1]
        for title in ("util%", "mem GiB", "W/limit", "°C", "tok/s", "tok/J", "$/h", "$/Mtok"):
            assert title in lines[header]


async def test_80x24_keeps_the_important_columns_and_every_gpu(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(80, 24)) as pilot:
        rig.tick(5)
        await pilot.pause()
        visible = set(app.gpu_table.visible_columns)
        assert {"index", "gpu", "tok_out", "usd_mtok", "power", "engine"} <= visible and "usd_h" not in visible
        text = screen_text(app)
        assert max(len(line) for line in text.splitlines()) <= 80
        for index in range(8):  # every GPU row is on screen without scrolling
            assert any(line.startswith(f"  {index}  ") for line in text.splitlines())
        assert "History" in text  # the graph still has its title line


# --- pieces -------------------------------------------------------------------------------


def _server(**fields: object) -> EndpointFigures:
    given = {"name": "ollama", "url": "http://127.0.0.1:11434/api/ps", "t_mono": 1.0, "status": "up", **fields}
    sample = EndpointSample(**given)  # type: ignore[arg-type]
    return EndpointFigures(sample, (), None, None, 0.0, 0.0, None, None, None, None, None)


def test_engine_status_says_up_stale_error_and_the_servers_note() -> None:
    note = "Ollama publishes no token counters"
    assert engine_status(_server(kind="ollama", note=note)) == Cell(f"up · {note}", "good")
    assert engine_status(_server(status="stale", error="timed out")).text == "stale: timed out"
    down = engine_status(_server(status="error", error="connection refused"))
    assert down == Cell("error: connection refused", "bad")


def test_columns_give_way_by_priority_and_flexible_ones_take_the_rest() -> None:
    narrow = fit_columns(GPU_COLUMNS, 40, 1)
    kept = [spec.key for spec, _ in narrow]
    by_priority = [s.key for s in sorted(GPU_COLUMNS, key=lambda s: s.priority)]
    assert set(kept) == set(by_priority[: len(kept)])  # the most important ones...
    assert kept == [s.key for s in GPU_COLUMNS if s.key in kept]  # ...shown in their usual order
    assert "index" in kept and "tok_out" in kept and "usd_h" not in kept
    assert sum(w + 2 for _, w in narrow) <= 40
    wide = fit_columns(GPU_COLUMNS, 300, 1)
    assert [s.key for s, _ in wide] == [s.key for s in GPU_COLUMNS]
    engine = next(s for s in GPU_COLUMNS if s.key == "engine")
    assert dict((s.key, w) for s, w in wide)["engine"] == engine.flex_max > engine.width


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("Tesla T4", "T4"),
        ("NVIDIA H200 NVL", "H200 NVL"),  # the variant is another model, with another price
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000"),
    ],
)
def test_gpu_names_are_shortened_for_the_table(name: str, short: str) -> None:
    assert short_gpu_name(name) == short


def _host_tick(seq: int, t: float, tokens_out: float, cost_usd: float) -> Snapshot:
    totals = Totals(tokens_in=0.0, tokens_out=tokens_out, energy_j=100.0 * t, cost_usd=cost_usd, elapsed_s=t)
    window = Window(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    host = HostFigures(0, None, None, totals, window, window)
    return Snapshot(seq, WALL_START + t, t, 1.0, 10.0, 60.0, True, None, (), (), host)


def test_graph_buckets_divide_sums_never_average_ratios() -> None:
    history = LiveHistory()
    # two ticks in one bucket: 1000 tokens for $1, then 9000 tokens for $1 -> $200/Mtok, not $556
    for seq, (t, tokens, usd) in enumerate([(0, 0, 0), (1, 1000, 1.0), (2, 10_000, 2.0)]):
        history.add(_host_tick(seq, t, tokens, usd))
    (point,) = history.series(HOST, 4.0, 1, 4.0, 1.0)
    assert point.usd_per_mtok == pytest.approx(200.0) and point.watts == pytest.approx(100.0)


def test_one_bar_per_tick_even_when_ticks_jitter() -> None:
    history = LiveHistory()
    times = [0.0, 1.02, 1.97, 3.05, 3.96, 5.01, 6.03, 6.98]  # a loaded machine's ticks
    for seq, t in enumerate(times):
        history.add(_host_tick(seq, t, 100.0 * seq, 0.1 * seq))
    points = history.series(HOST, 60.0, 60, times[-1], 1.0)
    known = [p for p in points if p.tok_s_out is not None]
    assert len(points) == 60 and len(known) == len(times) - 1  # no tick lost, no empty bar between
    assert points[-len(known) :] == known  # newest on the right, no gaps


# --- keys ---------------------------------------------------------------------------------


async def test_q_quits(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test() as pilot:
        rig.tick(2)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 and app.ended_by is None


async def test_ctrl_c_quits_too(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test() as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_code == 0


async def test_help_lists_every_key_and_closes(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 60)) as pilot:
        rig.tick(2)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for key in KEYS:
            assert key.help[:40] in text.replace("\n", " ") or key.help[:30] in text
        assert "click a header" in text and "Sort the GPU table by that column" in text  # the mouse too
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_footer_shows_the_keys_from_the_table(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        for key in KEYS:
            if key.footer:
                assert f"{key.display} {key.footer}" in footer


async def test_s_cycles_the_sort_column_and_shift_s_reverses(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        snapshot = rig.tick(12)
        await pilot.pause()
        table = app.gpu_table
        by_index = [g.sample.uuid for g in sorted(snapshot.gpus, key=lambda g: g.sample.index)]
        assert table.row_keys == by_index and table.sort_key == "index"
        await pilot.press("s")  # -> GPU name
        await pilot.press("s")  # -> utilisation, highest first
        await pilot.pause()
        assert table.sort_key == "util" and table.sort_descending
        utils = [next(g.sample.utilization_pct for g in snapshot.gpus if g.sample.uuid == k) for k in table.row_keys]
        assert utils == sorted(utils, reverse=True) and utils[0] > utils[-1]
        await pilot.press("S")
        await pilot.pause()
        utils = [next(g.sample.utilization_pct for g in snapshot.gpus if g.sample.uuid == k) for k in table.row_keys]
        assert utils == sorted(utils)
        assert "sorted by util% now ▲" in screen_text(app)
        rig.tick()  # a new tick keeps the chosen order
        await pilot.pause()
        assert table.sort_key == "util" and not table.sort_descending


async def test_arrows_select_a_gpu_and_the_graph_follows(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(5)
        await pilot.pause()
        assert app.selected == row_of(app, 0)
        await pilot.press("down", "down")
        await pilot.pause()
        assert app.selected == row_of(app, 2)
        assert "History · GPU 2 H200" in screen_text(app)
        await pilot.press("up")
        await pilot.pause()
        assert app.selected == row_of(app, 1)


async def test_w_cycles_windows_and_long_ones_say_the_database_is_off(rig: Rig) -> None:
    app = rig.app(store=None)
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(5)
        await pilot.pause()
        seen = []
        for _ in WINDOWS:
            seen.append(app.graph.window_index)
            text = screen_text(app)
            window = WINDOWS[app.graph.window_index]
            assert f"last {window.label}" in text
            if window.from_store:
                assert "no history (database off)" in text
            else:
                assert "no history" not in text
            await pilot.press("w")
            await pilot.pause()
        assert seen == [0, 1, 2, 3] and app.graph.window_index == 0


async def test_g_switches_the_graph_between_gpu_and_host(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(8)
        await pilot.pause()
        gpu_points = app.graph.points
        await pilot.press("g")
        await pilot.pause()
        assert app.graph.scope == "host" and "History · host (all GPUs)" in screen_text(app)
        host_out = [p.tok_s_out for p in app.graph.points if p.tok_s_out is not None]
        gpu_out = [p.tok_s_out for p in gpu_points if p.tok_s_out is not None]
        assert host_out and gpu_out and host_out[-1] > gpu_out[-1]  # the host adds all GPUs
        await pilot.press("g")
        await pilot.pause()
        assert app.graph.scope == "gpu"


async def test_d_shows_details_of_the_selected_gpu(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 50)) as pilot:
        rig.tick(6)
        await pilot.press("down")
        await pilot.press("d")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, DetailsScreen) and app.screen.uuid == row_of(app, 1)
        text = screen_text(app)
        for words in (
            "GPU 1 · NVIDIA H200",
            "SM clock",
            "limit 700 W",
            "energy so far",
            "NVML energy counter",
            "$3.50/GPU·h",
            "price source",
            "built-in table",
            "llama-70b",
            "PID 4000",
        ):
            assert words in text, words
        rig.tick()  # the details follow the live data
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DetailsScreen)


async def test_p_pauses_drawing_while_sampling_goes_on(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(5)
        await pilot.pause()
        uuid = row_of(app, 0)
        before = app.gpu_table.cell_text(uuid, "power")
        await pilot.press("p")
        last = rig.tick(40)  # the demo's load moves a lot in 40 s
        await pilot.pause()
        assert app.latest is last  # sampled
        assert app.gpu_table.cell_text(uuid, "power") == before  # not drawn
        assert "PAUSED" in screen_text(app) and app.ticks_while_paused >= 1
        await pilot.press("p")
        await pilot.pause()
        assert app.gpu_table.cell_text(uuid, "power") != before
        assert "● live" in screen_text(app)
        # the graph kept every tick sampled while paused
        assert sum(p.tok_s_out is not None for p in app.graph.points) >= 40


async def test_e_writes_the_summary_and_says_where(rig: Rig, tmp_path: Path) -> None:
    app = rig.app(summary_dir=tmp_path)
    async with app.run_test() as pilot:
        snapshot = rig.tick(10)
        await pilot.pause()
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        files = list(tmp_path.glob("tokentop-summary-*.txt"))
        assert len(files) == 1 and app.summary_path == files[0]
        text = files[0].read_text()
        assert "gpu-node-01" in text and "8× NVIDIA H200" in text
        assert f"${snapshot.host.totals.cost_usd:.2f}"[:4] in text
        assert any(str(files[0]) in a for a in app.announcements)


async def test_e_reports_a_directory_it_cannot_write(rig: Rig, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    app = rig.app(summary_dir=blocker / "sub")
    async with app.run_test() as pilot:
        rig.tick(3)
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("summary not written" in a for a in app.announcements)
        assert app.is_running


async def test_t_switches_light_and_dark(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test() as pilot:
        first = app.theme
        await pilot.press("t")
        await pilot.pause()
        assert app.theme != first and "light" in (app.theme + first)


async def test_mouse_is_optional_but_works(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(5)
        await pilot.pause()
        table = app.gpu_table
        await pilot.click("#gpus", offset=(5, 2 + 3))  # header is two lines; the fourth row
        await pilot.pause()
        assert app.selected == table.row_keys[3]
        header = screen_text(app).splitlines()[3]
        await pilot.click("#gpus", offset=(header.index("W/limit") + 2, 0))  # click a header: sort by it
        await pilot.pause()
        assert table.sort_key == "power" and table.sort_descending


@pytest.mark.parametrize("colours", ["truecolor", ""])  # "": a 16-colour terminal
async def test_no_color_keeps_every_figure_readable(rig: Rig, monkeypatch: pytest.MonkeyPatch, colours: str) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLORTERM", colours)
    app = rig.app()
    assert app.no_color
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(4)
        rig.host.fake.gpus[2].lost = True
        rig.tick()
        await pilot.pause()
        text = screen_text(app)
        assert "LOST" in text and "▲" in text and "⚠" in text  # words and marks, not colours
        svg = app.export_screenshot()
        text_colours = re.findall(r"-r\d+ \{ fill: #([0-9a-f]{6})", svg)
        cell_colours = re.findall(r'<rect fill="#([0-9a-f]{6})"', svg)  # the window's buttons are circles
        colours = set(text_colours + cell_colours)
        channels = [(int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)) for c in colours]
        assert channels and all(max(rgb) - min(rgb) <= 4 for rgb in channels)  # greys only


# --- faults --------------------------------------------------------------------------------


async def test_endpoint_down_and_back(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(140, 40)) as pilot:
        rig.tick(5)
        rig.stop_engine("llama-8b")
        rig.tick()
        await pilot.pause()
        assert app.engine_table.cell_text("llama-8b", "status").startswith("stale: ")  # a missed read or two
        assert app.gpu_table.cell_text(row_of(app, 4), "engine").endswith("(stale)")
        rig.tick(6)  # then the collector gives up on the old figures
        await pilot.pause()
        status = app.engine_table.cell_text("llama-8b", "status")
        assert status.startswith("error: ")
        assert app.gpu_table.cell_text(row_of(app, 4), "engine").endswith("(down)")
        assert any(a.startswith("llama-8b is down") for a in app.announcements)
        assert "llama-8b" in app.query_one(MessageBar).messages[0]
        assert app.engine_table.cell_text("llama-70b", "status").startswith("up")
        rig.start_engine("llama-8b")
        rig.tick(2)
        await pilot.pause()
        assert app.engine_table.cell_text("llama-8b", "status").startswith("up")
        assert "llama-8b is back up" in app.announcements
        assert not app.query_one(MessageBar).messages


async def test_gpu_lost_shows_in_its_row_and_comes_back(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(5)
        rig.host.fake.gpus[3].lost = True
        rig.tick()
        await pilot.pause()
        uuid = row_of(app, 3)
        assert app.gpu_table.cell_text(uuid, "gpu") == "LOST"
        assert app.gpu_table.cell_text(uuid, "power") == "N/A"
        assert any(a.startswith("GPU 3 lost") for a in app.announcements)
        assert "GPU 3 lost" in " ".join(app.query_one(MessageBar).messages)
        assert app.gpu_table.cell_text(row_of(app, 2), "gpu") == "H200"  # the others go on
        rig.host.fake.gpus[3].lost = False
        rig.tick()
        await pilot.pause()
        assert app.gpu_table.cell_text(uuid, "gpu") == "H200"
        assert "GPU 3 is back" in app.announcements


async def test_database_that_cannot_be_written_is_said_once_and_shown_while_it_lasts(
    demo: DemoUnderTest, tmp_path: Path
) -> None:
    store = Store.open(tmp_path / "history.db", host="test", version="0", config={})
    with rig_on(demo, store) as rig:
        app = rig.app(store=store)
        async with app.run_test(size=(120, 40)) as pilot:
            rig.tick(3)
            await pilot.pause()
            assert not app.query_one(MessageBar).messages
            store.close()  # every append fails from now on
            rig.tick(3)
            await pilot.pause()
            messages = app.query_one(MessageBar).messages
            assert messages and messages[0].startswith("history not written")
            assert sum(a.startswith("history not written") for a in app.announcements) == 1
            assert "⚠ history not written" in screen_text(app)
            assert app.is_running


async def test_gpu_without_a_price_is_made_obvious(demo: DemoUnderTest) -> None:
    with rig_on(demo, gpu_name="NVIDIA Mystery X1") as rig:
        app = rig.app()
        async with app.run_test(size=(140, 40)) as pilot:
            rig.tick(4)
            await pilot.pause()
            text = screen_text(app)
            assert "NO PRICE" in text and "NVIDIA Mystery X1 (8 GPUs)" in text
            assert app.gpu_table.cell_text(row_of(app, 0), "usd_mtok") == "N/A"
            assert app.gpu_table.cell_text(row_of(app, 0), "usd_h") == "N/A"


async def test_long_windows_come_from_the_store_on_a_worker(demo: DemoUnderTest, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "history.db", host="test", version="0", config={})
    with rig_on(demo, store) as rig:
        app = rig.app(store=store)
        async with app.run_test(size=(120, 40)) as pilot:
            rig.tick(150)
            await pilot.pause()
            await pilot.press("w", "w")  # -> 1 h
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert WINDOWS[app.graph.window_index].label == "1 h"
            assert app.graph.note is None
            known = [p for p in app.graph.points if p.watts is not None]
            assert 2 <= len(known) <= 4  # minutes of data among an hour of 1-minute buckets
            await pilot.press("g")  # the host, from the store too
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.graph.scope == "host" and "History · host (all GPUs)" in screen_text(app)
            assert any(p.watts for p in app.graph.points)


async def test_logging_goes_to_the_screen_not_the_terminal(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(2)
        with logs_on_screen(app):
            logging.getLogger("tokentop.test").warning("collector hiccup")
            logging.getLogger("tokentop.test").error("collector broke")
            await pilot.pause()
            rig.tick()
            await pilot.pause()
        assert "collector hiccup" in app.query_one(MessageBar).messages
        assert "collector broke" in app.announcements and "collector hiccup" not in app.announcements
        await pilot.press("question_mark")  # the help screen keeps the recent log
        await pilot.pause()
        assert "WARNING collector hiccup" in screen_text(app)
    captured = capsys.readouterr()
    assert "collector hiccup" not in captured.err + captured.out


async def test_a_notification_is_shown_as_text_never_as_markup(rig: Rig) -> None:
    """Endpoint names and error texts are not ours to write: brackets in them neither style,
    act nor raise."""
    text = "llama [/x] failed: [@click=app.quit]quit[/] [link=http://x]"
    app = rig.app()
    async with app.run_test(size=(120, 40), notifications=True) as pilot:  # toasts drawn, as for a user
        rig.tick(2)
        await pilot.pause()
        app.post_message(LogLine(logging.ERROR, text, time.time()))
        await pilot.pause()
        assert list(app.announcements) == [text]
        toast = app.screen.query_one(Toast)
        assert str(toast.render()) == text  # the toast, as written
        assert app.is_running and app.return_code is None


async def test_sighup_ends_the_app_cleanly(rig: Rig) -> None:
    before = signal.getsignal(signal.SIGHUP)  # SIG_DFL, or SIG_IGN under nohup
    app = rig.app(handle_signals=True)
    async with app.run_test() as pilot:
        rig.tick(2)
        await pilot.pause()
        os.kill(os.getpid(), signal.SIGHUP)
        await pilot.pause()
        await pilot.pause()
    assert app.ended_by == "hangup" and app.return_code == 129
    assert signal.getsignal(signal.SIGHUP) == before  # the handler went with the app


async def test_a_lost_terminal_ends_the_app_even_without_sighup(rig: Rig) -> None:
    """An SSH drop hangs the terminal up; a process that missed SIGHUP notices on its next tick."""
    master, slave = os.openpty()
    app = rig.app(terminal_fd=slave)  # headless under run_test: it is told which terminal to watch
    try:
        async with app.run_test() as pilot:
            rig.tick(2)
            await pilot.pause()
            rig.tick()
            await pilot.pause()
            assert app.is_running  # the terminal is still there
            os.close(master)  # the other end goes away: the kernel hangs the terminal up
            master = -1
            rig.tick()
            await pilot.pause()
            await pilot.pause()
        assert app.ended_by == "terminal lost" and app.return_code == 129
    finally:
        os.close(slave)
        if master >= 0:
            os.close(master)


async def test_a_newer_tick_replaces_one_not_yet_drawn(rig: Rig) -> None:
    app = rig.app()
    drawn: list[int] = []
    async with app.run_test() as pilot:
        original = app.draw

        def counting_draw() -> None:
            drawn.append(app.latest.seq if app.latest else -1)
            original()

        app.draw = counting_draw  # type: ignore[method-assign]
        snapshots = [rig.tick() for _ in range(5)]  # all queued before the loop runs again
        await pilot.pause()
        assert app.latest is snapshots[-1]
        assert len(drawn) < 5 and drawn[-1] == snapshots[-1].seq
        # ...yet the graph history has every tick (the first only starts the differences)
        points = app.history.series(HOST, 60.0, 60, snapshots[-1].t_mono, 1.0)
        assert sum(p.watts is not None for p in points) == 4


def test_the_short_summary_under_ascii_is_ascii_only() -> None:
    """Issue 10: the summary printed at quit had "8× NVIDIA H200" under --ascii."""
    from tokentop.tui import short_summary

    snapshot = simulated_snapshots(5)[-1]
    assert "×" in short_summary(snapshot, "gpu-node-01")
    text = short_summary(snapshot, "gpu-node-01", ascii_only=True)
    assert text.isascii() and "8x NVIDIA H200" in text


async def test_no_driver_says_why_there_are_no_gpus() -> None:
    from tokentop.nvml.fake import FakeNvml
    from tokentop.nvml.reader import NvmlReader

    clock = FakeClock()
    config = Config(discover=False)
    sampler = Sampler(config, NvmlReader(lib=FakeNvml.no_driver()), clock=clock, wall_clock=clock.wall)
    try:
        app = fixed_app(config, "cpu-box", sampler=sampler, start_sampler=False)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(3):
                clock.t += 1
                sampler.tick()
            await pilot.pause()
            text = screen_text(app)
            assert "⚠ no GPU: " in text and sampler.gpus.reason and sampler.gpus.reason[:30] in text
            assert "no GPU:" in text and "no inference endpoint" in text
            # issue 10, item 8: no "N/A/h" or "$/Mtok" to price, no W or util: there is no GPU
            header = "\n".join(text.splitlines()[:4])
            assert "without a GPU" in header and "/h" not in header.replace("$/h", "")
            assert "N/A/h" not in text and "util N/A" not in text and "busy 0%" not in text
            await pilot.press("g")  # the host: its power is unknown, never drawn as 0 W
            await pilot.pause()
            assert app.graph.key == HOST and "no GPU" in app.graph.title
            assert app.graph.points and all(p.watts is None and p.usd_per_mtok is None for p in app.graph.points)
            assert "0 W" not in screen_text(app) and re.search(r"^W +N/A", screen_text(app), re.M)
    finally:
        sampler.stop()


def test_run_live_stops_everything_and_prints_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real entry point: sampler thread, store, app (headless here), then the summary."""
    import threading

    from tokentop.cli.live import run_live
    from tokentop.cli.runtime import build_runtime, open_store

    before = set(threading.enumerate())
    config = Config(demo=True, db_path=tmp_path / "history.db", http_timeout_s=2.0)
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=True)
    original_run = TokentopApp.run

    def headless_run(self: TokentopApp, **kwargs: object) -> None:
        self.call_later(lambda: self.set_interval(0.1, lambda: self.latest and self.latest.seq >= 3 and self.exit()))
        original_run(self, headless=True)

    monkeypatch.setattr(TokentopApp, "run", headless_run)
    assert run_live(runtime, store) == 0
    out = capsys.readouterr().out
    assert "# tokentop session 1 on" in out and "8× NVIDIA H200" in out and "$/Mtok" in out
    assert "still open" not in out  # printed after the history was closed: every tick in it
    # the sampler's and the demo's threads are gone (the collectors' idle pool is process-wide by design)
    assert not [
        t
        for t in set(threading.enumerate()) - before
        if t.name.startswith(("tokentop-sampler", "tokentop-discover", "demo-"))
    ]
    reader = Store.open_readonly(tmp_path / "history.db")
    try:
        sessions = reader.sessions()
        assert len(sessions) == 1 and sessions[0].ended_at is not None  # closed cleanly
    finally:
        reader.close()


# --- what a glance can trust -------------------------------------------------------------------


def _figure_lines(header: HeaderBar) -> list[str]:
    """The header's lines of figures (not the one with the state, which pausing changes)."""
    return [line for line in header.text.splitlines() if "tokentop" not in line and "PAUSED" not in line]


async def test_pause_freezes_every_panel_at_one_tick_and_says_since_when(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        shown = rig.tick(5)
        await pilot.pause()
        await pilot.press("p")
        await pilot.pause()
        header, table, engines = app.query_one(HeaderBar), app.gpu_table, app.engine_table
        figures = _figure_lines(header)
        rows = {key: [table.cell_text(key, c) for c in table.visible_columns] for key in table.row_keys}
        engine_rows = [engines.cell_text(key, "tok_out") for key in engines.row_keys]
        message = app.query_one(MessageBar).text
        rig.tick()
        await pilot.pause()
        assert "(1 tick since)" in header.text
        rig.tick(39)  # the demo's load moves a lot in 40 s
        await pilot.pause()
        assert app.latest is not shown and app.shown is shown
        assert _figure_lines(header) == figures  # the host's figures stay those of the rows below
        assert "up 4s" in header.text
        assert {key: [table.cell_text(key, c) for c in table.visible_columns] for key in table.row_keys} == rows
        assert [engines.cell_text(key, "tok_out") for key in engines.row_keys] == engine_rows
        assert app.query_one(MessageBar).text == message
        since = time.strftime("%H:%M:%S", time.localtime(shown.t_wall))
        assert f"PAUSED since {since}" in header.text and "(40 ticks since)" in header.text
        await pilot.press("p")
        await pilot.pause()
        assert _figure_lines(header) != figures and "● live" in header.text


async def test_first_ticks_say_warming_and_headers_give_the_span_covered(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(200, 50)) as pilot:
        rig.tick()  # the first reading: no window covers any time yet
        await pilot.pause()
        busy = row_of(app, 0)  # serves llama-70b, which is busy
        assert app.gpu_table.cell_text(busy, "usd_mtok") == "warming"
        assert app.gpu_table.cell_text(busy, "tok_out") == "warming"
        assert app.gpu_table.cell_text(row_of(app, 7), "usd_mtok") == "—"  # no engine: neither
        assert "warming $/Mtok" in app.query_one(HeaderBar).text and "idle" not in screen_text(app)
        rig.tick(12)
        await pilot.pause()
        windows = screen_text(app).splitlines()[gpu_header_line(app) + 1]
        assert "out 10s" in windows and " 12s " in windows and " 1m " not in windows
        assert "/Mtok  12s" in app.query_one(HeaderBar).text
        assert app.gpu_table.cell_text(busy, "usd_mtok").startswith("$")


async def test_column_headers_follow_the_span_every_tick(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(200, 50)) as pilot:
        for ticks in (12, 1, 1):  # only figures change from one tick to the next: the header still does
            rig.tick(ticks)
            await pilot.pause()
            span = app.latest.host.cost_window.span_s if app.latest else 0
            windows = screen_text(app).splitlines()[gpu_header_line(app) + 1]
            assert f" {span:.0f}s " in windows


def test_idle_only_once_the_window_is_full_and_one_mark_for_no_engine() -> None:
    quiet = Window(60.0, 0.0, 0.0, 4000.0, 0.05, 0.0, 0.0)
    young = replace(quiet, span_s=12.0)
    gpus = [{"cost_window": quiet}, {"cost_window": young}, {"cost_window": quiet, "engines": ()}]
    rows = gpu_rows(build_snapshot(100.0, [Totals()] * 3, [(0.0, 0.0)], gpus=gpus))
    usd_mtok, engine = (next(s for s in GPU_COLUMNS if s.key == key) for key in ("usd_mtok", "engine"))
    assert [usd_mtok.cell(row).text for row in rows] == ["idle", "warming", "—"]
    assert engine.cell(rows[2]).text == "—"  # the same mark in both columns of a GPU with no engine
    assert fmt_usd_per_mtok(None, tokens_out=0, filling=True) == "warming"


async def test_help_scrolls_at_80x24_and_starts_with_the_messages_now(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(80, 24)) as pilot:
        rig.tick(3)
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
        assert "Messages" in text and "none now" in text and "Engine table" not in text
        await pilot.press("end")
        await pilot.pause()
        text = screen_text(app)
        assert "Engine table" in text and "no token" in text  # the very end: the status column's notes
        assert max(cell_len(line) for line in text.splitlines()) <= 80
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        rig.host.fake.gpus[3].lost = True
        rig.tick()
        await pilot.press("question_mark")
        await pilot.pause()
        assert "⚠ GPU 3 lost" in screen_text(app)
        await pilot.press("q")  # quits from the help too
        await pilot.pause()
        assert app.return_code == 0


async def test_q_quits_from_the_details_and_escape_closes_them(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(3)
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DetailsScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DetailsScreen)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0


async def test_no_blank_lines_under_the_header_after_a_resize(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(5)
        await pilot.pause()
        for size in ((40, 12), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
        lines = screen_text(app).splitlines()
        header = len(app.query_one(HeaderBar).text.splitlines())
        assert "W/limit" in lines[header]  # the GPU table starts right under the header
        assert all(line.strip() for line in lines[: header + 10])


@pytest.mark.parametrize("width", [200, 80])
async def test_a_gpu_variant_keeps_its_name(width: int) -> None:
    async with fake_gpus_app(["NVIDIA H200"] * 7 + ["NVIDIA H200 NVL"], (width, 30)) as (app, _):
        text = screen_text(app)
        assert "8 GPUs: 7× H200, 1× H200 NVL" in text
        assert app.gpu_table.cell_text(row_of(app, 7), "gpu") == "H200 NVL"
        assert any(line.startswith("  7  H200 NVL ") for line in text.splitlines())


def test_two_models_never_share_a_label() -> None:
    assert gpu_labels(["NVIDIA H200", "NVIDIA H200 NVL"]) == {"NVIDIA H200": "H200", "NVIDIA H200 NVL": "H200 NVL"}
    labels = gpu_labels(["NVIDIA A100 80GB PCIe", "NVIDIA A100 40GB PCIe"])
    assert labels == {"NVIDIA A100 80GB PCIe": "A100 80GB PCIe", "NVIDIA A100 40GB PCIe": "A100 40GB PCIe"}


async def test_narrow_screens_keep_engine_names_and_model_sizes(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(80, 24)) as pilot:
        rig.tick(5)
        await pilot.pause()
        text = screen_text(app)
        assert "llama-70b :…" not in text and "llama-70b" in app.gpu_table.cell_text(row_of(app, 0), "engine")
        lines = text.splitlines()
        assert any(line.startswith("  0  H200") and line.rstrip().endswith("llama-70b 1/4") for line in lines)
        assert "Llama-3.3-70B " in text  # the engine panel keeps the model and its size
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        text = screen_text(app)
        assert "Llama-3.3-70B-Instruct" in text and "llama-70b :" in text
    forms = model_forms("Qwen/Qwen2.5-32B-Instruct-AWQ")
    assert forms == ("Qwen2.5-32B-Instruct-AWQ", "Qwen2.5-32B-AWQ", "Qwen2.5-32B")


async def test_graphs_get_three_lines_each_or_hide(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(80, 24)) as pilot:
        rig.tick(8)
        await pilot.pause()
        lines = screen_text(app).splitlines()
        title = next(i for i, line in enumerate(lines) if "History ·" in line)
        assert [lines[title + k][:3] for k in (1, 2, 3)] == ["out", "max", "min"]  # one chart, three lines
        assert lines[title + 4].startswith(" tick")
        await pilot.resize_terminal(80, 22)
        await pilot.pause()
        text = screen_text(app)
        assert "History: a taller terminal shows it" in text and "\nmax " not in text


async def test_sixteen_gpus_at_80x24_each_have_a_row_under_the_header() -> None:
    async with fake_gpus_app(["NVIDIA H200"] * 16, (80, 24)) as (app, _):
        lines = screen_text(app).splitlines()
        assert "$/Mtok" in lines[1] and "cost cloud" in lines[1]  # the host's cost line stays
        for index in range(16):
            assert any(line.startswith(f"{index:>3}  H200 ") for line in lines), index


async def test_more_gpus_than_fit_say_how_many_and_scroll() -> None:
    async with fake_gpus_app(["NVIDIA H200"] * 24, (80, 24)) as (app, pilot):
        assert "▼ 9 more below" in screen_text(app)
        await pilot.press("end")
        await pilot.pause()
        text = screen_text(app)
        assert any(line.startswith(" 23  H200 ") for line in text.splitlines()) and "▲ 9 more above" in text


def test_panel_heights_put_gpu_rows_first_then_engines_then_a_graph_worth_drawing() -> None:
    assert panel_heights(19, 10, 5) == (10, 0, 5, 4)  # 8 GPUs at 80x24
    assert panel_heights(19, 18, 5) == (18, 0, 0, 1)  # 16 GPUs at 80x24: every GPU first
    assert panel_heights(55, 66, 5) == (50, 0, 5, 0)  # 64 GPUs on a tall screen: the engines keep their rows
    assert panel_heights(19, 10, 5, 5) == (10, 5, 4, 0)  # processes shown: before the engines
    assert panel_heights(19, 10, 5, 20) == (10, 9, 0, 0)


async def test_effective_usd_per_mtok_leads_the_header(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        window = rig.tick(12).host.cost_window
        await pilot.pause()
        cost_line = app.query_one(HeaderBar).text.splitlines()[1]
        assert cost_line.startswith(f" {fmt_usd(window.usd_per_mtok)}/Mtok ")
        assert f"busy {fmt_usd(window.busy_usd_per_mtok)}/Mtok" in cost_line


async def test_usd_per_mtok_cells_are_coloured_by_the_thresholds_given(rig: Rig) -> None:
    values = [g.cost_window.usd_per_mtok for g in rig.tick(12).gpus if g.cost_window.usd_per_mtok is not None]
    bands = CostBands(min(values) * 1.1, max(values) * 0.9)
    rig.config = replace(rig.config, cost=CostConfig(usd_per_mtok_thresholds=(bands.good, bands.warn)))
    app = rig.app()
    assert app.bands == bands
    async with app.run_test(size=(120, 40)) as pilot:
        snapshot = rig.tick()
        await pilot.pause()
        styles = [app.gpu_table.cell(g.sample.uuid, "usd_mtok").style for g in snapshot.gpus]
        assert styles == [bands.style(g.cost_window.usd_per_mtok) for g in snapshot.gpus]
        assert {"good", "warn"} <= set(styles)


def test_default_thresholds_follow_the_api_prices_when_there_are_some() -> None:
    assert cost_bands(CostConfig()) == DEFAULT_BANDS
    cost = CostConfig(api_prices=(ApiPrice("a", 0.2, 0.9), ApiPrice("b", 0.1, 0.6)))
    assert cost_bands(cost) == CostBands(0.6, 1.2)
    assert cost_bands(replace(cost, usd_per_mtok_thresholds=(2.0, 3.0))) == CostBands(2.0, 3.0)


async def test_m_sorts_by_usd_per_mtok_with_the_arrow_on_its_column(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        snapshot = rig.tick(12)
        await pilot.press("m")
        await pilot.pause()
        table = app.gpu_table
        cost = {g.sample.uuid: g.cost_window.usd_per_mtok for g in snapshot.gpus}
        known = [cost[key] for key in table.row_keys if cost[key] is not None]
        assert table.sort_key == "usd_mtok" and known == sorted(known, reverse=True)
        assert cost[table.row_keys[-1]] is None  # the GPU with no engine: last either way
        assert "▼$/Mtok" in screen_text(app).splitlines()[gpu_header_line(app)]
        await pilot.press("m")
        await pilot.pause()
        assert not table.sort_descending and "▲$/Mtok" in screen_text(app).splitlines()[gpu_header_line(app)]
        assert "sorted by $/Mtok 11s ▲" in screen_text(app)  # the cost window covers 11 s so far


async def test_details_name_each_window_once_and_write_usd_per_mtok_with_its_unit(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(160, 50)) as pilot:
        rig.tick(7)
        await pilot.press("d")
        await pilot.pause()
        text = screen_text(app)
        assert "rate window" in text and "(10s, 6s so far)" in text
        assert "cost window" in text and "(1m, 6s so far)" in text and "last 6s" not in text
        assert re.search(r"\$[0-9.]+/Mtok", text) and not re.search(r"\$[0-9.]+ \$/Mtok", text)


# --- terminals: ASCII only, 16 colours (issue 10, item 11) ---------------------------------------

GREEN, YELLOW, RED = 2, 3, 1  # ANSI colour numbers


def _glyphs_in_string_literals() -> set[str]:
    """Every character beyond ASCII in tokentop's string literals (docstrings left out)."""
    drawn: set[str] = set()
    for path in Path(tokentop.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                drawn |= {c for c in node.value if not c.isascii()}
    return drawn


def test_every_glyph_the_code_draws_has_one_ascii_stand_in_of_the_same_width() -> None:
    drawn = _glyphs_in_string_literals()
    assert {"●", "‖", "×", "·", "—", "…", "▲", "█"} <= drawn
    assert drawn <= set(ASCII_GLYPHS), drawn - set(ASCII_GLYPHS)
    assert all(len(ascii) == 1 and ascii.isascii() and cell_len(glyph) == 1 for glyph, ascii in ASCII_GLYPHS.items())
    assert to_ascii("Ünïcødé 模型 \N{REPLACEMENT CHARACTER}") == "Unic?de ???? ?"  # outside text, cell for cell


async def test_ascii_only_draws_no_other_character_anywhere(rig: Rig) -> None:
    owners = {4000: ProcessInfo("python3", "sérvé", "python3 -m vllm --model Ünïcødé/模型 \N{REPLACEMENT CHARACTER}")}
    rig.config = replace(rig.config, ascii_only=True)
    app = rig.app(host=FixedHost(HOST_USAGE, owners))
    screens = []
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(12)
        await pilot.pause()
        screens.append(screen_text(app))
        for keys in (("P",), ("question_mark",), ("escape", "d"), ("escape", "p")):
            await pilot.press(*keys)
            await app.workers.wait_for_complete()
            await pilot.pause()
            screens.append(screen_text(app))
    assert "8x NVIDIA H200" in screens[0] and "* live" in screens[0] and "^#" in screens[0]
    assert "serve" in screens[1] and "--model Unic?de/???? ?" in screens[1]
    assert "+---" in screens[2] and "Esc or ? closes" in screens[2]  # the help's frame
    assert "| PAUSED" in screens[4]
    assert [i for i, screen in enumerate(screens) if not screen.isascii()] == []


@pytest.mark.parametrize("term", ["xterm", "linux", "vt100"])
async def test_sixteen_colour_terminals_keep_good_warning_and_bad_apart(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, term: str
) -> None:
    assert rig.app().theme == "textual-dark"  # 16 million colours: the usual theme
    monkeypatch.setenv("TERM", term)
    monkeypatch.delenv("COLORTERM")
    app = rig.app()
    assert app.console.color_system == "standard"
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(12)
        await pilot.pause()
        for _ in ("dark", "light"):
            table, header = app.gpu_table, app.query_one(HeaderBar)
            cells = {k: table.get_component_rich_style(f"grid--{k}").color for k in ("good", "warn", "bad")}
            heroes = {k: header.get_component_rich_style(f"header--hero-{k}").bgcolor for k in ("good", "warn")}
            numbers = {k: c.downgrade(ColorSystem.STANDARD).number for k, c in {**cells, **heroes}.items() if c}
            assert numbers == {"good": GREEN, "warn": YELLOW, "bad": RED} | {"good": GREEN, "warn": YELLOW}
            assert len({cells[k].downgrade(ColorSystem.STANDARD).number for k in cells if cells[k]}) == 3
            await pilot.press("t")
            await pilot.pause()
        assert app.theme == "tokentop-ansi-dark"  # t twice: back to dark, still the terminal's colours


# --- what nvitop users look for: processes, memory, the host (issue 10, item 15) -----------------


async def test_shift_p_shows_each_gpu_process_with_its_user_memory_engine_and_command(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        snapshot = rig.tick(6)
        await pilot.pause()
        assert not app.process_table.display and " PID " not in screen_text(app)
        await pilot.press("P")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.process_table
        columns = ("pid", "user", "gpu", "mem", "engine", "command")
        rows = [tuple(table.cell_text(key, c) for c in columns) for key in table.row_keys]
        used = {g.sample.index: fmt_gib(g.sample.memory_used_bytes) for g in snapshot.gpus}
        serve_70b, serve_8b = DEMO_PROCESSES[4000].command, DEMO_PROCESSES[4001].command
        assert rows == [
            *[("4000", "serve", str(i), used[i], "llama-70b", serve_70b) for i in range(4)],
            *[("4001", "serve", str(i), used[i], "llama-8b", serve_8b) for i in (4, 5)],
            ("4002", "N/A", "6", used[6], "qwen-32b", "(not visible)"),  # its engine: the one its GPU serves
        ]
        text = screen_text(app)
        assert " PID  user" in text and serve_70b in text
        await pilot.press("P")
        await pilot.pause()
        assert not app.process_table.display and " PID " not in screen_text(app)


def test_a_process_belongs_to_the_engine_that_started_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        until = time.monotonic() + 10  # until the child has exec'd: before, its command line is ours
        while "time.sleep(30)" not in " ".join(psutil.Process(child.pid).cmdline()) and time.monotonic() < until:
            time.sleep(0.01)
        info = describe_processes([child.pid])[child.pid]
        assert info.user == psutil.Process().username() and "time.sleep(30)" in info.command
        assert os.getpid() in info.ancestors
        assert process_engine(child.pid, info, {os.getpid(): "llama-70b"}, ("qwen-32b",)) == "llama-70b"
        assert process_engine(child.pid, info, {}, ("a", "b")) == "a, b"  # not traced: what its GPU serves
        assert process_engine(child.pid, info, {}, ()) == ""
    finally:
        child.kill()
        child.wait()
    assert describe_processes([child.pid])[child.pid].command == "(not visible)"  # gone


async def test_memory_is_used_over_total_with_a_bar_where_there_is_room(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        gpu = rig.tick(3).gpus[0].sample
        await pilot.pause()
        assert gpu.memory_used_bytes and gpu.memory_total_bytes
        used_total = f"{fmt_gib(gpu.memory_used_bytes)}/{fmt_gib(gpu.memory_total_bytes)}"
        assert app.gpu_table.cell_text(gpu.uuid, "mem") == used_total
        row = next(line for line in screen_text(app).splitlines() if line.startswith("  0  H200"))
        assert f"{bar(gpu.memory_used_bytes / gpu.memory_total_bytes, 5)} {used_total}" in row
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        row = next(line for line in screen_text(app).splitlines() if line.startswith("  0  H200"))
        assert f"  {used_total}  " in row and "█" not in row  # no room for the bar: the figures stay


async def test_the_header_shows_the_hosts_cpu_and_memory_where_there_is_room(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        rig.tick(3)
        await pilot.pause()
        header = app.query_one(HeaderBar)
        assert header.text.splitlines()[2].endswith("  cpu 12%  ram 48/251 GiB")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert "cpu" not in header.text and len(header.text.splitlines()) == 3  # no line of its own


async def test_the_host_is_read_on_the_sampler_thread_never_the_event_loop(rig: Rig) -> None:
    readers: list[threading.Thread] = []

    class Recording(FixedHost):
        def usage(self) -> HostUsage | None:
            readers.append(threading.current_thread())
            return super().usage()

    app = rig.app(host=Recording(HOST_USAGE))
    async with app.run_test() as pilot:
        await asyncio.to_thread(rig.tick)  # the sampler ticks on a thread of its own in the live view
        await pilot.pause()
    assert readers and threading.main_thread() not in readers


def test_the_real_host_gives_its_cpu_share_and_memory() -> None:
    host = PsutilHost()
    first = host.usage()
    time.sleep(0.3)
    second = host.usage()
    assert first is not None and first.cpu_fraction is None  # one reading: no share yet
    assert second is not None and second.cpu_fraction is not None and 0 <= second.cpu_fraction <= 1
    assert 0 < second.memory_used_bytes < second.memory_total_bytes


# --- a full screen soon (issue 10, item 14) ------------------------------------------------------


def test_the_live_views_second_tick_comes_a_quarter_second_after_the_first(demo: DemoUnderTest) -> None:
    class Waits(threading.Event):
        """Simulated time passes only while the sampler waits."""

        def wait(self, timeout: float | None = None) -> bool:
            demo.clock.t += timeout or 0.0
            return False

    snapshots: list[Snapshot] = []
    with rig_on(demo) as rig:
        rig.sampler.run(Waits(), ticks=3, on_tick=snapshots.append, first_interval_s=FIRST_INTERVAL_S)
    assert [s.dt_s for s in snapshots] == [None, pytest.approx(0.25), pytest.approx(1.0)]
    second = snapshots[1]
    start = snapshots[0].t_mono - demo.host.start
    truth = demo.host.truth(start, start + 0.25)
    for gpu in second.gpus:  # rates after a quarter second, over the quarter second measured
        assert gpu.rate_window.span_s == pytest.approx(0.25)
        # Counters are whole tokens: allow one token per engine GPU share at each end.
        assert gpu.rate_window.tok_s_out == pytest.approx(truth.tok_s_out(gpu.sample.index), abs=2 / 0.25)
        assert gpu.rate_window.watts == pytest.approx(truth.watts(gpu.sample.index), rel=1e-3)


# --- look ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run() -> list[Snapshot]:
    return simulated_snapshots(130)


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)])
def test_looks_the_same(snap_compare, demo_run: list[Snapshot], size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    app = fixed_app()

    async def feed(pilot) -> None:  # type: ignore[no-untyped-def]
        for snapshot in demo_run:
            app.post_snapshot(snapshot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=feed)


def test_help_looks_the_same_at_80x24(snap_compare, demo_run: list[Snapshot]) -> None:  # type: ignore[no-untyped-def]
    app = fixed_app()

    async def open_help(pilot) -> None:  # type: ignore[no-untyped-def]
        for snapshot in demo_run:
            app.post_snapshot(snapshot)
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_help)


def test_ascii_looks_the_same_at_80x24(snap_compare, demo_run: list[Snapshot]) -> None:  # type: ignore[no-untyped-def]
    app = fixed_app(Config(ascii_only=True))

    async def feed(pilot) -> None:  # type: ignore[no-untyped-def]
        for snapshot in demo_run:
            app.post_snapshot(snapshot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=feed)


def test_processes_look_the_same_at_120x40(snap_compare, demo_run: list[Snapshot]) -> None:  # type: ignore[no-untyped-def]
    app = fixed_app()

    async def show_processes(pilot) -> None:  # type: ignore[no-untyped-def]
        for snapshot in demo_run:
            app.post_snapshot(snapshot)
        await pilot.pause()
        await pilot.press("P")
        await app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=show_processes)


def test_sixteen_gpus_look_the_same_at_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    config = Config(discover=False)
    sampler = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=16)), clock=clock, wall_clock=clock.wall)
    app = fixed_app(config, "gpu-node-16", sampler=sampler, start_sampler=False)

    async def tick(pilot) -> None:  # type: ignore[no-untyped-def]
        for _ in range(3):
            clock.t += 1
            sampler.tick()
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=tick)
    finally:
        sampler.stop()


# --- MIG ---------------------------------------------------------------------------------------


async def test_mig_instances_are_sub_rows_that_follow_their_gpu(demo: DemoUnderTest) -> None:
    parent = demo.host.fake.gpus[6]  # the only GPU at its utilisation: sorting moves it
    parent.mig_instances = [
        FakeMig("MIG-first", memory_total_bytes=18 * 1024 * MIB, memory_used_bytes=4 * 1024 * MIB),
        FakeMig("MIG-second", memory_total_bytes=35 * 1024 * MIB),
    ]
    try:
        with rig_on(demo) as rig:
            app = rig.app()
            async with app.run_test(size=(120, 40)) as pilot:
                snapshot = rig.tick(12)
                await pilot.pause()
                table = app.gpu_table
                by_index = [g.sample.uuid for g in sorted(snapshot.gpus, key=lambda g: g.sample.index)]
                assert table.row_keys == by_index[:7] + ["MIG-first", "MIG-second"] + by_index[7:]
                assert table.cell_text("MIG-first", "gpu") == "MIG 0"
                assert table.cell_text("MIG-second", "gpu") == "MIG 1"
                mig_memory = f"{fmt_gib(4 * 1024 * MIB)}/{fmt_gib(18 * 1024 * MIB)}"  # used/total
                assert table.cell_text("MIG-first", "mem") == mig_memory
                assert table.cell_text("MIG-first", "power") == ""  # power is the physical GPU's
                screen = screen_text(app).splitlines()
                row = next(i for i, line in enumerate(screen) if line.startswith("  6  H200"))
                assert screen[row + 1].split() == ["└", "MIG", "0", "█▏", mig_memory]
                assert screen[row + 2].split()[:3] == ["└", "MIG", "1"]

                await pilot.press("s", "s", "S")  # utilisation, lowest first: the sub-rows move along
                await pilot.pause()
                assert table.sort_key == "util" and not table.sort_descending
                keys = table.row_keys
                at = keys.index(parent.uuid)
                assert keys[at + 1 : at + 3] == ["MIG-first", "MIG-second"]
                assert keys.index(parent.uuid) != by_index.index(parent.uuid)  # the order did change

                table.focus()
                table.select("MIG-second")  # a sub-row selects its GPU
                await pilot.pause()
                assert app.selected == parent.uuid
                await pilot.press("down")  # the cursor skips the sub-rows
                await pilot.pause()
                assert app.selected == keys[at + 3]
                assert table.parent_of("MIG-first") == parent.uuid
    finally:
        parent.mig_instances = []


def test_a_window_in_a_column_header_is_never_cut() -> None:
    """The fleet's 15-minute cost window makes ``p50 15m``, wider than the column's own width:
    the column is made wide enough for it, on every table that states a window."""
    lengths = {"rate": "1m", "cost": "15m"}
    for specs in (GPU_COLUMNS, ENGINE_COLUMNS):
        fitted = fit_columns(specs, 400, 1, None, lengths)
        assert len(fitted) == len(specs)
        for spec, width in fitted:
            assert width >= cell_len(spec.window.format(**lengths)), spec.key
