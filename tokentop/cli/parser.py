"""The command line's grammar: the options every command takes, each command's own (from its
module), and the settings they make.

A command's module is imported only when that command is given: each module's
``add_arguments(parser)`` and ``COMMON_OPTIONS`` are read once argparse has chosen the command
(``_LazyCommands``). The live view, which is no command, so starts without loading the history,
the report, the exporter or httpx (about 0.3 s); ``tokentop --help`` lists every command from
``COMMANDS`` and ``tokentop COMMAND --help`` every option of that command.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from tokentop import __version__
from tokentop.cli.runtime import UsageError
from tokentop.config import Config, ConfigError, SshHostConfig, default_db_path, load_config, parse_endpoint_flag

COMMANDS = {  # name: what it does; the module tokentop.cli.<name> holds its options and its run()
    "record": "sample into the history database until stopped",
    "snapshot": "print one complete reading as JSON (--follow: one a line; a fleet's with --prometheus/--ssh)",
    "summary": "what a session delivered and cost, from the history (a fleet's with --prometheus/--ssh)",
    "export": "serve tokentop's figures as Prometheus /metrics",
}
SUMMARY_MODES = ("short", "full", "none")  # the summary printed when the live view or record ends

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
# What reads a fleet when the settings name one (the live view, snapshot, summary), and the
# shared options it then ignores: each host samples and records by its own settings. Over ssh
# --interval is each host's interval; Prometheus is read every [prometheus] refresh_s.
FLEET_COMMANDS = (None, "snapshot", "summary")
FLEET_IGNORES = ("--demo", "--db", "--no-history", "--endpoint", "--seed", "--summary")


def refuse_ignored(args: argparse.Namespace) -> None:
    """One line (``UsageError``) for an option the command would ignore, wherever it was given
    (``tokentop --endpoint X summary`` as well as ``tokentop summary --endpoint X``)."""
    if args.command is None:
        return
    takes = command_module(args.command).COMMON_OPTIONS  # --once: tokentop.cli.once
    for dest, flag in COMMON_FLAGS.items():
        if flag not in takes and getattr(args, dest, None) is not None:
            said = "--summary/--no-summary" if flag == "--summary" else flag
            command = "--once" if args.command == "once" else args.command  # an option, not a command
            raise UsageError(f"{command} does not take {said}: it would be ignored")


def refuse_ignored_by_fleet(args: argparse.Namespace, config: Config) -> None:
    """One line (``UsageError``) for an option the fleet would ignore: ``tokentop --prometheus
    URL --demo``, or ``summary --db X`` with ``[[hosts]]`` in the settings."""
    if args.command not in FLEET_COMMANDS or config.fleet_source is None:
        return
    ignored = FLEET_IGNORES + (("--interval",) if config.fleet_source == "prometheus" else ())
    for dest, flag in COMMON_FLAGS.items():
        if flag in ignored and getattr(args, dest, None) is not None:
            what = f"{args.command} of a fleet" if args.command else "the fleet view"
            said = "--summary/--no-summary" if flag == "--summary" else flag
            given = "--prometheus" if config.fleet_source == "prometheus" else "--ssh"
            if getattr(args, given.lstrip("-"), None) is None:
                given = "the settings' [prometheus] url" if given == "--prometheus" else "the settings' [[hosts]]"
            raise UsageError(f"{what} ({given}) does not take {said}: it would be ignored")


def command_module(name: str) -> ModuleType:
    """``tokentop.cli.<name>``: the command's options (``add_arguments``, ``COMMON_OPTIONS``) and
    its ``run``."""
    return importlib.import_module(f"tokentop.cli.{name}")


class _LazyCommands(argparse._SubParsersAction):
    """Subcommands whose options are added when argparse picks one: only that command's module
    is imported (``--help`` of a command included)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        name = values[0]
        loaded: set[str] = vars(self).setdefault("loaded", set())
        command = self._name_parser_map.get(name)
        if command is not None and name not in loaded:
            module = command_module(name)
            _common(command, sub=True, takes=frozenset(module.COMMON_OPTIONS), reads_only=name == "summary")
            module.add_arguments(command)
            loaded.add(name)
        super().__call__(parser, namespace, values, option_string)


