"""Hosts from a Prometheus without tokentop: dcgm-exporter's GPUs joined to the servers' tokens.

GPUs (``DCGM_FI_DEV_*``) are keyed by UUID: the rows of one physical GPU (a row per MIG instance,
or per pod sharing a time-sliced GPU, each repeating the whole GPU's power) are folded into one,
their power and energy taken once (``max``), never summed. Servers are keyed by target and pod.

The join, per server: its pod and namespace when the GPUs name pods (dcgm-exporter's ``pod`` /
``namespace``, or ``exported_*`` when the scrape did not honour labels): the server's GPUs are the
distinct UUIDs its pod holds (its tensor-parallel group). Otherwise by host, the ``instance``
without its port on both sides: the server is given every GPU of that host, which is right only
when the host runs one server or all its GPUs serve the same model. A server's tokens are split
equally over its GPUs.

Units: dcgm-exporter's energy counter is mJ before 4.9.0 and J from 4.9.0. No GPU draws 5 kW,
and none draws under 5 W, so a counter moving more than 5000 units a second counts mJ. Where the
counter disagrees with the mean power by more than a factor of two (a blank-value sentinel, a
reset mid-window), energy is the mean power times the window instead. GPU utilisation is % before
4.9.0 and 0-1 after; it is read as 0-1 where the energy counter is in J. Framebuffer memory is
MiB before 4.9.0 and bytes from it, told apart by size: no GPU has 10 TB
(``MIB_IF_TOTAL_BELOW`` MiB), and none has under 10 MB. Memory is made as the local view reads
it from NVML (its v1 memory info) where dcgm-exporter publishes ``FB_RESERVED`` (newer
releases): used is ``FB_USED`` plus ``FB_RESERVED``, total is that plus ``FB_FREE``; where it
does not, both are short by the driver's reserved memory (about 533 MiB of an H100's 81,559).
Known only with both ``FB_USED`` and ``FB_FREE``. A MIG GPU's memory is the sum of its
instances' (``promql.agentless_latest``): its total is that of the instances made, not the card's.

Cost: each GPU's price by its ``modelName`` (``tokentop.cost.price_for`` with the user's config)
for the whole window (a GPU that first appeared within the window is charged for all of it), plus
its energy where the config charges energy. A GPU without a price has no cost, so its host's cost
is unknown and the host is left out of both sides of the fleet's $/Mtok.
Busy share: the share of scrape intervals in the window in which the server's output counter
moved, each window from its own ``changes()``. Latency: a server's TTFT and ITL percentiles over
the cost window, Prometheus's ``histogram_quantile`` of its buckets (``promql.SERVER_LATENCY``),
from the first of the histogram's names it publishes; its requests running and waiting and its
KV-cache fraction (``promql.SERVER_GAUGES``) likewise. A figure no server can mean (below 0, a
KV fraction over 1) is not known. SGLang's series that repeat each other's ranks are made one
before any sum (``promql.REPEATING``), as the local reader makes them one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from tokentop.config import CostConfig
from tokentop.cost import energy_is_charged, price_for, tick_cost_usd
from tokentop.fleet.prom_exporters import HostRead, Parts, host_figures
from tokentop.model import MAX_COUNT, EndpointFigures, EndpointSample, GpuFigures, GpuSample, Price, Totals, Window
from tokentop.text import safe_text

MJ_RATE_ABOVE = 5000.0  # energy units per second above which the counter counts mJ
MAX_PLAUSIBLE_W = 1e5  # a mean power above this holds a blank-value sentinel
ENERGY_AGREEMENT = 2.0  # counter and mean power may differ by this factor before power wins
MIB_IF_TOTAL_BELOW = 1e7  # a GPU's memory in all (used + free) below this counts MiB, above it bytes
MIB = 1 << 20


@dataclass
class _Gpu:
    uuid: str
    index: int
    model: str
    host_key: str
    host_name: str
    pods: set[tuple[str, str]] = field(default_factory=set)
    values: dict[str, float] = field(default_factory=dict)  # part -> value (max over the folded rows)


@dataclass
class _Server:
    key: tuple[str, ...]
    kind: str
    instance: str
    pod: tuple[str, str] | None
    model: str | None
    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    gpus: tuple[str, ...] = ()
    join: str | None = None
    # latency percentiles (s), requests running and waiting, KV fraction: figure -> (rank of the
    # series it is from, lower wins; its value, None: not known, as a histogram without observations)
    figures: dict[str, tuple[int, float | None]] = field(default_factory=dict)


def instance_host(instance: str) -> str:
    """``host:port`` or ``[v6]:port`` without the port."""
    if instance.startswith("["):
        return instance[1 : instance.find("]")] if "]" in instance else instance
    return instance.rsplit(":", 1)[0] if instance.count(":") == 1 else instance


def _pod(labels: dict[str, str], *, exported_first: bool) -> tuple[str, str] | None:
    order = ("exported_", "") if exported_first else ("", "exported_")
    for prefix in order:
        pod = labels.get(prefix + "pod")
        if pod:
            return labels.get(prefix + "namespace", ""), pod
    return None


def _fold_gpus(parts: dict[str, Parts]) -> dict[str, _Gpu]:
    """Every GPU row of every answer folded by UUID; values ``<answer>.<part>``."""
    gpus: dict[str, _Gpu] = {}
    for answer, by_part in parts.items():
        for part, samples in by_part.items():
            if part.startswith(("srv|", "changes|", "count|", "now|", "fig|")):
                continue
            name = "energy" if part.startswith("energy|") else part
            for s in samples:
                gpu = _gpu_row(gpus, s.labels)
                if gpu is not None and s.value is not None:
                    key = f"{answer}.{name}"
                    gpu.values[key] = max(gpu.values.get(key, s.value), s.value)
    return gpus


def _gpu_row(gpus: dict[str, _Gpu], labels: dict[str, str]) -> _Gpu | None:
    uuid = labels.get("UUID")
    if not uuid:
        return None
    gpu = gpus.get(uuid)
    if gpu is None:
        host_key = instance_host(labels.get("instance", ""))
        try:
            index = int(labels.get("gpu", ""))
        except ValueError:
            index = -1
        named = labels.get("Hostname") or labels.get("hostname") or host_key
        gpu = gpus[uuid] = _Gpu(
            safe_text(uuid), index, safe_text(labels.get("modelName", "unknown GPU")), host_key, safe_text(named)
        )
    pod = _pod(labels, exported_first=True)
    if pod is not None:
        gpu.pods.add(pod)
    return gpu


def _servers(parts: dict[str, Parts]) -> dict[tuple[str, ...], _Server]:
    servers: dict[tuple[str, ...], _Server] = {}
    for answer, by_part in parts.items():
        for part, samples in by_part.items():
            prefix, _, rest = part.partition("srv|")
            if not rest:
                continue
            kind, direction, _name = rest.split("|", 2)
            for s in samples:
                if s.value is None:
                    continue
                key = _server_key(s.labels, kind)
                server = servers.get(key)
                if server is None:
                    pod, model = _pod(s.labels, exported_first=False), s.labels.get("model_name") or None
                    server = servers[key] = _Server(key, kind, key[0], pod, model)
                slot = f"{answer}.{prefix.rstrip('|') or 'tokens'}.{direction}"
                if prefix.startswith("now"):
                    server.values[slot] = max(server.values[slot], s.value)
                else:
                    server.values[slot] += s.value
    _add_figures(servers, parts)
    return servers


def _server_key(labels: dict[str, str], kind: str) -> tuple[str, ...]:
    """A server: its target, its pod where it has one, its model and its kind."""
    pod = _pod(labels, exported_first=False)
    return (labels.get("instance", ""), *(pod or ("", "")), labels.get("model_name", ""), kind)


def _add_figures(servers: dict[tuple[str, ...], _Server], parts: dict[str, Parts]) -> None:
    """Each server's latency percentiles and gauges (``fig|`` parts), each from the first of its
    names the server has, as the local view reads them: a histogram without an observation in
    the window still wins, and gives no figure."""
    for by_part in parts.values():
        for part, samples in by_part.items():
            if not part.startswith("fig|"):
                continue
            _, kind, figure, rank_text, _name = part.split("|", 4)
            rank = int(rank_text)
            for s in samples:
                server = servers.get(_server_key(s.labels, kind))  # these alone make no server
                held = None if server is None else server.figures.get(figure)
                if server is not None and (held is None or rank < held[0]):
                    server.figures[figure] = (rank, s.value)  # present, with or without a value


def join(gpus: dict[str, _Gpu], servers: dict[tuple[str, ...], _Server]) -> list[str]:
    """Each server's GPUs and how they were found; messages for the servers left unjoined."""
    by_pod: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_host: dict[str, list[str]] = defaultdict(list)
    for gpu in gpus.values():
        by_host[gpu.host_key].append(gpu.uuid)
        for pod in gpu.pods:
            by_pod[pod].append(gpu.uuid)
    unjoined = []
    for server in servers.values():
        if server.pod is not None and server.pod in by_pod:
            server.gpus, server.join = tuple(sorted(by_pod[server.pod])), "pod"
        elif instance_host(server.instance) in by_host:
            server.gpus, server.join = tuple(sorted(by_host[instance_host(server.instance)])), "host"
        else:
            unjoined.append(server.pod[1] if server.pod else server.instance)
    if unjoined:
        return [f"{len(unjoined)} server(s) on no GPU dcgm-exporter reports, left out: {', '.join(sorted(unjoined))}"]
    return []


