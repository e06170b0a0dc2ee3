"""Session summaries from the history: the figures, then Markdown, JSON or CSV."""

from tokentop.report.summary import (
    SCHEMA_VERSION,
    SessionSummary,
    SummaryError,
    add_arguments,
    build_summary,
    parse_time,
    percentile,
    print_session_summary,
    render,
    render_csv,
    render_markdown,
    render_session_list,
    run,
    summarize,
    to_json_dict,
)

__all__ = [
    "SCHEMA_VERSION",
    "SessionSummary",
    "SummaryError",
    "add_arguments",
    "build_summary",
    "parse_time",
    "percentile",
    "print_session_summary",
    "render",
    "render_csv",
    "render_markdown",
    "render_session_list",
    "run",
    "summarize",
    "to_json_dict",
]
