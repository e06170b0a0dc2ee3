"""A terminal that disappears under the live view (an SSH drop, a closed terminal window, ``tmux
kill-session``) must end tokentop, with exit code 129, within a few seconds, every time.

It used not to, about one run in six: the terminal gone, Textual's output thread died on its
first failed write, and the app's shutdown then waited for ever on that thread's full queue.
The test kills a real tmux session under the real command, many times over.

The exit code of a process whose terminal (and tmux server) is gone cannot be had from tmux:
each batch of runs goes in a process of its own (this file run as a script) that makes itself a
*child subreaper* (Linux ``prctl``), so tokentop, orphaned when the tmux server exits, becomes
its child and its exit status can be read with ``waitpid``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNS = 12
ENDS_WITHIN_S = 15.0  # far above the watchdog's 2 s: only a process that hangs misses it
LIVE_WITHIN_S = 30.0
REQUIRE_ENV = "TOKENTOP_REQUIRE_TMUX"
ROOT = Path(__file__).resolve().parent.parent
PR_SET_CHILD_SUBREAPER = 36


def _tmux(socket: str, *args: str) -> str:
    command = ["tmux", "-L", socket, "-f", "/dev/null", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def one_run(socket: str, command: list[str]) -> dict[str, object]:
    """Start ``command`` in a new tmux session, wait for the live view, kill the session, and
    wait for the process to end. Returns how it ended: ``seconds`` from the kill, ``status``
    (the exit code, or None when tmux reaped it first), ``hung`` (killed after ``ENDS_WITHIN_S``)."""
    line = "exec " + " ".join(shlex.quote(part) for part in command)
    _tmux(socket, "new-session", "-d", "-s", "hangup", "-x", "120", "-y", "40", "-c", str(ROOT), line)
    pid = int(_tmux(socket, "display-message", "-p", "-t", "hangup", "#{pane_pid}").strip() or 0)
    deadline = time.monotonic() + LIVE_WITHIN_S
    screen = ""
    while time.monotonic() < deadline and "● live" not in screen:
        time.sleep(0.1)
        screen = _tmux(socket, "capture-pane", "-p", "-t", "hangup")
    if "● live" not in screen:
        _tmux(socket, "kill-server")
        return {"error": f"the live view never showed; last screen:\n{screen}"}
    time.sleep(0.5)  # a tick or two on screen, as a person would have it
    killed = time.monotonic()
    _tmux(socket, "kill-session", "-t", "hangup")
    status: int | None = None
    while time.monotonic() - killed < ENDS_WITHIN_S:
        try:
            done, code = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by the tmux server before it went: ended, code unknown
            if not Path(f"/proc/{pid}").exists():
                return {"seconds": time.monotonic() - killed, "status": None, "hung": False}
            done, code = 0, 0
        if done:
            status = os.waitstatus_to_exitcode(code)
            return {"seconds": time.monotonic() - killed, "status": status, "hung": False}
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return {"seconds": time.monotonic() - killed, "status": None, "hung": True}


def run_batch(runs: int, command: list[str]) -> list[dict[str, object]]:
    """``runs`` runs, as a child subreaper (see the module's docstring)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    socket = f"tokentop-hangup-{os.getpid()}"
    results = []
    try:
        for _ in range(runs):
            results.append(one_run(socket, command))
            _tmux(socket, "kill-server")
            _reap_others()
    finally:
        _tmux(socket, "kill-server")
    return results


def _reap_others() -> None:
    """The tmux server (and its daemonising parent) end as this process's children too."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def tmux_or_skip() -> None:
    if shutil.which("tmux") is not None and sys.platform == "linux":
        return
    reason = "tmux (and Linux, for prctl) are needed to kill a real terminal under tokentop"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def test_a_killed_tmux_session_always_ends_tokentop_with_129(tmp_path: Path) -> None:
    tmux_or_skip()
    command = [sys.executable, "-m", "tokentop.cli", "--demo", "--db", str(tmp_path / "demo.db"), "--interval", "0.5"]
    result = subprocess.run(
        [sys.executable, __file__, str(RUNS), json.dumps(command)],
        capture_output=True,
        text=True,
        timeout=RUNS * (LIVE_WITHIN_S + ENDS_WITHIN_S + 5),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    errors = [run["error"] for run in runs if "error" in run]
    assert not errors, errors[0]
    hung = [i for i, run in enumerate(runs) if run["hung"]]
    assert not hung, f"runs {hung} of {RUNS} did not end within {ENDS_WITHIN_S} s of the hangup: {runs}"
    statuses = {run["status"] for run in runs} - {None}
    assert statuses == {129}, runs  # hangup: 128 + SIGHUP, whichever way it ended


if __name__ == "__main__":
    print(json.dumps(run_batch(int(sys.argv[1]), json.loads(sys.argv[2]))))
