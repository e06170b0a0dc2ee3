"""The live view's first tick: the GPUs are handed over before the endpoints answer (issue 10,
"every GPU row"), from a deriver of their own, so that nothing of that early look is counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from loopback import LoopbackServer, Reply
from test_collectors import vllm_page

from tokentop.config import Config, EndpointConfig
from tokentop.history import Store
from tokentop.model import Snapshot
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler


def run_until(sampler: Sampler, seen: list[Snapshot], count: int) -> None:
    arrived = threading.Event()

    def sink(snapshot: Snapshot) -> None:
        seen.append(snapshot)
        if len(seen) >= count:
            arrived.set()

    sampler.sink = sink
    sampler.start()
    try:
        assert arrived.wait(10), f"only {len(seen)} snapshots arrived"
    finally:
        sampler.stop()


def test_the_gpus_come_first_then_the_first_real_tick(server: LoopbackServer, tmp_path: Path) -> None:
    server.route("/metrics", Reply(body=vllm_page(100, 500), delay_s=0.4), vllm_page(110, 520))
    config = Config(endpoints=(EndpointConfig(url=server.url + "/metrics", name="e0", kind="vllm", gpus=("0",)),))
    store = Store.open(tmp_path / "h.db", host="test", version="test", config={})
    sampler = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=2)), store=store, first_look=True)
    seen: list[Snapshot] = []
    started = time.monotonic()
    run_until(sampler, seen, 3)
    first, real = seen[0], seen[1]
    assert first.first_look and first.endpoints == () and len(first.gpus) == 2
    assert first.t_mono - started < 0.3  # handed over before the 0.4 s answer, not after it
    assert not real.first_look and [e.sample.name for e in real.endpoints] == ["e0"]
    assert real.endpoints[0].sample.status == "up"
    assert real.seq == 1 and real.dt_s is None  # the early look is not a tick of the session
    assert all(not s.first_look for s in seen[1:])
    assert store.ticks_written == len(seen) - 1


def test_no_early_look_without_endpoints_when_ticked_by_hand_or_unasked(tmp_path: Path) -> None:
    sampler = Sampler(Config(), NvmlReader(lib=FakeNvml.healthy(count=1)), first_look=True)
    seen: list[Snapshot] = []
    run_until(sampler, seen, 2)
    assert not any(s.first_look for s in seen)

    with LoopbackServer() as server:
        server.route("/metrics", vllm_page(1, 2))
        config = Config(endpoints=(EndpointConfig(url=server.url + "/metrics", name="e0", kind="vllm"),))
        by_hand: list[Snapshot] = []
        ticked = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=1)), sink=by_hand.append, first_look=True)
        try:
            ticked.tick()
        finally:
            ticked.stop()
        assert [s.first_look for s in by_hand] == [False]

    with LoopbackServer() as server:
        server.route("/metrics", vllm_page(1, 2))
        config = Config(endpoints=(EndpointConfig(url=server.url + "/metrics", name="e0", kind="vllm"),))
        unasked = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=1)))  # record, export
        seen = []
        run_until(unasked, seen, 2)
        assert not any(s.first_look for s in seen)
