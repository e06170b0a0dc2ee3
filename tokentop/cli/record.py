"""``tokentop record``: sample into the history until stopped or for ``--duration``."""

from __future__ import annotations

import argparse
import logging
import sys

from tokentop.changes import ChangeLog
from tokentop.cli.output import EXIT_OUTPUT_LOST
from tokentop.cli.parser import add_summary_mode
from tokentop.cli.runtime import UsageError, build_runtime, history_path, open_store, stop_on_signals
from tokentop.cli.summary import print_session_summary
from tokentop.config import Config
from tokentop.model import Snapshot
from tokentop.sampler import Sampler

log = logging.getLogger("tokentop")

EXIT_TICKS_LOST = 1  # some ticks, or the session's end, did not reach the history (said on stderr)


# The options shared by the commands (``tokentop.cli.parser``) that record takes (--no-history
# only to refuse it with the reason: recording is record's only job).
COMMON_OPTIONS = ("--demo", "--db", "--no-history", "--endpoint", "--interval", "--config", "--seed", "--summary")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    add_summary_mode(parser, "at the end", default=argparse.SUPPRESS)


def run(args: argparse.Namespace, config: Config) -> int:
    if not config.history:
        raise UsageError("record writes the history: --no-history leaves it nothing to do")
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=True, origin="record")
    sampler = Sampler(runtime.config, runtime.gpus, store=store)
    if not sampler.gpus.available:
        print(f"tokentop: {sampler.gpus.reason}", file=sys.stderr)
    where = history_path(runtime.config)
    print(f"tokentop: recording to {where} every {runtime.config.interval_s:g} s; Ctrl-C to stop", file=sys.stderr)
    changes = ChangeLog()

    def report_changes(snapshot: Snapshot) -> None:
        for line in changes.lines(snapshot):
            log.warning(line)

    with stop_on_signals() as stop:
        sampler.start_background()
        try:
            sampler.run(stop, duration_s=args.duration, on_tick=report_changes)
        finally:
            closing = sampler.stop()  # said on stderr: what closing the history could not do
            runtime.close()
    assert store is not None  # required=True: open_store raised otherwise
    lost = store.ticks_lost  # the exact count, once the store is closed
    print(f"tokentop: {store.ticks_written} ticks written, {lost} lost in {where}", file=sys.stderr)
    status = EXIT_TICKS_LOST if lost or closing else 0  # a session left without its end counts too
    mode = args.summary_mode or "short"
    if mode == "none" or store.session_id is None:
        return status
    written = print_session_summary(store.path, store.session_id, sys.stdout, "short" if mode == "short" else "md")
    return EXIT_OUTPUT_LOST if written == EXIT_OUTPUT_LOST else status  # no summary at all loses nothing
