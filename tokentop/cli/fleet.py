"""``tokentop --prometheus URL`` or ``tokentop --ssh HOST ...``: the live fleet view.

Builds the source the settings name (``Config.fleet_source``), runs the fleet app with a poller
reading it, and closes both on every way out: quit (0), SIGTERM (143), SIGHUP or a lost terminal
(129), as the local live view. The sources are imported when asked for, so one that cannot be
had is one line, not a traceback. At quit, once the terminal is back, the last reading's header
is printed as plain text: it costs nothing (no query), and says what the fleet looked like.
"""

from __future__ import annotations

import logging
import sys
import threading

from tokentop.cli.watchdog import run_watched
from tokentop.config import Config, ConfigError
from tokentop.fleet.model import FleetReading, FleetSource
from tokentop.fleet.poller import Poller, windows_of
from tokentop.text import safe_text
from tokentop.tui.columns import cost_bands
from tokentop.tui.fleet.header_parts import clock, fleet_header_rows
from tokentop.tui.header_parts import plain_text
from tokentop.units import to_ascii

log = logging.getLogger(__name__)
SUMMARY_WIDTH = 100


class SourceUnavailable(Exception):
    """The fleet source cannot be had; the message is the one line to print."""


def build_source(config: Config, *, live: bool = False) -> FleetSource:
    """The source ``config.fleet_source`` names (``prometheus`` or ``ssh``). ``live``: for the
    fleet screen, which reads per-GPU rows only for the host it has opened (``focus``); else
    every host's GPUs (``snapshot --json``)."""
    if config.fleet_source == "prometheus":
        from tokentop.fleet.prometheus_source import PrometheusSource

        return PrometheusSource(config, detail="focused" if live else "all")
    if config.fleet_source == "ssh":
        from tokentop.fleet.ssh import SshSource

        return SshSource(config)
    raise ValueError(f"no fleet source is set (fleet_source={config.fleet_source!r})")


def open_source(config: Config, *, live: bool = False) -> FleetSource:
    """``build_source``, its failures as ``SourceUnavailable`` (bad settings stay ``ConfigError``:
    one line and exit code 2, from ``main``)."""
    try:
        return build_source(config, live=live)
    except ConfigError:
        raise
    except ImportError as exc:
        raise SourceUnavailable(
            f"tokentop: the {config.fleet_source} fleet source is not available: {safe_text(exc)}"
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise SourceUnavailable(f"tokentop: cannot read the fleet: {safe_text(exc)}") from None


class Closer:
    """Stops the poller and closes the source once, from whichever thread comes first (the end
    of the app, or the watchdog when the app is stuck on a terminal that is gone)."""

    def __init__(self, poller: Poller, source: FleetSource) -> None:
        self.poller, self.source = poller, source
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.poller.stop()
            try:
                self.source.close()
            except Exception:  # closing must not turn an exit into a traceback
                log.debug("closing the fleet source failed", exc_info=True)


def run_live(config: Config) -> int:
    """Run the fleet view until the user quits, a signal or a lost terminal ends it; returns the
    exit code (1 when the source cannot be built)."""
    try:
        source = open_source(config, live=True)
    except SourceUnavailable as exc:
        say(str(exc))
        return 1
    from tokentop.tui.fleet.app import FleetApp

    poller = Poller(source, windows=windows_of(config))
    closer = Closer(poller, source)
    app = run_watched(lambda on_end: FleetApp(config, source, poller=poller, on_end=on_end), closer.close)
    if app.ended_by not in ("hangup", "terminal lost"):  # a terminal to print on
        _print_last(app.latest, config)
    return app.return_code or 0


def last_reading_text(reading: FleetReading | None, config: Config) -> str:
    """The last reading's header as plain lines, after when it was taken."""
    if reading is None:
        return "tokentop fleet: no reading was taken.\n"
    rows = fleet_header_rows(reading, None, cost_bands(config.cost), SUMMARY_WIDTH)
    text = f"tokentop fleet, last reading at {clock(reading.t_wall)}:\n{plain_text(rows)}\n"
    return to_ascii(text) if config.ascii_only else text


def _print_last(reading: FleetReading | None, config: Config) -> None:
    try:
        sys.stdout.write(last_reading_text(reading, config))
        sys.stdout.flush()
    except OSError:  # the terminal went away as we left
        pass


def say(line: str) -> None:
    """One line on standard error; a terminal already gone is no error."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass
