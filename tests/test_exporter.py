"""``tokentop export``: real HTTP scrapes parsed by prometheus_client's own parser, the demo host
behind the real reader and collectors, and the summary of the same history as the reference."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from loopback import LoopbackServer, Reply
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tokentop import __version__, exporter, report
from tokentop.cli.runtime import build_runtime
from tokentop.config import Config
from tokentop.demo import simulated_snapshots
from tokentop.history import Store
from tokentop.model import GpuFigures, Snapshot, Window
from tokentop.sampler import Sampler

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and (sample name, sorted labels) -> value, as Prometheus reads it."""
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    types, samples = {}, {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def by_gpu(samples: Samples, name: str, **match: str) -> dict[str, float]:
    """uuid -> value for one series name (and label values)."""
    found = {}
    for (sample, labels), value in samples.items():
        labels_d = dict(labels)
        if sample == name and all(labels_d.get(k) == v for k, v in match.items()):
            found[labels_d["uuid"]] = value
    return found


def snapshot_time(samples: Samples) -> float:
    [t] = [v for (name, _), v in samples.items() if name == "tokentop_snapshot_timestamp_seconds"]
    return t


@pytest.fixture
def demo_config(tmp_path: Path) -> Config:
    return Config(demo=True, db_path=tmp_path / "h.db", interval_s=0.2)


def test_increases_between_two_scrapes_equal_the_summary_of_that_range(demo_config: Config) -> None:
    runtime = build_runtime(demo_config)
    config = runtime.config
    store = Store.open(config.db_path, host="demo", version="0.1.0", config=config.public_dict())
    sampler = Sampler(config, runtime.gpus, store=store)
    server = exporter.serve(sampler, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        sampler.start()
        deadline = time.monotonic() + 10
        while sampler.latest is None or sampler.latest.seq < 3:
            assert time.monotonic() < deadline, "the sampler did not tick"
            time.sleep(0.05)
        types, first = scrape(url)
        time.sleep(1.0)
        _, second = scrape(url)
        scraped = sampler.latest.seq  # at least the tick the second scrape showed
        while sampler.latest.seq <= scraped:  # one more tick in the history: the range ends inside it
            assert time.monotonic() < deadline + 10, "the sampler stopped ticking"
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
        sampler.stop()
        runtime.close()
    assert types["tokentop_gpu_tokens"] == "counter"
    assert types["tokentop_gpu_tokens_per_second"] == "gauge"
    assert types["tokentop_gpu_info"] == "gauge"  # info families are gauges in the text format
    since, until = snapshot_time(first), snapshot_time(second)
    assert until > since

    with Store.open_readonly(config.db_path) as history:
        [session] = history.sessions()
        result = report.build_summary(history, session, since, until)
    assert result.since == since and result.until == until
    assert len(result.gpus) == 8
    increases = {}
    for name, labels in (
        ("tokentop_gpu_tokens_total", {"direction": "in"}),
        ("tokentop_gpu_tokens_total", {"direction": "out"}),
        ("tokentop_gpu_energy_joules_total", {}),
        ("tokentop_gpu_cost_usd_total", {}),
        ("tokentop_gpu_busy_seconds_total", {}),
    ):
        a, b = by_gpu(first, name, **labels), by_gpu(second, name, **labels)
        assert set(a) == set(b) == {g.uuid for g in result.gpus}
        increases[(name, labels.get("direction"))] = {uuid: b[uuid] - a[uuid] for uuid in a}
    for g in result.gpus:
        f = g.figures
        assert increases[("tokentop_gpu_tokens_total", "in")][g.uuid] == pytest.approx(f.tokens_in)
        assert increases[("tokentop_gpu_tokens_total", "out")][g.uuid] == pytest.approx(f.tokens_out)
        assert increases[("tokentop_gpu_energy_joules_total", None)][g.uuid] == pytest.approx(f.energy_kwh * 3.6e6)
        assert increases[("tokentop_gpu_cost_usd_total", None)][g.uuid] == pytest.approx(f.cost_usd)
        assert increases[("tokentop_gpu_busy_seconds_total", None)][g.uuid] == pytest.approx(f.busy_s)
    # The README's fleet query: sum of cost increases over sum of output-token increases.
    fleet = (
        sum(increases[("tokentop_gpu_cost_usd_total", None)].values())
        / sum(increases[("tokentop_gpu_tokens_total", "out")].values())
        * 1e6
    )
    assert result.host is not None and fleet == pytest.approx(result.host.usd_per_mtok)


def test_a_scrape_reads_the_snapshot_only(demo_config: Config) -> None:
    """Scraping never calls NVML nor the inference servers; before the first tick there is
    nothing but tokentop's own info."""
    runtime = build_runtime(replace(demo_config, history=False))
    sampler = Sampler(runtime.config, runtime.gpus)
    server = exporter.serve(sampler, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    host = runtime.demo_host
    try:
        types, samples = scrape(url)
        assert list(types) == ["tokentop_info"]
        sampler.tick()
        sampler.tick()
        nvml_calls = sum(sum(g.calls.values()) for g in host.fake.gpus) + sum(host.fake.calls.values())
        snapshot = sampler.latest
        for _ in range(3):
            types, samples = scrape(url)
        assert sum(sum(g.calls.values()) for g in host.fake.gpus) + sum(host.fake.calls.values()) == nvml_calls
        assert sampler.latest is snapshot  # no tick, no HTTP read of the engines
    finally:
        server.shutdown()
        server.server_close()
        sampler.stop()
        runtime.close()
    # Every GPU and endpoint is there with its labels; the idle GPU has no $/Mtok.
    power = by_gpu(samples, "tokentop_gpu_power_watts")
    assert len(power) == 8 and all(72 * 0.99 <= w <= 700 for w in power.values())
    assert {dict(labels)["gpu"] for (name, labels) in samples if name == "tokentop_gpu_power_watts"} == {
        str(i) for i in range(8)
    }
    assert set(by_gpu(samples, "tokentop_gpu_usd_per_million_tokens")) == set(host.uuids[:7])
    endpoints = {
        dict(labels)["endpoint"]: value for (name, labels), value in samples.items() if name == "tokentop_endpoint_up"
    }
    assert endpoints == {"llama-70b": 1.0, "llama-8b": 1.0, "qwen-32b": 1.0}
    assert all(dict(labels)["kind"] == "vllm" for (name, labels) in samples if name.startswith("tokentop_endpoint_"))
    assert (
        samples[
            (
                "tokentop_gpu_info",
                (
                    ("energy_method", "counter"),
                    ("engines", "llama-8b"),
                    ("gpu", "4"),
                    ("host", dict(next(iter(samples))[1])["host"]),
                    ("name", "NVIDIA H200"),
                    ("price_source", "built-in table: typical neocloud on-demand, spring 2026: H200"),
                    ("uuid", host.uuids[4]),
                ),
            )
        ]
        == 1.0
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert exporter.parse_listen(text) == expected


@pytest.mark.parametrize("text", [":9464", "host", "host:port", "1.2.3.4:70000", ""])
def test_bad_listen_addresses_say_what_to_give(text: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        exporter.parse_listen(text)


def start_export(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tokentop.cli", "export", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_export_demo_serves_until_sigterm(tmp_path: Path) -> None:
    process = start_export("--demo", "--listen", "127.0.0.1:0", "--interval", "0.2", "--db", str(tmp_path / "h.db"))
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+/metrics)", line)
        assert match, line
        deadline = time.monotonic() + 20
        while True:
            types, samples = scrape(match.group(1))
            if len(by_gpu(samples, "tokentop_gpu_tokens_per_second", direction="out")) == 8:
                break
            assert time.monotonic() < deadline, "no rates after 20 s"
            time.sleep(0.2)
        assert types["tokentop_endpoint_tokens"] == "counter"
        assert sum(by_gpu(samples, "tokentop_gpu_tokens_total", direction="out").values()) > 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    with Store.open_readonly(tmp_path / "h.db") as history:
        [session] = history.sessions()
        assert session.ended_at is not None  # the history was closed cleanly


def test_export_on_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_export("--demo", "--no-history", "--listen", f"127.0.0.1:{port}")
        _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert err.startswith(f"tokentop: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in err and err.count("\n") == 1


# --- the collector alone, the way prometheus_client tests collectors: a registry, no HTTP -------


@pytest.fixture(scope="module")
def demo_snapshot() -> Snapshot:
    return simulated_snapshots(12, seed=3)[-1]


def registry_of(snapshot: Snapshot | None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter.SnapshotCollector(lambda: snapshot, "host-a"))
    return registry


def gpu_labels(gpu: GpuFigures, **extra: str) -> dict[str, str]:
    return {"gpu": str(gpu.sample.index), "uuid": gpu.sample.uuid, "host": "host-a", **extra}


def test_before_the_first_tick_only_tokentop_info_is_published() -> None:
    registry = registry_of(None)
    assert [family.name for family in registry.collect()] == ["tokentop"]
    assert registry.get_sample_value("tokentop_info", {"host": "host-a", "version": __version__}) == 1.0


def test_gpu_counters_are_the_snapshot_totals(demo_snapshot: Snapshot) -> None:
    registry = registry_of(demo_snapshot)
    for gpu in demo_snapshot.gpus:
        totals = gpu.totals
        read = registry.get_sample_value
        assert read("tokentop_gpu_tokens_total", gpu_labels(gpu, direction="in")) == totals.tokens_in
        assert read("tokentop_gpu_tokens_total", gpu_labels(gpu, direction="out")) == totals.tokens_out
        assert read("tokentop_gpu_energy_joules_total", gpu_labels(gpu)) == totals.energy_j
        assert read("tokentop_gpu_cost_usd_total", gpu_labels(gpu)) == totals.cost_usd
        assert read("tokentop_gpu_watched_seconds_total", gpu_labels(gpu)) == totals.elapsed_s
        assert read("tokentop_gpu_busy_ratio", gpu_labels(gpu)) == gpu.cost_window.busy_share
    [served] = [e for e in demo_snapshot.endpoints if e.sample.name == "llama-70b"]
    labels = {"endpoint": "llama-70b", "kind": "vllm", "host": "host-a"}
    assert registry.get_sample_value("tokentop_endpoint_up", labels) == 1.0
    assert registry.get_sample_value("tokentop_endpoint_tokens_total", {**labels, "direction": "out"}) == (
        served.tokens_out_total
    )


def test_no_cost_series_for_a_gpu_without_a_price(demo_snapshot: Snapshot) -> None:
    unpriced, *rest = demo_snapshot.gpus
    no_cost = Window(**{**asdict(unpriced.cost_window), "cost_usd": None, "busy_cost_usd": None})
    unpriced = replace(
        unpriced,
        price=None,
        usd_per_hour_now=None,
        totals=replace(unpriced.totals, cost_usd=None, busy_cost_usd=None),
        cost_window=no_cost,
    )
    registry = registry_of(replace(demo_snapshot, gpus=(unpriced, *rest)))
    read = registry.get_sample_value
    for name in (
        "tokentop_gpu_cost_usd_total",
        "tokentop_gpu_busy_cost_usd_total",
        "tokentop_gpu_usd_per_hour",
        "tokentop_gpu_usd_per_million_tokens",
    ):
        assert read(name, gpu_labels(unpriced)) is None, name
        assert read(name, gpu_labels(rest[0])) is not None, name
    # Its tokens, energy and time are still published, and it says it has no price.
    assert read("tokentop_gpu_tokens_total", gpu_labels(unpriced, direction="out")) == unpriced.totals.tokens_out
    assert read("tokentop_gpu_energy_joules_total", gpu_labels(unpriced)) == unpriced.totals.energy_j
    info = gpu_labels(unpriced, name=unpriced.sample.name, price_source="none")
    assert read("tokentop_gpu_info", {**info, "energy_method": "counter", "engines": "llama-70b"}) == 1.0


def test_gpu_memory_and_temperature_are_published_as_read(demo_snapshot: Snapshot) -> None:
    read = registry_of(demo_snapshot).get_sample_value
    for gpu in demo_snapshot.gpus:
        sample = gpu.sample
        assert sample.memory_used_bytes and sample.memory_total_bytes and sample.temperature_c
        assert read("tokentop_gpu_memory_used_bytes", gpu_labels(gpu)) == sample.memory_used_bytes
        assert read("tokentop_gpu_memory_total_bytes", gpu_labels(gpu)) == sample.memory_total_bytes
        assert read("tokentop_gpu_temperature_celsius", gpu_labels(gpu)) == sample.temperature_c


def test_an_unknown_reading_is_left_out_never_written_as_zero(demo_snapshot: Snapshot) -> None:
    gpu = demo_snapshot.gpus[0]
    unknown = {"power_w": None, "utilization_pct": None, "temperature_c": None}
    blind = replace(gpu, sample=replace(gpu.sample, **unknown, memory_used_bytes=None, memory_total_bytes=None))
    registry = registry_of(replace(demo_snapshot, gpus=(blind,)))
    for name in (
        "tokentop_gpu_power_watts",
        "tokentop_gpu_utilization_ratio",
        "tokentop_gpu_memory_used_bytes",
        "tokentop_gpu_memory_total_bytes",
        "tokentop_gpu_temperature_celsius",
    ):
        assert registry.get_sample_value(name, gpu_labels(blind)) is None, name
    assert registry.get_sample_value("tokentop_gpu_energy_joules_total", gpu_labels(blind)) == gpu.totals.energy_j


# --- the server: HEAD, a burst of scrapers, the windows' real span, the warning (issue 9, 11) ---


def test_window_gauges_publish_the_span_the_window_covers_not_its_configured_length(
    demo_snapshot: Snapshot,
) -> None:
    registry = registry_of(demo_snapshot)
    read = registry.get_sample_value
    host = demo_snapshot.host
    assert host.cost_window.span_s < demo_snapshot.cost_window_s  # 12 ticks: the 60 s window is filling
    assert read("tokentop_cost_window_seconds", {"host": "host-a"}) == host.cost_window.span_s
    assert read("tokentop_rate_window_seconds", {"host": "host-a"}) == host.rate_window.span_s


@pytest.fixture
def served(demo_snapshot: Snapshot) -> Iterator[str]:
    """A real exporter server over a fixed snapshot; yields its base URL."""
    server = exporter.serve(SimpleNamespace(latest=demo_snapshot), "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_head_is_answered_like_get_without_the_body(served: str) -> None:
    get = httpx.get(served + "/metrics", timeout=5)
    head = httpx.head(served + "/metrics", timeout=5)
    assert get.status_code == head.status_code == 200
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) == len(get.content) and head.content == b""
    assert httpx.get(served + "/other", timeout=5).status_code == 404


def _burst(port: int, clients: int) -> list[float | None]:
    """``clients`` connections opened at once, each sending one GET; per connection the seconds
    until its whole 200 answer arrived, or None (no answer within 5 s)."""
    selector = selectors.DefaultSelector()
    answers: dict[socket.socket, bytearray] = {}
    started = time.monotonic()
    for _ in range(clients):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
        answers[sock] = bytearray()
    took: dict[socket.socket, float] = {}
    while len(took) < clients and time.monotonic() - started < 5:
        for key, events in selector.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if events & selectors.EVENT_WRITE:
                sock.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                selector.modify(sock, selectors.EVENT_READ)
                continue
            chunk = sock.recv(1 << 16)
            answers[sock] += chunk
            if not chunk:
                selector.unregister(sock)
                took[sock] = time.monotonic() - started
    for sock in answers:
        sock.close()
    return [took[s] if s in took and answers[s].startswith(b"HTTP/1.0 200") else None for s in answers]


def test_a_burst_of_200_scrapers_is_answered_within_a_second_each(served: str) -> None:
    """prometheus_client's server listened with a backlog of 5: in a burst, the connections past
    it waited for the client's SYN retry (1 s, then 3 s) or got no answer at all."""
    took = _burst(int(served.rsplit(":", 1)[1]), 200)
    assert None not in took, f"{took.count(None)} of 200 got no answer"
    assert max(t for t in took if t is not None) < 1.0


def _export_stderr(listen: str) -> str:
    """What ``export --listen LISTEN`` says on stderr, once it has served a reading."""
    with start_export("--demo", "--no-history", "--listen", listen) as process:
        assert process.stderr is not None
        first = process.stderr.readline()
        port = re.search(r":(\d+)/metrics", first)
        assert port, first
        loopback = "[::1]" if listen.startswith("[") else "127.0.0.1"
        deadline = time.monotonic() + 20
        while not by_gpu(scrape(f"http://{loopback}:{port.group(1)}/metrics")[1], "tokentop_gpu_power_watts"):
            assert time.monotonic() < deadline, "no reading after 20 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()  # not communicate(): it would miss what readline() buffered
        assert process.wait(timeout=30) == 0, first + rest
    return first + rest


def test_serving_beyond_loopback_warns_in_one_line() -> None:
    err = _export_stderr("0.0.0.0:0")
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert "reachable beyond this machine" in warning and "anyone who reaches the port" in warning
    assert "warning" not in _export_stderr("127.0.0.1:0")


def test_serving_on_every_ipv6_interface_warns_too() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    err = _export_stderr("[::]:0")
    assert "serving http://[::]:" in err and "reachable beyond this machine" in err


def test_export_says_an_endpoint_going_down_once_on_stderr() -> None:
    with LoopbackServer() as server:
        server.route("/metrics", 'vllm:num_requests_running{model_name="m"} 1\n')
        process = start_export("--no-history", "--listen", "127.0.0.1:0", "--interval", "0.2", "--endpoint", server.url)
        try:
            assert process.stderr is not None
            assert "serving" in process.stderr.readline()
            time.sleep(1.0)
            server.route("/metrics", Reply(drop=True))  # it stops answering
            time.sleep(7.0)  # stale for 5 s (STALE_AFTER_S), then down for good
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        except BaseException:
            process.kill()
            raise
    assert process.returncode == 0, err
    assert err.count("is down") == 1, err
