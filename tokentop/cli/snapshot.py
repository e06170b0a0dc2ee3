"""``tokentop snapshot --json``: one complete reading, taken after enough ticks for every rate."""

from __future__ import annotations

import argparse
import json
import threading

from tokentop.cli.output import write_stdout
from tokentop.cli.runtime import UsageError, build_runtime, open_store
from tokentop.config import Config
from tokentop.sampler import Sampler
from tokentop.snapshot_json import snapshot_dict

SNAPSHOT_TICKS = 3  # two measured intervals: enough for every rate to exist


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON (the only format for now; documented in README)")


def run(args: argparse.Namespace, config: Config) -> int:
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=False) if args.db else None
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
