"""``tokentop export``: a Prometheus ``/metrics`` endpoint of tokentop's derived series.

The sampler ticks on its own thread (and writes the history as usual); a custom collector turns
the latest Snapshot into metric families when Prometheus scrapes. A scrape never touches NVML,
an inference server or SQLite: it only reads the snapshot reference. The text is made once per
snapshot (and format) and served as is until the next tick, by a threaded HTTP server with a
deep listen backlog, so that hundreds of scrapers at once are each answered within a second.

Counters (``*_total``) are tokentop's session totals, the very values the history stores per
tick, so ``increase()`` over a range equals ``tokentop summary`` over the same range. Fleet
figures are ratios of sums: ``sum(increase(cost)) / sum(increase(tokens))``, never an average
of per-GPU ratios (README, "Prometheus exporter").
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tokentop import __version__
from tokentop.model import EndpointFigures, GpuFigures, Snapshot
from tokentop.sampler import Sampler

DEFAULT_LISTEN = "127.0.0.1:9464"
LISTEN_BACKLOG = 1024  # connections the kernel holds while every handler thread is busy
METRICS_PATHS = ("/metrics", "/")
GPU_LABELS = ("gpu", "uuid", "host")
ENDPOINT_LABELS = ("endpoint", "kind", "host")
T = TypeVar("T")


Value = Callable[[T], "float | None"]


@dataclass(frozen=True)
class Series(Generic[T]):
    """One metric family: its name (without ``_total``), help text, type, and how each of its
    samples is read off a GPU's or an endpoint's figures. ``label`` names the one extra label
    (``direction``, ``quantile``) whose values key ``values``; None for a single sample."""

    name: str
    help: str
    counter: bool
    values: tuple[tuple[str | None, Value[T]], ...]
    label: str | None = None


def _in_out(name: str, text: str, counter: bool, tok_in: Value[T], tok_out: Value[T]) -> Series[T]:
    return Series(name, text, counter, (("in", tok_in), ("out", tok_out)), "direction")


def _one(name: str, text: str, counter: bool, value: Value[T]) -> Series[T]:
    return Series(name, text, counter, ((None, value),))


GPU_SERIES: tuple[Series[GpuFigures], ...] = (
    _in_out(
        "tokentop_gpu_tokens",
        "Tokens attributed to the GPU since tokentop started (an engine's tokens split equally over its GPUs)",
        True,
        lambda f: f.totals.tokens_in,
        lambda f: f.totals.tokens_out,
    ),
    _one("tokentop_gpu_energy_joules", "Board energy since tokentop started", True, lambda f: f.totals.energy_j),
    _one(
        "tokentop_gpu_cost_usd",
        "Cost since tokentop started (hourly rate plus charged energy); absent for a GPU without a price",
        True,
        lambda f: f.totals.cost_usd,
    ),
    _one(
        "tokentop_gpu_busy_seconds",
        "Seconds in which tokens flowed or requests ran on the GPU's engines",
        True,
        lambda f: f.totals.busy_s,
    ),
    _one("tokentop_gpu_busy_cost_usd", "Cost of the busy seconds", True, lambda f: f.totals.busy_cost_usd),
    _one(
        "tokentop_gpu_watched_seconds",
        "Seconds the GPU has been watched (the denominator of the busy share)",
        True,
        lambda f: f.totals.elapsed_s,
    ),
    _in_out(
        "tokentop_gpu_tokens_per_second",
        "Tokens per second over the rate window",
        False,
        lambda f: f.rate_window.tok_s_in,
        lambda f: f.rate_window.tok_s_out,
    ),
    _one(
        "tokentop_gpu_usd_per_million_tokens",
        "Cost per million output tokens over the cost window, idle included; absent while idle or unpriced",
        False,
        lambda f: f.cost_window.usd_per_mtok,
    ),
    _one(
        "tokentop_gpu_tokens_per_joule",
        "Output tokens per joule of board energy over the cost window",
        False,
        lambda f: f.cost_window.tok_per_j,
    ),
    _one("tokentop_gpu_busy_ratio", "Busy share of the cost window (0-1)", False, lambda f: f.cost_window.busy_share),
    _one("tokentop_gpu_power_watts", "Board power, latest reading", False, lambda f: f.sample.power_w),
    _one(
        "tokentop_gpu_utilization_ratio",
        "NVML GPU utilisation, latest (0-1)",
        False,
        lambda f: None if f.sample.utilization_pct is None else f.sample.utilization_pct / 100.0,
    ),
    _one("tokentop_gpu_usd_per_hour", "Cost rate at the latest power reading", False, lambda f: f.usd_per_hour_now),
    _one("tokentop_gpu_memory_used_bytes", "GPU memory in use, latest", False, lambda f: f.sample.memory_used_bytes),
    _one("tokentop_gpu_memory_total_bytes", "GPU memory in all", False, lambda f: f.sample.memory_total_bytes),
    _one("tokentop_gpu_temperature_celsius", "GPU temperature, latest", False, lambda f: f.sample.temperature_c),
)

ENDPOINT_SERIES: tuple[Series[EndpointFigures], ...] = (
    _one(
        "tokentop_endpoint_up",
        "1 when the endpoint's last read succeeded",
        False,
        lambda f: 1.0 if f.sample.status == "up" else 0.0,
    ),
    _in_out(
        "tokentop_endpoint_tokens",
        "Tokens the endpoint delivered since tokentop started (restarts handled)",
        True,
        lambda f: f.tokens_in_total,
        lambda f: f.tokens_out_total,
    ),
    _in_out(
        "tokentop_endpoint_tokens_per_second",
        "Tokens per second over the rate window",
        False,
        lambda f: f.tok_s_in,
        lambda f: f.tok_s_out,
    ),
    _one("tokentop_endpoint_requests_running", "Requests running", False, lambda f: f.sample.running),
    _one("tokentop_endpoint_requests_waiting", "Requests waiting", False, lambda f: f.sample.waiting),
    Series(
        "tokentop_endpoint_ttft_seconds",
        "Time to first token over the cost window, by quantile",
        False,
        (("0.5", lambda f: f.ttft_p50_s), ("0.95", lambda f: f.ttft_p95_s)),
        "quantile",
    ),
    Series(
        "tokentop_endpoint_itl_seconds",
        "Inter-token latency over the cost window, by quantile",
        False,
        (("0.5", lambda f: f.itl_p50_s),),
        "quantile",
    ),
)


def families(
    table: tuple[Series[T], ...], items: Sequence[T], label_names: tuple[str, ...], labels: Callable[[T], list[str]]
) -> Iterator[Metric]:
    """One family per series of ``table``, a sample per item (and per extra label value); an
    unknown value (None) is left out, never written as zero."""
    for series in table:
        extra = (series.label,) if series.label else ()
        kind = CounterMetricFamily if series.counter else GaugeMetricFamily
        family = kind(series.name, series.help, labels=label_names + extra)
        for item in items:
            base = labels(item)
            for label_value, read in series.values:
                value = read(item)
                if value is not None:
                    family.add_metric(base + ([label_value] if label_value else []), value)
        yield family


class SnapshotCollector(Collector):
    """Metric families from the latest snapshot; nothing at all before the first tick."""

    def __init__(self, latest: Callable[[], Snapshot | None], host: str) -> None:
        self._latest = latest
        self._host = host

    def collect(self) -> Iterator[Metric]:
        snapshot = self._latest()
        info = InfoMetricFamily("tokentop", "tokentop itself", labels=("host",))
        info.add_metric([self._host], {"version": __version__})
        yield info
        if snapshot is None:
            return
        yield from self._general(snapshot)
        yield self._gpu_info(snapshot)
        yield self._endpoint_info(snapshot)
        yield from families(GPU_SERIES, snapshot.gpus, GPU_LABELS, self._gpu_labels)
        yield from families(ENDPOINT_SERIES, snapshot.endpoints, ENDPOINT_LABELS, self._endpoint_labels)

    def _gpu_labels(self, fig: GpuFigures) -> list[str]:
        return [str(fig.sample.index), fig.sample.uuid, self._host]

    def _endpoint_labels(self, fig: EndpointFigures) -> list[str]:
        return [fig.sample.name, fig.sample.kind or "unknown", self._host]

    def _general(self, snap: Snapshot) -> Iterator[Metric]:
        for name, value, text in (
            ("tokentop_snapshot_timestamp_seconds", snap.t_wall, "Unix time of the reading the other series come from"),
            (
                "tokentop_rate_window_seconds",
                snap.host.rate_window.span_s,
                "Span the tokens-per-second gauges cover (grows to the rate window while it fills)",
            ),
            (
                "tokentop_cost_window_seconds",
                snap.host.cost_window.span_s,
                "Span the $/Mtok, tokens-per-joule and busy-ratio gauges cover (grows to the cost window)",
            ),
        ):
            family = GaugeMetricFamily(name, text, labels=("host",))
            family.add_metric([self._host], value)
            yield family

    def _endpoint_info(self, snap: Snapshot) -> Metric:
        info = InfoMetricFamily(
            "tokentop_endpoint", "An inference endpoint as tokentop sees it", labels=ENDPOINT_LABELS
        )
        for fig in snap.endpoints:
            info.add_metric(self._endpoint_labels(fig), {"model": fig.sample.model or ""})
        return info

    def _gpu_info(self, snap: Snapshot) -> Metric:
        info = InfoMetricFamily("tokentop_gpu", "A GPU as tokentop sees it", labels=GPU_LABELS)
        for fig in snap.gpus:
            info.add_metric(
                self._gpu_labels(fig),
                {
                    "name": fig.sample.name,
                    "energy_method": fig.energy_method or "none",
                    "engines": ",".join(fig.engines),
                    "price_source": fig.price.source if fig.price else "none",
                },
            )
        return info


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) or a bare ``PORT`` on loopback."""
    text = text.strip()
    if text.isdigit():
        host, port = "127.0.0.1", text
    else:
        host, sep, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:9464 (this "
                "machine only) or 0.0.0.0:9464 (every interface)"
            )
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: the port must be between 0 and 65535")
    return host, int(port)


