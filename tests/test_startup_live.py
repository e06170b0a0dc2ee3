"""Issue 10, item 14: the live view draws its screen before it builds what it samples.

What the command loads before the app runs (no history, sampler, demo, report, exporter, httpx;
no other command's module), the app's "starting" state and the hand-over of the sampler built
on a thread, and the one line that a start-up failure or an unusable history gives. The timings
themselves are measured by ``benchmarks/bench_startup.py``, not here."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_tui import DemoUnderTest, FixedHost, Rig, demo, rig_on, screen_text  # noqa: F401 (demo: a fixture)

from tokentop.cli import main
from tokentop.config import Config
from tokentop.tui.app import TokentopApp

BUILT_LATER = (
    "tokentop.history",
    "tokentop.sampler",
    "tokentop.demo",
    "tokentop.report",
    "tokentop.exporter",
    "tokentop.collectors",
    "tokentop.cli.record",
    "tokentop.cli.summary",
    "tokentop.cli.export",
    "tokentop.cli.snapshot",
    "httpx",
    "sqlite3",
    "psutil",
)


def test_the_live_view_loads_nothing_it_builds_after_its_first_screen() -> None:
    code = (
        "import json, sys\n"
        "from tokentop.cli.parser import build_parser, config_from_args\n"
        "config_from_args(build_parser().parse_args(['--demo']))\n"
        "import tokentop.cli.live\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert "tokentop.cli.first_frame" in loaded  # what it does need: the first frame comes before Textual
    assert [m for m in loaded if m.startswith((*BUILT_LATER, "textual"))] == []


def test_a_command_loads_its_own_module_only(capsys: pytest.CaptureFixture[str]) -> None:
    code = (
        "import json, sys\n"
        "from tokentop.cli.parser import build_parser\n"
        "build_parser().parse_args(['summary', '--session', '3'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tokentop.cli.'))))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert "tokentop.cli.summary" in loaded
    assert not {"tokentop.cli.record", "tokentop.cli.export", "tokentop.cli.snapshot"} & set(loaded)


def test_help_still_lists_every_command_and_each_commands_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in ("record", "snapshot", "summary", "export", "--once", "--summary"))
    own = {"record": "--duration", "summary": "--session", "export": "--listen", "snapshot": "--json"}
    for command, option in own.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert option in text and "--demo" in text, command
    assert main(["summary", "--endpoint", "http://127.0.0.1:1"]) == 2  # still refused, named
    assert "summary does not take --endpoint" in capsys.readouterr().err


# --- the app: starting, then the sampler handed over from another thread ----------------------


@pytest.fixture
def rig(demo: DemoUnderTest) -> Iterator[Rig]:  # noqa: F811 (demo: the fixture above)
    with rig_on(demo) as r:
        yield r


async def test_the_app_says_starting_until_the_sampler_built_on_a_thread_is_handed_over(rig: Rig) -> None:
    called: list[TokentopApp] = []
    app = TokentopApp(
        rig.config,
        host_name="gpu-node-01",
        handle_signals=False,
        start_sampler=False,
        host=FixedHost(),
        startup=called.append,
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert called == [app]  # once the first screen is drawn
        text = screen_text(app)
        assert "waiting for the first reading" in text and "reading the GPUs" in text
        assert "no GPU reported" not in text  # not a verdict before anything was read
        handing = threading.Thread(target=app.attach, args=(rig.sampler, None))
        handing.start()
        handing.join()
        await pilot.pause()
        assert app.sampler is rig.sampler and rig.sampler.sink == app.post_snapshot
        rig.tick(2)
        await pilot.pause()
        await pilot.pause()
        text = screen_text(app)
        assert "● live" in text and all(f"  {i}  H200" in text for i in range(8))


def headless(monkeypatch: pytest.MonkeyPatch, ticks: int = 3) -> None:
    """``TokentopApp.run`` headless, quitting once ``ticks`` ticks were drawn (or at once if the
    app cannot start)."""
    original_run = TokentopApp.run

    def run(self: TokentopApp, **kwargs: object) -> None:
        self.call_later(
            lambda: self.set_interval(0.1, lambda: self.latest and self.latest.seq >= ticks and self.exit())
        )
        original_run(self, headless=True)

    monkeypatch.setattr(TokentopApp, "run", run)


def test_a_start_up_failure_is_one_line_and_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(config: Config) -> None:
        raise OSError("no port free for the demo's engines")

    monkeypatch.setattr("tokentop.cli.live.build_runtime", broken)
    headless(monkeypatch)
    assert main(["--demo", "--no-history"]) == 1
    out, err = capsys.readouterr()
    assert err == "tokentop: cannot start: no port free for the demo's engines\n" and out == ""


def test_a_history_that_cannot_be_used_is_one_line_on_screen_and_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shown: list[str] = []
    unmount = TokentopApp.on_unmount

    def on_unmount(self: TokentopApp) -> None:  # what the message line held, then the app's own
        shown.extend(t for _, _, t in self.log_lines)
        unmount(self)

    monkeypatch.setattr(TokentopApp, "on_unmount", on_unmount)
    headless(monkeypatch)
    db = tmp_path / "not-a-file"
    db.mkdir()
    assert main(["--demo", "--db", str(db), "--interval", "0.2", "--no-summary"]) == 0
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert line.startswith("tokentop: ") and line.endswith("; monitoring without history") and str(db) in line
    assert [text for text in shown if "monitoring without history" in text] == [line.removeprefix("tokentop: ")]


# --- the watchdog: a process always ends once its terminal is gone --------------------------


def watched(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tokentop.cli.watchdog import ExitWatchdog\n"
        f"said = Path({str(tmp_path / 'last-words')!r})\n"
        "dog = ExitWatchdog(lambda: said.write_text('closed'), grace_s=0.2, last_words_s=1.0)\n"
        "dog.start()\n" + code
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)


def test_an_armed_watchdog_ends_a_stuck_process_with_its_code_after_last_words(tmp_path: Path) -> None:
    result = watched("dog.arm('hangup', 129)\ntime.sleep(60)\n", tmp_path)
    assert result.returncode == 129, result.stderr
    assert (tmp_path / "last-words").read_text() == "closed"


def test_a_watchdog_told_the_app_returned_lets_the_process_end_its_own_way(tmp_path: Path) -> None:
    result = watched("dog.arm('hangup', 129)\ndog.done()\ntime.sleep(0.6)\nsys.exit(0)\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "last-words").exists()


def test_a_watchdog_never_armed_does_nothing(tmp_path: Path) -> None:
    result = watched("time.sleep(0.6)\ndog.done()\nsys.exit(0)\n", tmp_path)  # well past its grace
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "last-words").exists()


def test_the_summary_printed_at_quit_under_ascii_is_ascii_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    headless(monkeypatch)
    for history in (["--db", str(tmp_path / "demo.db")], ["--no-history"]):
        assert main(["--demo", "--ascii", "--interval", "0.2", *history]) == 0
        out = capsys.readouterr().out
        assert "8x NVIDIA H200" in out and out.isascii(), history
