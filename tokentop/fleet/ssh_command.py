"""How tokentop runs a command on another host: the user's own ``ssh`` client, so that their
``~/.ssh/config``, agent, ControlMaster and jump hosts all apply, and why such a run failed, in
plain words taken from ssh's standard error.

The command line holds no secret: only the target, a port and fixed options. The remote
command is one string for the remote shell: the user's own ``command`` (theirs to write, run as
they wrote it: ``~/venv/bin/tokentop --config ~/tt.toml``) followed by tokentop's arguments, each
quoted with ``shlex.quote``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Sequence

from tokentop.config import SshHostConfig
from tokentop.fleet.feed import READ_CHUNK, LineSplitter
from tokentop.text import safe_text

SSH_CONFIG_ENV = "TOKENTOP_SSH_CONFIG"
"""An ssh config file given to every ``ssh`` run (``-F``), instead of ``~/.ssh/config``; for the
tests' throwaway sshd. A user's own setup needs none."""

STDERR_LINE_BYTES = 2048
END_GRACE_S = 1.0  # for ssh to close its channel on SIGTERM before its process group is killed

SSH_OPTIONS = (
    "-T",  # no terminal on the remote side: the feed is a pipe, and nothing can prompt
    "-o",
    "BatchMode=yes",  # a password or passphrase prompt fails at once instead of hanging the screen
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",  # a host that went silent is noticed within 15 s
    "-o",
    "ServerAliveCountMax=3",
)

_PORT = re.compile(r"^(?P<dest>.+):(?P<port>\d{1,5})$")
_BRACKETED = re.compile(r"^(?P<user>[^@\s]+@)?\[(?P<host>[^\]\s]+)\](?::(?P<port>\d{1,5}))?$")


def split_target(target: str) -> tuple[str, int | None]:
    """``[user@]host[:port]`` (or ``[user@][v6addr]:port``, or a Host alias) as the destination
    ssh takes and the port, when one was given."""
    bracketed = _BRACKETED.match(target)
    if bracketed:
        port = bracketed["port"]
        return (bracketed["user"] or "") + bracketed["host"], int(port) if port else None
    match = _PORT.match(target)
    if match and ":" not in match["dest"] and 0 < int(match["port"]) < 65536:
        return match["dest"], int(match["port"])
    return target, None


def remote_command(command: str, args: Sequence[str]) -> str:
    """The string the remote shell runs: the user's command, then tokentop's quoted arguments."""
    return " ".join([command, *(shlex.quote(a) for a in args)])


def ssh_argv(host: SshHostConfig, args: Sequence[str], *, ssh: str = "ssh") -> list[str]:
    """``ssh [-F cfg] [options] [-p port] -- destination '<command> args…'``."""
    destination, port = split_target(host.ssh)
    argv = [ssh]
    config = os.environ.get(SSH_CONFIG_ENV)
    if config:
        argv += ["-F", config]
    argv += SSH_OPTIONS
    if port is not None:
        argv += ["-p", str(port)]
    return [*argv, "--", destination, remote_command(host.command, args)]


def failure_reason(returncode: int | None, stderr_lines: Sequence[str], *, what: str = "feed") -> str:
    """Why a run over ssh ended, from its exit status and the last lines of its stderr."""
    lines = [safe_text(line).strip() for line in stderr_lines if line.strip()]
    text = " ".join(lines)
    last = lines[-1] if lines else ""
    if returncode == 127 or "command not found" in text or re.search(r": not found\b", text):
        return f"no tokentop on the host ({last or 'command not found'}): set command = in its [[hosts]] entry"
    if "unrecognized arguments" in text or "invalid choice" in text:
        return f"the host's tokentop is too old for this ({last}): upgrade it there"
    if returncode == 255:
        return (last if last.startswith("ssh: ") else f"ssh: {last}") if last else "ssh failed (exit 255)"
    if returncode is None:
        return f"the {what} stopped answering"
    ended = f"the {what} ended" if returncode == 0 else f"the {what} ended (exit {returncode})"
    return f"{ended}: {last}" if last else ended


def drain_stderr(proc: subprocess.Popen[bytes], kept: deque[str]) -> None:
    """Read ``proc``'s stderr to its end, keeping the last lines (as many as ``kept`` holds,
    each at most ``STDERR_LINE_BYTES``, made safe), however much comes."""
    assert proc.stderr is not None
    splitter = LineSplitter(STDERR_LINE_BYTES)
    fd = proc.stderr.fileno()
    while chunk := os.read(fd, READ_CHUNK):
        for line in splitter.feed(chunk):
            kept.append(safe_text(line.decode("utf-8", "replace")))


def close_pipes(proc: subprocess.Popen[bytes]) -> None:
    """Close what is left of an ended process's pipes."""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def end_process(proc: subprocess.Popen[bytes], grace_s: float = END_GRACE_S) -> None:
    """End a run over ssh and what it started: SIGTERM to its process group (ssh closes its
    channel, and the remote sees its end of input), then, after ``grace_s`` at most, SIGKILL to
    whatever of the group is left, so that no ProxyCommand or jump host's ssh outlives it holding
    its pipes. Runs are started with ``start_new_session=True``, so the group is theirs alone
    (a ControlPersist master detaches into a session of its own, and is left alone)."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # the group is empty: all ended
        pass
    except OSError:  # not ours to signal after all: ssh itself still is
        with contextlib.suppress(OSError):
            proc.send_signal(sig)