@dataclass(frozen=True)
class Agentless:
    """The answers of one refresh: ``cost``, ``rate`` and ``latest`` (``promql.agentless_*``)."""

    cost: Parts
    rate: Parts
    latest: Parts
    rate_window_s: float
    cost_window_s: float
    prices: CostConfig
    now: float
    fresh_s: float  # a server scraped within this is up

    def hosts(self) -> tuple[list[HostRead], list[str]]:
        answers = {"cost": self.cost, "rate": self.rate, "latest": self.latest}
        gpus, servers = _fold_gpus(answers), _servers(answers)
        messages = join(gpus, servers)
        per_gpu: dict[str, list[_Server]] = defaultdict(list)
        for server in servers.values():
            for uuid in server.gpus:
                per_gpu[uuid].append(server)
        by_host: dict[str, list[_Gpu]] = defaultdict(list)
        for gpu in gpus.values():
            by_host[gpu.host_key].append(gpu)
        names = _host_names(by_host)
        reads = []
        for host_key, members in sorted(by_host.items()):
            members.sort(key=lambda g: (g.index, g.uuid))
            joules_per_unit = self._energy_unit(members)
            figures = tuple(self._gpu(g, per_gpu[g.uuid], joules_per_unit) for g in members)
            host_servers = {s.key: s for g in members for s in per_gpu[g.uuid]}
            joins = sorted({s.join for s in host_servers.values() if s.join})
            stamps = [g.values["latest.gpu_ts"] for g in members if "latest.gpu_ts" in g.values]
            reads.append(
                HostRead(
                    name=names[host_key],
                    gpus=figures,
                    endpoints=tuple(self._endpoint(s) for s in sorted(host_servers.values(), key=lambda s: s.key)),
                    figures=host_figures(figures, self.rate_window_s, self.cost_window_s),
                    models=tuple(sorted({g.model for g in members})),
                    seen_t=max(stamps) if stamps else None,
                    scraped=None,
                    join="+".join(joins) or None,
                    key=host_key,
                )
            )
        return reads, messages

    def _energy_unit(self, members: list[_Gpu]) -> float | None:
        """Joules per unit of the host's energy counter (1e-3 for mJ), None without a counter."""
        rates = [g.values["rate.energy"] / self.rate_window_s for g in members if "rate.energy" in g.values]
        if not rates:
            return None
        return 1e-3 if max(rates) > MJ_RATE_ABOVE else 1.0

    def _energy(self, gpu: _Gpu, answer: str, span_s: float, unit: float | None) -> tuple[float, str | None]:
        """Joules over the window and how they were measured."""
        mean_w = gpu.values.get(f"{answer}.power_avg")
        from_power = None if mean_w is None or not 0 <= mean_w < MAX_PLAUSIBLE_W else mean_w * span_s
        counted = gpu.values.get(f"{answer}.energy")
        if counted is not None and unit is not None:
            joules = counted * unit
            if from_power is None or from_power / ENERGY_AGREEMENT <= joules <= from_power * ENERGY_AGREEMENT:
                return joules, "counter"
        if from_power is not None:
            return from_power, "power_integral"
        return 0.0, None

    def _window(self, gpu: _Gpu, servers: list[_Server], answer: str, span_s: float, price: Price | None,
                unit: float | None) -> tuple[Window, str | None]:  # fmt: skip
        tokens_in = sum(s.values.get(f"{answer}.tokens.in", 0.0) / len(s.gpus) for s in servers)
        tokens_out = sum(s.values.get(f"{answer}.tokens.out", 0.0) / len(s.gpus) for s in servers)
        joules, method = self._energy(gpu, answer, span_s, unit)
        cost = tick_cost_usd(price, span_s, joules, self.prices)
        share = max((_busy_share(s, answer) for s in servers), default=0.0)
        busy_cost = None if cost is None else cost * share
        return Window(span_s, tokens_in, tokens_out, joules, cost, share * span_s, busy_cost), method

    def _gpu(self, gpu: _Gpu, servers: list[_Server], unit: float | None) -> GpuFigures:
        price = price_for(gpu.model, gpu.uuid, gpu.index, self.prices)
        rate, _ = self._window(gpu, servers, "rate", self.rate_window_s, price, unit)
        cost, method = self._window(gpu, servers, "cost", self.cost_window_s, price, unit)
        power = gpu.values.get("latest.power")
        util = gpu.values.get("latest.util")
        if util is not None and unit == 1.0:  # dcgm-exporter 4.9.0 and later: a 0-1 ratio
            util *= 100.0
        per_hour = None  # unknown too when energy is charged and the power is not known
        if price is not None and (power is not None or not energy_is_charged(self.prices)):
            per_hour = tick_cost_usd(price, 3600.0, (power or 0.0) * 3600.0, self.prices)
        totals = Totals(
            cost.tokens_in, cost.tokens_out, cost.energy_j, cost.cost_usd, cost.busy_s, cost.busy_cost_usd,
            elapsed_s=self.cost_window_s,
        )  # fmt: skip
        used, total = _memory(gpu.values)
        sample = GpuSample(
            gpu.uuid,
            gpu.index,
            gpu.model,
            utilization_pct=util,
            memory_used_bytes=used,
            memory_total_bytes=total,
            power_w=power,
            temperature_c=gpu.values.get("latest.temperature"),
        )
        return GpuFigures(
            sample=sample,
            engines=tuple(_server_name(s) for s in servers),
            price=price,
            energy_method=method,
            usd_per_hour_now=per_hour,
            totals=totals,
            rate_window=rate,
            cost_window=cost,
        )

    def _endpoint(self, server: _Server) -> EndpointFigures:
        stamps = [v for k, v in server.values.items() if k.startswith("latest.now")]
        fresh = bool(stamps) and self.now - max(stamps) <= self.fresh_s
        tokens = {d: server.values.get(f"cost.tokens.{d}", 0.0) for d in ("in", "out")}
        per = {d: server.values.get(f"rate.tokens.{d}") for d in ("in", "out")}
        return EndpointFigures(
            sample=EndpointSample(
                name=_server_name(server),
                url=safe_text(server.instance),
                t_mono=0.0,
                status="up" if fresh else "stale",
                kind=server.kind,
                model=None if server.model is None else safe_text(server.model),
                running=_figure(server, "running"),
                waiting=_figure(server, "waiting"),
                kv_cache_fraction=_figure(server, "kv", 1.0),
            ),
            gpus=server.gpus,
            mapping=server.join,
            pid=None,
            tokens_in_total=tokens["in"],
            tokens_out_total=tokens["out"],
            tok_s_in=None if per["in"] is None else per["in"] / self.rate_window_s,
            tok_s_out=None if per["out"] is None else per["out"] / self.rate_window_s,
            ttft_p50_s=_figure(server, "ttft_p50"),
            ttft_p95_s=_figure(server, "ttft_p95"),
            itl_p50_s=_figure(server, "itl_p50"),
        )


