"""``tokentop snapshot --json``: one complete reading, taken after enough ticks for every rate.
It writes no history (its few seconds would become the latest session) unless ``--record``
asks for one."""

from __future__ import annotations

import argparse
import json
import threading

from tokentop.cli.output import write_stdout
from tokentop.cli.runtime import FLEET_OPTIONS, UsageError, build_runtime, open_store
from tokentop.config import Config
from tokentop.sampler import Sampler
from tokentop.snapshot_json import snapshot_dict

SNAPSHOT_TICKS = 3  # two measured intervals: enough for every rate to exist


# The options shared by the commands (``tokentop.cli.parser``) that snapshot takes (--db only
# with --record).
COMMON_OPTIONS = ("--demo", "--db", "--endpoint", "--interval", "--config", "--seed", *FLEET_OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON (the only format for now; documented in README)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="keep the reading's ticks as a session of the history (--db, default as for record)",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    if args.db is not None and not args.record:
        raise UsageError("snapshot does not take --db without --record: it writes no history unless asked")
    if args.record and not config.history:
        raise UsageError("snapshot --record writes the history, which the settings turn off (history = false)")
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=True, origin="snapshot") if args.record else None
    sampler = Sampler(runtime.config, runtime.gpus, store=store)
    try:
        if not runtime.config.endpoints and runtime.config.discover:
            sampler.discover_once()
        snap = sampler.run(threading.Event(), ticks=SNAPSHOT_TICKS)
    finally:
        sampler.stop()
        runtime.close()
    if snap is None:
        raise UsageError("no reading could be taken (see the log above)")
    write_stdout(json.dumps(snapshot_dict(snap, runtime.config.cost), indent=2, allow_nan=False) + "\n")
    return 0
