"""A real Prometheus for the fleet tests, and real ``tokentop export --demo`` hosts for it to scrape.

``Prometheus`` runs the Debian package's ``/usr/bin/prometheus`` (2.42 here; ``.ci/run`` installs
it) on a free loopback port with a temporary TSDB, a 1 s scrape interval and a scrape config
written from the targets given. ``ExportedHost`` runs ``python -m tokentop export --demo`` with
its own host name and history file. When Prometheus is missing the tests skip with the reason,
unless ``TOKENTOP_REQUIRE_PROMETHEUS=1`` (CI), where they fail.

Nothing is left behind (``spawn``): every child runs in its own process group, is told by the
kernel to end when the test process dies however it dies (Linux's parent-death signal), and any
group still alive at exit is ended by an ``atexit`` hook, after SIGTERM then SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REQUIRE_ENV = "TOKENTOP_REQUIRE_PROMETHEUS"
SCRAPE_INTERVAL_S = 1.0
REPO = Path(__file__).resolve().parents[2]

_live: set[subprocess.Popen[bytes]] = set()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to send SIGTERM to this child when its parent dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """``Popen`` in a new process group that cannot outlive this process (see the module)."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    process = subprocess.Popen(list(command), start_new_session=True, preexec_fn=preexec, **options)
    _live.add(process)
    return process


def end(process: subprocess.Popen[bytes] | None, first: int = signal.SIGTERM, wait_s: float = 10.0) -> None:
    """End ``process`` and its group: ``first``, then SIGKILL after ``wait_s``."""
    if process is None:
        return
    _live.discard(process)
    for sig, wait in ((first, wait_s), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the child left in its group


@atexit.register
def _end_all() -> None:
    for process in list(_live):
        end(process, wait_s=3.0)


class Unavailable(Exception):
    """Prometheus cannot be had here; the message says why."""


def unavailable(reason: str) -> None:
    """Skip (or, with ``TOKENTOP_REQUIRE_PROMETHEUS=1``, fail) saying why."""
    message = f"real Prometheus unavailable: {reason}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1, so the fleet tests fail)", pytrace=False)
    pytest.skip(message)


