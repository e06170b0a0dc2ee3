"""A simulated inference host that runs tokentop's real code paths.

Eight H200s sit behind the fake NVML (``tokentop.nvml.fake``) and three vLLM-like engines serve
real Prometheus exposition text on loopback ports, so the demo goes through the same NVML
reader, HTTP collectors, derive and store as a real host. Everything is a closed-form function
of the simulation clock and the seed, so ``truth`` knows exactly what tokentop should report.

Layout: engine "llama-70b" TP=4 on GPUs 0-3, "llama-8b" TP=2 on GPUs 4-5, "qwen-32b" TP=1 on
GPU 6, GPU 7 idle. Each engine's load follows its own slow wave between busy and quiet.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tokentop.config import CostConfig, EndpointConfig
from tokentop.model import GpuReading, Snapshot
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader

if TYPE_CHECKING:  # imported where used: the live view starts before it needs the sampler
    from tokentop.sampler import Sampler

GPU_NAME = "NVIDIA H200"
GPU_COUNT = 8
IDLE_W = 72.0
MAX_W = 700.0
MEMORY_TOTAL = 143_771_000_832  # 141 GB class HBM3e, bytes as NVML reports
TTFT_BOUNDS = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
ITL_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Engine:
    """One simulated vLLM engine. Load L(t) = mid + swing * sin(2 pi t / period + phase)."""

    name: str
    model: str
    gpus: tuple[int, ...]
    peak_out_tok_s: float
    in_per_out: float
    period_s: float
    phase: float
    mid: float = 0.55
    swing: float = 0.45
    mean_output_len: float = 300.0
    ttft_median_s: float = 0.2
    itl_median_s: float = 0.03

    def load(self, t: float) -> float:
        return self.mid + self.swing * math.sin(2 * math.pi * t / self.period_s + self.phase)

    def load_integral(self, t: float) -> float:
        """Integral of load from 0 to t (closed form, so counters are exact)."""
        w = 2 * math.pi / self.period_s
        return self.mid * t + self.swing / w * (math.cos(self.phase) - math.cos(w * t + self.phase))

    def tokens_out(self, t: float) -> float:
        return self.peak_out_tok_s * self.load_integral(t)

    def tokens_in(self, t: float) -> float:
        return self.peak_out_tok_s * self.in_per_out * self.load_integral(t)

    def running(self, t: float) -> int:
        return round(self.load(t) * 64)


PID_BASE = 4000  # the simulated engines' PIDs: 4000, 4001, ... in the order of ``engines_for``


def simulated_processes(seed: int) -> dict[int, tuple[str, str]]:
    """The simulated engines' processes, by their simulated PIDs: (user, command line). A real
    process on this machine that happens to have one of these PIDs is not one of them."""
    return {
        PID_BASE + i: (
            "demo",
            f"vllm serve {engine.model} --tensor-parallel-size {len(engine.gpus)} (simulated by tokentop --demo)",
        )
        for i, engine in enumerate(engines_for(seed))
    }


def engines_for(seed: int) -> tuple[Engine, ...]:
    rng = random.Random(seed)
    return (
        Engine(
            "llama-70b",
            "meta-llama/Llama-3.3-70B-Instruct",
            (0, 1, 2, 3),
            2400.0,
            3.0,
            rng.uniform(150, 240),
            rng.uniform(0, 2 * math.pi),
            ttft_median_s=0.35,
            itl_median_s=0.04,
        ),
        Engine(
            "llama-8b",
            "meta-llama/Llama-3.1-8B-Instruct",
            (4, 5),
            5200.0,
            1.5,
            rng.uniform(80, 140),
            rng.uniform(0, 2 * math.pi),
            ttft_median_s=0.08,
            itl_median_s=0.012,
        ),
        Engine(
            "qwen-32b",
            "Qwen/Qwen2.5-32B-Instruct",
            (6,),
            1100.0,
            2.0,
            rng.uniform(60, 100),
            rng.uniform(0, 2 * math.pi),
            mid=0.5,
            swing=0.5,
        ),
    )


def gpu_uuid(seed: int, index: int) -> str:
    rng = random.Random(seed * 1000 + index)
    hexes = "".join(rng.choice("0123456789abcdef") for _ in range(32))
    return f"GPU-{hexes[:8]}-{hexes[8:12]}-{hexes[12:16]}-{hexes[16:20]}-{hexes[20:]}"


def _lognormal_cdf(x: float, median: float, sigma: float = 0.6) -> float:
    return 0.5 * (1 + math.erf(math.log(x / median) / (sigma * math.sqrt(2))))


def _histogram_lines(name: str, labels: str, bounds: tuple[float, ...], median: float, count: float) -> list[str]:
    lines = [f"# HELP {name} Histogram.", f"# TYPE {name} histogram"]
    for le in bounds:
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {math.floor(count * _lognormal_cdf(le, median))}.0')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {math.floor(count)}.0')
    lines.append(f"{name}_count{{{labels}}} {math.floor(count)}.0")
    lines.append(f"{name}_sum{{{labels}}} {count * median * 1.2:.3f}")
    return lines


def vllm_page(engine: Engine, t: float) -> str:
    """A vLLM V1 /metrics page for this engine at simulation time t."""
    labels = f'engine="0",model_name="{engine.model}"'
    finished = engine.tokens_out(t) / engine.mean_output_len
    load = engine.load(t)
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} {engine.running(t)}.0",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} {max(0, round((load - 0.8) * 40))}.0",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{labels}}} {min(1.0, 0.05 + 0.9 * load):.4f}",
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{labels}}} {math.floor(engine.tokens_in(t))}.0",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{labels}}} {math.floor(engine.tokens_out(t))}.0",
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
        f'vllm:request_success_total{{{labels},finished_reason="stop"}} {math.floor(finished * 0.9)}.0',
        f'vllm:request_success_total{{{labels},finished_reason="length"}} '
        f"{math.floor(finished) - math.floor(finished * 0.9)}.0",
    ]
    lines += _histogram_lines("vllm:time_to_first_token_seconds", labels, TTFT_BOUNDS, engine.ttft_median_s, finished)
    lines += _histogram_lines(
        "vllm:inter_token_latency_seconds", labels, ITL_BOUNDS, engine.itl_median_s, engine.tokens_out(t)
    )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Truth:
    """What a perfect monitor reports between two simulation instants."""

    tokens_in: dict[int, float]  # per GPU index
    tokens_out: dict[int, float]
    energy_j: dict[int, float]
    seconds: float

    def tok_s_out(self, index: int) -> float:
        return self.tokens_out[index] / self.seconds

    def tok_s_in(self, index: int) -> float:
        return self.tokens_in[index] / self.seconds

    def watts(self, index: int) -> float:
        return self.energy_j[index] / self.seconds


class DemoHost:
    """The simulated GPUs and engines, all functions of ``clock() - start``."""

    def __init__(self, seed: int = 7, clock: Callable[[], float] | None = None) -> None:
        import time

        self.seed = seed
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.engines = engines_for(seed)
        self.uuids = tuple(gpu_uuid(seed, i) for i in range(GPU_COUNT))
        self.fake = FakeNvml.healthy(count=GPU_COUNT, name=GPU_NAME, memory_total_bytes=MEMORY_TOTAL)
        for gpu, uuid in zip(self.fake.gpus, self.uuids):
            gpu.uuid = uuid
        self._engine_of = {i: e for e in self.engines for i in e.gpus}
        self._servers: dict[str, _EngineServer] = {}
        self._ports: dict[str, int] = {}
        self.endpoints: tuple[EndpointConfig, ...] = ()

    def now(self) -> float:
        return self.clock() - self.start

    # -- GPU physics --

    def power_w(self, index: int, t: float) -> float:
        engine = self._engine_of.get(index)
        return IDLE_W if engine is None else IDLE_W + (MAX_W * 0.92 - IDLE_W) * engine.load(t)

    def energy_j(self, index: int, t: float) -> float:
        engine = self._engine_of.get(index)
        if engine is None:
            return IDLE_W * t
        return IDLE_W * t + (MAX_W * 0.92 - IDLE_W) * engine.load_integral(t)

    def update_gpus(self) -> None:
        """Write the simulated state at the current instant into the fake NVML."""
        t = self.now()
        for index, gpu in enumerate(self.fake.gpus):
            engine = self._engine_of.get(index)
            load = engine.load(t) if engine else 0.0
            gpu.power_w = self.power_w(index, t)
            gpu.energy_mj = int(1_000_000_000 + self.energy_j(index, t) * 1000)
            gpu.utilization_pct = round(min(100.0, 8 + 92 * load)) if engine else 0
            gpu.memory_used_bytes = int(MEMORY_TOTAL * 0.92) if engine else 512 * 1024 * 1024
            gpu.temperature_c = round(34 + 40 * load)
            gpu.sm_clock_mhz = round(1100 + 880 * load) if engine else 345
            gpu.compute_processes = [(PID_BASE + self.engines.index(engine), gpu.memory_used_bytes)] if engine else []

    # -- engines --

    def serve(self) -> tuple[EndpointConfig, ...]:
        """Start one loopback HTTP server per engine; returns their endpoint configs."""
        endpoints = []
        for engine in self.engines:
            port = self.start_engine(engine.name)
            endpoints.append(
                EndpointConfig(
                    url=f"http://127.0.0.1:{port}/metrics",
                    name=engine.name,
                    kind="vllm",
                    gpus=tuple(self.uuids[i] for i in engine.gpus),
                )
            )
        self.endpoints = tuple(endpoints)
        return self.endpoints

    def start_engine(self, name: str) -> int:
        """Serve one engine's page (again on its old port after ``stop_engine``)."""
        engine = next(e for e in self.engines if e.name == name)
        server = _EngineServer(("127.0.0.1", self._ports.get(name, 0)), _handler(self, engine))
        threading.Thread(target=server.serve_forever, name=f"demo-{name}", daemon=True).start()
        self._servers[name] = server
        self._ports[name] = server.server_address[1]
        return self._ports[name]

    def stop_engine(self, name: str) -> None:
        server = self._servers.pop(name, None)
        if server is not None:
            server.shutdown()
            server.drop_connections()
            server.server_close()

    def close(self) -> None:
        """Stop every engine at once (each takes up to half a second to notice)."""
        stopping = [threading.Thread(target=self.stop_engine, args=(name,)) for name in list(self._servers)]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    def truth(self, t0: float, t1: float) -> Truth:
        """Exact per-GPU tokens (split over each engine's GPUs) and energy between t0 and t1."""
        tokens_in: dict[int, float] = {}
        tokens_out: dict[int, float] = {}
        energy: dict[int, float] = {}
        for index in range(GPU_COUNT):
            engine = self._engine_of.get(index)
            share = 1 / len(engine.gpus) if engine else 0.0
            tokens_in[index] = (engine.tokens_in(t1) - engine.tokens_in(t0)) * share if engine else 0.0
            tokens_out[index] = (engine.tokens_out(t1) - engine.tokens_out(t0)) * share if engine else 0.0
            energy[index] = self.energy_j(index, t1) - self.energy_j(index, t0)
        return Truth(tokens_in, tokens_out, energy, t1 - t0)


