"""The first look (``derive.first_look.gpus_alone``): the GPUs alone, derived by a deriver of
their own, so that nothing of that early look is counted by the session's."""

from __future__ import annotations

import time

from tokentop.config import Config
from tokentop.derive.first_look import gpus_alone
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler


def test_a_first_look_is_the_gpus_alone_and_counts_nothing() -> None:
    config = Config(discover=False)
    reader = NvmlReader(lib=FakeNvml.healthy(count=3))
    sampler = Sampler(config, reader)
    try:
        look = gpus_alone(config, reader.read(time.monotonic(), False), time.time())
        assert look.first_look and look.endpoints == () and len(look.gpus) == 3
        first = sampler.tick()
        assert not first.first_look and first.seq == 1 and first.dt_s is None  # the session's first tick
        assert first.host.totals == look.host.totals  # nothing carried over from the look
    finally:
        sampler.stop()