class Exposition:
    """The exposition text of the latest snapshot, made once per snapshot and format: between
    two ticks every scrape gets the same bytes without collecting again."""

    def __init__(self, latest: Callable[[], Snapshot | None], host: str) -> None:
        self._latest = latest
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(SnapshotCollector(self._current, host))
        self._rendering: Snapshot | None = None
        self._made: dict[str, tuple[Snapshot | None, bytes]] = {}  # content type -> (of, text)
        self._lock = threading.Lock()

    def _current(self) -> Snapshot | None:
        return self._rendering

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The text for a scrape with this ``Accept`` header, and its content type."""
        encode, content_type = choose_encoder(accept or "")
        snapshot = self._latest()
        with self._lock:  # one thread makes the text; the others wait for it, then copy it
            made = self._made.get(content_type)
            if made is None or made[0] is not snapshot:
                self._rendering = snapshot
                made = self._made[content_type] = (snapshot, encode(self._registry))
        return made[1], content_type


class MetricsHandler(BaseHTTPRequestHandler):
    """GET and HEAD of ``/metrics``; nothing is logged per scrape."""

    server: MetricsServer
    timeout = 10  # a client that stalls holds its thread this long at most

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, with_body: bool) -> None:
        if urlsplit(self.path).path not in METRICS_PATHS:
            self.send_error(404, "tokentop serves /metrics only")
            return
        body, content_type = self.server.exposition.render(self.headers.get("Accept"))
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged: one a second per scraper would drown the real messages."""


