"""``tokentop summary --prometheus URL`` or ``--ssh HOST``: the fleet's summary over a range, per
host, per GPU and for the fleet, written as the host summary is (``--format``, ``--output``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from tokentop.cli.output import write_output
from tokentop.config import Config
from tokentop.fleet.summary import FleetSummary
from tokentop.fleet.summary_render import render_fleet
from tokentop.report import SummaryError, parse_time
from tokentop.text import safe_text

EXIT_NO_SUMMARY = 2  # as tokentop.cli.summary
SAID_HOSTS = 3  # hosts whose reason the one line gives when none could be summarised

Summarize = Callable[[Config, "float | None", "float | None"], FleetSummary]


def run(args: argparse.Namespace, config: Config) -> int:
    """0, or 2 with one line on stderr when the fleet cannot be summarised: the source cannot
    be read, or no host could be summarised (as the host summary when it has nothing to show)."""
    try:
        if args.list or args.session is not None:
            raise SummaryError("--list and --session read this host's history; a fleet summary takes --since/--until")
        now = time.time()
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
        if since is not None and until is not None and until <= since:
            raise SummaryError("--until must be later than --since")
        summary = _summarizer(config)(config, since, until)
        if summary.fleet is None:
            raise SummaryError(nothing_summarised(summary))
    except SummaryError as exc:
        print(f"tokentop: {exc}", file=sys.stderr)
        return EXIT_NO_SUMMARY
    return write_output(render_fleet(summary, args.format), args.output)


def nothing_summarised(summary: FleetSummary) -> str:
    """Why a fleet summary has nothing to show, in one line: each host's reason (the first
    few), or that the source named no host."""
    if not summary.hosts:
        return f"no host to summarise in {summary.source}"
    reasons = [f"{h.name}: {(h.reason or 'nothing recorded in the range').strip()}" for h in summary.hosts[:SAID_HOSTS]]
    more = len(summary.hosts) - SAID_HOSTS
    return safe_text(f"no host could be summarised: {'; '.join(reasons)}" + (f"; and {more} more" if more > 0 else ""))


def _summarizer(config: Config) -> Summarize:
    """The source's ``summarize``, imported only when asked for."""
    if config.fleet_source == "prometheus":
        from tokentop.fleet.prometheus_summary import summarize
    else:
        from tokentop.fleet.ssh_summary import summarize
    return summarize