def _figure(server: _Server, figure: str, upper: float = MAX_COUNT) -> float | None:
    """The figure, None when not known or not one a server can mean (below 0, above ``upper``)."""
    held = server.figures.get(figure)
    value = None if held is None else held[1]
    return value if value is not None and 0 <= value <= upper else None


def _memory(values: dict[str, float]) -> tuple[int | None, int | None]:
    """(used, total) bytes as NVML's v1 memory info gives them; (None, None) without used and free."""
    used, free = values.get("latest.fb_used"), values.get("latest.fb_free")
    if used is None or free is None or used < 0 or free < 0:
        return None, None
    used += values.get("latest.fb_reserved", 0.0)
    unit = MIB if used + free < MIB_IF_TOTAL_BELOW else 1
    return round(used * unit), round((used + free) * unit)


def _busy_share(server: _Server, answer: str) -> float:
    """Share of the scrape intervals in ``answer``'s window in which the output counter moved."""
    intervals = server.values.get(f"{answer}.count.out", 0.0) - 1
    return min(1.0, server.values.get(f"{answer}.changes.out", 0.0) / intervals) if intervals > 0 else 0.0


def _server_name(server: _Server) -> str:
    return safe_text(f"{server.pod[0]}/{server.pod[1]}" if server.pod else f"{server.kind}@{server.instance}")


def _host_names(by_host: dict[str, list[_Gpu]]) -> dict[str, str]:
    """A host's name: dcgm-exporter's hostname label, or the instance's host when two share one."""
    named = {key: members[0].host_name for key, members in by_host.items()}
    counts: dict[str, int] = defaultdict(int)
    for name in named.values():
        counts[name] += 1
    return {key: name if counts[name] == 1 else f"{name} ({key})" for key, name in named.items()}
