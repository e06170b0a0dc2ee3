"""The fleet read from a real Prometheus scraping three real ``tokentop export --demo`` hosts.

One Prometheus and three exporters for the whole module (about 20 s of wall time). The summary
comparison is the issue's test: each host's figures in the fleet summary against that host's own
``tokentop summary`` over the same range, from its own history.

Tolerance of that comparison: the history sees each end of the range at the host's tick nearest
it; Prometheus sees it at the scrape nearest it and extrapolates ``increase()`` to the end. Ticks
and scrapes are both 1 s apart, so at each end the two can differ by what the host did in one
scrape interval: at most 2 x 1 s x the host's peak rate (tok/s, W, $/s, busy GPUs), from the
host's own summary. Fleet totals are the sum of the hosts exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_harness import (
    SCRAPE_INTERVAL_S,
    ExportedHost,
    Job,
    Prometheus,
    Unavailable,
    find_prometheus,
    run_tokentop,
    unavailable,
)

from tokentop.config import Config, PrometheusConfig
from tokentop.demo import engines_for
from tokentop.fleet import promql
from tokentop.fleet.model import FleetHost
from tokentop.fleet.prometheus_source import NOT_OPENED, PrometheusSource
from tokentop.fleet.prometheus_summary import summarize
from tokentop.report import SummaryError

HOSTS = ("h1", "h2", "h3")
DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "tokentop.json"


@dataclass
class Fleet:
    prometheus: Prometheus
    hosts: dict[str, ExportedHost]
    started: float  # every host scraped at least once by then


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet-prometheus")
    try:
        binary = find_prometheus()  # first: no exporter is started for nothing
    except Unavailable as exc:
        unavailable(str(exc))
    hosts = {name: ExportedHost(name, seed, work) for seed, name in enumerate(HOSTS, start=1)}
    prometheus: Prometheus | None = None
    reason = None
    try:
        for host in hosts.values():
            host.start()
        prometheus = Prometheus(work, [Job("tokentop", tuple(h.target for h in hosts.values()))], binary)
        prometheus.start()
        prometheus.wait_for("count by (host) (tokentop_gpu_watched_seconds_total)", lambda r: len(r) == 3)
    except Unavailable as exc:
        reason = str(exc)
    except BaseException:
        _stop(hosts, prometheus)
        raise
    if reason is not None or prometheus is None:
        _stop(hosts, prometheus)
        unavailable(reason or "not started")
    assert prometheus is not None
    try:
        yield Fleet(prometheus, hosts, time.time())
    finally:
        _stop(hosts, prometheus)


def _stop(hosts: dict[str, ExportedHost], prometheus: Prometheus | None) -> None:
    for host in hosts.values():
        host.stop()
    if prometheus is not None:
        prometheus.stop()


_opened: list[PrometheusSource] = []


def source(url: str, detail: str = "all", **settings: float) -> PrometheusSource:
    windows = {"rate_window_s": 5.0, "cost_window_s": 10.0, **settings}
    made = PrometheusSource(Config(prometheus=PrometheusConfig(url=url, **windows)), stale_after_s=5.0, detail=detail)
    _opened.append(made)
    return made


@pytest.fixture(autouse=True)
def close_sources() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def wait_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def test_each_exporter_is_its_own_host(fleet: Fleet) -> None:
    found = fleet.prometheus.query("count by (host) (tokentop_gpu_power_watts)")
    assert {r["metric"]["host"]: int(r["value"][1]) for r in found} == dict.fromkeys(HOSTS, 8)


def test_a_reading_has_every_host_with_bounded_queries(fleet: Fleet) -> None:
    wait_until(fleet.started + 3)
    src = source(fleet.prometheus.url)
    reading = src.read()
    assert reading.status is None and not reading.stale
    assert reading.mode == "tokentop" and "tokentop exporters" in reading.source
    assert [h.name for h in reading.hosts] == list(HOSTS)
    for host in reading.hosts:
        assert host.state == "up" and host.snapshot is not None
        assert len(host.snapshot.gpus) == 8 and host.engines_up == host.engines_total == 3
        assert {e.sample.model for e in host.snapshot.endpoints} == {e.model for e in engines_for(1)}  # endpoint_info
        assert host.snapshot.host.cost_window.span_s == 10.0 and host.snapshot.host.rate_window.span_s == 5.0
        assert host.snapshot.host.cost_window.tokens_out > 0 and host.snapshot.host.power_w
    first = src.client.queries
    assert first <= promql.QUERIES_PER_REFRESH
    src.read()
    assert src.client.queries - first <= promql.QUERIES_PER_REFRESH - 1  # no detection on the second


def test_fleet_figures_are_the_sum_of_the_hosts(fleet: Fleet) -> None:
    wait_until(fleet.started + 3)
    reading = source(fleet.prometheus.url).read()
    windows = [h.snapshot.host.cost_window for h in reading.hosts if h.snapshot]
    fleet_window = reading.fleet.cost_window
    assert fleet_window.tokens_out == sum(w.tokens_out for w in windows)
    assert fleet_window.energy_j == sum(w.energy_j for w in windows)
    cost = sum(w.cost_usd or 0.0 for w in windows)
    assert fleet_window.cost_usd == cost
    assert reading.fleet.usd_per_mtok == cost / sum(w.tokens_out for w in windows) * 1e6
    assert reading.fleet.gpu_count == 24


def _pinned(src: PrometheusSource, at: float) -> PrometheusSource:
    """``src`` asking every instant query at ``at``, so two sources read the same data."""
    setattr(src.client, "instant", functools.partial(src.client.instant, at=at))  # noqa: B010
    return src


def _same_numbers(mine: object, theirs: object, what: str) -> None:
    """Two frozen records field by field, numbers to 1e-9 (Prometheus's sums and Python's add in
    different orders)."""
    for name in (f.name for f in dataclasses.fields(mine)):  # type: ignore[arg-type]
        a, b = getattr(mine, name), getattr(theirs, name)
        if dataclasses.is_dataclass(a):
            _same_numbers(a, b, f"{what}.{name}")
        elif isinstance(a, float) and isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12), f"{what}.{name}: {a} vs {b}"
        else:
            assert a == b, f"{what}.{name}: {a!r} vs {b!r}"


def test_focused_reads_every_hosts_figures_and_the_opened_hosts_rows(fleet: Fleet) -> None:
    wait_until(fleet.started + 4)
    at = time.time() - 1.0
    full = _pinned(source(fleet.prometheus.url), at)
    focused = _pinned(source(fleet.prometheus.url, detail="focused"), at)
    focused.focus("h2")
    everything, opened = full.read(), focused.read()
    assert opened.status is None and focused.client.queries <= promql.QUERIES_PER_REFRESH
    assert [h.name for h in opened.hosts] == list(HOSTS)
    for mine, theirs in zip(opened.hosts, everything.hosts, strict=True):
        assert mine.snapshot is not None and theirs.snapshot is not None
        _same_numbers(mine.snapshot.host, theirs.snapshot.host, mine.name)
        assert (mine.models, mine.engines_up, mine.engines_total, mine.state) == (
            theirs.models,
            theirs.engines_up,
            theirs.engines_total,
            theirs.state,
        )
        if mine.name == "h2":
            assert mine.snapshot.gpus == theirs.snapshot.gpus and len(mine.snapshot.gpus) == 8
            assert mine.snapshot.endpoints == theirs.snapshot.endpoints and mine.snapshot.gpu_available
        else:
            assert mine.snapshot.gpus == () and mine.snapshot.endpoints == ()
            assert not mine.snapshot.gpu_available and mine.snapshot.gpu_reason == NOT_OPENED
            assert mine.snapshot.host.gpu_count == 8 and mine.engines_total == 3
    _same_numbers(opened.fleet, everything.fleet, "fleet")
    focused.focus('h"1\\')  # a name to escape, and no such host: nobody's rows, no error
    hostile = focused.read()
    assert hostile.status is None and all(h.snapshot and not h.snapshot.gpus for h in hostile.hosts)
    focused.focus("h1")
    assert [h.name for h in focused.read().hosts if h.snapshot and h.snapshot.gpus] == ["h1"]


def test_gpu_memory_and_temperature_are_each_hosts_latest(fleet: Fleet) -> None:
    wait_until(fleet.started + 2)
    at = time.time() - 1.0
    reading = _pinned(source(fleet.prometheus.url), at).read()
    for name, gauge in [
        ("memory_used_bytes", "tokentop_gpu_memory_used_bytes"),
        ("memory_total_bytes", "tokentop_gpu_memory_total_bytes"),
        ("temperature_c", "tokentop_gpu_temperature_celsius"),
    ]:
        published = {
            (r["metric"]["host"], r["metric"]["uuid"]): float(r["value"][1]) for r in fleet.prometheus.query(gauge, at)
        }
        read = {
            (host.name, g.sample.uuid): getattr(g.sample, name)
            for host in reading.hosts
            for g in (host.snapshot.gpus if host.snapshot else ())
        }
        assert len(published) == 3 * 8 and read == published, name


def _close(fleet_value: float | None, own_value: float | None, tolerance: float, what: str) -> None:
    assert fleet_value is not None and own_value is not None, what
    assert abs(fleet_value - own_value) <= tolerance, f"{what}: fleet {fleet_value} vs host {own_value} (±{tolerance})"


def test_fleet_summary_matches_each_hosts_own_summary(fleet: Fleet) -> None:
    since, until = fleet.started + 1.0, fleet.started + 13.0
    wait_until(until + 2 * SCRAPE_INTERVAL_S)
    summary = summarize(Config(prometheus=PrometheusConfig(url=fleet.prometheus.url)), since, until)
    assert summary.mode == "tokentop" and [h.name for h in summary.hosts] == list(HOSTS)
    edges = 2 * SCRAPE_INTERVAL_S
    for host in summary.hosts:
        own = fleet.hosts[host.name].summary(since, until)["host"]
        mine = host.figures
        assert mine is not None
        tok_peak = max(own["tok_s_out_peak"] or 0.0, own["tok_s_out_mean"])
        _close(mine.tokens_out, own["tokens_out"], edges * tok_peak, f"{host.name} tokens out")
        w_peak = max(own["power_w_peak"] or 0.0, own["power_w_mean"])
        _close(mine.energy_kwh, own["energy_kwh"], edges * w_peak / 3.6e6, f"{host.name} energy")
        _close(mine.cost_usd, own["cost_usd"], edges * own["usd_per_hour_mean"] / 3600, f"{host.name} cost")
        _close(mine.busy_s, own["busy_gpu_s"], edges * host.gpu_count, f"{host.name} busy GPU-seconds")
    fleet_figures = summary.fleet
    assert fleet_figures is not None
    figures = [h.figures for h in summary.hosts if h.figures]
    assert fleet_figures.tokens_out == sum(f.tokens_out for f in figures)
    assert fleet_figures.cost_usd == sum(f.cost_usd or 0.0 for f in figures)
    assert fleet_figures.usd_per_mtok == fleet_figures.cost_usd / fleet_figures.tokens_out * 1e6


def test_summary_command_reads_the_fleet(fleet: Fleet) -> None:
    wait_until(fleet.started + 4)
    done = run_tokentop("summary", "--prometheus", fleet.prometheus.url, "--since", "3s", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["kind"] == "fleet" and [h["name"] for h in data["hosts"]] == list(HOSTS)
    assert data["fleet"]["gpu_count"] == 24
    csv = run_tokentop("summary", "--prometheus", fleet.prometheus.url, "--since", "3s", "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.count("\n") == 24 + 3 + 2  # header, GPUs, hosts, fleet


def test_graphs_keep_under_500_points(fleet: Fleet) -> None:
    wait_until(fleet.started + 4)
    src = source(fleet.prometheus.url)
    src.read()
    recent = src.series(60.0)
    assert recent is not None and recent.step_s == 1.0 and 0 < len(recent.t_wall) <= 500
    assert any(v for v in recent.tok_s_out) and any(v for v in recent.power_w) and any(v for v in recent.usd_per_hour)
    one = src.series(60.0, "h2")
    assert one is not None and max(v or 0 for v in one.power_w) < max(v or 0 for v in recent.power_w)
    week = src.series(7 * 86400.0)
    assert week is not None and week.step_s >= 7 * 86400 / 499 and len(week.t_wall) <= 500


def test_the_graph_divides_cost_only_by_priced_tokens(fleet: Fleet) -> None:
    """Every demo GPU has a price, so the priced tokens are all of them, point by point."""
    wait_until(fleet.started + 4)
    end = time.time()
    answer = source(fleet.prometheus.url).client.range(promql.tokentop_graph(5.0, None), end - 20, end, 1.0)
    points = {s.labels[promql.UNION_LABEL]: dict(s.points) for s in answer.series}
    assert points["priced_tok_s_out"] and points["priced_tok_s_out"].keys() == points["tok_s_out"].keys()
    for t, tok_s in points["tok_s_out"].items():
        assert points["priced_tok_s_out"][t] == pytest.approx(tok_s, rel=1e-12)


def grafana_expr(expr: str) -> str:
    return expr.replace("$__rate_interval", "10s").replace("$__range", "10s").replace("$host", ".*")


def test_every_grafana_panel_returns_data(fleet: Fleet) -> None:
    wait_until(fleet.started + 10)
    dashboard = json.loads(DASHBOARD.read_text())
    targets = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    assert len(targets) >= 10
    for title, expr in targets:
        result = fleet.prometheus.query(grafana_expr(expr))
        assert result and all(r["value"][1] not in ("NaN", "+Inf") for r in result), title


def test_the_dashboards_fleet_figures_are_the_fleet_views(fleet: Fleet) -> None:
    """The Grafana stats over a 10 s range equal the fleet view's over a 10 s cost window, read
    at the same instant: the same sums of cost over the same sums of tokens."""
    wait_until(fleet.started + 12)
    at = time.time() - 1.0
    reading = _pinned(source(fleet.prometheus.url, cost_window_s=10.0), at).read()
    panels = {p["title"]: p["targets"][0]["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    expected = {
        "Fleet effective $/Mtok (range)": reading.fleet.usd_per_mtok,
        "Fleet busy $/Mtok (range)": reading.fleet.busy_usd_per_mtok,
        "Fleet busy share (range)": reading.fleet.cost_window.busy_share,
    }
    for title, figure in expected.items():
        (result,) = fleet.prometheus.query(grafana_expr(panels[title]), at=at)
        assert figure is not None and float(result["value"][1]) == pytest.approx(figure, rel=1e-9), title


def test_a_prometheus_without_fleet_series_says_so(tmp_path: Path) -> None:
    try:
        empty = Prometheus(tmp_path, [])
        empty.start()
    except Unavailable as exc:
        unavailable(str(exc))
    try:
        reading = source(empty.url).read()
        assert reading.hosts == () and not reading.stale
        assert reading.status is not None and "no tokentop_* or DCGM_FI_DEV_POWER_USAGE series" in reading.status
        with pytest.raises(SummaryError, match="holds no tokentop_\\* or DCGM_FI_DEV_POWER_USAGE series"):
            summarize(Config(prometheus=PrometheusConfig(url=empty.url)), None, None)
    finally:
        empty.stop()


@pytest.mark.parametrize("name", ["", "  ", "two\nlines", "x" * 254])
def test_export_refuses_a_host_name_no_label_can_carry(name: str) -> None:
    done = run_tokentop("export", "--demo", "--no-history", "--host-name", name, "--listen", "127.0.0.1:0")
    assert done.returncode == 2 and "--host-name" in done.stderr and "Traceback" not in done.stderr


class FlakyProxy:
    """A loopback HTTP server in front of the real Prometheus that can fail on command."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                proxy.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, content = proxy.answer(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.mode == "500":
            return 500, b"internal trouble"
        if self.mode == "garbage":
            return 200, b"\x00{not json"
        if self.mode == "error":
            return 422, json.dumps({"status": "error", "errorType": "execution", "error": "query timed out"}).encode()
        answer = httpx.post(
            self.upstream + path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        if self.mode == "warn":
            data = answer.json()
            data["warnings"] = ["partial response: store 3 unreachable"]
            return 200, json.dumps(data).encode()
        return answer.status_code, answer.content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("500", "HTTP 500"),
        ("garbage", "not Prometheus's JSON"),
        ("error", "execution: query timed out"),
        ("down", "unreachable"),
    ],
)
def test_prometheus_trouble_gives_a_status_and_the_last_figures_stale(fleet: Fleet, mode: str, said: str) -> None:
    wait_until(fleet.started + 3)
    proxy = FlakyProxy(fleet.prometheus.url)
    src = source(proxy.url)
    good = src.read()
    assert good.status is None and len(good.hosts) == 3
    if mode == "down":
        proxy.close()
    proxy.mode = mode
    bad = src.read()
    assert bad.stale and bad.status is not None and said in bad.status
    assert [h.name for h in bad.hosts] == list(HOSTS) and {h.state for h in bad.hosts} == {"stale"}
    assert bad.fleet.cost_window.tokens_out == good.fleet.cost_window.tokens_out
    asked = proxy.requests
    again = src.read()  # backing off: Prometheus is not asked again at once
    assert proxy.requests == asked and again.stale and again.status and "retrying in" in again.status
    if mode != "down":
        proxy.close()


