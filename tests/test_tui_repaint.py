"""The live view repaints only the lines that changed each tick (the tables' rows and window
line, the graph's lines, the header's lines): what is on screen must then be what a repaint of
everything would show, tick after tick, while the windows fill and once they are full, with the
GPU table scrolled, and on a terminal that changed size."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_tui import HOST_USAGE, screen_text
from textual.pilot import Pilot
from textual.widget import Widget

from tokentop.config import Config
from tokentop.demo import SimulatedClock, simulated_snapshots
from tokentop.model import Snapshot
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler
from tokentop.tui.app import TokentopApp
from tokentop.tui.host import FixedHost


@pytest.fixture(scope="module")
def demo_ticks() -> list[Snapshot]:
    return simulated_snapshots(75)


def live_app(config: Config | None = None, sampler: Sampler | None = None) -> TokentopApp:
    return TokentopApp(
        config or Config(),
        host_name="gpu-node-01",
        handle_signals=False,
        host=FixedHost(HOST_USAGE, {}),
        sampler=sampler,
        start_sampler=False,
    )


async def repainted_whole(app: TokentopApp, pilot: Pilot[None]) -> str:
    """The screen after every widget is painted again from scratch."""
    widgets: Iterator[Widget] = app.screen.walk_children(Widget)
    for widget in widgets:
        widget.refresh()
    await pilot.pause()
    return screen_text(app)


async def test_the_screen_after_each_tick_is_what_a_whole_repaint_shows(demo_ticks: list[Snapshot]) -> None:
    app = live_app()
    async with app.run_test(size=(160, 50)) as pilot:
        for seq, snapshot in enumerate(demo_ticks):
            app.post_snapshot(snapshot)
            await pilot.pause()
            if seq in (1, 2, 5, 30, 59, 60, 61, 74):  # the windows filling, then full
                shown = screen_text(app)
                assert shown == await repainted_whole(app, pilot), f"tick {seq}"
        await pilot.press("w")  # the 10-minute window: buckets of several ticks
        for snapshot in demo_ticks[-3:]:
            app.post_snapshot(snapshot)
        await pilot.pause()
        assert screen_text(app) == await repainted_whole(app, pilot)


async def test_a_resized_terminal_repaints_to_the_same_as_a_whole_repaint(demo_ticks: list[Snapshot]) -> None:
    app = live_app()
    async with app.run_test(size=(160, 50)) as pilot:
        for snapshot in demo_ticks[:20]:
            app.post_snapshot(snapshot)
        await pilot.pause()
        await pilot.resize_terminal(100, 30)
        for snapshot in demo_ticks[20:24]:
            app.post_snapshot(snapshot)
            await pilot.pause()
        shown = screen_text(app)
        assert shown == await repainted_whole(app, pilot)


async def test_rows_scrolled_into_view_show_this_tick_s_figures() -> None:
    """Twenty-four GPUs on 80x24: the table scrolls. The rows on screen after scrolling down must
    show the figures of the last tick, not those of the tick before the scroll."""
    clock = SimulatedClock()
    fake = FakeNvml.healthy(count=24)
    config = Config(discover=False)
    sampler = Sampler(config, NvmlReader(lib=fake), clock=clock, wall_clock=clock.wall)
    try:
        app = live_app(config, sampler)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(3):
                clock.t += 1
                sampler.tick()
            await pilot.pause()
            await pilot.press("end")  # the cursor to the last GPU: the table scrolls down
            await pilot.pause()
            for busy in (37, 64):
                for gpu in fake.gpus:
                    gpu.utilization_pct = busy
                clock.t += 1
                sampler.tick()
                await pilot.pause()
                shown = screen_text(app)
                assert " 23  H200" in shown and "more above" in shown  # scrolled to the last GPU
                rows = [line for line in shown.splitlines() if "  H200  " in line]
                assert rows and all(f" {busy}% " in row for row in rows)
                assert shown == await repainted_whole(app, pilot), f"util {busy}%"
    finally:
        sampler.stop()
