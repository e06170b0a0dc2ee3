"""The messages that reach the app's event loop from other threads: the sampler's ticks, log
records, and what worker threads read (history for the long graph windows, who runs each
GPU process). Each is handled by an ``on_<name>`` method: the app's, or for
``HistoryLoaded`` the graph's."""

from __future__ import annotations

from textual.message import Message

from tokentop.model import Snapshot
from tokentop.tui.history import GraphPoint
from tokentop.tui.processes import ProcessInfo

HistoryRequest = tuple[str, int, int, float]  # graph key, window index, buckets, until (wall clock)


class SnapshotReady(Message):
    """A new tick. A newer one waiting in the queue replaces an older one not yet drawn."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class LogLine(Message):
    """A log record from any thread, shown on screen instead of printed over it."""

    def __init__(self, level: int, text: str, created: float) -> None:
        super().__init__()
        self.level, self.text, self.created = level, text, created


class HistoryLoaded(Message):
    """The store's answer for one long graph window (read on a worker thread)."""

    def __init__(self, request: HistoryRequest, points: list[GraphPoint], note: str | None) -> None:
        super().__init__()
        self.request, self.points, self.note = request, points, note


class ProcessesDescribed(Message):
    """Who runs each GPU process and with what command, by PID (read from /proc on a worker
    thread)."""

    def __init__(self, infos: dict[int, ProcessInfo]) -> None:
        super().__init__()
        self.infos = infos
