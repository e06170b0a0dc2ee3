"""tokentop beside nvitop on the same fake host: the C fake NVML and four loopback vLLM endpoints.

    python benchmarks/bench_peers.py [--seconds 30] [--nvitop /tmp/venv/bin/nvitop] [--before DIR] [--rounds 3]
        [--by-name]

1. Builds ``tests/fakenvml`` (a copy of shared/tools/fakenvml: a fake ``libnvidia-ml.so.1``,
   8 H200s by default) into a temporary folder and puts it first on ``LD_LIBRARY_PATH``: tokentop's real NVML reader and
   nvitop both call it through pynvml, unchanged.
2. Serves four 128 KiB vLLM pages (bench_reader.py's) from another process, so their CPU is not
   counted, and points tokentop at them (``--endpoint URL,kind=vllm,gpus=..``). ``--by-name``:
   the server answers ``?name[]=`` as vLLM's (prometheus_client's app) does, so tokentop asks
   for what it reads (collectors/by_name.py); without it, every read is the whole page.
3. ``tokentop record`` as a plain process; then the live view and ``nvitop --interval 1`` in
   two tmux sessions at 160x50 over the same span. CPU % of one core and peak RSS are read from
   ``/proc`` as bench_live.py does (after its warm-up).

nvitop is not a dependency: install it in a scratch venv (``python -m venv /tmp/peers &&
/tmp/peers/bin/pip install nvitop``) and pass ``--nvitop``. Targets: record <= 0.3 %; the live
view's CPU no higher than nvitop's (ratio <= 1.0) with RSS <= 60 MB.

The live view less ``record`` is what the screen costs (Textual: snapshot -> widgets -> render ->
terminal writes); it is printed as the screen's share. ``--before DIR``: an earlier tokentop's
source tree (``git archive <commit> tokentop | tar -x -C DIR``) runs its live view beside the
others in the same span, from DIR so that its package is the one imported. ``--rounds N``: N
rounds one after the other (record, then the live views and nvitop side by side), then the
medians, so that a moment when the machine is busier weighs on each alike. The tmux sessions
use a server of their own (``tmux -L``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import ROOT, Figures, build_fakenvml, cpu_ticks, measure, measure_record, serve_file
from bench_reader import busy_page

ENDPOINTS = 4
TMUX = ["tmux", "-L", "tokentop-bench-peers", "-f", "/dev/null"]  # a server of its own: no other session is touched


def tokentop_args(ports: list[int]) -> list[str]:
    args = []
    for i, port in enumerate(ports):
        args += ["--endpoint", f"http://127.0.0.1:{port}/metrics,kind=vllm,name=e{i},gpus={2 * i}+{2 * i + 1}"]
    return args


@dataclass(frozen=True)
class Program:
    command: list[str]
    cwd: Path = ROOT
    env: tuple[tuple[str, str], ...] = ()


def in_tmux(session: str, program: Program, env: dict[str, str]) -> int:
    """Start ``program`` in a detached 160x50 tmux session; its pid."""
    subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**env, **dict(program.env)}.items())
    line = f"exec env {exports} {' '.join(shlex.quote(c) for c in program.command)}"
    subprocess.run(
        [*TMUX, "new-session", "-d", "-s", session, "-x", "160", "-y", "50", "-c", str(program.cwd), line], check=True
    )
    shown = subprocess.run(
        [*TMUX, "display-message", "-p", "-t", session, "#{pane_pid}"], capture_output=True, text=True
    )
    return int(shown.stdout)


def side_by_side(seconds: float, programs: dict[str, Program], env: dict[str, str]) -> dict[str, Figures]:
    """Every program in its own tmux session over the same span, measured at once."""
    from concurrent.futures import ThreadPoolExecutor

    sessions = {name: f"bench-peers-{name.replace(' ', '-')}" for name in programs}
    pids = {name: in_tmux(sessions[name], program, env) for name, program in programs.items()}
    try:
        with ThreadPoolExecutor(len(pids)) as pool:
            futures = {name: pool.submit(measure, pid, seconds) for name, pid in pids.items()}
            return {name: future.result() for name, future in futures.items()}
    finally:
        for session in sessions.values():
            subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)


def record(seconds: float, ports: list[int], db: Path, env: dict[str, str]) -> Figures:
    return measure_record(seconds, ["--db", str(db), *tokentop_args(ports)], env)


def line(name: str, f: Figures) -> str:
    return (
        f"  {name:<16} CPU {f.cpu_pct:5.2f} % of one core over {f.seconds:.0f} s (median of 1 s slices "
        f"{f.cpu_pct_median:.2f} %, main thread {f.main_thread_pct:.2f} %), peak RSS {f.peak_rss_mb:5.1f} MB"
    )


def median_figures(runs: list[Figures]) -> Figures:
    """Each figure's median over the rounds."""
    return Figures(
        statistics.median(f.cpu_pct for f in runs),
        statistics.median(f.cpu_pct_median for f in runs),
        statistics.median(f.main_thread_pct for f in runs),
        statistics.median(f.peak_rss_mb for f in runs),
        statistics.median(f.seconds for f in runs),
    )


