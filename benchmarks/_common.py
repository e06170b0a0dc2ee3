"""What several benchmarks share: pages served from another process, and a process's CPU and
memory read from ``/proc``.

Benchmarks import it as bench_peers.py imports bench_live.py: ``sys.path.insert(0, <benchmarks>)``.
Run as a script, ``python benchmarks/_common.py FILE [COUNT]`` serves FILE on COUNT loopback
ports (one line of ports on stdout first) until it is killed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKENVML = ROOT / "tests" / "fakenvml"  # a copy of shared/tools/fakenvml
CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP_S = 5.0


def serve_pages(body_for: Callable[[str], bytes], count: int = 1, *, disable_nagle: bool = True) -> None:
    """Answer every GET on ``count`` loopback ports with ``body_for(path)``, for ever; the ports are
    printed first, on one line. Meant for a child process, so that serving is not the measured
    process's work. ``disable_nagle``: headers and body go out at once (they are two writes)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = disable_nagle

        def do_GET(self) -> None:
            body = body_for(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(count)]
    print(" ".join(str(server.server_address[1]) for server in servers), flush=True)
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()


def build_fakenvml(into: Path) -> tuple[Path | None, str]:
    """The C fake NVML (``libnvidia-ml.so.1``) built into ``into``; None and why when it cannot
    be built here."""
    if not FAKENVML.exists():
        return None, f"{FAKENVML} not found"
    made = subprocess.run(["make", "-s", "-C", str(FAKENVML), f"BUILD={into}"], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"the fake libnvidia-ml.so.1 did not build: {made.stderr.strip()}"
    return into, ""


def start_server(command: Sequence[str]) -> tuple[subprocess.Popen[str], list[int]]:
    """Start a child that runs ``serve_pages``; the child and the ports it serves on."""
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, [int(port) for port in server.stdout.readline().split()]


def serve_file(path: Path, count: int = 1, *, by_name: bool = False) -> tuple[subprocess.Popen[str], list[int]]:
    """A child serving the file at ``path`` on ``count`` ports (threads of the one process);
    ``by_name``: a query ``?name[]=...`` is answered as prometheus_client's app does."""
    return start_server([sys.executable, __file__, str(path), str(count), *(["--by-name"] if by_name else [])])


def by_name_pages(page: bytes) -> Callable[[str], bytes]:
    """``body_for`` of a server that answers ``?name[]=a&name[]=b`` as vLLM's (prometheus_client's
    app) does: only the samples named, rendered by ``restricted_registry`` and ``generate_latest``
    from the page's families; the page itself without a query."""
    from urllib.parse import parse_qs, urlsplit

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(page.decode()))

    class Page:
        def collect(self) -> list[object]:
            return families

        def describe(self) -> list[object]:
            return families

    registry = CollectorRegistry()
    registry.register(Page())  # type: ignore[arg-type]
    rendered: dict[str, bytes] = {}  # query -> body: the page does not change

    def body_for(path: str) -> bytes:
        query = urlsplit(path).query
        if query not in rendered:
            names = parse_qs(query).get("name[]")
            rendered[query] = generate_latest(registry.restricted_registry(names)) if names else page
        return rendered[query]

    return body_for


@dataclass
class Figures:
    cpu_pct: float  # over the whole measured span
    cpu_pct_median: float  # median of one-second slices
    main_thread_pct: float  # the main thread alone: the event loop for the live view
    peak_rss_mb: float
    seconds: float


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def thread_ticks(pid: int, tid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(pid: int, seconds: float) -> Figures:
    """Sample the process once a second for ``seconds`` after the warm-up."""
    time.sleep(WARMUP_S)
    start_t, start = time.monotonic(), cpu_ticks(pid)
    main_start = thread_ticks(pid, pid)
    if start is None or main_start is None:
        raise SystemExit(f"process {pid} ended during the warm-up")
    last_t, last, main_last = start_t, start, main_start
    slices = []
    rss = peak_rss_mb(pid) or 0.0
    while time.monotonic() - start_t < seconds:
        time.sleep(1.0)
        now_t, now, main_now = time.monotonic(), cpu_ticks(pid), thread_ticks(pid, pid)
        if now is None or main_now is None:
            break
        main_last = main_now
        rss = peak_rss_mb(pid) or rss
        slices.append((now - last) / CLK_TCK / (now_t - last_t) * 100)
        last_t, last = now_t, now
    span = last_t - start_t

    def pct(ticks: int) -> float:
        return ticks / CLK_TCK / span * 100 if span > 0 else float("nan")

    median = statistics.median(slices) if slices else float("nan")
    return Figures(pct(last - start), median, pct(main_last - main_start), rss, span)


def measure_record(seconds: float, args: Sequence[str], env: dict[str, str] | None = None) -> Figures:
    """``tokentop record ARGS`` as a plain process, measured for ``seconds`` after the warm-up;
    it runs 2 s longer than that and must end well."""
    duration = seconds + WARMUP_S + 2
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokentop.cli", "record", *args, "--duration", f"{duration:g}"],
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        figures = measure(proc.pid, seconds)
    finally:
        _, err = proc.communicate(timeout=duration + 30)
    if proc.returncode != 0:
        raise SystemExit(f"record failed ({proc.returncode}): {err.strip()}")
    return figures


if __name__ == "__main__":
    page = Path(sys.argv[1]).read_bytes()
    body_for = by_name_pages(page) if "--by-name" in sys.argv else lambda path: page
    serve_pages(body_for, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
