"""The messages that reach the fleet app's event loop from other threads: the poller's readings
and the source's past, read on a worker thread for the graph."""

from __future__ import annotations

from textual.message import Message

from tokentop.fleet.model import FleetReading, FleetSeries

SeriesKey = tuple[float, "str | None"]  # (span in seconds, host name; None: the fleet)


class ReadingReady(Message):
    """A new fleet reading. A newer one waiting in the queue replaces an older one not yet drawn."""

    def __init__(self, reading: FleetReading) -> None:
        super().__init__()
        self.reading = reading

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ReadingReady)


class SeriesLoaded(Message):
    """The source's answer for one graph (``series`` None: no past; ``error``: why not)."""

    def __init__(self, key: SeriesKey, series: FleetSeries | None, error: str | None) -> None:
        super().__init__()
        self.key, self.series, self.error = key, series, error
