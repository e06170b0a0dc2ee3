"""The demo host end to end: fake NVML + real loopback servers -> sampler -> numbers = truth."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tokentop.config import Config, CostConfig
from tokentop.demo import GPU_COUNT, DemoGpuReader, DemoHost, vllm_page
from tokentop.sampler import Sampler


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def demo() -> Iterator[tuple[DemoHost, Sampler, FakeClock]]:
    clock = FakeClock()
    host = DemoHost(seed=7, clock=clock)
    config = Config(endpoints=host.serve(), cost=CostConfig(energy_in_rate=True), http_timeout_s=5.0)
    sampler = Sampler(config, DemoGpuReader(host), clock=clock, wall_clock=lambda: 1.7e9 + clock.t)
    yield host, sampler, clock
    sampler.stop()
    host.close()


def run(sampler: Sampler, clock: FakeClock, ticks: int):
    snap = None
    for _ in range(ticks):
        snap = sampler.tick()
        clock.t += 1.0
    return snap


def test_demo_numbers_agree_with_the_simulated_truth(demo) -> None:
    host, sampler, clock = demo
    snap = run(sampler, clock, 13)
    now = host.now() - 1.0  # the clock moved on after the last tick
    truth = host.truth(now - snap.rate_window_s, now)
    assert snap.rate_window_s == 10
    by_index = {g.sample.index: g for g in snap.gpus}
    assert len(by_index) == GPU_COUNT
    for index, gpu in by_index.items():
        assert gpu.rate_window.span_s == pytest.approx(10.0)
        # Counters are whole tokens: allow one token per engine GPU share at each end.
        assert gpu.rate_window.tok_s_out == pytest.approx(truth.tok_s_out(index), abs=0.2)
        assert gpu.rate_window.tok_s_in == pytest.approx(truth.tok_s_in(index), abs=0.2)
        assert gpu.rate_window.watts == pytest.approx(truth.watts(index), rel=1e-3)
        assert gpu.energy_method == "counter"
    assert by_index[7].engines == () and by_index[7].rate_window.tok_s_out == 0
    assert by_index[7].cost_window.usd_per_mtok is None
    assert by_index[0].engines == ("llama-70b",) and by_index[6].engines == ("qwen-32b",)
    total_out = sum(truth.tokens_out.values()) / truth.seconds
    assert snap.host.rate_window.tok_s_out == pytest.approx(total_out, abs=1.0)
    # Cost: 8 H200 at $3.50/h, power included in the rate; host $/Mtok = cost / tokens.
    cost_window = snap.host.cost_window
    assert cost_window.usd_per_hour == pytest.approx(8 * 3.50)
    assert cost_window.usd_per_mtok == pytest.approx(cost_window.cost_usd / cost_window.tokens_out * 1e6)
    assert by_index[0].price.usd_per_gpu_hour == 3.50


def test_demo_endpoints_are_read_as_vllm_with_percentiles(demo) -> None:
    _host, sampler, clock = demo
    snap = run(sampler, clock, 7)  # latency histograms are read every 5 s: two reads by now
    assert [s.sample.kind for s in snap.endpoints] == ["vllm", "vllm", "vllm"]
    assert all(s.sample.status == "up" for s in snap.endpoints)
    tp4 = snap.endpoints[0]
    assert tp4.mapping == "config" and len(tp4.gpus) == 4
    assert tp4.sample.model == "meta-llama/Llama-3.3-70B-Instruct"
    assert tp4.ttft_p50_s is not None and 0.1 < tp4.ttft_p50_s < 1.0
    assert tp4.itl_p50_s is not None and 0.01 < tp4.itl_p50_s < 0.1


def test_demo_is_deterministic_for_a_seed() -> None:
    first, second = DemoHost(seed=3), DemoHost(seed=3)
    assert first.uuids == second.uuids
    assert vllm_page(first.engines[0], 42.0) == vllm_page(second.engines[0], 42.0)
    assert vllm_page(DemoHost(seed=4).engines[0], 42.0) != vllm_page(first.engines[0], 42.0)


def test_engine_going_down_and_coming_back(demo) -> None:
    host, sampler, clock = demo
    run(sampler, clock, 3)
    host.stop_engine("llama-8b")
    snap = run(sampler, clock, 2)
    down = {s.sample.name: s for s in snap.endpoints}["llama-8b"]
    assert down.sample.status in ("stale", "error") and down.sample.error
    assert {s.sample.name: s.sample.status for s in snap.endpoints}["llama-70b"] == "up"
    assert all(g.sample.status == "ok" for g in snap.gpus)  # GPUs are read regardless
    host.start_engine("llama-8b")
    snap = run(sampler, clock, 4)
    back = {s.sample.name: s for s in snap.endpoints}["llama-8b"]
    assert back.sample.status == "up"
    # Tokens served while it was unreachable are still in its counter: they arrive once it is
    # back, and the session total equals the truth since the first tick, not more.
    truth = host.engines[1].tokens_out(host.now() - 1.0) - host.engines[1].tokens_out(0.0)
    assert back.tokens_out_total == pytest.approx(truth, abs=2)


def test_clients_that_hang_up_print_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """A poll past its deadline closes its connection mid-answer (``record --demo --interval
    0.05``): the simulated servers must not print ConnectionResetError or BrokenPipeError."""
    host = DemoHost(seed=7)
    endpoint = host.serve()[0]
    port = int(endpoint.url.split(":")[2].split("/")[0])
    try:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        time.sleep(0.3)  # let the server threads meet the reset connections
    finally:
        host.close()
    assert "Traceback" not in capfd.readouterr().err


def test_the_demos_processes_are_its_engines_never_a_real_process_with_their_pid() -> None:
    from tokentop.demo import PID_BASE, engines_for
    from tokentop.tui.host import DemoProcessHost
    from tokentop.tui.processes import UNKNOWN

    engines = engines_for(7)
    known = DemoProcessHost(7).processes([PID_BASE, PID_BASE + 2, 1])
    assert engines[0].model in known[PID_BASE].command and "--tensor-parallel-size 4" in known[PID_BASE].command
    assert engines[2].model in known[PID_BASE + 2].command and known[PID_BASE].user == "demo"
    assert known[1] == UNKNOWN  # PID 1 is real (init) but not the demo's: not shown as it