def add_summary_mode(parser: argparse.ArgumentParser, when: str, *, default: str | None) -> None:
    """``--summary {short,full,none}`` and ``--no-summary`` (the same as ``none``), for the
    commands that print their session's summary as they end."""
    parser.add_argument(
        "--summary",
        dest="summary_mode",
        choices=SUMMARY_MODES,
        default=default,
        help=f"the session summary printed {when}: short (default: a host block, then the per-GPU "
        "table when it fits the terminal), full (every table), or none",
    )
    parser.add_argument(
        "--no-summary",
        dest="summary_mode",
        action="store_const",
        const="none",
        default=default,
        help="the same as --summary none",
    )


def _common_options(*, reads_only: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """The options the commands share: (flag, help, argparse's other arguments). ``reads_only``:
    for ``summary``, which reads a history and samples nothing."""
    db_help = f"history database (default {default_db_path()}; demo.db beside it with --demo)"
    demo_help = "simulate a host (8x H200, three vLLM engines); no GPU needed"
    if reads_only:
        demo_help = "read the --demo sessions' history (demo.db, unless --db)"
    return [
        ("--demo", demo_help, {"action": "store_true"}),
        ("--db", db_help, {"type": Path}),
        ("--no-history", "do not keep a history database", {"dest": "history", "action": "store_false"}),
        (
            "--endpoint",
            "an inference server's stats endpoint (repeatable); none: discover local ones",
            {"action": "append", "metavar": "URL[,kind=K][,name=N][,gpus=0+1][,token_env=VAR]"},
        ),
        ("--interval", "seconds between readings (default 1)", {"type": float, "metavar": "SECONDS"}),
        ("--config", "TOML settings file (see README)", {"type": Path, "metavar": "FILE"}),
        ("--seed", "seed of the --demo simulation", {"type": int}),
        (
            "--prometheus",
            "read the fleet from this Prometheus (http://prometheus:9090) instead of this host",
            {"metavar": "URL"},
        ),
        ("--prometheus-token-env", "environment variable holding Prometheus's bearer token", {"metavar": "VAR"}),
        (
            "--ssh",
            "read this host's tokentop over your ssh (repeatable): the fleet view without Prometheus",
            {"action": "append", "metavar": "[USER@]HOST[:PORT]"},
        ),
    ]


def _common(
    parser: argparse.ArgumentParser, *, sub: bool = False, takes: frozenset[str] = ALL_COMMON, reads_only: bool = False
) -> None:
    """Options every command takes. On subcommands they default to "not given", so that
    ``tokentop --demo record`` and ``tokentop record --demo`` mean the same; those a command does
    not take are hidden from its help, and refused once parsed."""
    unset = argparse.SUPPRESS if sub else None
    for flag, text, options in _common_options(reads_only=reads_only):
        parser.add_argument(flag, default=unset, help=text if flag in takes else argparse.SUPPRESS, **options)
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_LazyCommands)
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, description=text)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The settings the options make; ``UsageError`` for an option the command would ignore."""
    refuse_ignored(args)
    endpoints = tuple(parse_endpoint_flag(e) for e in args.endpoint) if args.endpoint else None
    prometheus = {"url": args.prometheus, "token_env": args.prometheus_token_env}
    prometheus = {k: v for k, v in prometheus.items() if v is not None}
    config = load_config(
        args.config,
        demo=args.demo,
        db_path=args.db,
        history=args.history,
        endpoints=endpoints,
        interval_s=args.interval,
        seed=args.seed,
        ascii_only=args.ascii_only,
        prometheus=prometheus or None,
        hosts=tuple(_ssh_host(target) for target in args.ssh) if args.ssh else None,
    )
    refuse_ignored_by_fleet(args, config)
    return config


def _ssh_host(target: str) -> SshHostConfig:
    """A host of ``--ssh``; a bad target is named by the flag."""
    try:
        return SshHostConfig(ssh=target)
    except ConfigError as exc:
        raise ConfigError(exc.problem, "--ssh") from None
