"""``tokentop summary --ssh/--prometheus`` when no host can be summarised: one line on stderr and
exit code 2, as the host summary when it has nothing to show, and no summary written. The
command runs as a user runs it (``cli.main``), over the real ``ssh`` to a port nobody listens on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tokentop.cli import main
from tokentop.cli.fleet_summary import EXIT_NO_SUMMARY, SAID_HOSTS, nothing_summarised
from tokentop.fleet.ssh_command import SSH_CONFIG_ENV
from tokentop.fleet.summary import HostSummary, fleet_summary

UNREACHABLE = "127.0.0.1:1"  # connection refused at once


@pytest.fixture(autouse=True)
def no_user_ssh_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own ssh settings (a ProxyJump, a ControlMaster) stay out of the test."""
    monkeypatch.setenv(SSH_CONFIG_ENV, os.devnull)


def test_a_fleet_summary_of_no_reachable_host_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "fleet.md"
    assert main(["summary", "--ssh", UNREACHABLE, "--output", str(output)]) == EXIT_NO_SUMMARY
    out, err = capsys.readouterr()
    assert out == "" and not output.exists()
    assert err.count("\n") == 1 and err.startswith(f"tokentop: no host could be summarised: {UNREACHABLE}: ")
    if shutil.which("ssh") is not None:
        assert "refused" in err  # ssh's own words, as the host's reason


def _down(name: str) -> HostSummary:
    return HostSummary(name=name, state="down", reason="ssh: connection refused", gpu_count=0, figures=None)


def test_the_line_names_the_first_hosts_and_counts_the_rest() -> None:
    hosts = [_down(f"gpu-{i}") for i in range(SAID_HOSTS + 2)]
    line = nothing_summarised(fleet_summary("ssh: gpu-0, …", "ssh", 0.0, 60.0, hosts))
    assert line.startswith("no host could be summarised: gpu-0: ssh: connection refused; gpu-1: ")
    assert f"gpu-{SAID_HOSTS - 1}: " in line and f"gpu-{SAID_HOSTS}: " not in line
    assert line.endswith("; and 2 more") and "\n" not in line
    empty = fleet_summary("prometheus http://127.0.0.1:9090", "tokentop", 0.0, 60.0, [])
    assert nothing_summarised(empty) == "no host to summarise in prometheus http://127.0.0.1:9090"
