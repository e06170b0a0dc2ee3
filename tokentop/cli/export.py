"""``tokentop export``: sample, record, and serve the latest reading as Prometheus ``/metrics``."""

from __future__ import annotations

import argparse
import logging
import sys

from tokentop.changes import ChangeLog
from tokentop.cli.runtime import UsageError, build_runtime, open_store, stop_on_signals
from tokentop.config import Config
from tokentop.exporter import DEFAULT_LISTEN, parse_listen, serve
from tokentop.model import Snapshot
from tokentop.sampler import Sampler

log = logging.getLogger("tokentop")


# The options shared by the commands (``tokentop.cli.parser``) that export takes: all of them.
COMMON_OPTIONS = ("--demo", "--db", "--no-history", "--endpoint", "--interval", "--config", "--seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where to serve /metrics (default {DEFAULT_LISTEN}: this machine "
        "only; 0.0.0.0:9464 or [::]:9464 to let other machines scrape)",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    """Sample and serve until SIGINT, SIGTERM or SIGHUP."""
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=False, origin="export")
    sampler = Sampler(runtime.config, runtime.gpus, store=store)
    try:
        server = serve(sampler, host, port)
    except OSError as exc:
        sampler.stop()
        runtime.close()
        raise UsageError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None
    bound = server.server_address[1]
    where = f"[{host}]" if ":" in host else host
    print(
        f"tokentop: serving http://{where}:{bound}/metrics every {runtime.config.interval_s:g} s; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    if server.beyond_loopback():
        print(
            f"tokentop: warning: {where}:{bound} is reachable beyond this machine: anyone who reaches the "
            "port reads this host's GPUs, models, tokens and costs (no authentication); firewall it "
            "or listen on 127.0.0.1 behind an authenticating proxy",
            file=sys.stderr,
            flush=True,
        )
    if not sampler.gpus.available:
        print(f"tokentop: {sampler.gpus.reason}", file=sys.stderr)
    changes = ChangeLog()

    def report_changes(snapshot: Snapshot) -> None:  # on the sampler thread, once per change
        for line in changes.lines(snapshot):
            log.warning(line)

    sampler.sink = report_changes
    with stop_on_signals() as stop:
        sampler.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            server.shutdown()
            server.server_close()
            sampler.stop()
            runtime.close()
    return 0
