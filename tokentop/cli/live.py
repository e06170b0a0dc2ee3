"""``tokentop`` with no command: the live view, then the session summary once the terminal is back.

What comes first is a frame of our own (``first_frame``): as soon as the settings are read, the
alternate screen and the header's first lines, before Textual (about 0.2 s to load) is even
imported. Meanwhile the GPU source (NVML, or the demo's engines) is built and read on a thread
(``EarlyLook``), and the frame draws every GPU row from that reading while Textual loads; its
driver then takes the screen over without clearing it, and shows the app's screen once that has
drawn the same reading (a first look: the GPUs alone, ``derive.first_look``). The app's
start-up (``Startup``, on a thread once its first screen is drawn) takes the GPU source over and
builds the history and the sampler. Where no frame can be drawn (no terminal), the same, without
the frame. ``benchmarks/bench_startup.py`` times all of it.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO, cast

from tokentop.cli.first_frame import FirstFrame
from tokentop.cli.runtime import Runtime, build_runtime, open_store
from tokentop.cli.watchdog import run_watched
from tokentop.config import Config
from tokentop.tui import short_summary
from tokentop.tui.host import DemoProcessHost
from tokentop.units import to_ascii

if TYPE_CHECKING:
    from tokentop.history import Store
    from tokentop.model import Snapshot
    from tokentop.sampler import Sampler
    from tokentop.tui import TokentopApp

log = logging.getLogger(__name__)
BUILD_WAIT_S = 10.0  # how long the end of the app waits for a start-up still under way


def run(args: argparse.Namespace, config: Config) -> int:
    if config.fleet_source is not None:  # --prometheus, --ssh, or the config's: the fleet view
        from tokentop.cli import fleet

        return fleet.run_live(config)
    frame = FirstFrame.open(config, socket.gethostname())
    startup: Startup | None = None
    try:
        early = EarlyLook(config, frame)
        startup = Startup(config, early=early)
        # built while Textual is imported: building it after the import made the first rates later by the
        # import's time
        early.start()
        return _run_app(startup, config, summary=args.summary_mode or "short", frame=frame)
    finally:  # whatever happened before the app took the terminal (SIGTERM or SIGHUP too): the screen as it was
        held = []
        if frame is not None:
            frame.leave()
            held = frame.stop_holding_logs()
        if startup is None:
            _replay(held)
        else:
            startup.held_logs += held
            try:
                startup.stop()
            finally:
                startup.replay_logs()


def run_live(runtime: Runtime, store: Store | None, *, summary: str = "short") -> int:
    """The live view on a runtime and history already built (the same as ``tokentop`` else)."""
    return _run_app(Startup(runtime.config, runtime, store), runtime.config, summary=summary)


def _look(runtime: Runtime) -> Snapshot:
    """The GPUs alone, before what is slower to build is built (the sampler reads them again)."""
    from tokentop.derive.first_look import gpus_alone

    runtime.gpus.open()  # the sampler opens them again: once is all it takes
    return gpus_alone(runtime.config, runtime.gpus.read(time.monotonic(), False), time.time())


def _replay(records: list[logging.LogRecord]) -> None:
    """Log records held while the first frame owned the screen, to the handlers in place now."""
    for record in records:
        logging.getLogger().handle(record)


class EarlyLook:
    """The GPU source built and read on a thread of its own as soon as the settings are read,
    while Textual loads: the first frame draws the reading, and the app's start-up takes the
    source (``take``) with a first look of the same reading. Built, it is the start-up's to
    close; ``discard``, when no start-up will take it (the app never began)."""

    def __init__(self, config: Config, frame: FirstFrame | None) -> None:
        self.config, self.frame = config, frame
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._built: tuple[Runtime, Snapshot | None] | None = None
        self._error: Exception | None = None
        self._discarded = False
        self._thread = threading.Thread(target=self._build, name="tokentop-early-look", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _build(self) -> None:
        try:
            runtime = build_runtime(self.config)
        except Exception as exc:  # said by the start-up that takes it: one line, exit code 1
            self._error = exc
            self._done.set()
            return
        look = None
        try:
            look = _look(runtime)
        except Exception:  # only a nicety: the sampler's first tick draws the GPUs all the same
            log.debug("the first look failed", exc_info=True)
        if look is not None and self.frame is not None:
            self.frame.draw(look)
        with self._lock:
            discarded = self._discarded
            if not discarded:
                self._built = (runtime, look)
        self._done.set()
        if discarded:
            runtime.close()

    def take(self) -> tuple[Runtime, Snapshot | None]:
        """The source and its first look, once built (the caller closes it from now on); raises
        what building it raised."""
        self._done.wait()
        with self._lock:
            built, self._built = self._built, None
        if self._error is not None:
            raise self._error
        if built is None:
            raise RuntimeError("the GPU source was taken already")
        return built

    def discard(self) -> None:
        """Nobody will take the source: closed now, or by the build when it is done."""
        with self._lock:
            self._discarded = True
            built, self._built = self._built, None
        if built is not None:
            built[0].close()


class _StoppedFirst(Exception):
    """``stop`` came while the start-up was building: what it built is closed, not handed over."""


class Startup:
    """The GPU source (taken from ``early``, or built here), the history and the sampler, on a
    thread once the app has drawn its first screen (``begin``), and stopped at the end whatever
    happened (``stop``). The first look goes to the app first, then the app's screen is let out
    (``show_held_screen``: where a first frame stays until then). A history
    that cannot be used is one line, on the screen and again on stderr once the terminal is
    back; anything else that fails ends the app with one line, never a traceback.

    Each part is handed over as soon as it is built, so that ``stop`` closes it even when the
    build is still under way (the watchdog gives it 1.5 s); a part built after ``stop`` is closed
    by the build itself, and a ``begin`` after ``stop`` builds nothing."""

    def __init__(
        self,
        config: Config,
        runtime: Runtime | None = None,
        store: Store | None = None,
        *,
        early: EarlyLook | None = None,
    ) -> None:
        """``early``: where the GPU source comes from when no ``runtime`` is given (built while
        Textual loads); else it is built here."""
        self.config = config
        self.runtime, self.store = runtime, store
        self._store_given = runtime is not None
        self._early = early
        self.held_logs: list[logging.LogRecord] = []  # logged while the first frame had the screen
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
        self.replay_logs()  # the app's log handler is in place: on its screen

    def replay_logs(self) -> None:
        held, self.held_logs = self.held_logs, []
        _replay(held)

    def _build(self, app: TokentopApp) -> None:
        from tokentop.sampler import Sampler

        def say(line: str) -> None:
            self.said.append(line)
            app.warn(line.removeprefix("tokentop: "))

        try:
            runtime, look = self.runtime, None
            if runtime is None:
                runtime, look = self._early.take() if self._early is not None else (build_runtime(self.config), None)
                self._keep("runtime", runtime, runtime.close)
            try:
                if look is None:
                    look = _look(runtime)
                app.post_snapshot(look)
            except Exception:  # only a nicety: the sampler's first tick draws the GPUs all the same
                log.debug("the first look failed", exc_info=True)
            app.show_held_screen()  # once the first look is drawn: the first frame showed its rows
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
            elif self._early is not None:  # never begun: nothing will take what it builds
                self._early.discard()
            with self._lock:
                sampler, store, runtime = self.sampler, self.store, self.runtime
            if sampler is not None:
                sampler.stop()
            elif store is not None:
                store.close()
            if runtime is not None:
                runtime.close()


def _run_app(startup: Startup, config: Config, *, summary: str, frame: FirstFrame | None = None) -> int:
    """Run the live view until the user quits, a signal or a lost terminal ends it.

    Stops the sampler (which closes the history) whatever happened, then, once the terminal is
    back from the alternate screen (not after a hangup: there is no terminal), prints the
    session summary (``summary``: ``short``, ``full`` or ``none``): the one from the history,
    or a few lines from the last snapshot when there is no history. Returns the exit code: 0
    on quit, 129 on hangup or a lost terminal, 143 on SIGTERM, 1 when it could not start.
    """
    from tokentop.tui import TokentopApp

    host = DemoProcessHost(config.seed) if config.demo else None

    def make_app(on_end: Callable[[str, int], None]) -> TokentopApp:
        app = TokentopApp(config, startup=startup.begin, on_end=on_end, host=host)
        if frame is not None:  # its driver takes the frame's screen over (``tui.quiet_driver``)
            app.frame_on_screen = frame
            startup.held_logs += frame.stop_holding_logs()
        return app

    app = run_watched(make_app, startup.stop)
    if frame is not None:  # the driver never took the terminal: leave the frame before anything is said
        frame.leave()
    startup.replay_logs()
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
