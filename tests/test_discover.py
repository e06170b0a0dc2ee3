"""Engine -> GPU mapping by process and by config, and discovery of local servers.

A real server process (with a real child, like vLLM's engine core) listens on loopback; the
fake NVML lists the child as holding memory on two GPUs, as a TP=2 engine's workers would.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tokentop.config import Config, EndpointConfig
from tokentop.discover import candidate_endpoints, listening_sockets, map_endpoints
from tokentop.model import GpuProcess, GpuReading, GpuSample
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler

# A parent that serves a vLLM page and a child that "holds GPU memory" (prints its PID).
ENGINE = textwrap.dedent(
    """
    import subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'vllm:generation_tokens_total{engine="0",model_name="m"} 7\\n'
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    print(child.pid, flush=True)
    try:
        server.serve_forever()
    finally:
        child.kill()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def engine() -> Iterator[tuple[int, int, int]]:
    """(port, server pid, child pid) of a real engine-like process tree."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ENGINE, str(port)], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    deadline = time.monotonic() + 10
    while port not in listening_sockets() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port, proc.pid, child
    proc.kill()
    proc.wait()
    proc.stdout.close()


def reading(child_pid: int) -> GpuReading:
    def gpu(index: int, pids: tuple[int, ...]) -> GpuSample:
        return GpuSample(
            uuid=f"GPU-{index}", index=index, name="NVIDIA H200", processes=tuple(GpuProcess(p, 1 << 30) for p in pids)
        )

    return GpuReading(t_mono=0.0, gpus=(gpu(0, (child_pid,)), gpu(1, (child_pid,)), gpu(2, (99999999,))))


def test_listening_port_maps_to_its_process(engine) -> None:
    port, pid, _ = engine
    assert listening_sockets()[port] == pid


def test_engine_found_on_gpus_where_its_child_holds_memory(engine) -> None:
    port, pid, child = engine
    endpoint = EndpointConfig(url=f"http://127.0.0.1:{port}/metrics", name="e")
    mapping = map_endpoints([endpoint], reading(child), listening_sockets())
    assert mapping["e"].gpus == ("GPU-0", "GPU-1") and mapping["e"].source == "process"
    assert mapping["e"].pid == pid


def test_config_gpus_win_and_accept_indices_or_uuids(engine) -> None:
    port, _, child = engine
    endpoints = [
        EndpointConfig(url=f"http://127.0.0.1:{port}", name="cfg", gpus=("2", "GPU-0")),
        EndpointConfig(url="http://10.1.2.3:8000", name="remote"),
    ]
    mapping = map_endpoints(endpoints, reading(child), listening_sockets())
    assert mapping["cfg"].gpus == ("GPU-2", "GPU-0") and mapping["cfg"].source == "config"
    assert mapping["remote"].gpus == () and mapping["remote"].pid is None  # not local: not mapped


def test_ports_of_gpu_processes_are_candidates(engine) -> None:
    port, _, child = engine
    urls = [e.url for e in candidate_endpoints(reading(child), listening_sockets())]
    assert f"http://127.0.0.1:{port}" in urls
    assert f"http://127.0.0.1:{port}" not in [e.url for e in candidate_endpoints(reading(1), listening_sockets())]


def test_sampler_discovers_the_engine_and_attributes_its_gpus(engine) -> None:
    port, pid, child = engine
    fake = FakeNvml.healthy(count=3)
    for gpu in fake.gpus[:2]:
        gpu.compute_processes = [(child, 1 << 30)]
    sampler = Sampler(Config(interval_s=0.5), NvmlReader(lib=fake))
    try:
        sampler.tick()  # reads the GPUs' processes
        sampler.discover_once()  # finds the port of a process tree holding GPU memory
        snap = sampler.tick()
    finally:
        sampler.stop()
    (found,) = [s for s in snap.endpoints if s.sample.url == f"http://127.0.0.1:{port}"]
    assert found.sample.kind == "vllm" and found.pid == pid
    assert found.gpus == (fake.gpus[0].uuid, fake.gpus[1].uuid) and found.mapping == "process"
    assert [g.engines for g in snap.gpus] == [(found.sample.name,), (found.sample.name,), ()]


def test_socket_table_walks_processes_again_only_when_sockets_change(engine, monkeypatch) -> None:
    import tokentop.discover as discover

    port, pid, _ = engine
    inodes = discover._listening_inodes()
    assert inodes is not None and port in inodes  # the cheap read sees the real socket
    walks = []
    real = discover.listening_sockets
    monkeypatch.setattr(discover, "listening_sockets", lambda: walks.append(1) or real())
    # Other programs on this shared machine open sockets too: hold the cheap view still.
    table_view = dict(inodes)
    monkeypatch.setattr(discover, "_listening_inodes", lambda: dict(table_view))
    table = discover.SocketTable()
    assert table.read()[port] == pid
    assert table.read()[port] == pid
    assert len(walks) == 1  # nothing changed: no walk over every process's files
    table_view[1] = "12345"  # a new listening socket
    table.read()
    assert len(walks) == 2
