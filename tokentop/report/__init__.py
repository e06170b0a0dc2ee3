"""Session summaries from the history: the figures (``compute``), then Markdown, JSON or CSV.

figures.py   what a summary holds: dataclasses, numbers only
compute.py   building a summary from the history: all the arithmetic
tracks.py    arithmetic over the history's tracks (windows, energy method, requests)
sessions.py  opening the history, choosing the session, reading --since/--until
notes.py     the notes in words
markdown.py  for people; every figure written by ``tokentop.units``
compact.py   the short form printed when a run ends: fits the terminal
tables.py    for programs: JSON (``SCHEMA_VERSION``) and CSV
render.py    one entry point per format
"""

from tokentop.report.compact import render_short
from tokentop.report.compute import build_summary
from tokentop.report.errors import SummaryError
from tokentop.report.figures import EndpointSummary, Figures, GpuSummary, SessionSummary
from tokentop.report.markdown import render_markdown
from tokentop.report.render import FORMATS, render, render_session_list
from tokentop.report.sessions import choose_session, open_history, parse_time, summarize
from tokentop.report.tables import SCHEMA_VERSION, render_csv, render_json, to_json_dict
from tokentop.report.tracks import percentile

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "EndpointSummary",
    "Figures",
    "GpuSummary",
    "SessionSummary",
    "SummaryError",
    "build_summary",
    "choose_session",
    "open_history",
    "parse_time",
    "percentile",
    "render",
    "render_csv",
    "render_json",
    "render_markdown",
    "render_session_list",
    "render_short",
    "summarize",
    "to_json_dict",
]
