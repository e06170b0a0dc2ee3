"""Agentless fleet: a real Prometheus scraping scripted dcgm-exporter and vLLM pages, against hand
arithmetic.

Host gpu-a: 2 H100 (built-in $2.50/GPU-h) held by pod default/vllm-70b (dcgm-exporter < 4.9:
energy in mJ, utilisation in %; its pod labels arrive as exported_* because the scrape's own
target labels name the exporter's pod), joined by pod to a vLLM at 1000 output tok/s.
Host gpu-b: 1 H200 ($3.50) without pods (4.9.0 layout: energy in J, utilisation 0-1,
``hostname``), joined by host to a vLLM at 500 tok/s. Every page publishes explicit whole-second
timestamps with counters linear in them, so ``increase()`` over a range ending on a sample is
exactly rate x range and the arithmetic below holds to float precision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from loopback import LoopbackServer, Reply
from prometheus_harness import (
    DCGM_TEMPLATE,
    H200_MIB,
    VLLM_GAUGES,
    Job,
    Prometheus,
    Unavailable,
    agentless_jobs,
    dcgm_490,
    dcgm_before_490,
    dcgm_mig_and_sliced,
    server_page,
    sglang_dp_attention_page,
    unavailable,
)

from tokentop.config import Config, PrometheusConfig
from tokentop.fleet.model import FleetHost
from tokentop.fleet.prometheus_source import PrometheusSource
from tokentop.fleet.prometheus_summary import summarize

T0 = time.time() - 10_000  # counters as if the servers had run for hours
TOK_A, TOK_B = 1000.0, 500.0  # output tok/s
W_A, W_B = 400.0, 300.0  # per GPU

# Observations a second at or below each bound. TTFT: p50 = 0.05 + 0.05 x (5 - 2) / (6 - 2) =
# 0.0875 s, p95 = 0.25 + 0.25 x (9.5 - 9) / (10 - 9) = 0.375 s. ITL p50: 0.01 + 0.01 x (100 - 50) /
# (150 - 50) = 0.015 s by the newer name, which gpu-a's vLLM also publishes under the older one
# (read only where the newer is missing, as on gpu-b: 0.02 + 0.03 x 100 / 200 = 0.035 s).
TTFT = {"0.05": 2.0, "0.1": 6.0, "0.25": 9.0, "0.5": 10.0, "+Inf": 10.0}
ITL_NEW = {"0.01": 50.0, "0.02": 150.0, "+Inf": 200.0}
ITL_OLD = {"0.01": 0.0, "0.02": 0.0, "0.05": 200.0, "+Inf": 200.0}
LATENCY_A = {
    "time_to_first_token_seconds": TTFT,
    "inter_token_latency_seconds": ITL_NEW,
    "time_per_output_token_seconds": ITL_OLD,
}
TTFT_IDLE = dict.fromkeys(TTFT, 0.0)  # no observation in any window: no figure
LATENCY_B = {"time_to_first_token_seconds": TTFT_IDLE, "time_per_output_token_seconds": ITL_OLD}


@dataclass
class Agentless:
    prometheus: Prometheus
    started: int


@pytest.fixture(scope="module")
def agentless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agentless]:
    page = DCGM_TEMPLATE.read_text()
    with LoopbackServer() as pages:
        pages.route("/a/dcgm", lambda seen: Reply(body=dcgm_before_490(page, int(time.time()), T0, W_A)))
        pages.route("/b/dcgm", lambda seen: Reply(body=dcgm_490(page, int(time.time()), T0, W_B)))
        pages.route("/a/vllm", lambda seen: Reply(body=server_page("vllm", TOK_A, int(time.time()), T0, LATENCY_A)))
        pages.route("/b/vllm", lambda seen: Reply(body=server_page("vllm", TOK_B, int(time.time()), T0, LATENCY_B)))
        target = (pages.url.removeprefix("http://"),)
        jobs = agentless_jobs(target)
        prometheus = None
        reason = None
        try:
            prometheus = Prometheus(tmp_path_factory.mktemp("agentless"), jobs)
            prometheus.start()
        except Unavailable as exc:
            reason = str(exc)
        if reason is not None or prometheus is None:
            unavailable(reason or "not started")
        assert prometheus is not None
        try:
            prometheus.wait_for(
                "count(DCGM_FI_DEV_POWER_USAGE) + count(vllm:generation_tokens_total)",
                lambda r: bool(r) and r[0]["value"][1] == "5",
            )
            yield Agentless(prometheus, int(time.time()))
        finally:
            prometheus.stop()


def config(url: str, cost_window_s: float = 6.0) -> Config:
    return Config(prometheus=PrometheusConfig(url=url, cost_window_s=cost_window_s, rate_window_s=4.0))


MIB = 1 << 20


def read_hosts(url: str) -> dict[str, FleetHost]:
    src = PrometheusSource(config(url), stale_after_s=5.0)
    reading = src.read()
    src.close()
    assert reading.mode == "agentless" and reading.status is None, reading.status
    return {h.name: h for h in reading.hosts}


HAND_A = 2 * 2.50 / 3600 / TOK_A * 1e6  # $/Mtok: two H100s' hour rate over 1000 tok/s
HAND_B = 3.50 / 3600 / TOK_B * 1e6
HAND_FLEET = (2 * 2.50 + 3.50) / 3600 / (TOK_A + TOK_B) * 1e6


def test_agentless_summary_equals_hand_arithmetic(agentless: Agentless) -> None:
    until = agentless.started + 8
    time.sleep(max(0.0, until + 2.5 - time.time()))
    summary = summarize(config(agentless.prometheus.url), until - 6, until)
    assert summary.mode == "agentless"
    hosts = {h.name: h for h in summary.hosts}
    assert set(hosts) == {"gpu-a", "gpu-b"}
    a, b = hosts["gpu-a"].figures, hosts["gpu-b"].figures
    assert a is not None and b is not None and summary.fleet is not None
    assert a.tokens_out == pytest.approx(TOK_A * 6, rel=1e-9) and b.tokens_out == pytest.approx(TOK_B * 6, rel=1e-9)
    assert a.usd_per_mtok == pytest.approx(HAND_A, rel=1e-9)
    assert b.usd_per_mtok == pytest.approx(HAND_B, rel=1e-9)
    assert summary.fleet.usd_per_mtok == pytest.approx(HAND_FLEET, rel=1e-9)
    assert a.tok_per_j == pytest.approx(TOK_A / (2 * W_A), rel=1e-9)  # mJ counter read as mJ
    assert b.tok_per_j == pytest.approx(TOK_B / W_B, rel=1e-9)  # J counter (4.9.0) read as J
    assert a.busy_pct == pytest.approx(100.0) and a.busy_usd_per_mtok == pytest.approx(HAND_A, rel=1e-9)


def test_agentless_reading_joins_by_pod_and_by_host(agentless: Agentless) -> None:
    time.sleep(max(0.0, agentless.started + 7 - time.time()))
    src = PrometheusSource(config(agentless.prometheus.url), stale_after_s=5.0)
    reading = src.read()
    src.close()
    assert reading.mode == "agentless" and reading.status is None, reading.status
    hosts = {h.name: h for h in reading.hosts}
    a, b = hosts["gpu-a"], hosts["gpu-b"]
    assert a.join == "pod" and b.join == "host"
    assert a.snapshot is not None and b.snapshot is not None
    assert [e.gpus for e in a.snapshot.endpoints] == [tuple(sorted(g.sample.uuid for g in a.snapshot.gpus))]  # TP=2
    assert a.snapshot.host.power_w == 2 * W_A and b.snapshot.host.power_w == W_B  # sentinel never a reading
    assert [g.sample.utilization_pct for g in a.snapshot.gpus] == [87.0, 85.0]
    assert b.snapshot.gpus[0].sample.utilization_pct == 50.0
    # read "now", between two whole-second samples: a 6 s window can miss up to one 1 s scrape
    # interval plus the rounding of the timestamps at its ends (the summary above is exact)
    assert a.snapshot.host.cost_window.usd_per_mtok == pytest.approx(HAND_A, rel=0.35)
    assert reading.fleet.usd_per_mtok is not None and math.isfinite(reading.fleet.usd_per_mtok)
    assert a.engines_up == 1 and b.engines_up == 1


def test_latency_and_engine_gauges_are_the_servers_own(agentless: Agentless) -> None:
    time.sleep(max(0.0, agentless.started + 2 - time.time()))
    hosts = read_hosts(agentless.prometheus.url)
    a, b = hosts["gpu-a"].snapshot, hosts["gpu-b"].snapshot
    assert a is not None and b is not None
    (at_a,), (at_b,) = a.endpoints, b.endpoints
    assert at_a.ttft_p50_s == pytest.approx(0.0875, rel=1e-9) and at_a.ttft_p95_s == pytest.approx(0.375, rel=1e-9)
    assert at_a.itl_p50_s == pytest.approx(0.015, rel=1e-9)  # the newer name first
    assert at_b.ttft_p50_s is None and at_b.ttft_p95_s is None  # an idle histogram
    assert at_b.itl_p50_s == pytest.approx(0.035, rel=1e-9)  # the older name where it is the only one
    running, waiting, kv = (
        VLLM_GAUGES[name] for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")
    )
    for endpoint in (at_a, at_b):  # engines summed, the fuller engine's KV
        assert (endpoint.sample.running, endpoint.sample.waiting) == (sum(running), sum(waiting))
        assert endpoint.sample.kv_cache_fraction == max(kv)


def test_memory_and_temperature_are_read_in_mib_and_in_bytes(agentless: Agentless) -> None:
    time.sleep(max(0.0, agentless.started + 2 - time.time()))
    hosts = read_hosts(agentless.prometheus.url)
    a, b = hosts["gpu-a"].snapshot, hosts["gpu-b"].snapshot
    assert a is not None and b is not None
    seen = [(g.sample.memory_used_bytes, g.sample.memory_total_bytes, g.sample.temperature_c) for g in a.gpus]
    assert seen == [(74_215 * MIB, 81_026 * MIB, 61.0), (73_987 * MIB, 81_026 * MIB, 58.0)]  # MiB (< 4.9.0)
    h200 = b.gpus[0].sample  # bytes (4.9.0), the reserved part counted as used, as NVML's v1 counts it
    used = H200_MIB["DCGM_FI_DEV_FB_USED"] + H200_MIB["DCGM_FI_DEV_FB_RESERVED"]
    assert (h200.memory_used_bytes, h200.memory_total_bytes) == (used * MIB, 143_771 * MIB)
    assert h200.temperature_c == 61.0


@pytest.fixture(scope="module")
def mig_and_sliced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus over one host's dcgm-exporter, a MIG A100 and a time-sliced H100, and an
    SGLang with DP attention on the A100's first instance (``sglang_dp_attention_page``)."""
    with LoopbackServer() as pages:
        pages.route("/m/dcgm", lambda seen: Reply(body=dcgm_mig_and_sliced(int(time.time()))))
        pages.route("/m/sglang", lambda seen: Reply(body=sglang_dp_attention_page(int(time.time()), T0)))
        target = (pages.url.removeprefix("http://"),)
        jobs = [
            Job("dcgm-m", target, {"instance": "gpu-m:9400"}, "/m/dcgm", honor_labels=True),
            Job("sglang-a", target, {"instance": "10.0.0.9:30000", "pod": "a", "namespace": "ml"}, "/m/sglang"),
        ]
        prometheus = Prometheus(tmp_path_factory.mktemp("mig"), jobs)
        try:
            prometheus.start()
        except Unavailable as exc:
            unavailable(str(exc))
        try:
            both = "count(DCGM_FI_DEV_FB_USED) + count(sglang:num_running_reqs)"
            prometheus.wait_for(both, lambda r: bool(r) and r[0]["value"][1] == "10")
            yield prometheus
        finally:
            prometheus.stop()