class _EngineServer(ThreadingHTTPServer):
    """Keeps connections open between requests, as real servers do; a stopped engine drops
    them, so a client sees it go down at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()

    def process_request(self, request: socket.socket, client_address: Any) -> None:  # type: ignore[override]
        self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a poll past its deadline) is no error worth a traceback on
        the user's terminal; anything else is still reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError):  # reset, broken pipe, aborted
            super().handle_error(request, client_address)


def _handler(host: DemoHost, engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers: no new connection per tick

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = vllm_page(engine, host.now()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep the terminal clean
            pass

    return Handler


class DemoGpuReader:
    """The real NVML reader over the fake library, with the simulation written in first."""

    def __init__(self, host: DemoHost) -> None:
        self.host = host
        self.reader = NvmlReader(lib=host.fake)

    @property
    def available(self) -> bool:
        return self.reader.available

    @property
    def reason(self) -> str | None:
        return self.reader.reason

    def open(self) -> None:
        self.host.update_gpus()
        self.reader.open()

    def read(self, t_mono: float, with_processes: bool) -> GpuReading:
        self.host.update_gpus()
        return self.reader.read(t_mono, with_processes)

    def close(self) -> None:
        self.reader.close()


class SimulatedClock:
    """A clock that moves only when told: one demo second per tick, for pictures and tests."""

    WALL_START = 1_790_000_000.0  # 2026-09-21: a fixed date, so pictures do not change

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.WALL_START + self.t


def simulated_snapshots(
    ticks: int, seed: int = 7, cost: CostConfig | None = None, gpu_name: str | None = None
) -> list[Snapshot]:
    """``ticks`` one-second readings of a fresh demo host on a simulated clock, with the
    loopback ports written as 8000, 8001, 8002 so that pictures do not depend on which ports
    the system gave. The same inputs give the same snapshots. ``cost``: the default's when None.
    ``gpu_name``: the GPUs' model, in place of the H200 (one no price table knows, say)."""
    from tokentop.config import Config
    from tokentop.sampler import Sampler

    clock = SimulatedClock()
    host = DemoHost(seed=seed, clock=clock)
    if gpu_name is not None:
        for gpu in host.fake.gpus:
            gpu.name = gpu_name  # NVML names are read when the sampler opens the reader
    try:
        config = Config(endpoints=host.serve(), http_timeout_s=5.0, cost=cost or CostConfig())
        sampler = Sampler(config, DemoGpuReader(host), clock=clock, wall_clock=clock.wall)
        snapshots = ticked(sampler, clock, ticks)
    finally:
        host.close()
    ports = {e.url: f"http://127.0.0.1:{8000 + i}/metrics" for i, e in enumerate(config.endpoints)}
    return [
        replace(
            snap,
            endpoints=tuple(
                replace(s, sample=replace(s.sample, url=ports.get(s.sample.url, s.sample.url))) for s in snap.endpoints
            ),
        )
        for snap in snapshots
    ]


def ticked(sampler: Sampler, clock: SimulatedClock, ticks: int) -> list[Snapshot]:
    """``ticks`` readings, the simulated clock moved one second before each; the sampler is
    stopped afterwards whatever happens."""
    try:
        snapshots = []
        for _ in range(ticks):
            clock.t += 1.0
            snapshots.append(sampler.tick())
        return snapshots
    finally:
        sampler.stop()