def one_round(args: argparse.Namespace, ports: list[int], tmp: Path, env: dict[str, str]) -> dict[str, Figures]:
    """``record``, then the live view(s) and nvitop side by side."""
    figures = {"record": record(args.record_seconds, ports, tmp / "record.db", env)}
    if args.nvitop:
        live = [sys.executable, "-m", "tokentop.cli", "--db", str(tmp / "live.db"), *tokentop_args(ports)]
        programs = {"tokentop": Program(live)}
        if args.before is not None:
            before = [*live[:4], str(tmp / "before.db"), *live[5:]]
            programs["tokentop before"] = Program(before, args.before, (("PYTHONPATH", str(args.before)),))
        programs["nvitop"] = Program([args.nvitop, "--interval", "1"])
        figures.update(side_by_side(args.seconds, programs, env))
    return figures


def report(figures: dict[str, Figures]) -> None:
    print(line("record", figures["record"]) + "   target <= 0.3 %")
    for name in ("tokentop", "tokentop before", "nvitop"):
        if name in figures:
            print(line(name, figures[name]))
    if "nvitop" not in figures:
        return
    ratio = figures["tokentop"].cpu_pct / figures["nvitop"].cpu_pct
    print(f"  live view CPU / nvitop CPU: {ratio:.2f} (target <= 1.0; RSS target <= 60 MB)")
    screen = figures["tokentop"].cpu_pct - figures["record"].cpu_pct
    text = f"  the screen's share (live view less record): {screen:.2f} % of one core"
    if "tokentop before" in figures:
        before = figures["tokentop before"].cpu_pct - figures["record"].cpu_pct
        text += f"; before {before:.2f} % ({screen / before:.2f} of it)" if before > 0 else f"; before {before:.2f} %"
    print(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--record-seconds", type=float, default=60.0)
    parser.add_argument("--nvitop", help="nvitop's executable (a scratch venv); without it, record only")
    parser.add_argument("--before", type=Path, help="an earlier tokentop's source tree, its live view measured too")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--by-name", action="store_true", help="servers answer ?name[]= as prometheus_client does")
    args = parser.parse_args()
    if args.before is not None:
        args.before = args.before.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        lib, why = build_fakenvml(Path(tmp) / "fakenvml")
        if lib is None:
            raise SystemExit(why)
        env = {"LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":")}
        page = Path(tmp) / "page.txt"
        page.write_text(busy_page(7))
        servers, ports = [], []
        try:
            for _ in range(ENDPOINTS):  # one process each
                server, (port,) = serve_file(page, by_name=args.by_name)
                servers.append(server)
                ports.append(port)
            asked = "answering ?name[]=" if args.by_name else "whole pages"
            print(
                f"fake NVML (C, 8 GPUs), {ENDPOINTS} loopback vLLM endpoints of 128 KiB ({asked}), "
                f"1 Hz, {os.cpu_count()} CPUs"
            )
            rounds = []
            for number in range(args.rounds):
                if args.rounds > 1:
                    print(f"round {number + 1} of {args.rounds}")
                rounds.append(one_round(args, ports, Path(tmp), env))
                report(rounds[-1])
            if args.rounds > 1:
                print(f"medians of {args.rounds} rounds")
                report({name: median_figures([r[name] for r in rounds]) for name in rounds[0]})
        finally:
            for server in servers:
                server.kill()
    return 0


if __name__ == "__main__":
    assert cpu_ticks(os.getpid()) is not None
    sys.exit(main())
