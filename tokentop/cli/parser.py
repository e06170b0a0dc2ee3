"""The command line's grammar: the options every command takes, each command's own (from its
module), and the settings they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from tokentop import __version__
from tokentop.cli import export, record, snapshot, summary
from tokentop.config import Config, default_db_path, load_config, parse_endpoint_flag

COMMANDS = (
    ("record", record, "sample into the history database until stopped"),
    ("snapshot", snapshot, "print one complete reading"),
    ("summary", summary, "what a session delivered and cost, from the history"),
    ("export", export, "serve tokentop's figures as Prometheus /metrics"),
)


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
    for name, module, text in COMMANDS:
        command = sub.add_parser(name, help=text)
        _common(command, sub=True)
        module.add_arguments(command)
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
