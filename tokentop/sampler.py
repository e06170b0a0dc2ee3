"""The one loop: read GPUs and servers, derive, store, hand a frozen Snapshot to a sink.

Runs on its own thread (``start``) for the live view and the exporter, or tick by tick
(``tick``) for ``record``/``snapshot`` and tests. Slow work (socket tables, process trees,
discovery) runs on a second, background thread and is picked up by reference swap.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from tokentop.collectors import EndpointCollector, poll_all
from tokentop.collectors.fetch import PageClient
from tokentop.config import Config, EndpointConfig
from tokentop.derive import Deriver
from tokentop.discover import SocketTable, candidate_endpoints, map_endpoints
from tokentop.model import EndpointSample, EngineMapping, GpuReading, Snapshot

log = logging.getLogger("tokentop.sampler")

Sink = Callable[[Snapshot], None]
SOCKETS_EVERY_S = 15.0  # checks for new listening servers; a server coming back is seen at once
CLOCKS_APART_S = 1e-4  # two reads of the clocks further apart than this are read again (_both_clocks)
FIRST_INTERVAL_S = 0.25  # the live view's second tick comes this soon: rates need two readings


class GpuSource(Protocol):
    @property
    def available(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...

    def open(self) -> None: ...
    def read(self, t_mono: float, with_processes: bool) -> GpuReading: ...
    def close(self) -> None: ...


class HistorySink(Protocol):
    def append(self, snapshot: Snapshot) -> str | None: ...  # a status line while writes wait
    def close(self) -> str | None: ...


class Sampler:
    def __init__(
        self,
        config: Config,
        gpus: GpuSource,
        *,
        store: HistorySink | None = None,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.gpus = gpus
        self.store = store
        self.sink = sink
        self.clock = clock
        self.wall_clock = wall_clock
        self.deriver = Deriver.for_config(config)
        self.latest: Snapshot | None = None
        self.store_problem: str | None = None
        self._pages = PageClient()
        self._collectors = [self._collector(e) for e in config.endpoints]
        self._probing: list[EndpointCollector] = []  # discovered, not yet confirmed servers
        self._rejected: dict[str, float] = {}  # url -> when a probe failed
        self._mapping: dict[str, EngineMapping] = {}
        self._mapping_stale = True  # no mapping yet, or an endpoint was added since it was made
        self._sockets = SocketTable()
        self._discovered_for: tuple | None = None  # what the last discovery round saw
        self._sockets_checked_at = -1e18
        self._up: set[str] = set()  # endpoints that answered last tick
        self._last_gpus: GpuReading | None = None
        self._last_process_read = -1e18
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._background: threading.Thread | None = None
        self.gpus.open()

    # -- one tick --

    def tick(self) -> Snapshot:
        t, t_wall = self._both_clocks()
        with_processes = t - self._last_process_read >= self.config.process_interval_s
        if with_processes:
            self._last_process_read = t
        reading = self.gpus.read(t, with_processes)
        if with_processes or self._last_gpus is None:
            self._last_gpus = reading
        with self._lock:
            collectors = list(self._collectors) + list(self._probing)
        samples = poll_all(collectors, t, self.config.timeout_s) if collectors else ()
        samples = self._settle_probes(samples)
        up = {s.name for s in samples if s.status == "up"}
        if up - self._up:  # a server (re)appeared: it may be a new process, on other GPUs
            self._mapping_stale = True
        self._up = up
        if self._mapping_stale or (with_processes and not self._background_running()):
            self.refresh_mapping()
        snapshot = self.deriver.step(reading, samples, self._mapping, t_wall)
        snapshot = self._store(snapshot)
        self.latest = snapshot
        if self.sink is not None:
            self.sink(snapshot)
        return snapshot

    def _both_clocks(self) -> tuple[float, float]:
        """The monotonic and the wall clock at one instant. The history times a reading by the
        first (``history.clock``), the snapshot and the exporter by the second, so the two must
        agree: where another thread ran between the two reads (the GIL changes hands every
        5 ms), an exporter's range and the summary of that range differed by that much of a
        tick. So the wall clock is read between two reads of the monotonic one, again (three
        tries at most) while those are over ``CLOCKS_APART_S`` apart."""
        for _ in range(3):
            before, t_wall, after = self.clock(), self.wall_clock(), self.clock()
            if after - before <= CLOCKS_APART_S:
                break
        return (before + after) / 2, t_wall

    def _store(self, snapshot: Snapshot) -> Snapshot:
        if self.store is None:
            return snapshot
        try:
            waiting = self.store.append(snapshot)
            self.store_problem = waiting
        except Exception as exc:  # StoreError and anything sqlite raises: keep monitoring
            # In the snapshot's messages, which record and the live view say once per change.
            self.store_problem = f"history not written: {exc}"
        if self.store_problem:
            return dataclasses.replace(snapshot, messages=snapshot.messages + (self.store_problem,))
        return snapshot

    # -- endpoints and mapping --

    def _collector(self, endpoint: EndpointConfig) -> EndpointCollector:
        return EndpointCollector(
            endpoint, self._pages, timeout_s=self.config.timeout_s, max_page_bytes=self.config.max_page_bytes
        )

    def _settle_probes(self, samples: tuple[EndpointSample, ...]) -> tuple[EndpointSample, ...]:
        """Keep discovered endpoints that turned out to be inference servers; drop the rest."""
        with self._lock:
            if not self._probing:
                return samples
            probe_names = {c.endpoint.name: c for c in self._probing}
            kept: list[EndpointSample] = []
            for sample in samples:
                probe = probe_names.get(sample.name)
                if probe is None:
                    kept.append(sample)
                    continue
                self._probing.remove(probe)
                if sample.status == "up" and sample.kind is not None:
                    log.info("found %s server at %s", sample.kind, sample.url)
                    self._collectors.append(probe)
                    self._mapping_stale = True
                    kept.append(sample)
                else:
                    self._rejected[probe.endpoint.url] = self.clock()
                    _close_when_done(probe)
            return tuple(kept)

    def discover_once(self) -> None:
        """Socket table, new local servers, endpoint-to-GPU mapping (slow: seconds apart).

        Walking process trees costs tens of ms, so nothing is redone while the listening
        sockets, the PIDs holding GPU memory and the endpoints stay the same."""
        discovering = self.config.discover and not self.config.endpoints
        now = self.clock()
        if self._mapping_stale or now - self._sockets_checked_at >= SOCKETS_EVERY_S:
            sockets = self._sockets.read()
            self._sockets_checked_at = now
        else:
            sockets = self._sockets.last
        reading = self._last_gpus
        with self._lock:
            urls = tuple(c.endpoint.url for c in self._collectors + self._probing)
        gpu_pids = frozenset(p.pid for g in reading.gpus for p in g.processes or ()) if reading else None
        key = (tuple(sorted(sockets.items())), gpu_pids, urls)
        if key == self._discovered_for and not self._mapping_stale:
            return
        self._discovered_for = key
        if reading is not None and discovering:
            with self._lock:
                for endpoint in candidate_endpoints(reading, sockets):
                    rejected_at = self._rejected.get(endpoint.url)
                    if endpoint.url in urls or (rejected_at is not None and now - rejected_at < 60):
                        continue
                    self._probing.append(self._collector(endpoint))
        self.refresh_mapping(sockets)

    def refresh_mapping(self, sockets: dict[int, int] | None = None) -> None:
        """Endpoint -> GPUs again; ``sockets``: a socket table just read (reading the kernel's
        costs milliseconds: discovery passes the one it read)."""
        if self._last_gpus is None:
            return
        with self._lock:
            endpoints = [c.endpoint for c in self._collectors]
        if not endpoints:
            return
        self._mapping = map_endpoints(endpoints, self._last_gpus, self._sockets.read() if sockets is None else sockets)
        self._mapping_stale = False

    # -- threads --

    def start(self) -> None:
        """Tick every interval on a daemon thread; discovery on another."""
        self.start_background()
        self._thread = threading.Thread(target=self._run, name="tokentop-sampler", daemon=True)
        self._thread.start()

    def start_background(self) -> None:
        """Only the slow thread (discovery, mapping): for callers that tick themselves."""
        self._background = threading.Thread(target=self._run_background, name="tokentop-discover", daemon=True)
        self._background.start()

    def _background_running(self) -> bool:
        return self._background is not None and self._background.is_alive()

    def _run(self) -> None:
        self.run(self._stop, first_interval_s=FIRST_INTERVAL_S)

    def run(
        self,
        stop: threading.Event,
        *,
        duration_s: float | None = None,
        ticks: int | None = None,
        on_tick: Sink | None = None,
        first_interval_s: float | None = None,
    ) -> Snapshot | None:
        """Tick every interval until ``stop`` is set, ``duration_s`` has passed or ``ticks``
        were taken; returns the last snapshot. Late ticks are skipped, never made up in a burst.
        ``first_interval_s``: the second tick comes this soon after the first, so that rates
        (which divide by the measured time between two readings) exist early."""
        interval = self.config.interval_s
        start = next_t = self.clock()
        last: Snapshot | None = None
        count = 0
        while not stop.is_set() and not self._stop.is_set():
            try:
                last = self.tick()
                if on_tick is not None:
                    on_tick(last)
            except Exception:  # a bug must not kill the monitor: log it and go on
                log.exception("tick failed")
            count += 1
            if ticks is not None and count >= ticks:
                break
            next_t += min(first_interval_s, interval) if count == 1 and first_interval_s is not None else interval
            now = self.clock()
            if next_t < now:  # fell behind (suspend, slow disk): skip, do not burst
                next_t = now + interval
            if duration_s is not None and next_t > start + duration_s + 1e-6:
                break
            stop.wait(next_t - now)
        return last

    def _run_background(self) -> None:
        while not self._stop.is_set():
            try:
                self.discover_once()
            except Exception:
                log.exception("discovery failed")
            self._stop.wait(self.config.process_interval_s)

    def stop(self, timeout: float = 5.0) -> str | None:
        """Stop both threads, close the history and NVML. Safe to call twice. Returns (and
        logs) what closing the history could not do, with the count of ticks not written."""
        self._stop.set()
        for thread in (self._thread, self._background):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        closing = None
        if self.store is not None:
            try:
                closing = self.store.close()
            except Exception as exc:
                closing = f"closing the history failed: {exc}"
            if closing:
                log.warning(closing)
        self._pages.close()  # every endpoint's connection
        self.gpus.close()
        return closing


def _close_when_done(collector: EndpointCollector) -> None:
    """Close a collector's connection once its read under way (if any) has ended."""
    pending = collector.pending
    if pending is None or pending.done():
        collector.close()
    else:
        pending.add_done_callback(lambda _: collector.close())