def test_partial_data_is_read_and_said(fleet: Fleet) -> None:
    proxy = FlakyProxy(fleet.prometheus.url)
    proxy.mode = "warn"
    reading = source(proxy.url).read()
    assert len(reading.hosts) == 3 and not reading.stale
    assert reading.status is not None and "store 3 unreachable" in reading.status
    proxy.close()


def _read_until(src: PrometheusSource, done: Callable[[dict[str, FleetHost]], bool]) -> dict[str, FleetHost]:
    """Read every half second until ``done`` holds (at most 30 s): what is asserted is the state a
    host reaches, not how fast a busy machine's Prometheus gets there."""
    deadline = time.monotonic() + 30.0
    while True:
        states = {h.name: h for h in src.read().hosts}
        if done(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_a_host_that_stops_goes_stale_then_down(fleet: Fleet) -> None:
    """Last: it stops h3."""
    src = source(fleet.prometheus.url, cost_window_s=3.0, rate_window_s=2.0)
    assert {h.state for h in src.read().hosts} == {"up"}
    fleet.hosts["h3"].stop()
    states = _read_until(src, lambda s: s["h3"].state != "up")
    assert states["h3"].state in ("stale", "down") and states["h1"].state == "up"
    states = _read_until(src, lambda s: s["h3"].state == "down")
    assert states["h3"].state == "down" and states["h3"].reason and "no sample" in states["h3"].reason
    assert states["h3"].snapshot is None and src.read().fleet.gpu_count == 16
