"""A real OpenSSH server on loopback for the fleet-over-ssh tests and benchmark.

``Sshd`` starts ``sshd -f <temp config> -D -e`` on a free 127.0.0.1 port with a throwaway host
key and user key in a temporary directory, for the current user only (root allowed with keys
alone: ``PermitRootLogin prohibit-password``; ``StrictModes no`` and a temporary
``AuthorizedKeysFile``). ``ssh`` is pointed at it by a temporary ssh config (``ssh_config``:
any host name or alias reaches this server, with the known host key pinned), which
``TOKENTOP_SSH_CONFIG`` hands to tokentop's ssh runs. Nothing of the user's own ssh setup is
read or touched.

The remote side of a test is this checkout: ``tokentop_command`` runs this interpreter's
``-m tokentop`` from the repository root, whatever the remote shell's PATH.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it
REPO = Path(__file__).resolve().parents[2]
START_WAIT_S = 10.0


class SshdUnavailable(Exception):
    """sshd cannot be had here; the message says why."""


def tokentop_wrapper(workdir: Path) -> Path:
    """An executable ``workdir/tt`` that runs this checkout's tokentop in ``workdir`` (so that
    relative ``--db``/``--config`` paths keep a ``[[hosts]]`` ``command`` short): the remote
    side of a test host, whatever the remote shell's PATH."""
    script = workdir / "tt"
    script.write_text(
        f"#!/bin/sh\ncd {shlex.quote(str(workdir))} || exit 1\n"
        f'PYTHONPATH={shlex.quote(str(REPO))} exec {shlex.quote(sys.executable)} -m tokentop "$@"\n'
    )
    script.chmod(0o755)
    return script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise SshdUnavailable(f"{' '.join(argv[:2])} failed: {result.stderr.strip()}")


class Sshd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = _free_port()
        self.user = getpass.getuser()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "sshd.log"
        self.ssh_config = directory / "ssh_config"

    def prepare(self) -> None:
        """Keys, sshd_config and the client's ssh_config."""
        for binary in (SSHD, SSH, SSH_KEYGEN):
            if not os.access(binary, os.X_OK):
                raise SshdUnavailable(f"{binary} is not installed (Debian: apt-get install openssh-server)")
        if not PRIVSEP_DIR.is_dir():
            try:
                PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
            except OSError as exc:
                raise SshdUnavailable(f"sshd needs {PRIVSEP_DIR}, which cannot be made: {exc.strerror}") from None
        for key in ("host_key", "user_key"):
            _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / key)])
        shutil.copy(self.dir / "user_key.pub", self.dir / "authorized_keys")
        (self.dir / "sshd_config").write_text(
            f"""ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.dir / "host_key"}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
AllowUsers {self.user}
PermitRootLogin prohibit-password
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxSessions 64
MaxStartups 64:30:128
LogLevel VERBOSE
"""
        )
        host_key = (self.dir / "host_key.pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"tokentop-test-sshd {host_key[0]} {host_key[1]}\n")
        self.ssh_config.write_text(
            f"""Host *
    HostName 127.0.0.1
    Port {self.port}
    User {self.user}
    IdentityFile {self.dir / "user_key"}
    IdentitiesOnly yes
    IdentityAgent none
    HostKeyAlias tokentop-test-sshd
    UserKnownHostsFile {self.dir / "known_hosts"}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    ControlMaster no
    LogLevel ERROR
"""
        )

    def start(self) -> None:
        """Start the listener and wait until it takes connections."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-f", str(self.dir / "sshd_config"), "-D", "-e"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SshdUnavailable(f"sshd ended at once: {self.log.read_text()[-500:].strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SshdUnavailable(f"sshd did not listen within {START_WAIT_S:g} s")

    def check_login(self) -> None:
        """One real login, so that a broken setup is a skip with ssh's own words, not a test failure."""
        result = subprocess.run(
            [SSH, "-F", str(self.ssh_config), "-o", "BatchMode=yes", "h0", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise SshdUnavailable(f"cannot log in to the test sshd: {result.stderr.strip()[-300:]}")

    def stop_listening(self) -> None:
        """Stop the listener only: connections already made live on in their own processes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """The listener and every connection it made."""
        children = []
        if self.proc is not None and self.proc.poll() is None:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        self.stop_listening()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def env(self) -> dict[str, str]:
        """The environment that points tokentop's ssh at this server."""
        return {**os.environ, "TOKENTOP_SSH_CONFIG": str(self.ssh_config)}


def remote_processes(workdir: Path, marker: str = "") -> list[psutil.Process]:
    """Processes started over ssh (an sshd among their ancestors) running in ``workdir`` whose
    command line holds ``marker``: what a host's remote tokentop is, seen from this machine."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if (
                proc.info["cwd"] == str(workdir)
                and marker in " ".join(proc.info["cmdline"] or ())
                and _sshd_ancestor(proc) is not None
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _sshd_ancestor(proc: psutil.Process) -> psutil.Process | None:
    for parent in proc.parents():
        if parent.name().startswith("sshd"):
            return parent
    return None


def kill_connection_of(proc: psutil.Process) -> None:
    """Cut the connection the remote ``proc`` runs in: SIGKILL to its sshd session process."""
    try:
        sshd = _sshd_ancestor(proc)
        if sshd is not None:
            os.kill(sshd.pid, signal.SIGKILL)
    except (psutil.Error, ProcessLookupError):
        pass


def wait_for(condition: object, timeout_s: float, what: str) -> None:
    """Poll ``condition()`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:g} s: {what}")


REQUIRE_ENV = "TOKENTOP_REQUIRE_SSHD"


def running_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """The body of a test module's ``sshd`` fixture: ``sshd = pytest.fixture(scope="module",
    name="sshd")(running_sshd)``; one server for the module, stopped with its connections."""
    server = start_or_skip(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def start_or_skip(directory: Path) -> Sshd:
    """A running, logged-into sshd; else the test skips with the reason, or fails with it when
    ``TOKENTOP_REQUIRE_SSHD=1`` (CI)."""
    server = Sshd(directory)
    try:
        server.prepare()
        server.start()
        server.check_login()
    except (SshdUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        message = f"real sshd unavailable: {exc}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_ENV}=1, so the ssh tests fail)", pytrace=False)
        pytest.skip(message)
    return server
