"""What to summarise: the history opened read-only, the session chosen, ``--since``/``--until``
read."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from tokentop.history import SessionInfo, Store
from tokentop.report.compute import build_summary
from tokentop.report.errors import SummaryError
from tokentop.report.figures import SessionListing, SessionSummary
from tokentop.text import safe_text
from tokentop.units import fmt_local_time


@contextmanager
def open_history(db_path: Path) -> Iterator[Store]:
    """The history opened read-only, with a message that says what to do when it is missing."""
    path = Path(db_path).expanduser()
    if not path.exists():
        raise SummaryError(f"no history at {path}; record one with `tokentop record` (or give --db)")
    store = Store.open_readonly(path)
    try:
        yield store
    finally:
        store.close()


# The sessions ``summary`` picks by default: the user's own recordings (the live view, ``record``,
# and those of files too old to say), before ``export``'s and ``snapshot --record``'s.
RECORDINGS = ("live", "record", None)


def choose_session(store: Store, session_id: int | None, since: float | None, until: float | None) -> SessionInfo:
    """The session asked for; else the latest recording (``RECORDINGS``) with readings in the
    range, else the latest other session with readings in it."""
    sessions = store.sessions()
    if not sessions:
        raise SummaryError(f"history {store.path} has no sessions yet; record one with `tokentop record`")
    if session_id is not None:
        for session in sessions:
            if session.id == session_id:
                return session
        known = ", ".join(str(s.id) for s in sessions[-10:])
        raise SummaryError(
            f"no session {session_id} in {store.path} (latest: {known}; `tokentop summary --list` lists them)"
        )
    recordings = [s for s in reversed(sessions) if s.origin in RECORDINGS]
    for session in recordings + [s for s in reversed(sessions) if s.origin not in RECORDINGS]:
        bounds = store.session_bounds(session.id)
        if bounds is None:
            continue
        if (since is None or bounds[1] >= since) and (until is None or bounds[0] <= until):
            return session
    if since is None and until is None:
        raise SummaryError(f"history {store.path} has no readings yet")
    raise SummaryError(
        f"no session in {store.path} has readings between "
        f"{fmt_local_time(since) if since is not None else 'the start'} and "
        f"{fmt_local_time(until) if until is not None else 'now'}"
    )


def summarize(
    db_path: Path, session_id: int | None = None, since: float | None = None, until: float | None = None
) -> SessionSummary:
    """Open the history read-only (another process may be writing it) and summarise."""
    with open_history(db_path) as store:
        return build_summary(store, choose_session(store, session_id, since, until), since, until)


def list_sessions(store: Store) -> list[SessionListing]:
    """Every session in the history, oldest first, with the span of its readings."""
    listings = []
    for session in store.sessions():
        bounds = store.session_bounds(session.id)
        listings.append(
            SessionListing(
                id=session.id,
                host=safe_text(session.host),
                tokentop_version=safe_text(session.tokentop_version),
                started_at=session.started_at,
                ended_at=session.ended_at,
                first_reading=bounds[0] if bounds else None,
                last_reading=bounds[1] if bounds else None,
                gpu_count=len(store.gpus(session.id)),
                origin=session.origin,
                simulated=session.simulated,
            )
        )
    if not listings:
        raise SummaryError(f"history {store.path} has no sessions yet; record one with `tokentop record`")
    return listings


_RELATIVE = re.compile(
    r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
    r"(?:(\d+(?:\.\d+)?)s)?$"
)


def parse_time(text: str, now: float) -> float:
    """Unix seconds from an ISO time (local when it has no offset) or a time ago: ``2h``,
    ``30m``, ``1h30m``, ``45s``, ``2d``."""
    text = text.strip()
    match = _RELATIVE.match(text.lower())
    try:
        if text and match and any(match.groups()):
            days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            when = now - (days * 86400 + hours * 3600 + minutes * 60 + seconds)
        else:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text).timestamp()
        time.localtime(when)  # a time the summary can print
    except (ValueError, OverflowError, OSError):
        raise SummaryError(
            f"cannot read the time {text[:40]!r}: give an ISO time "
            "(2026-04-01T12:00, local unless it has an offset) or a time ago "
            "(2h, 30m, 1h30m, 45s, 2d)"
        ) from None
    return when
