"""The fleet over ssh against a real sshd on loopback (``sshd_harness``): three hosts, each this
checkout's ``tokentop --demo --seed N snapshot --json --follow`` reached through ``ssh``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_harness import Sshd, kill_connection_of, remote_processes, running_sshd, tokentop_wrapper, wait_for

from tokentop.config import Config, SshHostConfig
from tokentop.fleet.model import FleetReading
from tokentop.fleet.ssh import SshSource
from tokentop.fleet.ssh_command import SSH_CONFIG_ENV
from tokentop.history import Store

SEEDS = (1, 2, 3)
REMOTE_SETTINGS = "rate_window_s = 2.0\ncost_window_s = 4.0\n"  # windows that fill in seconds


sshd = pytest.fixture(scope="module", name="sshd")(running_sshd)


@pytest.fixture
def hosts(sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SshHostConfig, ...]:
    """h1..h3: demo feeds with seeds 1..3, each recording its own history in ``tmp_path``."""
    monkeypatch.setenv(SSH_CONFIG_ENV, str(sshd.ssh_config))
    (tmp_path / "remote.toml").write_text(REMOTE_SETTINGS)
    tt = tokentop_wrapper(tmp_path)
    return tuple(
        SshHostConfig(
            ssh=f"h{seed}", name=f"h{seed}", command=f"{tt} --demo --seed {seed} --config remote.toml --db h{seed}.db"
        )
        for seed in SEEDS
    )


@pytest.fixture
def source(hosts: tuple[SshHostConfig, ...]) -> Iterator[SshSource]:
    fleet = SshSource(Config(hosts=hosts))
    try:
        yield fleet
    finally:
        fleet.close()


def _full_windows(reading: FleetReading) -> bool:
    """Every host up with windows that cover their whole length (2 s and 4 s)."""
    return all(
        h.state == "up" and h.snapshot is not None and h.snapshot.host.cost_window.span_s >= 3.9 for h in reading.hosts
    )


def test_three_hosts_appear_and_the_fleet_is_their_sum(source: SshSource) -> None:
    wait_for(lambda: _full_windows(source.read()), 60, "three hosts up with full windows")
    reading = source.read()
    assert [h.name for h in reading.hosts] == ["h1", "h2", "h3"]
    assert reading.mode == "ssh" and reading.status is None
    assert (reading.rate_window_s, reading.cost_window_s) == (2.0, 4.0)  # the hosts' own windows
    snaps = [h.snapshot.host for h in reading.hosts if h.snapshot is not None]
    fleet = reading.fleet
    assert fleet.host_count == fleet.hosts_up == 3
    assert fleet.gpu_count == 24 == sum(s.gpu_count for s in snaps)
    assert fleet.engines_up == fleet.engines_total == 9
    assert fleet.power_w == pytest.approx(sum(s.power_w or 0 for s in snaps))
    assert fleet.usd_per_hour_now == pytest.approx(sum(s.usd_per_hour_now or 0 for s in snaps))
    for window in ("rate_window", "cost_window"):
        got, parts = getattr(fleet, window), [getattr(s, window) for s in snaps]
        assert got.tokens_out == pytest.approx(sum(p.tokens_out for p in parts))
        assert got.energy_j == pytest.approx(sum(p.energy_j for p in parts))
        assert got.cost_usd == pytest.approx(sum(p.cost_usd or 0 for p in parts))
        # Each host's rate over its own measured window; the fleet's over the common one.
        assert got.tok_s_out == pytest.approx(sum(p.tok_s_out or 0 for p in parts), rel=0.05)
    cost = sum(s.cost_window.cost_usd or 0 for s in snaps)
    assert fleet.usd_per_mtok == pytest.approx(cost / sum(s.cost_window.tokens_out for s in snaps) * 1e6)
    rates = {round(s.rate_window.tok_s_out or 0) for s in snaps}
    assert len(rates) == 3  # three different seeds, three different feeds
    for host in reading.hosts:
        assert host.age_s is not None and host.age_s < 30
        assert host.clock_offset_s is not None and abs(host.clock_offset_s) < 2.0  # one machine, one clock
        assert host.models == ("NVIDIA H200",)
    series = source.series(10.0)
    assert series is not None and any(v is not None for v in series.tok_s_out)


def test_a_cut_connection_marks_the_host_down_and_it_comes_back(source: SshSource, sshd: Sshd, tmp_path: Path) -> None:
    wait_for(lambda: source.read().fleet.hosts_up == 3, 60, "three hosts up")
    h2_remote = remote_processes(tmp_path, "--seed 2 ")
    assert len(h2_remote) == 1
    sshd.stop_listening()  # no new connection can be made ...
    try:
        kill_connection_of(h2_remote[0])  # ... and h2's is cut
        readings: list[FleetReading] = []

        def h2_down() -> bool:
            readings.append(source.read())
            return readings[-1].hosts[1].state == "down"

        wait_for(h2_down, 30, "h2 down")
        reading = readings[-1]  # the one reading the assertions below are about
        h2 = reading.hosts[1]
        assert h2.snapshot is None and h2.reason is not None
        assert h2.reason.startswith("ssh: ") or "ended" in h2.reason, h2.reason
        assert "; retrying in " in h2.reason or h2.reason.endswith("; reconnecting"), h2.reason
        assert reading.status == "1 of 3 hosts down"
        assert [h.state for h in reading.hosts] == ["up", "down", "up"]
        assert reading.fleet.gpu_count == 16  # a down host leaves the sums
        wait_for(lambda: not h2_remote[0].is_running(), 30, "the cut host's remote tokentop ended")
        retried: list[FleetReading] = []

        def tried_again() -> bool:
            retried.append(source.read())
            return "retrying in 4 s" in (retried[-1].hosts[1].reason or "")

        wait_for(tried_again, 30, "h2 tried again twice")  # 1 s, then 2 s, then 4 s
        assert {r.hosts[1].state for r in retried} == {"down"}  # down throughout: one notice, not one a try
    finally:
        sshd.start()
    wait_for(lambda: source.read().hosts[1].state == "up", 60, "h2 back up after sshd restarted")
    assert source.read().fleet.gpu_count == 24


def test_quitting_leaves_no_remote_tokentop(source: SshSource, tmp_path: Path) -> None:
    wait_for(lambda: source.read().fleet.hosts_up == 3, 60, "three hosts up")
    assert len(remote_processes(tmp_path)) == 3
    source.close()
    wait_for(lambda: not remote_processes(tmp_path), 15, "no remote tokentop left")
    for seed in SEEDS:  # each remote ended cleanly, on its end of input: its session is closed
        with Store.open_readonly(tmp_path / f"h{seed}.db") as store:
            (session,) = store.sessions()
        assert session.ended_at is not None
        assert session.origin == "record"


def test_a_host_without_tokentop_is_down_with_the_reason(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SSH_CONFIG_ENV, str(sshd.ssh_config))
    fleet = SshSource(Config(hosts=(SshHostConfig(ssh="h9", command="tokentop-not-installed-here"),)))
    try:
        wait_for(lambda: fleet.read().hosts[0].state == "down", 30, "h9 down")
        reason = fleet.read().hosts[0].reason or ""
    finally:
        fleet.close()
    assert reason.startswith("no tokentop on the host (") and "command not found" in reason
    assert "retrying in 30 s" in reason  # it will not mend by itself: the longest wait at once


def test_an_unknown_host_is_down_with_sshs_words(monkeypatch: pytest.MonkeyPatch, sshd: Sshd, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config.read_text().replace(f"Port {sshd.port}", "Port 1"))  # nothing listens
    monkeypatch.setenv(SSH_CONFIG_ENV, str(config))
    fleet = SshSource(Config(hosts=(SshHostConfig(ssh="h8"),)))
    try:
        wait_for(lambda: fleet.read().hosts[0].state == "down", 30, "h8 down")
        reason = fleet.read().hosts[0].reason or ""
    finally:
        fleet.close()
    assert reason.startswith("ssh: ") and "refused" in reason, reason
