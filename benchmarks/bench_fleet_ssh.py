"""The fleet viewer's cost with 16 hosts over ssh at 1 Hz.

    python benchmarks/bench_fleet_ssh.py                    # 16 hosts, 5 windows of 10 s
    python benchmarks/bench_fleet_ssh.py --hosts 4 --windows 3

A real sshd on loopback (``tests/integration/sshd_harness.py``); each host is this checkout's
``tokentop --demo --seed N --no-history snapshot --json --follow --interval 1`` reached through
``ssh`` as the fleet view reaches it (``SshSource``), and read once a second as the fleet
screen's poller does (``read()``, and ``series()`` for a 5-minute graph). Per window: the
viewer's CPU (this process: the reader threads, parsing, the fleet's arithmetic), the same with
its ssh clients added, and the viewer's RSS; the remote feeds' CPU per host is the peer
measured in the same run. Printed: medians. Targets: the viewer <= 2 % of one core,
RSS <= 80 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from sshd_harness import Sshd, remote_processes, tokentop_wrapper, wait_for  # noqa: E402

from tokentop.config import Config, SshHostConfig  # noqa: E402
from tokentop.fleet.ssh import SshSource  # noqa: E402
from tokentop.fleet.ssh_command import SSH_CONFIG_ENV  # noqa: E402

CPU_TARGET_PCT = 2.0
RSS_TARGET_MB = 80.0


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sshd = Sshd(work)
        sshd.prepare()
        sshd.start()
        sshd.check_login()
        os.environ[SSH_CONFIG_ENV] = str(sshd.ssh_config)
        tt = tokentop_wrapper(work)
        hosts = tuple(
            SshHostConfig(ssh=f"h{i}", command=f"{tt} --demo --seed {i} --no-history") for i in range(1, args.hosts + 1)
        )
        source = SshSource(Config(hosts=hosts, interval_s=1.0))
        try:
            wait_for(lambda: source.read().fleet.hosts_up == args.hosts, 180, f"{args.hosts} hosts up")
            time.sleep(5.0)  # past the start-up of every feed
            print(_measure(source, work, args.windows, args.window_s, args.hosts))
        finally:
            source.close()
            sshd.stop()
    return 0


def _measure(source: SshSource, work: Path, windows: int, window_s: float, hosts: int) -> str:
    me = psutil.Process()
    viewer, with_ssh, remote, rss = [], [], [], []
    for _ in range(windows):
        ssh = [p for p in me.children() if p.name() == "ssh"]
        feeds = remote_processes(work)
        start = time.monotonic()
        cpu0, ssh0, remote0 = _cpu_s([me]), _cpu_s(ssh), _cpu_s(feeds)
        up = []
        while time.monotonic() - start < window_s:
            reading = source.read()  # what the fleet screen's poller does every refresh
            source.series(300.0)
            up.append(reading.fleet.hosts_up)
            time.sleep(1.0)
        elapsed = time.monotonic() - start
        viewer_pct = (_cpu_s([me]) - cpu0) / elapsed * 100
        viewer.append(viewer_pct)
        with_ssh.append(viewer_pct + (_cpu_s(ssh) - ssh0) / elapsed * 100)
        remote.append((_cpu_s(feeds) - remote0) / elapsed * 100 / max(1, len(feeds)))
        rss.append(me.memory_info().rss / 1e6)
        if min(up) < hosts:
            print(f"warning: only {min(up)} of {hosts} hosts up in a window", file=sys.stderr)
    median = statistics.median
    return "\n".join(
        [
            f"fleet over ssh: {hosts} hosts at 1 Hz, {windows} windows of {window_s:g} s (medians)",
            f"  viewer CPU:            {median(viewer):6.2f} % of one core  (target <= {CPU_TARGET_PCT:g} %)",
            f"  viewer + ssh clients:  {median(with_ssh):6.2f} % of one core",
            f"  viewer RSS:            {median(rss):6.1f} MB             (target <= {RSS_TARGET_MB:g} MB)",
            f"  peer, one remote feed: {median(remote):6.2f} % of one core  (tokentop --demo snapshot --follow)",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
