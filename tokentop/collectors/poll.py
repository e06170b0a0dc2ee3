"""Every endpoint read at once each tick, within a deadline whatever one of them does."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from tokentop.collectors.endpoint import EndpointCollector
from tokentop.model import EndpointSample


class _Pool:
    """A long-lived pool with a thread per endpoint, grown when endpoints are added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._size = 0

    def get(self, size: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or size > self._size:
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tokentop-poll")
                self._size = size
            return self._executor


_pool = _Pool()


def poll_all(collectors: Sequence[EndpointCollector], t_mono: float, deadline_s: float) -> tuple[EndpointSample, ...]:
    """Poll every endpoint concurrently; return within about ``deadline_s`` whatever happens.

    An endpoint that has not answered by then (or is still busy with an earlier tick's read)
    gets a "stale" or "error" sample for this tick; its read goes on in the background.
    """
    if not collectors:
        return ()
    executor = _pool.get(len(collectors))
    started: list[Future[EndpointSample] | None] = []
    for collector in collectors:
        pending = collector.pending
        if pending is not None and not pending.done():
            started.append(None)  # the previous tick's read is still going: don't pile up
            continue
        future = executor.submit(collector.poll, t_mono)
        collector.pending = future
        started.append(future)
    wait([f for f in started if f is not None], timeout=max(0.0, deadline_s))
    late = f"timed out after {deadline_s:g} s"
    return tuple(
        future.result() if future is not None and future.done() else collector.failed_sample(t_mono, late)
        for collector, future in zip(collectors, started)
    )
