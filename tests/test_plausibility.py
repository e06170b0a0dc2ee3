"""Readings that cannot be true are not believed (issue 9: "A monitor that cannot be turned against
its user"): nothing non-finite leaves the Deriver (item 3), implausible counter jumps and dips
and energy spikes are left out and said once (item 4), windows span their stated length
(item 13), and an engine that started during the session counts its first reading (item 14)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokentop import report
from tokentop.config import Config, CostConfig
from tokentop.derive import DeliveredCounter, Deriver
from tokentop.history import Store
from tokentop.model import EndpointSample, EngineMapping, GpuReading, GpuSample, Snapshot
from tokentop.snapshot_json import snapshot_dict

H200 = "NVIDIA H200"
MAPPING = {"e": EngineMapping(("a",), "config")}
T_WALL0 = 1_790_000_000.0


def endpoint(t: float, gen: float | None, *, start: float | None = None, prompt: float | None = 0.0) -> EndpointSample:
    return EndpointSample(
        name="e",
        url="http://x/metrics",
        t_mono=t,
        status="up",
        kind="vllm",
        prompt_tokens_total=prompt,
        generation_tokens_total=gen,
        running=1.0,
        process_start_time_s=start,
    )


def gpu(power: float = 500.0, energy_mj: int | None = None) -> GpuSample:
    return GpuSample(uuid="a", index=0, name=H200, power_w=power, power_limit_w=700.0, energy_counter_mj=energy_mj)


def run(
    counters: list[float | None],
    *,
    starts: list[float | None] | None = None,
    pids: list[int | None] | None = None,
    deriver: Deriver | None = None,
) -> list[Snapshot]:
    """One endpoint on GPU "a", one reading a second; the snapshots."""
    d = deriver or Deriver(CostConfig(gpu_hour_usd={"H200": 3.6}))
    snaps = []
    for i, value in enumerate(counters):
        t = float(i)
        start = starts[i] if starts else None
        mapping = {"e": EngineMapping(("a",), "process", pids[i])} if pids else MAPPING
        snaps.append(d.step(GpuReading(t, (gpu(),)), (endpoint(t, value, start=start),), mapping, T_WALL0 + t))
    return snaps


def about_the_endpoint(snaps: list[Snapshot], word: str) -> list[str]:
    return [m for s in snaps for m in s.messages if m.startswith("e: generation tokens counter") and word in m]


# The readings themselves, as the collectors and the NVML reader gave them (they refuse
# non-finite values before the Deriver; these tests hand it some anyway).
RAW_KEYS = {"power_w", "generation_tokens_counter", "prompt_tokens_counter"}


def assert_all_finite(snap: Snapshot) -> None:
    """Every derived figure of the snapshot, as JSON with NaN and infinity refused (as the
    history, the exporter and the screen need them)."""
    data = snapshot_dict(snap, CostConfig())
    for row in data["gpus"] + data["endpoints"]:
        for key in RAW_KEYS:
            row.pop(key, None)
    json.dumps(data, allow_nan=False)


# --- item 3: nothing non-finite -------------------------------------------------------------


def test_a_counter_alternating_near_the_largest_float_never_makes_a_non_finite_figure() -> None:
    snaps = run([1e308, 1.7e308] * 6)
    for snap in snaps:
        assert_all_finite(snap)
    assert snaps[-1].endpoints[0].tokens_out_total == 0
    assert snaps[-1].host.totals.tokens_out == 0
    assert about_the_endpoint(snaps, "jumped")


def test_an_infinite_counter_reading_is_ignored_and_said() -> None:
    snaps = run([100.0, 200.0, math.inf, math.inf, 300.0])
    for snap in snaps:
        assert_all_finite(snap)
    assert snaps[-1].endpoints[0].tokens_out_total == 200
    assert len(about_the_endpoint(snaps, "inf")) == 1  # once for the run of them, not every tick


def test_an_infinite_power_reading_leaves_the_gpu_tick_out_and_says_so_once() -> None:
    d = Deriver(CostConfig(gpu_hour_usd={"H200": 3.6}))
    powers = [500.0, 500.0, math.inf, math.inf, 500.0, 500.0]
    snaps = [d.step(GpuReading(float(t), (gpu(power=p),)), (), {}, T_WALL0 + t) for t, p in enumerate(powers)]
    for snap in snaps:
        assert_all_finite(snap)
    # The ticks around the bad readings integrate an infinite power: left out, with their rent.
    assert snaps[-1].gpus[0].totals.energy_j == pytest.approx(2 * 500.0)
    assert snaps[-1].gpus[0].totals.elapsed_s == pytest.approx(2.0)
    said = [m for s in snaps for m in s.messages if m.startswith("GPU 0:") and "not finite" in m]
    assert len(said) == 1


# --- item 4: implausible jumps and dips -------------------------------------------------------


def test_a_jump_above_the_ceiling_is_not_counted_and_said_once() -> None:
    snaps = run([1000.0, 1200.0, 1e12 + 1400, 1600.0, 1800.0])
    assert snaps[-1].endpoints[0].tokens_out_total == 800  # the spike's tick counts nothing
    assert snaps[-1].gpus[0].totals.tokens_out == 800
    said = about_the_endpoint(snaps, "jumped")
    assert len(said) == 1 and "ignored" in said[0]


def test_the_ceiling_comes_from_the_config() -> None:
    from tokentop.nvml.fake import FakeNvml
    from tokentop.nvml.reader import NvmlReader
    from tokentop.sampler import Sampler

    sampler = Sampler(Config(max_endpoint_tok_s=500.0), NvmlReader(lib=FakeNvml.healthy(count=1)))
    try:
        snaps = run([0.0, 400.0, 1400.0, 800.0], deriver=sampler.deriver)
    finally:
        sampler.stop()
    assert snaps[-1].endpoints[0].tokens_out_total == 400 + 400  # 1,000 tok/s is over 500 tok/s


def test_a_jump_that_stays_becomes_the_new_baseline_counting_nothing() -> None:
    snaps = run([1000.0, 1e12, 1e12 + 100, 1e12 + 200, 1e12 + 300])
    assert snaps[-1].endpoints[0].tokens_out_total == 100  # only the step after the new baseline
    assert len(about_the_endpoint(snaps, "jumped")) == 2  # ignored, then taken as a new baseline
    assert any("new baseline" in m for m in about_the_endpoint(snaps, "jumped"))


def test_a_one_tick_dip_near_five_million_is_a_glitch_not_a_restart() -> None:
    snaps = run([5_000_000.0, 5_000_100.0, 4_999_100.0, 5_000_300.0])
    assert snaps[-1].endpoints[0].tokens_out_total == 300
    said = about_the_endpoint(snaps, "fell")
    assert len(said) == 1 and "5,000,100" in said[0] and "4,999,100" in said[0]


def test_a_dip_while_the_engine_start_time_stays_the_same_is_a_glitch() -> None:
    start = T_WALL0 - 3600
    snaps = run([1000.0, 1100.0, 500.0, 1200.0], starts=[start] * 4)
    assert snaps[-1].endpoints[0].tokens_out_total == 200
    assert "kept running" in about_the_endpoint(snaps, "fell")[0]


@pytest.mark.parametrize(
    ("starts", "pids"),
    [
        ([T_WALL0 - 3600] * 2 + [T_WALL0 + 1.5] * 2, None),  # a new start time
        (None, [100, 100, 200, 200]),  # a new PID
        (None, None),  # no evidence either way, and a value it could have made in a second
    ],
)
def test_a_restart_counts_the_new_counter_from_zero(starts: list[float] | None, pids: list[int] | None) -> None:
    snaps = run([5000.0, 5200.0, 30.0, 80.0], starts=starts, pids=pids)
    assert snaps[-1].endpoints[0].tokens_out_total == 200 + 30 + 50
    assert not about_the_endpoint(snaps, "")


def test_a_restart_after_downtime_may_reach_more_than_one_tick_allows() -> None:
    """Down for 9 readings (no counter): the restarted engine had 10 s to make its tokens."""
    d = Deriver(CostConfig(), max_endpoint_tok_s=1000.0)
    snaps = run([50_000.0, 50_100.0] + [None] * 9 + [8000.0, 8100.0], deriver=d)
    assert snaps[-1].endpoints[0].tokens_out_total == 100 + 8000 + 100


def test_an_energy_spike_is_integrated_from_power_and_leaves_no_trace() -> None:
    d = Deriver(CostConfig(gpu_hour_usd={"H200": 3.6}, energy_in_rate=False))
    counters = [0, 500_000, 1_000_000, 1_000_000_000_000_000, 2_000_000, 2_500_000]  # mJ; 500 W
    snaps = [d.step(GpuReading(float(t), (gpu(energy_mj=c),)), (), {}, T_WALL0 + t) for t, c in enumerate(counters)]
    assert snaps[-1].gpus[0].totals.energy_j == pytest.approx(5 * 500.0)
    assert [s.gpus[0].energy_method for s in snaps] == ["counter"] * 3 + ["power_integral"] * 2 + ["counter"]
    said = [m for s in snaps for m in s.messages if m.startswith("GPU 0: energy counter")]
    assert len(said) == 1 and "power integrated" in said[0]
    assert snaps[-1].host.cost_window.usd_per_hour == pytest.approx(snaps[1].gpus[0].usd_per_hour_now, rel=0.01)


def test_the_history_counts_the_spike_ticks_as_integrated_and_their_energy_stays_true(tmp_path: Path) -> None:
    config = Config(cost=CostConfig(gpu_hour_usd={"H200": 3.6}, energy_in_rate=False))
    d = Deriver(config.cost)
    counters = [0, 500_000, 1_000_000, 1_000_000_000_000_000, 2_000_000, 2_500_000]  # mJ; 500 W
    with Store.open(tmp_path / "h.db", host="h", version="v", config=config.public_dict()) as store:
        for t, c in enumerate(counters):  # the power reading says 400 W: integrated ticks show
            store.append(d.step(GpuReading(float(t), (gpu(power=400.0, energy_mj=c),)), (), {}, T_WALL0 + t))
    [g] = report.summarize(tmp_path / "h.db").gpus
    assert (g.energy_method, g.energy_integrated_ticks) == ("mixed", 2)
    assert g.figures.energy_kwh == pytest.approx((3 * 500.0 + 2 * 400.0) / 3.6e6)


@given(st.lists(st.one_of(st.none(), st.floats(min_value=0, max_value=2**53)), min_size=1, max_size=40))
def test_property_never_more_than_the_ceiling_allows(readings: list[float | None]) -> None:
    """Whatever the counter reads, what is counted stays within the ceiling x the time watched."""
    c = DeliveredCounter(max_tok_s=1000.0)
    for t, raw in enumerate(readings):
        assert 0 <= c.update(raw, None, float(t)) <= 1000.0 * t
    assert 0 <= c.delivered <= 1000.0 * (len(readings) - 1)


# --- item 13: windows span their stated length ------------------------------------------------


def test_windows_span_their_stated_length_when_ticks_drift() -> None:
    d = Deriver(CostConfig(gpu_hour_usd={"H200": 3.6}), rate_window_s=10, cost_window_s=60)
    t = 0.0
    for step in range(90):
        t += 0.97 if step % 2 else 1.04  # a 1 s tick drifting either way
        snap = d.step(GpuReading(t, (gpu(),)), (endpoint(t, 100.0 * t),), MAPPING, T_WALL0 + t)
        elapsed = snap.host.totals.elapsed_s
        for figs in (snap.host, snap.gpus[0]):
            assert figs.rate_window.span_s == pytest.approx(min(10.0, elapsed))
            assert figs.cost_window.span_s == pytest.approx(min(60.0, elapsed))
        if elapsed > 10:
            assert snap.endpoints[0].tok_s_out == pytest.approx(100.0)
            assert snap.host.rate_window.tok_s_out == pytest.approx(100.0)
            assert snap.host.rate_window.usd_per_hour == pytest.approx(3.6)
        if elapsed > 60:
            assert snap.host.cost_window.busy_share == pytest.approx(1.0)


# --- item 14: an engine that started during the session ---------------------------------------


def test_an_engine_started_after_the_session_counts_its_first_reading() -> None:
    """The session starts at T_WALL0; the engine at T_WALL0 + 2.5 and is first read at + 4."""
    snaps = run([None] * 4 + [700.0, 900.0], starts=[None] * 4 + [T_WALL0 + 2.5] * 2)
    assert snaps[-1].endpoints[0].tokens_out_total == 900
    assert snaps[-1].host.totals.tokens_out == 900


def test_an_engine_started_before_the_session_is_a_baseline() -> None:
    snaps = run([700.0, 900.0], starts=[T_WALL0 - 0.5] * 2)
    assert snaps[-1].endpoints[0].tokens_out_total == 200


def test_a_first_reading_more_than_a_new_engine_could_make_is_a_baseline() -> None:
    snaps = run([None, 5e9, 5e9 + 100], starts=[None, T_WALL0 + 0.5, T_WALL0 + 0.5])
    assert snaps[-1].endpoints[0].tokens_out_total == 100
    assert len(about_the_endpoint(snaps, "baseline")) == 1