def test_a_mig_gpus_memory_is_its_instances_summed_and_a_time_sliced_gpus_taken_once(
    mig_and_sliced: Prometheus,
) -> None:
    gpus = read_hosts(mig_and_sliced.url)["gpu-m"].snapshot
    assert gpus is not None
    mig, sliced = (g.sample for g in gpus.gpus)
    assert (mig.memory_used_bytes, mig.memory_total_bytes) == ((30_000 + 12_000) * MIB, 2 * 40_192 * MIB)
    assert (sliced.memory_used_bytes, sliced.memory_total_bytes) == (50_000 * MIB, 81_026 * MIB)
    assert (mig.temperature_c, sliced.temperature_c) == (55.0, 66.0)
    assert (mig.power_w, sliced.power_w) == (250.0, 350.0)  # repeated per row, never summed


def test_sglang_dp_attention_ranks_are_summed_and_their_repeats_are_not(mig_and_sliced: Prometheus) -> None:
    time.sleep(2)  # a rate window of samples
    host = read_hosts(mig_and_sliced.url)["gpu-m"].snapshot
    assert host is not None
    (sglang,) = host.endpoints
    assert sglang.sample.name == "ml/a" and sglang.gpus == ("GPU-a100a100",)
    assert (sglang.sample.running, sglang.sample.kv_cache_fraction) == (7.0, 0.5)  # as the local reader
    assert sglang.tok_s_out == pytest.approx(100.0, rel=0.35)
