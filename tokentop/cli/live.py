"""``tokentop`` with no command: the live view, then the session summary once the terminal is back."""

from __future__ import annotations

import argparse
import sys

from tokentop.cli.runtime import Runtime, build_runtime, open_store
from tokentop.cli.summary import print_session_summary
from tokentop.config import Config
from tokentop.history import Store
from tokentop.sampler import Sampler
from tokentop.tui import TokentopApp, logs_on_screen, short_summary


def run(args: argparse.Namespace, config: Config) -> int:
    if config.fleet_source is not None:  # --prometheus, --ssh, or the config's: the fleet view
        from tokentop.cli import fleet

        return fleet.run_live(config)
    runtime = build_runtime(config)
    return run_live(runtime, open_store(runtime.config, required=False), summary=args.summary_mode or "short")


def run_live(runtime: Runtime, store: Store | None, *, summary: str = "short") -> int:
    """Run the live view until the user quits, a signal or a lost terminal ends it.

    Stops the sampler (which closes ``store``) whatever happened, then, once the terminal is
    back from the alternate screen (not after a hangup: there is no terminal), prints the
    session summary (``summary``: ``short``, ``full`` or ``none``): the one from the history,
    or a few lines from the last snapshot when there is no history. Returns the exit code: 0
    on quit, 129 on hangup or a lost terminal, 143 on SIGTERM.
    """
    config = runtime.config
    sampler = Sampler(config, runtime.gpus, store=store)
    summary_dir = None if store is None else store.path.parent
    app = TokentopApp(config, sampler=sampler, store=store, summary_dir=summary_dir)
    try:
        with logs_on_screen(app):
            app.run()
    finally:
        sampler.stop()  # closes the history: the summary below then covers every tick
        runtime.close()
    if store is not None and store.ticks_lost:
        _say(f"tokentop: {store.ticks_written} ticks written, {store.ticks_lost} lost in {store.path}\n")
    if summary != "none" and app.ended_by not in ("hangup", "terminal lost"):  # a terminal to print on
        _print_summary(app, store, "short" if summary == "short" else "md")
    return app.return_code or 0


def _say(line: str) -> None:
    """One line on stderr, if there is still somewhere to write it (not after a hangup)."""
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except OSError:
        pass


def _print_summary(app: TokentopApp, store: Store | None, fmt: str) -> None:
    """The summary from the history when the session took a reading, in ``fmt`` (``short`` or
    ``md``), else the few lines the last snapshot gives. One or the other, never both: when the
    history has nothing to summarise (no GPU, no endpoint), its one line says so."""
    if store is not None and store.session_id is not None and app.latest is not None:
        print_session_summary(store.path, store.session_id, sys.stdout, fmt)
        return
    try:
        sys.stdout.write(short_summary(app.latest, app.host_name))
        if app.summary_path is not None:
            sys.stdout.write(f"  summary file {app.summary_path}\n")
        sys.stdout.flush()
    except OSError:  # the terminal went away as we left
        pass
