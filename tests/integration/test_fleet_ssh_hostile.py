"""A remote that is not a well-behaved tokentop, over a real sshd: garbage lines, a 100 MB line,
escape sequences in names, another schema, an old version. One message, bounded memory,
nothing raw on the terminal; a schema or version it cannot read is the host's reason."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest
from sshd_harness import Sshd, running_sshd, wait_for

from tokentop.config import Config, SshHostConfig
from tokentop.fleet.model import FleetReading
from tokentop.fleet.ssh import SshSource
from tokentop.fleet.ssh_command import SSH_CONFIG_ENV

REMOTE = """
import json, os, select, sys, time
from tokentop.config import CostConfig
from tokentop.demo import simulated_snapshots
from tokentop.snapshot_json import snapshot_dict

mode = sys.argv[1]
snap = snapshot_dict(simulated_snapshots(ticks=4, seed=5)[-1], CostConfig())
out = sys.stdout.buffer
if mode == "old":
    sys.stderr.write("usage: tokentop snapshot [-h] [--json]\\n")
    sys.stderr.write("tokentop snapshot: error: unrecognized arguments: --follow\\n")
    sys.exit(2)
if mode == "schema":
    snap["schema_version"] = 99
if mode == "hostile":
    out.write(b"Welcome to gpu-9! (a shell banner)\\n")
    out.write(b"\\x1b]0;pwned\\x07{not json\\n")
    chunk = b"A" * (1 << 20)
    for _ in range(100):
        out.write(chunk)
    out.write(b"\\n")
    snap["endpoints"][0]["name"] = "\\x1b[2J\\x1b]0;pwned\\x07evil"
skew = 30.0 if mode == "skewed" else 0.0
while True:
    snap["time_unix_s"] = time.time() + skew  # the host's own clock
    out.write(json.dumps(snap).encode() + b"\\n")
    out.flush()
    ready, _, _ = select.select([0], [], [], 0.5)
    if ready and not os.read(0, 4096):
        break
"""


sshd = pytest.fixture(scope="module", name="sshd")(running_sshd)


@pytest.fixture
def remote(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(SSH_CONFIG_ENV, str(sshd.ssh_config))
    script = tmp_path / "remote.py"
    script.write_text(REMOTE)
    return script


def _read(mode: str, script: Path, until: str) -> FleetReading:
    fleet = SshSource(Config(hosts=(SshHostConfig(ssh="h1", command=f"{sys.executable} {script} {mode}"),)))
    try:
        wait_for(lambda: fleet.read().hosts[0].state == until, 60, f"the {mode} host {until}")
        return fleet.read()
    finally:
        fleet.close()


def _texts(reading: FleetReading) -> list[str]:
    host = reading.hosts[0]
    names = [e.sample.name for e in host.snapshot.endpoints] if host.snapshot else []
    return [*reading.messages, host.reason or "", *names]


def test_a_hostile_remote_gives_one_message_and_bounded_memory(remote: Path) -> None:
    rss_before = psutil.Process().memory_info().rss
    fleet = SshSource(Config(hosts=(SshHostConfig(ssh="h1", command=f"{sys.executable} {remote} hostile"),)))
    try:
        wait_for(lambda: fleet.read().hosts[0].state == "up", 60, "the hostile host's good lines read")
        reading = fleet.read()
        rss_after = psutil.Process().memory_info().rss
    finally:
        fleet.close()
    assert rss_after - rss_before < 40 * 1024 * 1024  # the 100 MB line streamed past, never held
    assert reading.messages == ("h1: 3 unreadable line(s) from its feed ignored (first: a line that is not JSON)",), (
        reading.messages
    )
    host = reading.hosts[0]
    assert host.snapshot is not None
    name = host.snapshot.endpoints[0].sample.name
    assert name.endswith("evil") and name.isprintable()
    assert all(text.isprintable() for text in _texts(reading))


def test_another_schema_is_the_hosts_reason(remote: Path) -> None:
    reading = _read("schema", remote, "down")
    assert reading.hosts[0].reason == ("remote tokentop speaks snapshot schema 99; this one reads 2; retrying in 30 s")
    assert reading.messages == ()  # the reason says it; no garbage counted


def test_a_tokentop_without_follow_is_named_too_old(remote: Path) -> None:
    reason = _read("old", remote, "down").hosts[0].reason or ""
    assert reason.startswith("the host's tokentop is too old for this (")
    assert "unrecognized arguments: --follow" in reason


def test_a_host_clock_off_by_more_than_2_s_is_said(remote: Path) -> None:
    reading = _read("skewed", remote, "up")
    offset = reading.hosts[0].clock_offset_s
    assert offset is not None and 25.0 < offset <= 30.0  # transit only makes it look behind
    assert reading.messages == (f"h1: clock {offset:.1f} s ahead of this one",)
    assert reading.hosts[0].age_s is not None and reading.hosts[0].age_s < 10  # by the viewer's clock
