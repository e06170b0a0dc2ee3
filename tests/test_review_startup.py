"""The live view's start and end racing each other: a start-up still building when the app has
gone, a start-up asked for after the end, and a signal that comes while the last words are said.

Each test runs the real parts (the demo's engines on loopback, a real history file, the real
``main`` with a headless app); only the order of events is forced, with events, never timings.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tokentop.cli import live, main
from tokentop.cli.runtime import open_store
from tokentop.config import Config
from tokentop.history import Store
from tokentop.tui.app import TokentopApp


def sessions_of(db: Path) -> list[float | None]:
    """``ended_at`` of each session in the history at ``db`` (None: left open)."""
    reader = Store.open_readonly(db)
    try:
        return [session.ended_at for session in reader.sessions()]
    finally:
        reader.close()


def running(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def test_a_start_up_that_outlasts_the_app_closes_the_history_it_opens_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app quits while the start-up is still opening the history, and the end stops waiting
    for it (``BUILD_WAIT_S``: NVML can take that long on a sick GPU): the history it opens later
    must still be closed, and the demo's engines it started stopped."""
    building, go_on = threading.Event(), threading.Event()

    def slow_store(config: Config, **options: object) -> Store | None:
        building.set()
        go_on.wait(30)
        return open_store(config, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(live, "open_store", slow_store)
    monkeypatch.setattr(live, "BUILD_WAIT_S", 0.0)
    original_run = TokentopApp.run

    def run(self: TokentopApp, **kwargs: object) -> None:  # quit as soon as the build is under way
        self.call_later(lambda: self.set_interval(0.05, lambda: building.is_set() and self.exit()))
        original_run(self, headless=True)

    monkeypatch.setattr(TokentopApp, "run", run)
    db = tmp_path / "demo.db"
    assert main(["--demo", "--db", str(db), "--interval", "0.2", "--no-summary"]) == 0
    go_on.set()
    for thread in running("tokentop-startup"):
        thread.join(30)
    assert sessions_of(db) and all(ended is not None for ended in sessions_of(db))
    assert not running("tokentop-sampler") and not running("demo-")
    assert capsys.readouterr().err == ""


def test_a_start_up_asked_for_after_the_end_builds_nothing(tmp_path: Path) -> None:
    """The watchdog said the last words (``stop``) while the app, stuck, had not yet drawn its
    first screen; the app then calls ``begin``: nothing may be opened that nobody closes."""
    db = tmp_path / "demo.db"
    config = Config(demo=True, db_path=db)
    startup = live.Startup(config)
    startup.stop()
    startup.begin(TokentopApp(config, handle_signals=False))
    for thread in running("tokentop-startup"):
        thread.join(30)
    assert startup.runtime is None and startup.store is None and startup.sampler is None
    assert not db.exists() and not running("demo-")


def test_stop_from_two_threads_closes_once_and_the_second_waits_for_the_first(tmp_path: Path) -> None:
    """The watchdog's last words and the app's own end at once: the history closed once, and
    whichever stop returns second finds it closed (the summary reads a closed session)."""
    db = tmp_path / "demo.db"
    config = Config(demo=True, db_path=db, interval_s=0.2)
    startup = live.Startup(config)
    attached = threading.Event()
    app = TokentopApp(config, handle_signals=False)
    app.attach = lambda sampler, store: attached.set()  # type: ignore[method-assign]
    startup.begin(app)
    assert attached.wait(30)
    ended: list[list[float | None]] = []
    stopping = [threading.Thread(target=lambda: (startup.stop(), ended.append(sessions_of(db)))) for _ in range(2)]
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join(30)
    assert len(ended) == 2 and all(len(s) == 1 and s[0] is not None for s in ended)


HELD = """
import os, signal, sys
from pathlib import Path
from tokentop.cli.watchdog import run_watched
said = Path(sys.argv[1])
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a login shell leaves it (nohup would ignore it)

class App:
    def run(self):
        return None

def last_words():
    os.kill(os.getpid(), signal.{sig})  # the terminal closed right after q
    said.write_text("closed")

run_watched(lambda on_end: App(), last_words)
print("after", flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGHUP", "SIGTERM"])
def test_a_signal_during_the_last_words_waits_for_them_then_ends_the_process(sig: str, tmp_path: Path) -> None:
    said = tmp_path / "last-words"
    script = HELD.format(sig=sig)
    result = subprocess.run(
        [sys.executable, "-c", script, str(said)], capture_output=True, text=True, timeout=60, check=False
    )
    assert said.read_text() == "closed"  # the history was closed before the signal acted
    assert result.returncode == -getattr(signal, sig) and "after" not in result.stdout, result.stderr


def test_signal_handlers_are_back_after_the_last_words(tmp_path: Path) -> None:
    from tokentop.cli.watchdog import run_watched

    before: dict[int, Callable[..., object] | int | None] = {
        sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)
    }

    class App:
        def run(self) -> None:
            return None

    run_watched(lambda on_end: App(), lambda: None)
    assert {sig: signal.getsignal(sig) for sig in before} == before