class MetricsServer(ThreadingHTTPServer):
    """One daemon thread per scrape and a deep listen backlog (prometheus_client's server
    listens with 5: a burst of scrapers saw connections refused or left unanswered)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, host: str, port: int, exposition: Exposition) -> None:
        family, *_, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.address_family = family
        self.exposition = exposition
        super().__init__((str(address[0]), port), MetricsHandler)

    def server_bind(self) -> None:
        """HTTPServer's, less its reverse DNS lookup of the address (seconds where DNS is down)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def beyond_loopback(self) -> bool:
        """True when another machine may reach the bound address (``0.0.0.0``, ``::``, a LAN IP)."""
        return not ipaddress.ip_address(str(self.server_address[0]).split("%")[0]).is_loopback


def serve(sampler: Sampler, host: str, port: int, host_name: str | None = None) -> MetricsServer:
    """Serve ``/metrics`` for ``sampler.latest`` on a daemon thread; returns the server (its
    ``server_address`` holds the port actually bound). ``host_name`` is every series' ``host``
    label (default: this machine's name). Raises OSError when it cannot bind."""
    exposition = Exposition(lambda: sampler.latest, host_name or socket.gethostname())
    server = MetricsServer(host, port, exposition)
    threading.Thread(target=server.serve_forever, name="tokentop-exporter", daemon=True).start()
    return server
