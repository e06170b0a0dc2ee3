"""The commands of the fleet over ssh, as a user runs them: the feed ``snapshot --json --follow``
(how it ends), ``snapshot --json`` of a fleet of [[hosts]], and ``summary`` over ssh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sshd_harness import REPO, Sshd, running_sshd, tokentop_wrapper

from tokentop.config import Config, SshHostConfig
from tokentop.fleet.ssh_command import SSH_CONFIG_ENV
from tokentop.fleet.ssh_summary import summarize
from tokentop.history import Store
from tokentop.snapshot_json import SCHEMA_VERSION

TOKENTOP = [sys.executable, "-m", "tokentop"]


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), **more}


def _feed(tmp_path: Path, *extra: str, stdin: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TOKENTOP, "--demo", "snapshot", "--json", "--follow", "--interval", "0.2", *extra],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(tmp_path),
    )


def test_follow_piped_into_head_exits_quietly(tmp_path: Path) -> None:
    feed = f"{' '.join(TOKENTOP)} --demo snapshot --json --follow --interval 0.2"
    script = f"{feed} 2>err | head -3 >out; echo ${{PIPESTATUS[0]}} >rc"
    subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=_env(tmp_path, PYTHONPATH=str(REPO)), timeout=60, check=True
    )
    assert (tmp_path / "rc").read_text().strip() == "141"  # 128 + SIGPIPE, as any tool stopped by | head
    assert (tmp_path / "err").read_text() == ""
    lines = (tmp_path / "out").read_text().splitlines()
    assert len(lines) == 3
    ticks = [json.loads(line) for line in lines]
    assert [t["schema_version"] for t in ticks] == [SCHEMA_VERSION] * 3
    assert [t["tick"] for t in ticks] == [1, 2, 3]
    assert ticks[2]["host"]["rate_window"]["tok_s_out"] > 0


def test_follow_ends_on_end_of_input_and_records_the_history(tmp_path: Path) -> None:
    feed = _feed(tmp_path)
    assert feed.stdout is not None and feed.stdin is not None
    first = [feed.stdout.readline() for _ in range(3)]  # each line arrives as it is written
    feed.stdin.close()
    feed.stdin = None  # closed: communicate() must not touch it
    rest, err = feed.communicate(timeout=30)
    assert feed.returncode == 0 and err == ""
    assert all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in first + rest.splitlines())
    with Store.open_readonly(tmp_path / "data" / "tokentop" / "demo.db") as store:
        (session,) = store.sessions()
    assert session.origin == "record" and session.ended_at is not None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_follow_ends_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    feed = _feed(tmp_path, "--no-history", stdin=subprocess.DEVNULL)  # /dev/null: not watched
    assert feed.stdout is not None
    for _ in range(3):
        json.loads(feed.stdout.readline())
    feed.send_signal(sig)
    _, err = feed.communicate(timeout=30)
    assert feed.returncode == 0 and err == ""
    assert not (tmp_path / "data" / "tokentop" / "demo.db").exists()  # --no-history


# --- over ssh ----------------------------------------------------------------------------------


sshd = pytest.fixture(scope="module", name="sshd")(running_sshd)


def _hosts_toml(tt: Path, seeds: tuple[int, ...], *extra: str) -> str:
    entries = [f'[[hosts]]\nssh = "h{s}"\ncommand = "{tt} --demo --seed {s} --no-history"\n' for s in seeds]
    return "\n".join(entries + list(extra))


def test_snapshot_json_of_a_fleet_prints_each_host_in_the_snapshot_schema(sshd: Sshd, tmp_path: Path) -> None:
    tt = tokentop_wrapper(tmp_path)
    settings = tmp_path / "fleet.toml"
    settings.write_text(_hosts_toml(tt, (4, 5), '[[hosts]]\nssh = "h6"\ncommand = "no-tokentop-here"\n'))
    result = subprocess.run(
        [*TOKENTOP, "snapshot", "--json", "--config", str(settings)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path, **{SSH_CONFIG_ENV: str(sshd.ssh_config)}),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    reading = json.loads(result.stdout)
    assert reading["mode"] == "ssh" and reading["status"] == "1 of 3 hosts down"
    h4, h5, h6 = reading["hosts"]
    for host in (h4, h5):
        assert host["state"] == "up" and host["reason"] is None
        assert host["snapshot"]["schema_version"] == SCHEMA_VERSION
        assert host["snapshot"]["tick_interval_measured_s"] is not None  # waited for rates
    assert h6["state"] == "down" and h6["snapshot"] is None
    assert h6["reason"].startswith("no tokentop on the host")
    fleet = reading["fleet"]
    assert fleet["gpu_count"] == 16 and fleet["hosts_up"] == 2
    assert fleet["power_w_now"] == pytest.approx(sum(h["snapshot"]["host"]["power_w_now"] for h in (h4, h5)))


def test_summary_over_ssh_adds_up_each_hosts_own_summary(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tt = tokentop_wrapper(tmp_path)
    records = [
        subprocess.Popen([str(tt), "--demo", "--seed", str(s), "--db", f"h{s}.db", "record", "--duration", "3"])
        for s in (1, 2)
    ]
    for record in records:
        assert record.wait(60) == 0
    own = []
    for s in (1, 2):
        out = subprocess.run(
            [str(tt), "--demo", "--db", f"h{s}.db", "summary", "--format", "json"], capture_output=True
        )
        own.append(json.loads(out.stdout)["host"])
    monkeypatch.setenv(SSH_CONFIG_ENV, str(sshd.ssh_config))
    hosts = tuple(SshHostConfig(ssh=f"h{s}", command=f"{tt} --demo --db h{s}.db") for s in (1, 2))
    missing = SshHostConfig(ssh="h3", command="no-tokentop-here")
    summary = summarize(Config(hosts=(*hosts, missing)), None, None)
    h1, h2, h3 = summary.hosts
    assert (h1.state, h2.state, h3.state) == ("ok", "ok", "down")
    assert h3.reason is not None and h3.reason.startswith("no tokentop on the host")
    for host, mine in zip((h1, h2), own):
        assert host.figures is not None and host.gpu_count == 8 == len(host.gpus)
        assert host.figures.tokens_out == mine["tokens_out"] and host.figures.cost_usd == mine["cost_usd"]
    fleet = summary.fleet
    assert fleet is not None and summary.gpu_count == 16 and summary.mode == "ssh"
    assert fleet.tokens_out == pytest.approx(own[0]["tokens_out"] + own[1]["tokens_out"])
    cost = own[0]["cost_usd"] + own[1]["cost_usd"]
    assert fleet.cost_usd == pytest.approx(cost)
    assert fleet.usd_per_mtok == pytest.approx(cost / fleet.tokens_out * 1e6)  # sums, not a mean of ratios
    assert any("not summarised: h3" in note for note in summary.notes)
