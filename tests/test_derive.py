"""derive: counter deltas, resets, in-flight progress, energy, attribution, cost and windows."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokentop.config import CostConfig
from tokentop.derive import (
    DeliveredCounter,
    Deriver,
    EnergyStep,
    Point,
    Ring,
    energy_delta_j,
    histogram_quantile,
    host_tick,
)
from tokentop.model import EndpointSample, EngineMapping, GpuReading, GpuSample, Histogram, Totals, Window
from tokentop.snapshot_json import snapshot_dict

H200 = "NVIDIA H200"


def gpu(
    uuid: str, index: int, *, power: float | None = 500.0, energy_mj: int | None = None, name: str = H200
) -> GpuSample:
    return GpuSample(uuid=uuid, index=index, name=name, power_w=power, energy_counter_mj=energy_mj)


def server(
    name: str,
    t: float,
    prompt: float | None,
    gen: float | None,
    *,
    running: float = 0,
    gen_in_flight: float | None = None,
    ttft: Histogram | None = None,
) -> EndpointSample:
    return EndpointSample(
        name=name,
        url=f"http://x/{name}",
        t_mono=t,
        status="up",
        kind="vllm",
        prompt_tokens_total=prompt,
        generation_tokens_total=gen,
        running=running,
        generation_tokens_in_flight=gen_in_flight,
        ttft=ttft,
    )


# --- the delivered-tokens counter -------------------------------------------------------


def feed(counter: DeliveredCounter, *readings: tuple[float | None, float | None]) -> list[float]:
    """Readings one second apart, after those the counter has seen; what each one added."""
    start = counter.last_t + 1.0
    return [counter.update(raw, in_flight, start + i) for i, (raw, in_flight) in enumerate(readings)]


def test_counter_baseline_then_deltas() -> None:
    c = DeliveredCounter()
    assert feed(c, (1000, None), (1100, None), (1100, None)) == [0, 100, 0]  # 1000 from before we watched
    assert c.delivered == 100


def test_counter_reset_counts_new_value_from_zero_never_negative() -> None:
    c = DeliveredCounter()
    feed(c, (5000, None), (5200, None))
    assert feed(c, (30, None), (80, None)) == [30, 50]  # restarted: 30 tokens since the restart
    assert c.delivered == 200 + 30 + 50


def test_in_flight_progress_is_live_and_never_counted_twice() -> None:
    # llama.cpp: the counter moves only when a request ends; /slots shows progress meanwhile.
    c = DeliveredCounter()
    feed(c, (64, 0))
    assert feed(c, (64, 40), (64, 120)) == [40, 80]  # live: 40 tokens decoded so far
    assert feed(c, (264, 0)) == [80]  # request ended with 200 tokens: only the rest is new
    assert c.delivered == 200


def test_request_ending_between_the_two_reads_dips_but_never_double_counts() -> None:
    c = DeliveredCounter()
    feed(c, (0, 0), (0, 150))
    assert feed(c, (0, 0)) == [0]  # ended after /metrics was read, before /slots: seen in neither
    assert feed(c, (200, 0)) == [50]  # next tick: the counter has it; only the 50 not yet seen
    assert c.delivered == 200


def test_progress_only_when_metrics_are_off() -> None:
    c = DeliveredCounter()
    assert feed(c, (None, 10), (None, 50), (None, 0)) == [0, 40, 0]  # finished: nothing negative


def test_unknown_counter_changes_nothing() -> None:
    c = DeliveredCounter()
    assert feed(c, (10, None), (None, None), (15, None)) == [0, 0, 5]


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=60))
def test_property_delivered_matches_prometheus_increase(values: list[int]) -> None:
    """Without a ceiling, delivered = sum of increases, a decrease counting the new value
    (Prometheus rate())."""
    c = DeliveredCounter(max_tok_s=math.inf)
    expected = 0
    for prev, cur in itertools.pairwise(values):
        expected += cur - prev if cur >= prev else cur
    total = sum(feed(c, *((v, None) for v in values)))
    assert total == expected == c.delivered
    assert c.delivered >= 0


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=40))
def test_property_requests_with_progress_end_exact(requests: list[tuple[int, int]]) -> None:
    """Requests decode step by step (progress), then land in the counter: total is exact."""
    c = DeliveredCounter()
    counter = 0
    feed(c, (counter, 0))
    for length, _ in requests:
        for done in range(0, length, max(1, length // 3)):
            assert feed(c, (counter, done))[0] >= 0
        counter += length
        feed(c, (counter, 0))
    assert c.delivered == sum(length for length, _ in requests)


# --- energy -----------------------------------------------------------------------------


def test_energy_from_counter_difference() -> None:
    step = energy_delta_j(gpu("a", 0, energy_mj=1_000_000), gpu("a", 0, energy_mj=1_500_000), 1.0)
    assert step == EnergyStep(500.0, "counter")


def test_energy_counter_reset_falls_back_to_power_trapezoid() -> None:
    prev = gpu("a", 0, power=400, energy_mj=9_000_000)
    cur = gpu("a", 0, power=600, energy_mj=1_000)
    assert energy_delta_j(prev, cur, 2.0) == EnergyStep(1000.0, "power_integral")


def test_energy_without_counter_or_power() -> None:
    assert energy_delta_j(gpu("a", 0, power=300), gpu("a", 0, power=300), 1.5) == EnergyStep(450.0, "power_integral")
    assert energy_delta_j(gpu("a", 0, power=None), gpu("a", 0, power=None), 1.0) == EnergyStep(0.0, None)


# --- histograms -------------------------------------------------------------------------


def test_histogram_quantile_interpolates_and_uses_window_delta() -> None:
    base = Histogram(((0.1, 0), (0.5, 0), (1.0, 0), (float("inf"), 0)), 0, 0)
    now = Histogram(((0.1, 10), (0.5, 90), (1.0, 100), (float("inf"), 100)), 30, 100)
    assert histogram_quantile(0.5, now, base) == pytest.approx(0.1 + 0.4 * 40 / 80)
    old = Histogram(((0.1, 10), (0.5, 90), (1.0, 100), (float("inf"), 100)), 30, 100)
    later = Histogram(((0.1, 10), (0.5, 90), (1.0, 200), (float("inf"), 200)), 90, 200)
    assert histogram_quantile(0.5, later, old) == pytest.approx(0.75)  # only the new 100
    assert histogram_quantile(0.5, old, old) is None  # nothing observed in the window


# --- the whole step ---------------------------------------------------------------------


def _reading(t: float, samples: list[GpuSample]) -> GpuReading:
    return GpuReading(t_mono=t, gpus=tuple(samples))


def test_tp2_engine_split_over_its_gpus_idle_gpu_gets_none_and_host_is_sum() -> None:
    cost = CostConfig(gpu_hour_usd={"H200": 3.6}, energy_in_rate=True)
    d = Deriver(cost, rate_window_s=10, cost_window_s=60)
    mapping = {"tp2": EngineMapping(("a", "b"), "config")}
    for step in range(11):
        t = float(step)
        gpus = [gpu(u, i, power=500, energy_mj=int(500_000 * t)) for i, u in enumerate("abc")]
        snap = d.step(_reading(t, gpus), (server("tp2", t, 300 * t, 1000 * t, running=8),), mapping, 1e9 + t)
    a, b, c = snap.gpus
    assert a.rate_window.tok_s_out == pytest.approx(500) and b.rate_window.tok_s_out == pytest.approx(500)
    assert c.rate_window.tok_s_out == 0 and c.cost_window.usd_per_mtok is None  # idle: "idle", not infinity
    assert a.engines == ("tp2",) and c.engines == ()
    assert a.energy_method == "counter" and a.rate_window.watts == pytest.approx(500)
    assert a.cost_window.tok_per_j == pytest.approx(1.0)
    # $3.60/h = $0.001/s; 500 tok/s -> $2/Mtok on each engine GPU.
    assert a.cost_window.usd_per_mtok == pytest.approx(2.0)
    # Host: 3 GPUs' cost over the engine's 1000 tok/s: 3 x 0.001 / 1000 x 1e6 = $3/Mtok.
    assert snap.host.cost_window.usd_per_mtok == pytest.approx(3.0)
    assert snap.host.rate_window.tok_s_out == pytest.approx(1000)
    assert snap.host.totals.tokens_out == pytest.approx(10_000)
    assert c.cost_window.idle_cost_usd == pytest.approx(c.cost_window.cost_usd)
    assert a.cost_window.busy_share == pytest.approx(1.0) and c.cost_window.busy_share == 0


def test_data_parallel_endpoints_add_up_on_the_host() -> None:
    d = Deriver(CostConfig())
    mapping = {"r0": EngineMapping(("a",), "process"), "r1": EngineMapping(("b",), "process")}
    for t in (0.0, 1.0, 2.0):
        gpus = [gpu("a", 0), gpu("b", 1)]
        snap = d.step(_reading(t, gpus), (server("r0", t, 0, 100 * t), server("r1", t, 0, 300 * t)), mapping, t)
    assert snap.host.rate_window.tok_s_out == pytest.approx(400)
    assert [g.rate_window.tok_s_out for g in snap.gpus] == pytest.approx([100, 300])


def test_rates_divide_by_measured_interval_not_configured() -> None:
    d = Deriver(CostConfig())
    m = {"e": EngineMapping(("a",), "config")}
    d.step(_reading(0.0, [gpu("a", 0)]), (server("e", 0.0, 0, 0),), m, 0)
    snap = d.step(_reading(2.5, [gpu("a", 0)]), (server("e", 2.5, 0, 500),), m, 2.5)  # a late tick
    assert snap.dt_s == 2.5
    assert snap.gpus[0].rate_window.tok_s_out == pytest.approx(200)


def test_engine_restart_mid_run_neither_loses_nor_doubles() -> None:
    d = Deriver(CostConfig())
    m = {"e": EngineMapping(("a",), "config")}
    counters = [1000, 1100, 1200, 50, 150]  # restarted between t=2 and t=3
    for t, value in enumerate(counters):
        snap = d.step(_reading(float(t), [gpu("a", 0)]), (server("e", float(t), 0, value),), m, t)
    assert snap.endpoints[0].tokens_out_total == 100 + 100 + 50 + 100
    assert snap.gpus[0].totals.tokens_out == 350


def test_unknown_gpu_model_has_no_cost_and_says_so() -> None:
    d = Deriver(CostConfig())
    for t in (0.0, 1.0):
        snap = d.step(_reading(t, [gpu("a", 0, name="Tesla T4"), gpu("b", 1)]), (), {}, t)
    t4, h200 = snap.gpus
    assert t4.price is None and t4.totals.cost_usd is None and t4.cost_window.usd_per_mtok is None
    assert h200.price is not None and h200.totals.cost_usd > 0
    assert snap.host.totals.cost_usd is None  # a host total that leaves a GPU out would lie
    assert snap.host.unpriced_gpus == ("a",)
    assert any("Tesla T4" in m and "gpu_hour_usd" in m for m in snap.messages)


def test_no_gpus_still_counts_engine_tokens() -> None:
    d = Deriver(CostConfig())
    for t in (0.0, 1.0, 2.0):
        snap = d.step(GpuReading(t, (), available=False, reason="no driver"), (server("cpu", t, 5 * t, 60 * t),), {}, t)
    assert snap.host.rate_window.tok_s_out == pytest.approx(60)
    assert snap.host.cost_window.cost_usd is None and snap.gpu_reason == "no driver"


def test_lost_gpu_keeps_costing_and_others_keep_counting() -> None:
    d = Deriver(CostConfig(gpu_hour_usd={"H200": 3.6}, energy_in_rate=True))
    d.step(_reading(0.0, [gpu("a", 0, energy_mj=0), gpu("b", 1, energy_mj=0)]), (), {}, 0)
    lost = GpuSample(uuid="b", index=1, name=H200, status="lost", error="GPU is lost")
    snap = d.step(_reading(1.0, [gpu("a", 0, energy_mj=500_000), lost]), (), {}, 1)
    assert snap.gpus[0].rate_window.energy_j == pytest.approx(500)
    assert snap.gpus[1].sample.status == "lost"
    assert snap.gpus[1].totals.cost_usd == pytest.approx(0.001)  # rent does not stop


def test_ttft_percentiles_over_the_cost_window() -> None:
    d = Deriver(CostConfig(), cost_window_s=60)
    empty = Histogram(((0.1, 0), (1.0, 0), (float("inf"), 0)), 0, 0)
    full = Histogram(((0.1, 50), (1.0, 100), (float("inf"), 100)), 20, 100)
    d.step(_reading(0.0, []), (server("e", 0.0, 0, 0, ttft=empty),), {}, 0)
    snap = d.step(_reading(1.0, []), (server("e", 1.0, 0, 0, ttft=full),), {}, 1)
    assert snap.endpoints[0].ttft_p50_s == pytest.approx(0.1)
    assert snap.endpoints[0].ttft_p95_s == pytest.approx(0.1 + 0.9 * 45 / 50)


def test_carried_histograms_give_new_percentiles_when_the_window_slides_past_a_read() -> None:
    """Histograms are carried forward between reads (the same object tick after tick); the
    percentiles are reused only while the window starts at the same reading too."""
    d = Deriver(CostConfig(), cost_window_s=2)
    empty = Histogram(((0.1, 0), (1.0, 0), (float("inf"), 0)), 0, 0)
    fast = Histogram(((0.1, 10), (1.0, 10), (float("inf"), 10)), 0.5, 10)  # 10 under 0.1 s
    slow = Histogram(((0.1, 10), (1.0, 20), (float("inf"), 20)), 5.5, 20)  # then 10 more under 1 s
    p50 = []
    for t, hist in enumerate((empty, fast, fast, slow, slow, slow, slow)):
        snap = d.step(_reading(float(t), []), (server("e", float(t), 0, 0, ttft=hist),), {}, t)
        p50.append(snap.endpoints[0].ttft_p50_s)
    # the window starts at the reading at or before t - 2 s: t=0 for t=0..2 (empty -> fast);
    # t=1 (fast) at t=3 and t=2 (the same fast object) at t=4, -> slow; then slow -> the same
    # slow: nothing observed in the window, though the newest histogram is the one of t=4
    assert p50[0] is None
    assert p50[1] == p50[2] == pytest.approx(0.05)
    assert p50[3] == p50[4] == pytest.approx(0.1 + 0.9 * 5 / 10)
    assert p50[5] is None and p50[6] is None


def test_host_is_the_sum_of_its_gpus_and_an_unmapped_endpoint_is_named() -> None:
    d = Deriver(CostConfig())
    mapping = {"local": EngineMapping(("a",), "process")}  # "remote" is mapped to nothing
    for t in (0.0, 1.0, 2.0):
        gpus = [gpu("a", 0), gpu("b", 1)]
        snap = d.step(
            _reading(t, gpus), (server("local", t, 0, 100 * t, running=1), server("remote", t, 0, 900 * t)), mapping, t
        )
    assert snap.host.totals.tokens_out == sum(g.totals.tokens_out for g in snap.gpus) == 200
    assert snap.host.totals.busy_s == pytest.approx(2.0)  # busy GPU-seconds: one of two GPUs, for 2 s
    assert snap.host.cost_window.busy_share == pytest.approx(0.5)
    assert any("remote" in m and "no known GPU" in m for m in snap.messages)
    assert not any("local" in m for m in snap.messages)


def test_busy_time_is_gpu_seconds_for_the_host_as_for_each_gpu_in_the_snapshot_json() -> None:
    """Issue 9 item 15: one meaning, and the key says it (snapshot JSON schema 2)."""
    d = Deriver(CostConfig())
    mapping = {"local": EngineMapping(("a",), "process")}
    for t in (0.0, 1.0, 2.0):
        snap = d.step(_reading(t, [gpu("a", 0), gpu("b", 1)]), (server("local", t, 0, 100 * t, running=1),), mapping, t)
    data = snapshot_dict(snap, CostConfig())
    assert data["schema_version"] == 2
    assert [g["session"]["busy_gpu_s"] for g in data["gpus"]] == [2.0, 0.0]
    assert data["host"]["session"]["busy_gpu_s"] == 2.0 and "busy_s" not in data["host"]["session"]
    assert data["host"]["cost_window"]["busy_pct"] == pytest.approx(50.0)  # over 4 watched GPU-seconds


def test_endpoint_and_gpu_rates_share_one_window_even_when_it_outlasts_the_cost_window() -> None:
    d = Deriver(CostConfig(), rate_window_s=30, cost_window_s=10)
    m = {"e": EngineMapping(("a",), "config")}
    for step in range(31):
        t = float(step)
        snap = d.step(_reading(t, [gpu("a", 0)]), (server("e", t, 0, 100 * min(t, 20.0)),), m, t)
    assert snap.endpoints[0].tok_s_out == pytest.approx(2000 / 30)
    assert snap.gpus[0].rate_window.tok_s_out == pytest.approx(2000 / 30)


# --- the pieces of the step -------------------------------------------------------------


def test_ring_window_starts_exactly_its_length_back_else_at_the_oldest_point() -> None:
    ring = Ring(keep_s=5.0)
    for t in range(8):
        ring.push(Point(float(t), Totals(tokens_out=10.0 * t)))
    assert [p.t for p in ring.points] == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # one point older than 5 s kept
    assert ring.window(2.0) == Window(2.0, 0.0, 20.0, 0.0, 0.0, 0.0, 0.0)
    assert ring.window(2.5) == Window(2.5, 0.0, 25.0, 0.0, 0.0, 0.0, 0.0)  # from 4.5, between two readings
    assert ring.reading_before(2.5).t == 4.0  # where the window's latency percentiles start
    assert ring.window(60.0).span_s == 5.0  # the ring is still filling: from the oldest point
    assert ring.window(3.0).tok_s_out == pytest.approx(10.0)


def test_host_tick_sums_its_gpus_busy_time_in_gpu_seconds() -> None:
    busy = (1.0, 10.0, 90.0, 500.0, 0.002, 1.0, 0.002)  # a GPU's tick: a Window's first seven figures
    idle = (1.0, 0.0, 0.0, 100.0, 0.001, 0.0, 0.0)
    host = host_tick([busy, idle])
    assert (host.tokens_out, host.energy_j, host.cost_usd) == (90.0, 600.0, pytest.approx(0.003))
    assert (host.busy_s, host.watched_gpu_s, host.busy_share) == (1.0, 2.0, 0.5)
    assert host.busy_cost_usd == pytest.approx(0.002)
    unpriced = host_tick([busy, (1.0, 0.0, 0.0, 100.0, None, 0.0, 0.0)])
    assert unpriced.cost_usd is None and unpriced.busy_cost_usd is None  # never a partial host cost
