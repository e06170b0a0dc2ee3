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
MAX_HOST_NAME = 253  # a DNS name's limit


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
    parser.add_argument(
        "--host-name",
        metavar="NAME",
        help="the host label of every series (default: this machine's host name); gives several "
        "exporters on one machine their own hosts in a fleet",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    """Sample and serve until SIGINT, SIGTERM or SIGHUP."""
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    host_name = _host_name(args.host_name)
    runtime = build_runtime(config)
    store = open_store(runtime.config, required=False, origin="export")
    sampler = Sampler(runtime.config, runtime.gpus, store=store)
    try:
        server = serve(sampler, host, port, host_name)
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


def _host_name(text: str | None) -> str | None:
    """The ``--host-name`` as given, or None (this machine's name); a name a Prometheus label or
    a screen cannot carry safely is refused."""
    if text is None:
        return None
    if not text.strip() or len(text) > MAX_HOST_NAME or not text.isprintable():
        raise UsageError(f"--host-name {text[:40]!r}: give a printable name of 1 to {MAX_HOST_NAME} characters")
    return text
