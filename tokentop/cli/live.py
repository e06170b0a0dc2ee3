"""``tokentop`` with no command: the live view, then the session summary once the terminal is back.

The screen comes first: the app is created and drawn ("starting"), and only then are the GPU
source (NVML, or the demo's engines), the history and the sampler built, on a thread of their
own (``Startup``), and handed to the app. Their imports and set-up (about 0.1 s of CPU) so no
longer stand between the command and its first screen. As soon as the GPUs can be read, before
the history, the sampler and the endpoints' first answers, the app gets a first look (the GPUs
alone, ``derive.first_look``): every GPU row is drawn without waiting for any of those.
``benchmarks/bench_startup.py`` times all of it.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO, cast

from tokentop.cli.runtime import Runtime, build_runtime, open_store
from tokentop.cli.watchdog import run_watched
from tokentop.config import Config
from tokentop.tui import TokentopApp, short_summary
from tokentop.tui.host import DemoProcessHost
from tokentop.units import to_ascii

if TYPE_CHECKING:
    from tokentop.history import Store
    from tokentop.sampler import Sampler

log = logging.getLogger(__name__)
BUILD_WAIT_S = 10.0  # how long the end of the app waits for a start-up still under way


def run(args: argparse.Namespace, config: Config) -> int:
    if config.fleet_source is not None:  # --prometheus, --ssh, or the config's: the fleet view
        from tokentop.cli import fleet

        return fleet.run_live(config)
    return _run_app(Startup(config), config, summary=args.summary_mode or "short")


def run_live(runtime: Runtime, store: Store | None, *, summary: str = "short") -> int:
    """The live view on a runtime and history already built (the same as ``tokentop`` else)."""
    return _run_app(Startup(runtime.config, runtime, store), runtime.config, summary=summary)


def _first_look(app: TokentopApp, runtime: Runtime) -> None:
    """The GPUs, drawn before what is slower to build is built (the sampler reads them again)."""
    from tokentop.derive.first_look import gpus_alone

    runtime.gpus.open()  # the sampler opens them again: once is all it takes
    reading = runtime.gpus.read(time.monotonic(), False)
    app.post_snapshot(gpus_alone(runtime.config, reading, time.time()))


class _StoppedFirst(Exception):
    """``stop`` came while the start-up was building: what it built is closed, not handed over."""


class Startup:
    """The GPU source, the history and the sampler, built on a thread once the app has drawn
    its first screen (``begin``), and stopped at the end whatever happened (``stop``). A history
    that cannot be used is one line, on the screen and again on stderr once the terminal is
    back; anything else that fails ends the app with one line, never a traceback.

    Each part is handed over as soon as it is built, so that ``stop`` closes it even when the
    build is still under way (the watchdog gives it 1.5 s); a part built after ``stop`` is closed
    by the build itself, and a ``begin`` after ``stop`` builds nothing."""

    def __init__(self, config: Config, runtime: Runtime | None = None, store: Store | None = None) -> None:
        self.config = config
        self.runtime, self.store = runtime, store
        self._store_given = runtime is not None
        self.sampler: Sampler | None = None
        self.said: list[str] = []  # lines for stderr once the terminal is back
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # what is handed over, and whether stop came
        self._stop_lock = threading.Lock()  # one stop at a time: the second waits for the first
        self._stopped = False

    def begin(self, app: TokentopApp) -> None:
        with self._lock:
            if self._stopped:  # the app is already ending (the watchdog said its last words)
                return
            self._thread = threading.Thread(target=self._build, args=(app,), name="tokentop-startup", daemon=True)
            self._thread.start()

    def _build(self, app: TokentopApp) -> None:
        from tokentop.sampler import Sampler

        def say(line: str) -> None:
            self.said.append(line)
            app.warn(line.removeprefix("tokentop: "))

        try:
            runtime = self.runtime
            if runtime is None:
                runtime = build_runtime(self.config)
                self._keep("runtime", runtime, runtime.close)
            try:
                _first_look(app, runtime)
            except Exception:  # only a nicety: the sampler's first tick draws the GPUs all the same
                log.debug("the first look failed", exc_info=True)
            if not self._store_given:
                store = open_store(runtime.config, required=False, say=say)
                self._keep("store", store, store.close if store is not None else None)
            sampler = Sampler(runtime.config, runtime.gpus, store=self.store)
            self._keep("sampler", sampler, sampler.stop)
        except _StoppedFirst:
            return
        except Exception as exc:  # a traceback in front of the user is a bug: one line, at -v the rest
            log.debug("start-up failed", exc_info=True)
            self.said.append(f"tokentop: cannot start: {exc}")
            app.start_failed()
            return
        app.attach(sampler, self.store)

    def _keep(self, name: str, built: object, close: Callable[[], object] | None) -> None:
        """Hand ``built`` over as ``self.<name>``, for ``stop`` to close; if ``stop`` came first,
        close it here instead and end the build (``_StoppedFirst``)."""
        with self._lock:
            if not self._stopped:
                setattr(self, name, built)
                return
        if close is not None:
            close()
        raise _StoppedFirst

    def stop(self) -> None:
        """Wait a while for a start-up under way, then stop the sampler (which closes the
        history), close the history if no sampler was built, close the demo: what was handed
        over by then; the build closes what it makes later. Once, from whichever thread comes
        first (the app's end, or the watchdog); a second call waits for the first."""
        with self._stop_lock:
            with self._lock:
                if self._stopped:
                    return
                self._stopped = True
                thread = self._thread
            if thread is not None:
                thread.join(BUILD_WAIT_S)
            with self._lock:
                sampler, store, runtime = self.sampler, self.store, self.runtime
            if sampler is not None:
                sampler.stop()
            elif store is not None:
                store.close()
            if runtime is not None:
                runtime.close()


def _run_app(startup: Startup, config: Config, *, summary: str) -> int:
    """Run the live view until the user quits, a signal or a lost terminal ends it.

    Stops the sampler (which closes the history) whatever happened, then, once the terminal is
    back from the alternate screen (not after a hangup: there is no terminal), prints the
    session summary (``summary``: ``short``, ``full`` or ``none``): the one from the history,
    or a few lines from the last snapshot when there is no history. Returns the exit code: 0
    on quit, 129 on hangup or a lost terminal, 143 on SIGTERM, 1 when it could not start.
    """
    host = DemoProcessHost(config.seed) if config.demo else None
    app = run_watched(lambda on_end: TokentopApp(config, startup=startup.begin, on_end=on_end, host=host), startup.stop)
    store = startup.store
    for line in startup.said:
        _say(line + "\n")
    if store is not None and store.ticks_lost:
        _say(f"tokentop: {store.ticks_written} ticks written, {store.ticks_lost} lost in {store.path}\n")
    if summary != "none" and app.return_code != 1 and app.ended_by not in ("hangup", "terminal lost"):
        _print_summary(app, store, "short" if summary == "short" else "md")
    return app.return_code or 0


class _AsciiOut(io.TextIOBase):
    """Standard output that writes only ASCII (``--ascii``: the terminal cannot draw more)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> int:
        return self.out.write(to_ascii(text))

    def flush(self) -> None:
        self.out.flush()


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
        from tokentop.cli.summary import print_session_summary

        out = cast(TextIO, _AsciiOut(sys.stdout)) if app.config.ascii_only else sys.stdout
        print_session_summary(store.path, store.session_id, out, fmt)
        return
    try:
        sys.stdout.write(short_summary(app.latest, app.host_name, ascii_only=app.config.ascii_only))
        if app.summary_path is not None:
            sys.stdout.write(f"  summary file {app.summary_path}\n")
        sys.stdout.flush()
    except OSError:  # the terminal went away as we left
        pass
