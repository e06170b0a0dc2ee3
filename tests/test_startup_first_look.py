"""Issue 10, item 14: the live view's first look. Before the endpoints first answer, the start-up
hands over the GPUs alone (``Snapshot.first_look``): the app draws every GPU row from it at once
and says the engines are being read, and keeps nothing of it (no graph point, no process list,
not the latest tick, not a tick a pause holds, not in the summary)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from loopback import LoopbackServer, Reply
from test_collectors import vllm_page
from test_tui import DemoUnderTest, FixedHost, Rig, demo, rig_on, screen_text  # noqa: F401 (demo: a fixture)
from textual.pilot import Pilot
from textual.widgets import Footer

from tokentop.cli.live import Startup
from tokentop.cli.runtime import Runtime
from tokentop.config import Config, EndpointConfig
from tokentop.demo import DemoGpuReader, SimulatedClock
from tokentop.model import Snapshot
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler
from tokentop.tui.app import ENGINES_BEING_READ, NO_ENGINES, TokentopApp
from tokentop.tui.history import HOST, GraphPoint
from tokentop.tui.keys import KEYS
from tokentop.tui.session import short_summary
from tokentop.tui.widgets.messages import MessageBar

GPU_ROWS = [f"  {i}  H200" for i in range(8)]


@pytest.fixture
def rig(demo: DemoUnderTest) -> Iterator[Rig]:  # noqa: F811 (demo: the fixture above)
    with rig_on(demo) as r:
        yield r


def first_look(rig: Rig) -> Snapshot:
    """What the sampler hands over first when started: this instant's GPUs, derived with no
    endpoint, by a sampler of its own (the rig's sampler has counted nothing)."""
    gpus_alone = Config(discover=False)
    own = Sampler(gpus_alone, DemoGpuReader(rig.host), clock=rig.clock, wall_clock=rig.clock.wall)
    try:
        return replace(own.tick(), first_look=True)
    finally:
        own.stop()


def graph_figures(app: TokentopApp) -> list[GraphPoint]:
    """The host's points of the live graph's last minute that hold a figure."""
    now = app.shown.t_mono if app.shown is not None else 0.0
    points = app.history.series(HOST, 60.0, 60, now, 1.0)
    return [p for p in points if (p.tok_s_in, p.tok_s_out, p.watts, p.usd_per_mtok) != (None, None, None, None)]


async def test_a_first_look_draws_every_gpu_row_and_the_engines_being_read(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert ENGINES_BEING_READ in screen_text(app)  # nothing read yet: no verdict
        look = first_look(rig)
        app.post_snapshot(look)
        await pilot.pause()
        text = screen_text(app)
        assert all(row in text for row in GPU_ROWS)
        assert ENGINES_BEING_READ in text and NO_ENGINES not in text
        assert "starting" in text and "● live" not in text  # not a tick yet
        assert app.shown is look
        # the engines and $/Mtok are not known yet: "…" and "warming", never "—" (no engine)
        gpu_lines = [line for line in text.splitlines() if any(line.startswith(row) for row in GPU_ROWS)]
        assert len(gpu_lines) == 8 and all("…" in line and "—" not in line for line in gpu_lines)
        assert "warming" in text
        # nothing of it is kept: not the latest tick, no graph point, no process list
        assert app.latest is None and graph_figures(app) == [] and app.processes == {}
        assert "no reading was taken" in short_summary(app.latest, app.host_name)  # what quitting now prints
        rig.tick()
        await pilot.pause()
        text = screen_text(app)
        assert app.latest is not None and app.latest.seq == 1 and app.shown is app.latest
        assert "llama-70b" in text and ENGINES_BEING_READ not in text
        assert all(row in text for row in GPU_ROWS)
        assert app.processes  # the first tick's process lists are kept
        rig.tick()
        await pilot.pause()
        assert len(graph_figures(app)) == 1  # one point per tick after the first: the look was none


async def test_no_engine_found_is_said_once_the_first_tick_has_none() -> None:
    config, clock = Config(discover=False), SimulatedClock()
    sampler = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=2)), clock=clock, wall_clock=clock.wall)
    app = TokentopApp(config, sampler=sampler, host_name="box", start_sampler=False, handle_signals=False)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            clock.t += 1
            app.post_snapshot(replace(sampler.tick(), first_look=True))  # (ticked by hand: sent as a look)
            await pilot.pause()
            assert ENGINES_BEING_READ in screen_text(app)
            clock.t += 1
            sampler.tick()
            await pilot.pause()
            text = screen_text(app)
            assert NO_ENGINES in text and ENGINES_BEING_READ not in text
    finally:
        sampler.stop()


