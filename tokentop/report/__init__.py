"""Session summaries from the history: the figures, then Markdown, JSON or CSV."""

from tokentop.report.summary import (
    FORMATS,
    SCHEMA_VERSION,
    SessionSummary,
    SummaryError,
    build_summary,
    choose_session,
    open_history,
    parse_time,
    percentile,
    render,
    render_csv,
    render_markdown,
    render_session_list,
    summarize,
    to_json_dict,
)

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "SessionSummary",
    "SummaryError",
    "build_summary",
    "choose_session",
    "open_history",
    "parse_time",
    "percentile",
    "render",
    "render_csv",
    "render_markdown",
    "render_session_list",
    "summarize",
    "to_json_dict",
]