def find_prometheus() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if found is None:
        raise Unavailable("no prometheus binary on PATH (Debian: apt-get install prometheus)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Job:
    """One scrape job: its targets (``host:port``), extra target labels, path and honor_labels."""

    name: str
    targets: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    path: str = "/metrics"
    honor_labels: bool = False


def agentless_jobs(target: tuple[str, ...]) -> list[Job]:
    """The agentless scenario's hosts gpu-a and gpu-b, their pages at ``target``: /a/dcgm and
    /b/dcgm (dcgm-exporter; gpu-a's runs as a pod, so the target labels name that pod), /a/vllm
    (pod default/vllm-70b) and /b/vllm (no pod)."""
    return [
        Job(
            "dcgm-a",
            target,
            {"instance": "gpu-a:9400", "pod": "dcgm-exporter-x7", "namespace": "gpu-operator"},
            "/a/dcgm",
        ),
        Job("dcgm-b", target, {"instance": "gpu-b:9400"}, "/b/dcgm"),
        Job("vllm-a", target, {"instance": "10.0.0.7:8000", "pod": "vllm-70b", "namespace": "default"}, "/a/vllm"),
        Job("vllm-b", target, {"instance": "gpu-b:8000"}, "/b/vllm"),
    ]


def scrape_config(jobs: Sequence[Job]) -> str:
    """A prometheus.yml (JSON is YAML) scraping every job each second."""
    every = f"{SCRAPE_INTERVAL_S:g}s"
    config: dict[str, Any] = {
        "global": {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every},
        "scrape_configs": [
            {
                "job_name": job.name,
                "metrics_path": job.path,
                "honor_labels": job.honor_labels,
                "static_configs": [{"targets": list(job.targets), "labels": job.labels}],
            }
            for job in jobs
        ],
    }
    return json.dumps(config, indent=2)


class Prometheus:
    """``/usr/bin/prometheus`` scraping ``jobs``; ``Unavailable`` (from here or ``start``) when it
    cannot be had. ``binary``: one ``find_prometheus`` already found."""

    def __init__(self, workdir: Path, jobs: Sequence[Job], binary: str | None = None) -> None:
        self.binary = binary or find_prometheus()
        self.workdir = workdir
        self.jobs = list(jobs)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text(scrape_config(self.jobs))
        log = (self.workdir / "prometheus.log").open("wb")
        self.process = spawn(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.workdir / "prometheus.log").read_text(errors="replace")[-600:]
                raise Unavailable(f"prometheus exited with {self.process.returncode}: {tail}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise Unavailable(f"prometheus did not get ready within {timeout_s:g} s")

    def stop(self) -> None:
        end(self.process)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        answer = httpx.post(self.url + "/api/v1/query", data=params, timeout=10).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, promql: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self.query(promql)):
                return
            time.sleep(0.25)
        raise AssertionError(f"Prometheus never answered {promql!r} as expected within {timeout_s:g} s")


SERVING = re.compile(rb"serving http://127\.0\.0\.1:(\d+)/metrics")


class ExportedHost:
    """``python -m tokentop export --demo --seed N --host-name NAME`` on a loopback port, with
    its history in ``db``."""

    def __init__(self, name: str, seed: int, workdir: Path) -> None:
        self.name = name
        self.seed = seed
        self.db = workdir / f"{name}.db"
        self.log = workdir / f"{name}.log"
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "tokentop", "export", "--demo", "--seed", str(self.seed)]
        command += ["--host-name", self.name, "--listen", "127.0.0.1:0", "--db", str(self.db)]
        with self.log.open("wb") as log:
            self.process = spawn(command, stdout=log, stderr=log, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = SERVING.search(self.log.read_bytes())
            if found:
                self.port = int(found.group(1))
                return
            if self.process.poll() is not None:
                raise AssertionError(f"tokentop export ended: {self.log.read_text(errors='replace')[-600:]}")
            time.sleep(0.05)
        raise AssertionError(f"tokentop export did not start within {timeout_s:g} s")

    def stop(self) -> None:
        end(self.process, signal.SIGINT, wait_s=15.0)

    def summary(self, since: float, until: float) -> dict[str, Any]:
        """This host's own ``tokentop summary --format json`` over the range."""
        done = run_tokentop(
            "summary", "--db", str(self.db), "--since", _iso(since), "--until", _iso(until), "--format", "json"
        )
        assert done.returncode == 0, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data


def run_tokentop(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tokentop", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )


# --- scripted pages for the agentless tests: dcgm-exporter and an inference server ------------
# Every sample carries an explicit whole-second timestamp and every counter is linear in it, so
# ``increase()`` over a range ending on a sample is exactly rate x range.

DCGM_TEMPLATE = REPO / "tests" / "fixtures" / "metrics" / "dcgm-exporter-k8s.txt"  # see SOURCES-dcgm.md


def stamped(lines: Sequence[str], ts: int) -> str:
    """A page whose every sample line is stamped with ``ts`` (seconds)."""
    return "".join(f"{line} {ts * 1000}\n" if line and not line.startswith("#") else f"{line}\n" for line in lines)


def with_value(line: str, value: str) -> str:
    return line.rsplit(" ", 1)[0] + " " + value


def dcgm_before_490(template: str, ts: int, t0: float, watts: float) -> str:
    """The template's two H100s as dcgm-exporter before 4.9.0 prints them (energy in mJ,
    utilisation in %), their energy counters at ``watts`` each since ``t0``."""
    out = []
    for line in template.splitlines():
        if line.startswith("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{"):
            line = with_value(line, f"{watts * 1000 * (ts - t0):.0f}")
        out.append(line)
    return stamped(out, ts)


H200_MIB = {"DCGM_FI_DEV_FB_USED": 120_000, "DCGM_FI_DEV_FB_FREE": 23_238, "DCGM_FI_DEV_FB_RESERVED": 533}
"""gpu-b's memory (MiB; its page says bytes): 143,771 MiB in all, what nvidia-smi gives an H200."""


def dcgm_490(template: str, ts: int, t0: float, watts: float) -> str:
    """One H200 on host gpu-b, without pods, in dcgm-exporter 4.9.0's layout (energy in J,
    utilisation 0-1 at 0.5, memory in bytes with the reserved part, ``hostname``), made from the
    template's first GPU."""
    out = []
    for line in template.splitlines():
        if line.startswith("#"):
            out.append(line.replace("(in mJ)", "(in J)").replace("(in %)", "(ratio)").replace("(in MiB)", "(in B)"))
        elif 'gpu="0"' in line:
            line = line.replace("NVIDIA H100 80GB HBM3", "NVIDIA H200").replace("Hostname", "hostname")
            line = line.replace(',container="vllm",namespace="default",pod="vllm-70b"', "")
            line = line.replace("gpu-a", "gpu-b").replace("GPU-604ac76c", "GPU-b0b0b0b0")
            if line.startswith("DCGM_FI_DEV_FB_USED{"):
                out.append(line.replace("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_RESERVED"))
            out.append(line)
    values = {
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": f"{watts * (ts - t0):.3f}",
        "DCGM_FI_DEV_POWER_USAGE": f"{watts:g}",
        "DCGM_FI_DEV_GPU_UTIL": "0.5",
        **{name: str(mib << 20) for name, mib in H200_MIB.items()},
    }

    def valued(line: str) -> str:
        value = None if line.startswith("#") else values.get(line.split("{", 1)[0])
        return line if value is None else with_value(line, value)

    return stamped([valued(line) for line in out], ts)


def sglang_dp_attention_page(ts: int, t0: float) -> str:
    """An SGLang at ``--tp 4 --dp 2 --enable-dp-attention --enable-metrics-for-all-schedulers``:
    100 output tok/s (its tokenizer's counters, no rank); DP rank 0's schedulers (tensor ranks 0
    and 1, attention TP 2) repeat each other's 3 running and KV 0.25, DP rank 1's (ranks 2 and 3)
    4 and 0.5: 7 running, KV 0.5."""
    lines = [f'sglang:generation_tokens_total{{model_name="m"}} {100 * (ts - t0):.3f}']
    for dp, tp, running, kv in (("0", "0", 3, 0.25), ("0", "1", 3, 0.25), ("1", "2", 4, 0.5), ("1", "3", 4, 0.5)):
        labels = f'dp_rank="{dp}",model_name="m",pid="{100 + int(tp)}",pp_rank="0",tp_rank="{tp}"'
        lines += [f"sglang:num_running_reqs{{{labels}}} {running}", f"sglang:token_usage{{{labels}}} {kv}"]
    return stamped(lines, ts)


def dcgm_mig_and_sliced(ts: int) -> str:
    """Host gpu-m's dcgm-exporter, labels honoured: GPU 0 an A100 in two MIG instances of 40,192
    MiB (one held by pod ``a``, the other shared by pods ``b`` and ``c``, whose rows repeat it)
    and a third whose free memory is blank (the sentinel), each row with the whole GPU's 250 W
    and 55 C; GPU 1 an H100 time-sliced by pods ``d`` and ``e``, each row the whole GPU's
    (350 W, 66 C, 50,000 MiB used of 81,026)."""
    a100 = 'gpu="0",UUID="GPU-a100a100",device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-m"'
    h100 = 'gpu="1",UUID="GPU-h100h100",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-m"'
    rows = [  # (labels, W, C, used MiB, free MiB)
        (f'{a100},GPU_I_PROFILE="3g.40gb",GPU_I_ID="1",namespace="ml",pod="a"', 250, 55, 30_000, 10_192),
        (f'{a100},GPU_I_PROFILE="3g.40gb",GPU_I_ID="2",namespace="ml",pod="b"', 250, 55, 12_000, 28_192),
        (f'{a100},GPU_I_PROFILE="3g.40gb",GPU_I_ID="2",namespace="ml",pod="c"', 250, 55, 12_000, 28_192),
        (f'{a100},GPU_I_PROFILE="1g.10gb",GPU_I_ID="3",namespace="ml",pod="f"', 250, 55, 5_000, 9223372036854775794),
        (f'{h100},namespace="ml",pod="d"', 350, 66, 50_000, 31_026),
        (f'{h100},namespace="ml",pod="e"', 350, 66, 50_000, 31_026),
    ]
    names = ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE")
    lines = []
    for column, name in enumerate(names, start=1):
        lines.append(f"# TYPE {name} gauge")
        lines += [f"{name}{{{row[0]}}} {row[column]}" for row in rows]
    return stamped(lines, ts)


VLLM_GAUGES = {"num_requests_running": (2, 5), "num_requests_waiting": (0, 1), "kv_cache_usage_perc": (0.25, 0.5)}
"""Each engine's (0, 1) gauges on ``server_page``'s vLLM pages: 7 running, 1 waiting, KV 0.5 (the fuller)."""


def server_page(
    prefix: str, tok_s_out: float, ts: int, t0: float, histograms: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    """A server's token counters (``vllm``, ``sglang``…): output at ``tok_s_out``, prompt at 3x;
    ``histograms`` (name -> upper bound -> observations a second at or below it) for two engines
    that split each count 1:3, and for ``vllm`` those engines' ``VLLM_GAUGES``."""
    labels = '{engine="0",model_name="llama"}'
    lines = [
        f"# TYPE {prefix}:generation_tokens_total counter",
        f"{prefix}:generation_tokens_total{labels} {tok_s_out * (ts - t0):.3f}",
        f"# TYPE {prefix}:prompt_tokens_total counter",
        f"{prefix}:prompt_tokens_total{labels} {3 * tok_s_out * (ts - t0):.3f}",
    ]
    for name, values in VLLM_GAUGES.items() if prefix == "vllm" else ():
        lines.append(f"# TYPE vllm:{name} gauge")
        lines += [f'vllm:{name}{{engine="{engine}",model_name="llama"}} {v:g}' for engine, v in enumerate(values)]
    for name, per_s in (histograms or {}).items():
        lines.append(f"# TYPE {prefix}:{name} histogram")
        for engine, share in (("0", 0.25), ("1", 0.75)):
            bucket = f'{prefix}:{name}_bucket{{engine="{engine}",model_name="llama",le='
            lines += [f'{bucket}"{le}"}} {share * rate * (ts - t0):.3f}' for le, rate in per_s.items()]
    return stamped(lines, ts)


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()
