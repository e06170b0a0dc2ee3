"""``tokentop export``: a Prometheus ``/metrics`` endpoint of tokentop's derived series.

The sampler ticks on its own thread (and writes the history as usual); a custom collector turns
the latest Snapshot into metric families when Prometheus scrapes. A scrape never touches NVML,
an inference server or SQLite: it only reads the snapshot reference.

Counters (``*_total``) are tokentop's session totals, the very values the history stores per
tick, so ``increase()`` over a range equals ``tokentop summary`` over the same range. Fleet
figures are ratios of sums: ``sum(increase(cost)) / sum(increase(tokens))``, never an average
of per-GPU ratios (README, "Prometheus exporter").
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tokentop import __version__
from tokentop.model import Snapshot
from tokentop.sampler import Sampler

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

DEFAULT_LISTEN = "127.0.0.1:9464"
GPU_LABELS = ("gpu", "uuid", "host")
ENDPOINT_LABELS = ("endpoint", "kind", "host")


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
        yield from self._gpus(snapshot)
        yield from self._endpoints(snapshot)

    def _general(self, snap: Snapshot) -> Iterator[Metric]:
        for name, value, text in (
            ("tokentop_snapshot_timestamp_seconds", snap.t_wall, "Unix time of the reading the other series come from"),
            ("tokentop_rate_window_seconds", snap.rate_window_s, "Window of the tokens-per-second gauges"),
            (
                "tokentop_cost_window_seconds",
                snap.cost_window_s,
                "Window of the $/Mtok, tokens-per-joule and busy-ratio gauges",
            ),
        ):
            family = GaugeMetricFamily(name, text, labels=("host",))
            family.add_metric([self._host], value)
            yield family

    def _gpus(self, snap: Snapshot) -> Iterator[Metric]:
        def counter(name: str, text: str, *, direction: bool = False) -> CounterMetricFamily:
            return CounterMetricFamily(name, text, labels=GPU_LABELS + (("direction",) if direction else ()))

        def gauge(name: str, text: str, *, direction: bool = False) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=GPU_LABELS + (("direction",) if direction else ()))

        info = InfoMetricFamily("tokentop_gpu", "A GPU as tokentop sees it", labels=GPU_LABELS)
        tokens = counter(
            "tokentop_gpu_tokens",
            "Tokens attributed to the GPU since tokentop started (an engine's tokens split equally over its GPUs)",
            direction=True,
        )
        energy = counter("tokentop_gpu_energy_joules", "Board energy since tokentop started")
        cost = counter(
            "tokentop_gpu_cost_usd",
            "Cost since tokentop started (hourly rate plus charged energy); absent for a GPU without a price",
        )
        busy = counter(
            "tokentop_gpu_busy_seconds", "Seconds in which tokens flowed or requests ran on the GPU's engines"
        )
        busy_cost = counter("tokentop_gpu_busy_cost_usd", "Cost of the busy seconds")
        watched = counter(
            "tokentop_gpu_watched_seconds", "Seconds the GPU has been watched (the denominator of utilisation)"
        )
        tok_s = gauge("tokentop_gpu_tokens_per_second", "Tokens per second over the rate window", direction=True)
        per_mtok = gauge(
            "tokentop_gpu_usd_per_million_tokens",
            "Cost per million output tokens over the cost window, idle included; absent while idle or unpriced",
        )
        tok_j = gauge("tokentop_gpu_tokens_per_joule", "Output tokens per joule of board energy over the cost window")
        busy_ratio = gauge("tokentop_gpu_busy_ratio", "Busy share of the cost window (0-1)")
        power = gauge("tokentop_gpu_power_watts", "Board power, latest reading")
        util = gauge("tokentop_gpu_utilization_ratio", "NVML GPU utilisation, latest (0-1)")
        usd_hour = gauge("tokentop_gpu_usd_per_hour", "Cost rate at the latest power reading")
        for fig in snap.gpus:
            s, totals = fig.sample, fig.totals
            labels = [str(s.index), s.uuid, self._host]
            info.add_metric(
                labels,
                {
                    "name": s.name,
                    "energy_method": fig.energy_method or "none",
                    "engines": ",".join(fig.engines),
                    "price_source": fig.price.source if fig.price else "none",
                },
            )
            tokens.add_metric(labels + ["in"], totals.tokens_in)
            tokens.add_metric(labels + ["out"], totals.tokens_out)
            energy.add_metric(labels, totals.energy_j)
            if totals.cost_usd is not None:
                cost.add_metric(labels, totals.cost_usd)
            if totals.busy_cost_usd is not None:
                busy_cost.add_metric(labels, totals.busy_cost_usd)
            busy.add_metric(labels, totals.busy_s)
            watched.add_metric(labels, totals.elapsed_s)
            for direction, value in (("in", fig.rate_window.tok_s_in), ("out", fig.rate_window.tok_s_out)):
                if value is not None:
                    tok_s.add_metric(labels + [direction], value)
            for family, value in (
                (per_mtok, fig.cost_window.usd_per_mtok),
                (tok_j, fig.cost_window.tok_per_j),
                (busy_ratio, fig.cost_window.busy_share),
                (power, s.power_w),
                (usd_hour, fig.usd_per_hour_now),
                (util, None if s.utilization_pct is None else s.utilization_pct / 100.0),
            ):
                if value is not None:
                    family.add_metric(labels, value)
        yield from (
            info,
            tokens,
            energy,
            cost,
            busy,
            busy_cost,
            watched,
            tok_s,
            per_mtok,
            tok_j,
            busy_ratio,
            power,
            util,
            usd_hour,
        )

    def _endpoints(self, snap: Snapshot) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tokentop_endpoint_up", "1 when the endpoint's last read succeeded", labels=ENDPOINT_LABELS
        )
        tokens = CounterMetricFamily(
            "tokentop_endpoint_tokens",
            "Tokens the endpoint delivered since tokentop started (restarts handled)",
            labels=ENDPOINT_LABELS + ("direction",),
        )
        tok_s = GaugeMetricFamily(
            "tokentop_endpoint_tokens_per_second",
            "Tokens per second over the rate window",
            labels=ENDPOINT_LABELS + ("direction",),
        )
        running = GaugeMetricFamily("tokentop_endpoint_requests_running", "Requests running", labels=ENDPOINT_LABELS)
        waiting = GaugeMetricFamily("tokentop_endpoint_requests_waiting", "Requests waiting", labels=ENDPOINT_LABELS)
        ttft = GaugeMetricFamily(
            "tokentop_endpoint_ttft_seconds",
            "Time to first token over the cost window, by quantile",
            labels=ENDPOINT_LABELS + ("quantile",),
        )
        itl = GaugeMetricFamily(
            "tokentop_endpoint_itl_seconds",
            "Inter-token latency over the cost window, by quantile",
            labels=ENDPOINT_LABELS + ("quantile",),
        )
        for fig in snap.endpoints:
            s = fig.sample
            labels = [s.name, s.kind or "unknown", self._host]
            up.add_metric(labels, 1.0 if s.status == "up" else 0.0)
            tokens.add_metric(labels + ["in"], fig.tokens_in_total)
            tokens.add_metric(labels + ["out"], fig.tokens_out_total)
            for direction, value in (("in", fig.tok_s_in), ("out", fig.tok_s_out)):
                if value is not None:
                    tok_s.add_metric(labels + [direction], value)
            for family, value, quantile in (
                (running, s.running, None),
                (waiting, s.waiting, None),
                (ttft, fig.ttft_p50_s, "0.5"),
                (ttft, fig.ttft_p95_s, "0.95"),
                (itl, fig.itl_p50_s, "0.5"),
            ):
                if value is not None:
                    family.add_metric(labels + ([quantile] if quantile else []), value)
        yield from (up, tokens, tok_s, running, waiting, ttft, itl)


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


def serve(sampler: Sampler, host: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` for ``sampler.latest`` on a daemon thread; returns the server (its
    ``server_address`` holds the port actually bound). Raises OSError when it cannot bind."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.latest, socket.gethostname()))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
