"""The fleet read from a Prometheus (``--prometheus URL``): a ``FleetSource``.

Each refresh asks at most ``promql.QUERIES_PER_REFRESH`` queries, whatever the number of hosts:
now and then which kind of series the Prometheus holds (tokentop's exporters, exact; or
dcgm-exporter with the servers' counters, agentless), then the cost window's increases, the rate
window's, and the latest values. Every host becomes a ``FleetHost`` holding a ``Snapshot`` the
local view's widgets can draw.

``detail="all"`` (the default: ``snapshot --json``) reads every GPU and endpoint of every host.
``detail="focused"`` (the live fleet view) reads tokentop exporters' hosts as per-host
aggregates, and per-GPU and per-endpoint rows only for the host ``focus`` names (the one the user
has opened): the other hosts' snapshots carry their host-level figures (``Snapshot.host``: windows,
totals, power, $/h, GPU count, unpriced GPUs), ``FleetHost.models`` and engines up/total, but
empty ``gpus`` and ``endpoints`` (``gpu_available`` False, ``gpu_reason`` saying why). That keeps
a refresh of 100 hosts x 8 GPUs to about 2,000 series instead of 21,000. Agentless fleets are
read per GPU in both modes (the join by pod needs every GPU's labels).

A host whose latest sample is older than ``stale_after_s`` is ``stale``; one seen before and now
without any sample in the cost window is ``down``. When Prometheus fails, the last good reading
comes back marked stale, with the failure as its status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from tokentop.config import Config
from tokentop.cost import energy_cost_usd, energy_is_charged, price_for
from tokentop.fleet import promql
from tokentop.fleet.agentless import Agentless
from tokentop.fleet.model import FleetHost, FleetReading, FleetSeries, HostState, fleet_figures
from tokentop.fleet.prom_exporters import HostRead, read_hosts
from tokentop.fleet.prom_hosts import read_focused
from tokentop.fleet.prometheus_api import Answer, PromClient, PromError
from tokentop.model import Snapshot
from tokentop.text import safe_text
from tokentop.units import fmt_duration

log = logging.getLogger("tokentop")

REDETECT_EVERY = 12  # refreshes between two looks at which kind of series the Prometheus holds
DETAILS = ("all", "focused")
NOT_OPENED = "GPU rows are read for the opened host only: they come with the next refresh"
MODES = {"tokentop": "tokentop exporters", "agentless": "dcgm-exporter + servers' counters"}


class PrometheusSource:
    """``FleetSource`` over one Prometheus; ``read`` and ``series`` never raise."""

    def __init__(
        self,
        config: Config,
        *,
        stale_after_s: float | None = None,
        clock: Callable[[], float] = time.time,
        detail: str = "all",
    ):
        if detail not in DETAILS:
            raise ValueError(f"detail must be one of {DETAILS}, not {detail!r}")
        self.config = config
        self.detail = detail
        self.settings = config.prometheus
        self.client = PromClient(self.settings)
        self.refresh_s = self.settings.refresh_s
        self.stale_after_s = stale_after_s if stale_after_s is not None else max(3 * self.refresh_s, 15.0)
        self.clock = clock
        self.mode: str | None = None
        self.description = f"prometheus {self.client.shown}"
        self._refreshes = 0
        self._last: FleetReading | None = None
        self._known: set[str] = set()
        self._keys: dict[str, str] = {}  # agentless: host name -> instance host
        self._focus: str | None = None
        self._focus_lock = threading.Lock()

    def focus(self, host: str | None) -> None:
        """Read per-GPU and per-endpoint rows for ``host`` from the next refresh on (None: for no
        host). Called from the UI thread while ``read`` runs on the poller's; only
        ``detail="focused"`` uses it (``"all"`` reads every host's rows anyway)."""
        with self._focus_lock:
            self._focus = host

    @property
    def focused(self) -> str | None:
        with self._focus_lock:
            return self._focus

    def close(self) -> None:
        self.client.close()

    def read(self) -> FleetReading:
        try:
            reading = self._read()
        except PromError as exc:
            return self._failed(str(exc))
        except Exception as exc:  # never a traceback in front of the user; -v logs it
            log.exception("reading the fleet from Prometheus failed")
            return self._failed(safe_text(f"cannot read the fleet from Prometheus: {type(exc).__name__}: {exc}"))
        self._last = reading
        return reading

    def _read(self) -> FleetReading:
        if self.mode is None or self._refreshes % REDETECT_EVERY == 0:
            self.mode, notes = self._detect()
        else:
            notes = []
        self._refreshes += 1
        now = self.clock()
        if self.mode is None:
            window = fmt_duration(self.settings.cost_window_s)
            missing = f"no tokentop_* or DCGM_FI_DEV_POWER_USAGE series in Prometheus over the last {window}"
            return self._reading(now, [], missing, notes)
        reads, messages, warnings = self._hosts(now)
        status = f"Prometheus warned (data may be partial): {'; '.join(warnings)}" if warnings else None
        return self._reading(now, reads, status, notes + messages)

    def _detect(self) -> tuple[str | None, list[str]]:
        parts = self.client.instant(promql.detect_query(self.settings.cost_window_s)).parts()
        found = {name for name, samples in parts.items() if any(s.value for s in samples)}
        mode = "tokentop" if "tokentop" in found else "agentless" if "dcgm" in found else None
        self.description = f"prometheus {self.client.shown}" + (f" ({MODES[mode]})" if mode else "")
        notes = ["tokentop exporters and dcgm-exporter both present: reading the exporters (exact)"]
        return mode, notes if {"tokentop", "dcgm"} <= found else []

    def _hosts(self, now: float) -> tuple[list[HostRead], list[str], list[str]]:
        s = self.settings
        messages: list[str]
        if self.mode == "tokentop" and self.detail == "focused":
            focus = self.focused
            answers = [
                self.client.instant(promql.tokentop_hosts_window(s.cost_window_s, focus)),
                self.client.instant(promql.tokentop_hosts_window(s.rate_window_s, focus)),
                self.client.instant(promql.tokentop_hosts_latest(s.cost_window_s, focus)),
            ]
            cost, rate, latest = (a.parts() for a in answers)
            reads = read_focused(cost, rate, latest, focus, s.rate_window_s, s.cost_window_s)
            messages = []
        elif self.mode == "tokentop":
            answers = [
                self.client.instant(promql.tokentop_window(s.cost_window_s)),
                self.client.instant(promql.tokentop_window(s.rate_window_s)),
                self.client.instant(promql.tokentop_latest(s.cost_window_s)),
            ]
            cost, rate, latest = (a.parts() for a in answers)
            reads = read_hosts(cost, rate, latest, s.rate_window_s, s.cost_window_s)
            messages = []
        else:
            answers = [
                self.client.instant(promql.agentless_window(s.cost_window_s, busy=True, latency=True)),
                self.client.instant(promql.agentless_window(s.rate_window_s, busy=True)),
                self.client.instant(promql.agentless_latest(s.cost_window_s)),
            ]
            cost, rate, latest = (a.parts() for a in answers)
            agentless = Agentless(
                cost, rate, latest, s.rate_window_s, s.cost_window_s, self.config.cost, now, self.stale_after_s
            )
            reads, messages = agentless.hosts()
            self._keys = {r.name: r.key for r in reads if r.key is not None}
        return reads, messages, [w for a in answers for w in a.warnings]

    def _reading(self, now: float, reads: list[HostRead], status: str | None, messages: list[str]) -> FleetReading:
        hosts = [self._host(r, now) for r in reads]
        named = {h.name for h in hosts}
        gone = sorted(self._known - named)
        window = fmt_duration(self.settings.cost_window_s)
        hosts += [FleetHost(name, "down", f"no sample in the last {window}") for name in gone]
        self._known |= named
        unpriced = sum(len(r.figures.unpriced_gpus) for r in reads)
        if unpriced:
            messages.append(
                f"{unpriced} GPU(s) without a price: their hosts are left out of both sides of the fleet's $/Mtok"
            )
        s = self.settings
        return FleetReading(
            t_wall=now,
            source=self.description,
            mode=self.mode or "tokentop",
            rate_window_s=s.rate_window_s,
            cost_window_s=s.cost_window_s,
            hosts=tuple(hosts),
            fleet=fleet_figures(hosts, s.rate_window_s, s.cost_window_s),
            status=status,
            messages=tuple(messages),
        )

    def _host(self, read: HostRead, now: float) -> FleetHost:
        age = None if read.seen_t is None else max(0.0, now - read.seen_t)
        state: HostState = "up"
        reason: str | None = None
        if read.scraped is False:
            state, reason = "stale", "Prometheus cannot scrape its exporter (up is 0)"
        elif age is None:
            state, reason = "stale", "no current sample in Prometheus"
        elif age > self.stale_after_s:
            state, reason = "stale", f"latest sample {fmt_duration(age)} old"
        s = self.settings
        engines = read.engines or (sum(e.sample.status == "up" for e in read.endpoints), len(read.endpoints))
        snapshot = Snapshot(
            seq=self._refreshes,
            t_wall=read.seen_t if read.seen_t is not None else now,
            t_mono=0.0,
            dt_s=None,
            rate_window_s=s.rate_window_s,
            cost_window_s=s.cost_window_s,
            gpu_available=bool(read.gpus),
            gpu_reason=None if read.gpus else _no_gpu_rows(read),
            gpus=read.gpus,
            endpoints=read.endpoints,
            host=read.figures,
        )
        return FleetHost(
            name=read.name,
            state=state,
            reason=reason,
            snapshot=snapshot,
            age_s=age,
            models=read.models,
            model_counts=read.model_counts or (),
            engines_up=engines[0],
            engines_total=engines[1],
            join=read.join,
        )

    def _failed(self, status: str) -> FleetReading:
        """The last good reading, every host in it marked stale, with ``status``; or an empty one."""
        s = self.settings
        if self._last is None:
            return FleetReading(
                t_wall=self.clock(),
                source=self.description,
                mode=self.mode or "tokentop",
                rate_window_s=s.rate_window_s,
                cost_window_s=s.cost_window_s,
                hosts=(),
                fleet=fleet_figures((), s.rate_window_s, s.cost_window_s),
                status=status,
            )
        hosts = tuple(
            replace(h, state="stale", reason=f"Prometheus not answering: {status}") if h.state == "up" else h
            for h in self._last.hosts
        )
        return replace(
            self._last,
            hosts=hosts,
            fleet=fleet_figures(hosts, s.rate_window_s, s.cost_window_s),
            status=status,
            stale=True,
        )

    def series(self, span_s: float, host: str | None = None) -> FleetSeries | None:
        """Output tok/s, W and $/h over the last ``span_s``, from one range query whose step
        keeps the graph under 500 points; None when Prometheus cannot answer now."""
        step = promql.graph_step(span_s)
        end = self.clock()
        rate_s = max(2 * step, self.settings.rate_window_s)
        try:
            if self.mode == "agentless":
                key = None if host is None else self._keys.get(host, host)
                answer = self.client.range(promql.agentless_graph(rate_s, key), end - span_s, end, step)
            else:
                answer = self.client.range(promql.tokentop_graph(rate_s, host), end - span_s, end, step)
        except PromError:
            return None
        return self._graph(answer, span_s, step)

    def _graph(self, answer: Answer, span_s: float, step: float) -> FleetSeries:
        columns: dict[str, dict[float, float]] = {"tok_s_out": {}, "priced": {}, "power_w": {}, "usd_h": {}}
        cost = self.config.cost
        for series in answer.series:
            part = series.labels.get(promql.UNION_LABEL, "")
            for t, v in series.points:
                if part.startswith("tok|") or part == "tok_s_out":
                    columns["tok_s_out"][t] = columns["tok_s_out"].get(t, 0.0) + v
                elif part in ("power_w", "usd_h"):
                    columns[part][t] = v
                elif part == "priced_tok_s_out":
                    columns["priced"][t] = v
                elif part == "gpus":
                    price = price_for(series.labels.get("modelName", ""), "", -1, cost)
                    if price is not None:
                        columns["usd_h"][t] = columns["usd_h"].get(t, 0.0) + v * price.usd_per_gpu_hour
        if self.mode == "agentless" and energy_is_charged(cost):
            for t, watts in columns["power_w"].items():
                if t in columns["usd_h"]:
                    columns["usd_h"][t] += energy_cost_usd(watts * 3600.0, cost)
        times = sorted(set().union(*(c.keys() for c in columns.values())))
        return FleetSeries(
            priced_tok_s_out=self._priced_tokens(columns["priced"], times),
            span_s=span_s,
            step_s=step,
            t_wall=tuple(times),
            tok_s_out=tuple(columns["tok_s_out"].get(t) for t in times),
            power_w=tuple(columns["power_w"].get(t) for t in times),
            usd_per_hour=tuple(columns["usd_h"].get(t) for t in times),
        )

    def _priced_tokens(self, priced: dict[float, float], times: list[float]) -> tuple[float | None, ...] | None:
        """The tok/s whose cost the $/h covers. Exporters: the GPUs with a cost counter, from
        PromQL. Agentless: tokens cannot be matched to priced GPUs in PromQL, so while the latest
        reading has an unpriced host the graph's $/Mtok stays blank rather than wrong."""
        if self.mode == "tokentop":
            return tuple(priced.get(t, 0.0) for t in times)
        if self._last is not None and self._last.fleet.unpriced_hosts:
            return tuple(None for _ in times)
        return None


def _no_gpu_rows(read: HostRead) -> str:
    if read.detailed or not read.figures.gpu_count:
        return "no GPU series for this host in Prometheus"
    return NOT_OPENED
