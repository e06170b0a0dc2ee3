"""Command line: ``tokentop [live]``, ``record``, ``snapshot``, and the commands built on them.

Every command takes ``--demo``, ``--db``, ``--endpoint``, ``--interval`` and ``--config``.
User mistakes and unusable inputs end with one plain line on stderr and exit code 2; never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tokentop import __version__, exporter, report
from tokentop.config import Config, ConfigError, default_db_path, load_config, parse_endpoint_flag
from tokentop.model import Snapshot
from tokentop.sampler import GpuSource, Sampler
from tokentop.snapshot_json import snapshot_dict

log = logging.getLogger("tokentop")

SNAPSHOT_TICKS = 3  # two measured intervals: enough for every rate to exist


class UsageError(Exception):
    """Something the user can fix; printed as one line, exit code 2."""


def _common(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """Options every command takes. On subcommands they default to "not given", so that
    ``tokentop --demo record`` and ``tokentop record --demo`` mean the same."""
    unset = argparse.SUPPRESS if sub else None
    parser.add_argument(
        "--demo",
        action="store_true",
        default=unset,
        help="simulate a host (8x H200, three vLLM engines); no GPU needed",
    )
    parser.add_argument("--db", type=Path, default=unset, help=f"history database (default {default_db_path()})")
    parser.add_argument(
        "--no-history", dest="history", action="store_false", default=unset, help="do not keep a history database"
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=unset,
        metavar="URL[,kind=K][,name=N][,gpus=0+1][,token_env=VAR]",
        help="an inference server's stats endpoint (repeatable); none: discover local ones",
    )
    parser.add_argument(
        "--interval", type=float, default=unset, metavar="SECONDS", help="seconds between readings (default 1)"
    )
    parser.add_argument("--config", type=Path, default=unset, metavar="FILE", help="TOML settings file (see README)")
    parser.add_argument("--seed", type=int, default=unset, help="seed of the --demo simulation")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if sub else False,
        help="log to stderr what happens",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokentop",
        description="Live cost of a delivered LLM token: tokens/s, watts and $/Mtok per GPU.",
    )
    parser.add_argument("--version", action="version", version=f"tokentop {__version__}")
    _common(parser)
    parser.add_argument(
        "--no-summary",
        dest="summary",
        action="store_false",
        help="do not print the session summary when the live view quits",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    record = sub.add_parser("record", help="sample into the history database until stopped")
    _common(record, sub=True)
    record.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    record.add_argument(
        "--no-summary",
        dest="summary",
        action="store_false",
        default=argparse.SUPPRESS,
        help="do not print the session summary at the end",
    )
    snap = sub.add_parser("snapshot", help="print one complete reading")
    _common(snap, sub=True)
    snap.add_argument("--json", action="store_true", help="JSON (the only format for now; documented in README)")
    summ = sub.add_parser("summary", help="what a session delivered and cost, from the history")
    _common(summ, sub=True)
    report.add_arguments(summ)
    export = sub.add_parser("export", help="serve tokentop's figures as Prometheus /metrics")
    _common(export, sub=True)
    exporter.add_arguments(export)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    endpoints = tuple(parse_endpoint_flag(e) for e in args.endpoint) if args.endpoint else None
    return load_config(
        args.config,
        demo=args.demo,
        db_path=args.db,
        history=args.history,
        endpoints=endpoints,
        interval_s=args.interval,
        seed=args.seed,
    )


@dataclass
class Runtime:
    """What a command runs on: the settings, the GPU source and, with --demo, the simulation."""

    config: Config
    gpus: GpuSource
    demo_host: object | None = None

    def close(self) -> None:
        if self.demo_host is not None:
            self.demo_host.close()


def build_runtime(config: Config) -> Runtime:
    if config.demo:
        from dataclasses import replace

        from tokentop.demo import DemoGpuReader, DemoHost

        host = DemoHost(seed=config.seed)
        endpoints = host.serve()
        config = replace(config, endpoints=tuple(config.endpoints) + endpoints)
        return Runtime(config, DemoGpuReader(host), host)
    from tokentop.nvml.reader import NvmlReader

    return Runtime(config, NvmlReader())


def open_store(config: Config, *, required: bool):
    """The history store, or None when history is off. ``required``: failing is fatal."""
    if not config.history:
        return None
    from tokentop.history import Store, StoreError

    path = config.db_path or default_db_path()
    try:
        return Store.open(
            path,
            host=socket.gethostname(),
            version=__version__,
            config=config.public_dict(),
            raw_retention_h=config.raw_retention_h,
            rollup_retention_d=config.rollup_retention_d,
        )
    except StoreError as exc:
        if required:
            raise UsageError(f"cannot record: {exc}") from None
        print(f"tokentop: {exc}; monitoring without history", file=sys.stderr)
        return None


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT, SIGTERM and SIGHUP set the event (so a clean stop flushes the store)."""
    stop = threading.Event()
    previous = {}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_record(args: argparse.Namespace, config: Config) -> int:
    if not config.history:
        raise UsageError("record writes the history: --no-history leaves it nothing to do")
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=True)
    sampler = Sampler(runtime.config, runtime.gpus, store=store)
    if not sampler.gpus.available:
        print(f"tokentop: {sampler.gpus.reason}", file=sys.stderr)
    where = runtime.config.db_path or default_db_path()
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
    if args.summary and store is not None:
        report.print_session_summary(where, store.session_id, sys.stdout)
    return 0


def cmd_snapshot(args: argparse.Namespace, config: Config) -> int:
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
    json.dump(snapshot_dict(snap, runtime.config.cost), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
    return 0


def cmd_live(args: argparse.Namespace, config: Config) -> int:
    from tokentop.tui import run_live

    runtime = build_runtime(config)
    return run_live(runtime, open_store(runtime.config, required=False), summary=args.summary)


def cmd_summary(args: argparse.Namespace, config: Config) -> int:
    return report.run(args, config)


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    return exporter.run(args, build_runtime(config), config)


COMMANDS = {
    "live": cmd_live,
    "record": cmd_record,
    "snapshot": cmd_snapshot,
    "summary": cmd_summary,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="tokentop: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        command = COMMANDS.get(args.command or "live")
        if command is None:
            raise UsageError(f"unknown command {args.command!r}")
        return command(args, config)
    except (ConfigError, UsageError) as exc:
        print(f"tokentop: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # run the module by its package name, so there is one class per exception
    from tokentop.cli import main as package_main

    sys.exit(package_main())
