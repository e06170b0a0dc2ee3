"""The command line's grammar: the options every command takes, each command's own (from its
module), and the settings they make."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from tokentop import __version__
from tokentop.cli import export, record, snapshot, summary
from tokentop.cli.runtime import UsageError
from tokentop.cli.summary import add_summary_mode
from tokentop.config import Config, SshHostConfig, default_db_path, load_config, parse_endpoint_flag

COMMANDS = (
    ("record", record, "sample into the history database until stopped"),
    ("snapshot", snapshot, "print one complete reading"),
    ("summary", summary, "what a session delivered and cost, from the history"),
    ("export", export, "serve tokentop's figures as Prometheus /metrics"),
)

# The options the commands share, by the attribute each sets (and the live view's --summary,
# which record takes too): the live view takes them all, a command those its module lists in
# ``COMMON_OPTIONS``; one given to a command that would ignore it is refused
# (``refuse_ignored``). -v is taken by all.
COMMON_FLAGS = {
    "demo": "--demo",
    "db": "--db",
    "history": "--no-history",
    "endpoint": "--endpoint",
    "interval": "--interval",
    "config": "--config",
    "seed": "--seed",
    "summary_mode": "--summary",
    "prometheus": "--prometheus",
    "prometheus_token_env": "--prometheus-token-env",
    "ssh": "--ssh",
}
ALL_COMMON = frozenset(COMMON_FLAGS.values())


def refuse_ignored(args: argparse.Namespace) -> None:
    """One line (``UsageError``) for an option the command would ignore, wherever it was given
    (``tokentop --endpoint X summary`` as well as ``tokentop summary --endpoint X``)."""
    if args.command is None:
        return
    takes = importlib.import_module(f"tokentop.cli.{args.command}").COMMON_OPTIONS  # --once: tokentop.cli.once
    for dest, flag in COMMON_FLAGS.items():
        if flag not in takes and getattr(args, dest, None) is not None:
            said = "--summary/--no-summary" if flag == "--summary" else flag
            raise UsageError(f"{args.command} does not take {said}: it would be ignored")


def _common(parser: argparse.ArgumentParser, *, sub: bool = False, takes: frozenset[str] = ALL_COMMON) -> None:
    """Options every command takes. On subcommands they default to "not given", so that
    ``tokentop --demo record`` and ``tokentop record --demo`` mean the same; those a command does
    not take are hidden from its help, and refused once parsed."""
    unset = argparse.SUPPRESS if sub else None

    def shown(flag: str, text: str) -> str:
        return text if flag in takes else argparse.SUPPRESS

    parser.add_argument(
        "--demo",
        action="store_true",
        default=unset,
        help=shown("--demo", "simulate a host (8x H200, three vLLM engines); no GPU needed"),
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=unset,
        help=shown("--db", f"history database (default {default_db_path()}; demo.db beside it with --demo)"),
    )
    parser.add_argument(
        "--no-history",
        dest="history",
        action="store_false",
        default=unset,
        help=shown("--no-history", "do not keep a history database"),
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=unset,
        metavar="URL[,kind=K][,name=N][,gpus=0+1][,token_env=VAR]",
        help=shown("--endpoint", "an inference server's stats endpoint (repeatable); none: discover local ones"),
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=unset,
        metavar="SECONDS",
        help=shown("--interval", "seconds between readings (default 1)"),
    )
    parser.add_argument(
        "--config", type=Path, default=unset, metavar="FILE", help=shown("--config", "TOML settings file (see README)")
    )
    parser.add_argument("--seed", type=int, default=unset, help=shown("--seed", "seed of the --demo simulation"))
    parser.add_argument(
        "--prometheus",
        default=unset,
        metavar="URL",
        help=shown("--prometheus", "read the fleet from this Prometheus (http://prometheus:9090) instead of this host"),
    )
    parser.add_argument(
        "--prometheus-token-env",
        default=unset,
        metavar="VAR",
        help=shown("--prometheus-token-env", "environment variable holding Prometheus's bearer token"),
    )
    parser.add_argument(
        "--ssh",
        action="append",
        default=unset,
        metavar="[USER@]HOST[:PORT]",
        help=shown("--ssh", "read this host's tokentop over your ssh (repeatable): the fleet view without Prometheus"),
    )
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
    add_summary_mode(parser, "when the live view quits", default=None)
    parser.add_argument(
        "--once",
        dest="command",
        action="store_const",
        const="once",
        help="print one reading (header, GPUs, engines, processes) as plain text and exit, for scripts and cron",
    )
    parser.add_argument(
        "--ascii",
        dest="ascii_only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw only ASCII characters (default: when the locale is not UTF-8)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, text in COMMANDS:
        command = sub.add_parser(name, help=text)
        _common(command, sub=True, takes=frozenset(module.COMMON_OPTIONS))
        module.add_arguments(command)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The settings the options make; ``UsageError`` for an option the command would ignore."""
    refuse_ignored(args)
    endpoints = tuple(parse_endpoint_flag(e) for e in args.endpoint) if args.endpoint else None
    prometheus = {"url": args.prometheus, "token_env": args.prometheus_token_env}
    prometheus = {k: v for k, v in prometheus.items() if v is not None}
    return load_config(
        args.config,
        demo=args.demo,
        db_path=args.db,
        history=args.history,
        endpoints=endpoints,
        interval_s=args.interval,
        seed=args.seed,
        ascii_only=args.ascii_only,
        prometheus=prometheus or None,
        hosts=tuple(SshHostConfig(ssh=target) for target in args.ssh) if args.ssh else None,
    )