async def test_a_pause_never_holds_a_first_look_and_counts_only_ticks(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.post_snapshot(first_look(rig))
        await pilot.pause()
        await pilot.press("p")
        assert app.ticks_while_paused == 0
        first = rig.tick()
        await pilot.pause()
        assert app.shown is first  # the first tick replaced the look, and is the one held
        text = screen_text(app)
        assert "PAUSED" in text and "(0 ticks since)" in text and "llama-70b" in text
        rig.tick(2)
        await pilot.pause()
        assert app.shown is first and app.ticks_while_paused == 2
        assert "(2 ticks since)" in screen_text(app)


async def test_a_first_look_after_a_tick_is_not_drawn(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=(120, 40)) as pilot:
        look = first_look(rig)
        tick = rig.tick()
        await pilot.pause()
        app.post_snapshot(look)
        await pilot.pause()
        assert app.shown is tick and app.latest is tick
        assert "llama-70b" in screen_text(app)


async def wait_for(pilot: Pilot[None], done: object, what: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never saw {what}"
        await pilot.pause(0.01)


async def test_the_start_up_shows_the_gpus_while_a_slow_endpoint_is_read(server: LoopbackServer) -> None:
    """The real hand-over: the live command's start-up (``Startup``), an endpoint slow to answer
    its first read; the GPU rows are on screen before it answers, the engine row after."""
    server.route("/metrics", Reply(body=vllm_page(100, 500), delay_s=1.5), vllm_page(110, 520))
    endpoint = EndpointConfig(url=server.url + "/metrics", name="slow-engine", kind="vllm", gpus=("0",))
    config = Config(endpoints=(endpoint,), http_timeout_s=5.0, discover=False)
    gpus = NvmlReader(lib=FakeNvml.healthy(count=8, name="NVIDIA H200"))
    startup = Startup(config, Runtime(config, gpus), None)
    app = TokentopApp(config, startup=startup.begin, host_name="box", handle_signals=False, host=FixedHost())
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.shown is not None, "a first screen of GPUs")
            await pilot.pause()
            assert app.shown is not None and app.shown.first_look and app.latest is None
            text = screen_text(app)
            assert all(row in text for row in GPU_ROWS) and ENGINES_BEING_READ in text
            assert "slow-engine" not in text
            await wait_for(pilot, lambda: app.latest is not None, "the first tick")
            await pilot.pause()
            text = screen_text(app)
            assert "slow-engine" in text and ENGINES_BEING_READ not in text
            assert app.latest is not None and not app.latest.first_look and app.latest.seq == 1
    finally:
        startup.stop()


async def test_the_keys_come_with_the_first_gpu_rows_when_the_app_builds_its_sampler(rig: Rig) -> None:
    """Started with a ``startup`` hook (the live command), the footer's keys are mounted once
    the first GPU rows are drawn: their line is kept for them until then."""
    app = TokentopApp(
        rig.config, host_name="box", handle_signals=False, start_sampler=False, host=FixedHost(), startup=lambda a: None
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not app.query(Footer) and app.query("#keys-line")
        assert app.query_one(MessageBar).region.y == 38  # the last line is kept for the keys
        app.attach(rig.sampler, None)
        await pilot.pause()
        app.post_snapshot(first_look(rig))
        await pilot.pause()
        await pilot.pause()
        assert app.query(Footer) and not app.query("#keys-line")
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert all(f"{key.display} {key.footer}" in lines[-1] for key in KEYS if key.footer)
        assert app.query_one(MessageBar).region.y == 38 and "tick 1" in lines[-2]  # nothing moved
