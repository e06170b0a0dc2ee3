"""``tokentop snapshot --json``: one complete reading, taken after enough ticks for every rate.
It writes no history (its few seconds would become the latest session) unless ``--record``
asks for one.

``--follow`` makes it a feed: one snapshot per line (NDJSON), each flushed as it is written,
recording the history as ``record`` does unless ``--no-history``; what a fleet viewer reads
over ssh (``tokentop.fleet.ssh``), and what ``jq`` and scripts read. It ends cleanly, with no
traceback, on SIGTERM, SIGHUP or SIGINT (status 0), on a closed standard output (``| head``:
141, silently) and on end of input when standard input is a pipe or a socket (0): that is how
a viewer that quits, or dies, ends the remote feed, since sshd without a terminal sends no
SIGHUP. A terminal, a file or /dev/null on standard input is not watched.

With ``--ssh``/``--prometheus`` it prints one fleet reading instead (``fleet.reading_json``).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import threading
import time

from tokentop.cli.output import OutputLost, PipeClosed, write_stdout
from tokentop.cli.runtime import FLEET_OPTIONS, UsageError, build_runtime, history_path, open_store, stop_on_signals
from tokentop.config import Config
from tokentop.fleet.model import FleetReading, FleetSource
from tokentop.model import Snapshot
from tokentop.sampler import FIRST_INTERVAL_S, Sampler
from tokentop.snapshot_json import snapshot_dict

SNAPSHOT_TICKS = 3  # two measured intervals: enough for every rate to exist
EXIT_TICKS_LOST = 1  # as record: some ticks did not reach the history
EXIT_NO_FLEET_READING = 1  # no host of the fleet could be read, or its source cannot be had
SAID_HOSTS = 3  # hosts whose reason the one line gives when none could be read
FLEET_WAIT_S = 20.0  # for every ssh host's first reading with rates (ssh's ConnectTimeout is 10 s)


# The options shared by the commands (``tokentop.cli.parser``) that snapshot takes (--db only
# with --record or --follow, --no-history only with --follow).
COMMON_OPTIONS = ("--demo", "--db", "--no-history", "--endpoint", "--interval", "--config", "--seed", *FLEET_OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON (the only format for now; documented in README)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="keep the reading's ticks as a session of the history (--db, default as for record)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="a reading every --interval, one JSON line each (NDJSON), until stopped or end of input; "
        "records the history as record does unless --no-history",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    if config.fleet_source is not None:
        return _fleet(args, config)
    if args.follow:
        return _follow(args, config)
    if args.db is not None and not args.record:
        raise UsageError("snapshot does not take --db without --record or --follow: it would be ignored")
    if getattr(args, "history", None) is False:  # --no-history: a lone snapshot writes none anyway
        said = "leave out --no-history" if args.record else "it would be ignored"
        raise UsageError(f"snapshot does not take --no-history without --follow: {said}")
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


# --- the feed ----------------------------------------------------------------------------------


def _follow(args: argparse.Namespace, config: Config) -> int:
    if args.record:
        raise UsageError("snapshot --follow records the history already (--no-history to not): leave out --record")
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=False, origin="record")
    sampler = Sampler(runtime.config, runtime.gpus, store=store)
    cost = runtime.config.cost
    failed: list[Exception] = []  # the output's end: PipeClosed or OutputLost, raised once stopped

    with stop_on_signals() as stop:

        def emit(snapshot: Snapshot) -> None:
            if stop.is_set():
                return
            try:
                write_stdout(json.dumps(snapshot_dict(snapshot, cost), allow_nan=False) + "\n")
            except (PipeClosed, OutputLost) as exc:
                failed.append(exc)
                stop.set()

        _stop_at_end_of_input(stop)
        sampler.start_background()
        try:
            sampler.run(stop, on_tick=emit, first_interval_s=FIRST_INTERVAL_S)
        finally:
            closing = sampler.stop()
            runtime.close()
    if failed:
        raise failed[0]
    lost = store.ticks_lost if store is not None else 0
    if lost:
        print(f"tokentop: {lost} ticks not written to {history_path(runtime.config)}", file=sys.stderr)
    return EXIT_TICKS_LOST if lost or closing else 0


def _stop_at_end_of_input(stop: threading.Event) -> None:
    """Set ``stop`` when standard input, a pipe or a socket (ssh's channel), reaches its end."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):  # closed, or not a real file (a test's capture)
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    fd = sys.stdin.fileno()

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=watch, name="tokentop-stdin", daemon=True).start()


# --- the fleet's reading -------------------------------------------------------------------------


def _fleet(args: argparse.Namespace, config: Config) -> int:
    if args.follow or args.record:
        raise UsageError(
            "snapshot of a fleet (--ssh, --prometheus, or the settings' [[hosts]] or [prometheus] url) "
            "prints one reading: it takes no --follow or --record"
        )
    from tokentop.cli.fleet import SourceUnavailable, open_source, say
    from tokentop.fleet.reading_json import reading_dict

    try:
        source = open_source(config)
    except SourceUnavailable as exc:
        say(str(exc))
        return EXIT_NO_FLEET_READING
    try:
        reading = _first_reading(source)
    finally:
        source.close()
    write_stdout(json.dumps(reading_dict(reading), indent=2, allow_nan=False) + "\n")
    if reading.fleet.hosts_up == 0:
        say(f"tokentop: no host could be read ({_why_none(reading)})")
        return EXIT_NO_FLEET_READING
    return 0


def _why_none(reading: FleetReading) -> str:
    """The source's trouble (Prometheus unreachable), else the first hosts' reasons (ssh's own
    words); a one-shot reading is not retried, so a reason's "retrying in" is left out."""
    reasons = [f"{h.name}: {h.reason.partition('; retrying in ')[0].strip()}" for h in reading.hosts if h.reason]
    if not reasons:
        return reading.status or "no host answered"
    more = f"; and {len(reasons) - SAID_HOSTS} more" if len(reasons) > SAID_HOSTS else ""
    return "; ".join(reasons[:SAID_HOSTS]) + more


def _first_reading(source: FleetSource) -> FleetReading:
    """A Prometheus answers at once; ssh hosts are waited for (``FLEET_WAIT_S`` at most) until
    each has a reading with rates or is down."""
    settled = getattr(source, "all_settled", None)
    deadline = time.monotonic() + FLEET_WAIT_S
    while settled is not None and not settled() and time.monotonic() < deadline:
        time.sleep(0.1)
    return source.read()
