"""One thread that reads a fleet source every ``refresh_s`` and hands each frozen reading on.

The fleet view's counterpart of the sampler: ``source.read()`` (queries, SSH feeds) never runs
on the event loop; the app gives a ``sink`` that posts the reading to itself. A source promises
that ``read`` never raises; if one does anyway, the reading becomes a status line over the last
good figures (marked stale) and the thread goes on. ``stop`` returns within ``join_s`` even while
a read is in flight: the thread is a daemon, and closing the source ends that read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from tokentop.config import Config
from tokentop.fleet.model import FleetReading, FleetSource, fleet_figures
from tokentop.text import safe_text

log = logging.getLogger(__name__)

Sink = Callable[[FleetReading], None]


def windows_of(config: Config) -> tuple[float, float]:
    """The (rate, cost) windows the fleet states before its source's first reading: the
    ``[prometheus]`` ones, or over ssh this tokentop's own (each host reports its own)."""
    if config.fleet_source == "prometheus":
        return config.prometheus.rate_window_s, config.prometheus.cost_window_s
    return config.rate_window_s, config.cost_window_s


def failed_reading(
    source: FleetSource, error: BaseException, last: FleetReading | None, windows: tuple[float, float]
) -> FleetReading:
    """What a read that raised becomes: the last good figures marked stale with the error as
    the status, or, before any good reading, an empty fleet that says why."""
    status = safe_text(f"{source.description}: reading failed: {type(error).__name__}: {error}")
    if last is not None:
        return replace(last, status=status, stale=True)
    rate_window_s, cost_window_s = windows
    return FleetReading(
        t_wall=time.time(),
        source=safe_text(source.description),
        mode="unknown",
        rate_window_s=rate_window_s,
        cost_window_s=cost_window_s,
        hosts=(),
        fleet=fleet_figures((), rate_window_s, cost_window_s),
        status=status,
        stale=True,
    )


class Poller:
    """Reads ``source`` now and then every ``source.refresh_s`` seconds, on one daemon thread.

    ``windows``: the (rate, cost) window lengths an empty reading states before the source has
    given any. Tests call ``poll_once`` instead of ``start``.
    """

    def __init__(
        self, source: FleetSource, sink: Sink | None = None, *, windows: tuple[float, float] = (60.0, 900.0)
    ) -> None:
        self.source = source
        self.sink = sink
        self.windows = windows
        self.latest: FleetReading | None = None
        self.reads = 0
        self._last_good: FleetReading | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by ``refresh_now`` and ``stop``: the wait ends early
        self._thread: threading.Thread | None = None

    def poll_once(self) -> FleetReading:
        """One read, handed to the sink; returns it."""
        try:
            reading = self.source.read()
        except Exception as exc:  # the source broke its promise: a status, never a dead thread
            log.debug("fleet source raised", exc_info=True)
            reading = failed_reading(self.source, exc, self._last_good, self.windows)
        else:
            if not reading.stale:
                self._last_good = reading
        self.latest = reading
        self.reads += 1
        sink = self.sink
        if sink is not None:
            try:
                sink(reading)
            except Exception:  # the app is going away; the next read tries again
                log.debug("fleet sink raised", exc_info=True)
        return reading

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="tokentop-fleet-poller", daemon=True)
        self._thread.start()

    def refresh_now(self) -> None:
        """Read again without waiting for the rest of ``refresh_s`` (any thread): after the
        reading in flight, if there is one, else at once. The app calls it when it asks the
        source for another host's GPU rows (``FleetSource.focus``)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._wake.wait(max(0.0, self.source.refresh_s - (time.monotonic() - started)))
            self._wake.clear()  # a wake set during the next read is kept for the wait after it

    def stop(self, join_s: float = 1.0) -> None:
        """Ask the thread to end and wait up to ``join_s`` for it (a read in flight may take
        longer: closing the source ends it, and the daemon thread never holds the process)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(join_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
