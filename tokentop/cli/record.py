"""``tokentop record``: sample into the history until stopped or for ``--duration``."""

from __future__ import annotations

import argparse
import logging
import sys

from tokentop.cli.runtime import UsageError, build_runtime, history_path, open_store, stop_on_signals
from tokentop.cli.summary import print_session_summary
from tokentop.config import Config
from tokentop.model import Snapshot
from tokentop.sampler import Sampler

log = logging.getLogger("tokentop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    parser.add_argument(
        "--no-summary",
        dest="summary",
        action="store_false",
        default=argparse.SUPPRESS,
        help="do not print the session summary at the end",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    if not config.history:
        raise UsageError("record writes the history: --no-history leaves it nothing to do")
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=True)
    sampler = Sampler(runtime.config, runtime.gpus, store=store)
    if not sampler.gpus.available:
        print(f"tokentop: {sampler.gpus.reason}", file=sys.stderr)
    where = history_path(runtime.config)
    print(f"tokentop: recording to {where} every {runtime.config.interval_s:g} s; Ctrl-C to stop", file=sys.stderr)
    ticks = 0
    said: set[str] = set()

    def count_and_warn(snapshot: Snapshot) -> None:
        nonlocal ticks
        ticks += 1
        for message in snapshot.messages:
            if message not in said:  # each thing once, not every second
                said.add(message)
                log.warning(message)

    with stop_on_signals() as stop:
        sampler.start_background()
        try:
            sampler.run(stop, duration_s=args.duration, on_tick=count_and_warn)
        finally:
            sampler.stop()
            runtime.close()
    print(f"tokentop: {ticks} ticks recorded in {where}", file=sys.stderr)
    if args.summary and store is not None and store.session_id is not None:
        print_session_summary(store.path, store.session_id, sys.stdout)
    return 0
