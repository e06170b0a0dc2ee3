"""The fleet screen over the real source: a real Prometheus scraping three real
``tokentop export --demo`` hosts, read by ``PrometheusSource`` through the real poller thread,
drawn by the fleet app under Pilot. Skips with the reason when Prometheus cannot be had (fails
instead with ``TOKENTOP_REQUIRE_PROMETHEUS=1``, as in CI)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_harness import ExportedHost, Job, Prometheus, Unavailable, unavailable

from tokentop.config import Config, PrometheusConfig
from tokentop.fleet.prometheus_source import PrometheusSource
from tokentop.tui.fleet.app import FleetApp
from tokentop.tui.fleet.host_screen import HostScreen
from tokentop.tui.fleet.widgets import PartsHeader
from tokentop.units import fmt_tok_s, fmt_usd

HOSTS = ("h1", "h2", "h3")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, dict[str, ExportedHost]]]:
    work: Path = tmp_path_factory.mktemp("fleet-tui")
    hosts = {name: ExportedHost(name, seed, work) for seed, name in enumerate(HOSTS, start=1)}
    server: Prometheus | None = None
    try:
        server = Prometheus(work, [Job("tokentop", ())])  # the binary first: skip before starting exporters
        for host in hosts.values():
            host.start()
        server.jobs = [Job("tokentop", tuple(h.target for h in hosts.values()))]
        server.start()
    except Unavailable as exc:
        for host in hosts.values():
            host.stop()
        unavailable(str(exc))
    assert server is not None
    try:
        server.wait_for("count by (host) (tokentop_gpu_watched_seconds_total)", lambda r: len(r) == 3)
        yield server, hosts
    finally:
        for host in hosts.values():
            host.stop()
        server.stop()


async def _until(condition: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.2)
    assert condition(), "the condition never came true"  # type: ignore[operator]


async def test_the_fleet_screen_over_a_real_prometheus(prometheus: tuple[Prometheus, dict[str, ExportedHost]]) -> None:
    server, hosts = prometheus
    settings = PrometheusConfig(url=server.url, refresh_s=1.0, rate_window_s=5.0, cost_window_s=10.0)
    source = PrometheusSource(Config(prometheus=settings), stale_after_s=5.0, detail="focused")  # as the screen's
    app = FleetApp(Config(prometheus=settings), source, handle_signals=False)  # the real poller thread
    try:
        async with app.run_test(size=(120, 40)) as pilot:

            def all_priced() -> bool:
                reading = app.shown
                return reading is not None and len(reading.hosts) == 3 and reading.fleet.usd_per_mtok is not None

            await _until(all_priced)
            await pilot.pause()
            reading = app.shown
            assert reading is not None and reading.status is None
            assert sorted(app.host_table.row_keys) == list(HOSTS)
            header = app.query_one("#header", PartsHeader).text
            assert "hosts 3/3 up" in header and f"{reading.fleet.gpu_count} GPUs" in header
            assert f" {fmt_usd(reading.fleet.usd_per_mtok)}/Mtok  10s" in header
            assert f"out {fmt_tok_s(reading.fleet.rate_window.tok_s_out)} in" in header
            assert all(h.snapshot is not None and not h.snapshot.gpus for h in reading.hosts)  # none opened
            assert [app.host_table.cell_text(name, "gpus") for name in HOSTS] == ["8× H200"] * 3  # from the counts
            await pilot.press("down", "enter")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, HostScreen) and screen.host_name == "h2" and source.focused == "h2"
            await _until(lambda: len(screen.gpu_table.row_keys) == 8)  # its rows, from the read after focus
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert screen.graph.title.startswith(" History · host h2 · last 1 h") and screen.graph.note is None
            await pilot.press("escape")
            assert source.focused is None
            hosts["h3"].stop()  # its series stop: the screen says so
            await _until(lambda: app.shown is not None and any(h.state != "up" for h in app.shown.hosts), 90.0)
            await pilot.pause()
            state = app.host_table.cell_text("h3", "state")
            assert state.startswith(("STALE", "DOWN")), state
    finally:
        app.poller.stop()
        source.close()
