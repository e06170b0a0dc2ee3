"""One entry point per output: a summary, or the list of sessions, in the format asked for."""

from __future__ import annotations

from tokentop.history import Store
from tokentop.report.errors import SummaryError
from tokentop.report.figures import SessionSummary
from tokentop.report.markdown import render_markdown, session_list_markdown
from tokentop.report.sessions import list_sessions
from tokentop.report.tables import render_csv, render_json, session_list_csv, session_list_json

FORMATS = ("md", "json", "csv")


def render(summary: SessionSummary, fmt: str) -> str:
    if fmt == "json":
        return render_json(summary)
    if fmt == "csv":
        return render_csv(summary)
    if fmt == "md":
        return render_markdown(summary)
    raise SummaryError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_session_list(store: Store, fmt: str) -> str:
    """Every session in the history with the span of its readings; a ``SummaryError`` when
    there is none."""
    listings = list_sessions(store)
    if fmt == "json":
        return session_list_json(listings)
    if fmt == "csv":
        return session_list_csv(listings)
    return session_list_markdown(listings)
