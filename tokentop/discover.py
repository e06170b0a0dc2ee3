"""Which local servers exist and which GPUs they run on (psutil + NVML process lists).

Slow work (socket tables, process trees) runs every few seconds, never every tick.
"""

from __future__ import annotations

import logging
import socket
import struct
from urllib.parse import urlsplit

import psutil

from tokentop.config import EndpointConfig
from tokentop.model import EngineMapping, GpuReading

log = logging.getLogger("tokentop.discover")

# vLLM/TRT-LLM/NIM, llama.cpp/Ray, TGI, SGLang, LMDeploy, Triton metrics, Ollama.
USUAL_PORTS = (8000, 8080, 3000, 30000, 23333, 8002, 11434)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::")


def listening_sockets() -> dict[int, int]:
    """Port -> PID of every listening TCP socket we may see (others' PIDs need root)."""
    ports: dict[int, int] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError) as exc:
        log.info("cannot list sockets: %s", exc)
        return ports
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.pid:
            ports.setdefault(conn.laddr.port, conn.pid)
    return ports


def _listening_inodes() -> dict[int, str] | None:
    """Port -> socket inode of the listening TCP sockets: a cheap read that tells whether the
    socket table changed. None where the kernel tells neither way."""
    try:
        return _listening_by_netlink()
    except OSError:
        return _listening_by_proc()


# Linux sock_diag (netlink): the kernel lists its listening TCP sockets only, in microseconds.
# ``/proc/net/tcp`` walks the whole TCP hash table instead: 10 ms a read on a host with a few
# hundred sockets, every few seconds, the largest part of ``record``'s own CPU after the tick.
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY = 4, 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI48x")  # inet_diag_req_v2: family, protocol, ext, pad, states, id
_PORT, _INODE = struct.Struct(">H"), struct.Struct("=I")  # in inet_diag_msg, at 4 and 68


def _listening_by_netlink() -> dict[int, str]:
    ports: dict[int, str] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(1.0)
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
            sock.send(
                _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, sequence, 0)
                + request
            )
            while _read_diag_messages(sock.recv(65536), ports):
                pass
    return ports


def _read_diag_messages(data: bytes, ports: dict[int, str]) -> bool:
    """Add one reply's sockets to ``ports``; False once the dump is over."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if kind == _NLMSG_ERROR:
            raise OSError("sock_diag refused the request")
        if kind == _NLMSG_DONE or length < _HEADER.size:
            return False
        body = offset + _HEADER.size
        if length >= _HEADER.size + _INODE.size + 68:
            port = _PORT.unpack_from(data, body + 4)[0]
            ports.setdefault(port, str(_INODE.unpack_from(data, body + 68)[0]))
        offset += (length + 3) & ~3
    return True


def _listening_by_proc() -> dict[int, str] | None:
    ports: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # state 0A: LISTEN
                ports.setdefault(int(fields[1].rsplit(":", 1)[1], 16), fields[9])
    return ports


class SocketTable:
    """Listening port -> PID. Finding the PIDs walks every process's open files (tens of ms);
    it is done again only when the set of listening sockets changed (``_listening_inodes``:
    microseconds by netlink; without it, several ms on a busy host, so callers space it out)."""

    def __init__(self) -> None:
        self._inodes: dict[int, str] | None = None
        self._pids: dict[int, int] = {}

    @property
    def last(self) -> dict[int, int]:
        """What the last ``read`` found, without reading."""
        return self._pids

    def read(self) -> dict[int, int]:
        inodes = _listening_inodes()
        if inodes is None or inodes != self._inodes:
            self._pids = listening_sockets()
            self._inodes = inodes
        return self._pids


def process_tree(pid: int) -> set[int]:
    """The PID and all its descendants (vLLM workers, SGLang schedulers, TGI shards)."""
    try:
        proc = psutil.Process(pid)
        return {pid} | {child.pid for child in proc.children(recursive=True)}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {pid}


def endpoint_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def candidate_endpoints(gpus: GpuReading, sockets: dict[int, int]) -> list[EndpointConfig]:
    """Local ports worth probing: those of processes holding GPU memory, and the usual ones."""
    gpu_pids: set[int] = set()
    for gpu in gpus.gpus:
        gpu_pids.update(p.pid for p in gpu.processes or ())
    ports = set(USUAL_PORTS) & set(sockets)
    for port, pid in sockets.items():
        if process_tree(pid) & gpu_pids:
            ports.add(port)
    return [EndpointConfig(url=f"http://127.0.0.1:{port}") for port in sorted(ports)]


def map_endpoints(
    endpoints: tuple[EndpointConfig, ...] | list[EndpointConfig],
    gpus: GpuReading,
    sockets: dict[int, int],
) -> dict[str, EngineMapping]:
    """Endpoint name -> the GPUs it runs on: from config when given, else by process.

    By process: the PID listening on the endpoint's port, its descendants, intersected with
    each GPU's compute processes. Only local endpoints can be mapped this way.
    """
    by_index = {str(g.index): g.uuid for g in gpus.gpus}
    known = {g.uuid for g in gpus.gpus}
    result: dict[str, EngineMapping] = {}
    for endpoint in endpoints:
        host, port = endpoint_port(endpoint.url)
        pid = sockets.get(port) if host in LOCAL_HOSTS else None
        if endpoint.gpus:
            uuids = tuple(by_index.get(g, g) for g in endpoint.gpus)
            result[endpoint.name] = EngineMapping(tuple(u for u in uuids if u in known), "config", pid)
            continue
        if pid is None:
            result[endpoint.name] = EngineMapping()
            continue
        tree = process_tree(pid)
        uuids = tuple(g.uuid for g in gpus.gpus if any(p.pid in tree for p in g.processes or ()))
        result[endpoint.name] = EngineMapping(uuids, "process" if uuids else None, pid)
    return result
