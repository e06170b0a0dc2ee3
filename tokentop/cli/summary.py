"""``tokentop summary``: one session's figures from the history, as Markdown, JSON or CSV."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from tokentop.cli.output import EXIT_OUTPUT_LOST, EXIT_PIPE_CLOSED, discard_stdout, write_output
from tokentop.cli.runtime import FLEET_OPTIONS
from tokentop.config import Config, default_db_path
from tokentop.history import StoreError
from tokentop.report import (
    FORMATS,
    SummaryError,
    build_summary,
    choose_session,
    open_history,
    parse_time,
    render,
    render_session_list,
    render_short,
    summarize,
)

EXIT_NO_SUMMARY = 2

# The options shared by the commands (``tokentop.cli.parser``) that summary takes: it reads a
# history (--demo: the demo's), nothing else.
COMMON_OPTIONS = ("--demo", "--db", "--config", *FLEET_OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session",
        type=int,
        metavar="ID",
        help="session to summarise (default: the latest of the live view or record with readings)",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="start of the range: ISO time (local unless it has an offset) or a time ago such as 2h, 30m, 1h30m",
    )
    parser.add_argument("--until", metavar="TIME", help="end of the range, as --since")
    parser.add_argument("--list", action="store_true", help="list the sessions in the history")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="md",
        help="Markdown (default), JSON (schema in the README) or CSV (one row per GPU and a total row)",
    )
    parser.add_argument("--output", type=Path, metavar="FILE", help="write to FILE instead of standard output")


def run(args: argparse.Namespace, config: Config) -> int:
    """0, or 2 with one line on stderr when there is nothing to show."""
    if config.fleet_source is not None:  # --prometheus / --ssh: the fleet's summary
        from tokentop.cli import fleet_summary

        return fleet_summary.run(args, config)
    db_path = config.db_path or default_db_path(demo=config.demo)
    try:
        now = time.time()
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
        if since is not None and until is not None and until <= since:
            raise SummaryError("--until must be later than --since")
        with open_history(db_path) as store:
            if args.list:
                text = render_session_list(store, args.format)
            else:
                session = choose_session(store, args.session, since, until)
                text = render(build_summary(store, session, since, until), args.format)
    except (SummaryError, StoreError) as exc:
        print(f"tokentop: {exc}{_demo_hint(config, db_path)}", file=sys.stderr)
        return EXIT_NO_SUMMARY
    return write_output(text, args.output)


def _demo_hint(config: Config, db_path: Path) -> str:
    """Where the demo's sessions are, when the default history is missing and they are not."""
    demo_path = default_db_path(demo=True)
    if config.db_path is None and not config.demo and not db_path.exists() and demo_path.exists():
        return f" (the --demo sessions are in {demo_path}: `tokentop summary --demo`)"
    return ""


def print_session_summary(db_path: Path, session_id: int, stream: TextIO, fmt: str = "md") -> int:
    """Print one session's summary to ``stream`` (when the live view or ``record`` ends):
    ``fmt`` ``short`` (``render_short``, as wide as the terminal: ``shutil.get_terminal_size``,
    which reads ``COLUMNS`` first and says 80 off a terminal), or a format of ``FORMATS``.

    Never raises: with nothing to show, one line goes to stderr and 2 is returned; when the
    stream fails, one line and ``EXIT_OUTPUT_LOST``, or silently ``EXIT_PIPE_CLOSED``."""
    try:
        summary = summarize(db_path, session_id)
        text = render_short(summary, shutil.get_terminal_size().columns) if fmt == "short" else render(summary, fmt)
    except (SummaryError, StoreError) as exc:
        print(f"tokentop: no session summary: {exc}", file=sys.stderr)
        return EXIT_NO_SUMMARY
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:  # the reader or the terminal went away as we ended
        discard_stdout()
        return EXIT_PIPE_CLOSED
    except OSError as exc:
        discard_stdout()
        print(f"tokentop: cannot write the session summary: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_OUTPUT_LOST
    return 0
