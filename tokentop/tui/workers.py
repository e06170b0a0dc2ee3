"""What the app runs on worker threads, never on the event loop: a store read for a long graph
window and the session summary written to a file (who runs each GPU process: ``processes``).
Each returns what the app then posts back to the loop; none of them touches a widget."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tokentop.tui.events import HistoryRequest
from tokentop.tui.history import HOST, WINDOWS, GraphPoint, points_from_store
from tokentop.tui.session import write_summary


class SeriesStore(Protocol):
    def gpu_series(
        self, session_id: int | None, uuid: str | None, since: float, until: float, step_s: float
    ) -> Sequence[object]: ...


def read_long_history(store: SeriesStore, request: HistoryRequest) -> tuple[list[GraphPoint], str | None]:
    """One store query for (graph key, window index, buckets, until): the points and a note
    for the graph, or no points and why (a closed, locked or broken file)."""
    key, window_index, buckets, until = request
    window = WINDOWS[window_index]
    try:
        points = points_from_store(
            store.gpu_series(
                None, None if key == HOST else key, until - window.seconds, until, window.seconds / buckets
            )
        )
        note = None if any(p.watts is not None for p in points) else "no history in this window yet"
    except Exception as exc:  # a closed, locked or broken file: say so in the graph
        points, note = [], f"history unavailable: {exc}"
    return points, note


def summary_text(store: Any, short: str) -> tuple[str, str]:
    """The full summary from the history (text, ".md") when there is one; the short one from
    the last snapshot (``short``, ".txt") otherwise."""
    text, suffix = short, ".txt"
    if store is not None and getattr(store, "session_id", None) is not None:
        from tokentop.history import StoreError
        from tokentop.report import SummaryError, render_markdown, summarize

        try:
            text = render_markdown(summarize(store.path, store.session_id))
            suffix = ".md"
        except (SummaryError, StoreError) as exc:  # no readings yet, a locked or broken file
            text = f"{short}\n(full summary not available: {exc})\n"
    return text, suffix


def write_summary_file(store: Any, short: str, directory: Path, t_wall: float) -> tuple[Path | None, str, str]:
    """Write the summary into ``directory``: (the file or None, what to tell the user, severity)."""
    text, suffix = summary_text(store, short)
    try:
        path = write_summary(text, directory, t_wall, suffix)
    except OSError as exc:
        return None, f"summary not written to {directory}: {exc}", "error"
    return path, f"summary written to {path}", "information"
