"""tokentop beside nvitop on the same fake host: the C fake NVML and four loopback vLLM endpoints.

    python benchmarks/bench_peers.py [--seconds 30] [--nvitop /tmp/venv/bin/nvitop]

1. Builds ``shared/tools/fakenvml`` (a fake ``libnvidia-ml.so.1``, 8 H200s by default) into a
   temporary folder and puts it first on ``LD_LIBRARY_PATH``: tokentop's real NVML reader and
   nvitop both call it through pynvml, unchanged.
2. Serves four 128 KiB vLLM pages (bench_reader.py's) from another process, so their CPU is not
   counted, and points tokentop at them (``--endpoint URL,kind=vllm,gpus=..``).
3. ``tokentop record`` as a plain process; then the live view and ``nvitop --interval 1`` in
   two tmux sessions at 160x50 over the same span. CPU % of one core and peak RSS are read from
   ``/proc`` as bench_live.py does (after its warm-up).

nvitop is not a dependency: install it in a scratch venv (``python -m venv /tmp/peers &&
/tmp/peers/bin/pip install nvitop``) and pass ``--nvitop``. Targets: record <= 0.3 %; the live
view's CPU no higher than nvitop's (ratio <= 1.0) with RSS <= 60 MB.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import ROOT, Figures, cpu_ticks, measure, measure_record, serve_file
from bench_reader import busy_page

FAKENVML = ROOT.parent / "shared" / "tools" / "fakenvml"
ENDPOINTS = 4


def build_fakenvml(into: Path) -> Path:
    source = FAKENVML if FAKENVML.exists() else Path("/work/shared/tools/fakenvml")
    subprocess.run(["make", "-s", "-C", str(source), f"BUILD={into}"], check=True, capture_output=True)
    return into


def tokentop_args(ports: list[int]) -> list[str]:
    args = []
    for i, port in enumerate(ports):
        args += ["--endpoint", f"http://127.0.0.1:{port}/metrics,kind=vllm,name=e{i},gpus={2 * i}+{2 * i + 1}"]
    return args


def in_tmux(session: str, command: list[str], env: dict[str, str]) -> int:
    """Start ``command`` in a detached 160x50 tmux session; its pid."""
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    line = f"exec env {exports} {' '.join(shlex.quote(c) for c in command)}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", "-c", str(ROOT), line], check=True
    )
    shown = subprocess.run(
        ["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"], capture_output=True, text=True
    )
    return int(shown.stdout)


def side_by_side(seconds: float, commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, Figures]:
    """Every command in its own tmux session over the same span, measured at once."""
    from concurrent.futures import ThreadPoolExecutor

    pids = {name: in_tmux(f"bench-peers-{name}", command, env) for name, command in commands.items()}
    try:
        with ThreadPoolExecutor(len(pids)) as pool:
            futures = {name: pool.submit(measure, pid, seconds) for name, pid in pids.items()}
            return {name: future.result() for name, future in futures.items()}
    finally:
        for name in pids:
            subprocess.run(["tmux", "kill-session", "-t", f"bench-peers-{name}"], capture_output=True)


def record(seconds: float, ports: list[int], db: Path, env: dict[str, str]) -> Figures:
    return measure_record(seconds, ["--db", str(db), *tokentop_args(ports)], env)


def line(name: str, f: Figures) -> str:
    return (
        f"  {name:<10} CPU {f.cpu_pct:5.2f} % of one core over {f.seconds:.0f} s (median of 1 s slices "
        f"{f.cpu_pct_median:.2f} %, main thread {f.main_thread_pct:.2f} %), peak RSS {f.peak_rss_mb:5.1f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--record-seconds", type=float, default=60.0)
    parser.add_argument("--nvitop", help="nvitop's executable (a scratch venv); without it, record only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lib = build_fakenvml(Path(tmp) / "fakenvml")
        env = {"LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":")}
        page = Path(tmp) / "page.txt"
        page.write_text(busy_page(7))
        servers, ports = [], []
        try:
            for _ in range(ENDPOINTS):  # one process each
                server, (port,) = serve_file(page)
                servers.append(server)
                ports.append(port)
            rec = record(args.record_seconds, ports, Path(tmp) / "record.db", env)
            print(f"fake NVML (C, 8 GPUs), {ENDPOINTS} loopback vLLM endpoints of 128 KiB, 1 Hz, {os.cpu_count()} CPUs")
            print(line("record", rec) + "   target <= 0.3 %")
            if args.nvitop:
                live = [sys.executable, "-m", "tokentop.cli", "--db", str(Path(tmp) / "live.db"), *tokentop_args(ports)]
                peers = side_by_side(args.seconds, {"tokentop": live, "nvitop": [args.nvitop, "--interval", "1"]}, env)
                for name, figures in peers.items():
                    print(line(name, figures))
                ratio = peers["tokentop"].cpu_pct / peers["nvitop"].cpu_pct
                print(f"  live view CPU / nvitop CPU: {ratio:.2f} (target <= 1.0; RSS target <= 60 MB)")
        finally:
            for server in servers:
                server.kill()
    return 0


if __name__ == "__main__":
    assert cpu_ticks(os.getpid()) is not None
    sys.exit(main())
