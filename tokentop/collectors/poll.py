"""Every endpoint read each tick, within a deadline whatever one of them does.

Endpoints whose last read was quick, over a connection still open, are read one after another
on the caller's thread: handing a read to a thread and back costs more than the read of a
loopback page (benchmarks/bench_tick.py), but every one's request is sent before any answer is
read (``EndpointCollector.send_ahead``): the servers answer at the same time, and most answers
are in by the time they are read, with no wait for them. The others are read at the same time
on threads of their own, started first. An inline read that stops being quick is given up after
``INLINE_LIMIT_S`` and handed to a thread for the rest of the deadline, so that one stalled
server never holds the endpoints after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from tokentop.collectors.endpoint import EndpointCollector
from tokentop.model import EndpointSample

INLINE_LIMIT_S = 0.2
"""How long one inline read may take before it is handed to a thread (a quick one takes ms)."""


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
    """Poll every endpoint; return within about ``deadline_s`` whatever happens.

    An endpoint that has not answered by then (or is still busy with an earlier tick's read)
    gets a "stale" or "error" sample for this tick; its read goes on in the background.
    """
    if not collectors:
        return ()
    started_at = time.monotonic()
    results: dict[int, EndpointSample | Future[EndpointSample] | None] = {}
    inline: list[int] = []
    for i, collector in enumerate(collectors):
        pending = collector.pending
        if pending is not None and not pending.done():
            results[i] = None  # the previous tick's read is still going: don't pile up
        elif collector.quick and collector.connected:  # no connect, no name lookup, inline
            inline.append(i)
        else:
            results[i] = _submit(collectors, i, t_mono)
    for i in inline:  # every request out first: the servers answer at the same time
        collectors[i].send_ahead(t_mono)
    for i in inline:
        left = deadline_s - (time.monotonic() - started_at)
        sample = collectors[i].poll_within(t_mono, min(INLINE_LIMIT_S, left)) if left > 0 else None
        results[i] = sample if sample is not None else _submit(collectors, i, t_mono)
    futures = [r for r in results.values() if isinstance(r, Future)]
    if futures:
        wait(futures, timeout=max(0.0, deadline_s - (time.monotonic() - started_at)))
    late = f"timed out after {deadline_s:g} s"
    return tuple(_sample(collector, results[i], t_mono, late) for i, collector in enumerate(collectors))


def _submit(collectors: Sequence[EndpointCollector], i: int, t_mono: float) -> Future[EndpointSample]:
    collector = collectors[i]
    future = _pool.get(len(collectors)).submit(collector.poll, t_mono)
    collector.pending = future
    return future


def _sample(
    collector: EndpointCollector, result: EndpointSample | Future[EndpointSample] | None, t_mono: float, late: str
) -> EndpointSample:
    if isinstance(result, EndpointSample):
        return result
    if result is not None and result.done():
        return result.result()
    return collector.failed_sample(t_mono, late)
