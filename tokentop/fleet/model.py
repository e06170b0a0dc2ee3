"""What a fleet reading holds: one ``FleetHost`` per host, each a ``Snapshot`` of the same shape
the local view draws, plus the host's state; and the fleet's figures, summed from its hosts.

Every source (``tokentop.fleet.prometheus_source`` for a Prometheus that scrapes tokentop
exporters or dcgm-exporter and the servers, ``tokentop.fleet.ssh`` for ``snapshot --json --follow``
feeds) produces these, so the fleet screen, ``snapshot --json`` and the arithmetic are the same whatever
the source. Fleet figures are sums over hosts, and $/Mtok is the summed cost over the summed
output tokens of the hosts that have a price, never an average of ratios.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tokentop.model import Snapshot, Window

HostState = Literal["connecting", "up", "stale", "down"]
"""``connecting``: no reading yet; ``up``: a fresh reading; ``stale``: the latest reading is older
than its source allows (``FleetHost.age_s``), figures kept and marked; ``down``: no reading can be
had (``FleetHost.reason`` says why)."""

CLOCK_OFFSET_SHOWN_S = 2.0
"""A host clock further off the viewer's than this is said (on screen and in the messages)."""


@dataclass(frozen=True, slots=True)
class FleetHost:
    name: str
    state: HostState
    reason: str | None = None  # why stale or down, in plain words (safe text)
    # The host as the local view would show it: GPUs, engines, windows, totals. None until the
    # first reading; when later readings fail a source keeps it (``stale``) or drops it (``down``).
    snapshot: Snapshot | None = None
    age_s: float | None = None  # age of the latest sample, by the viewer's clock
    clock_offset_s: float | None = None  # host clock minus viewer clock, when the source can tell
    models: tuple[str, ...] = ()  # GPU model names, one per distinct model
    engines_up: int = 0
    engines_total: int = 0
    join: str | None = None  # agentless sources: how GPUs were joined to servers ("pod", "host")
    # GPUs per model, when the source read the host's counts but not its GPU rows (empty
    # ``snapshot.gpus``: a Prometheus host that is not opened); () when not known that way.
    model_counts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class FleetFigures:
    """The fleet: sums over hosts that have a snapshot (``fleet_figures``)."""

    host_count: int
    hosts_up: int
    gpu_count: int
    engines_up: int
    engines_total: int
    power_w: float | None  # sum of the hosts' latest power
    usd_per_hour_now: float | None  # sum over priced hosts
    rate_window: Window  # all hosts: tok/s and W
    cost_window: Window  # all hosts: tokens, energy, busy share
    priced_window: Window  # only hosts with a price: both sides of $/Mtok
    unpriced_hosts: tuple[str, ...] = ()

    @property
    def usd_per_mtok(self) -> float | None:
        """Effective $/Mtok of the priced hosts over the cost window."""
        return self.priced_window.usd_per_mtok

    @property
    def busy_usd_per_mtok(self) -> float | None:
        return self.priced_window.busy_usd_per_mtok


@dataclass(frozen=True, slots=True)
class FleetReading:
    t_wall: float  # Unix time of the reading, by the viewer's clock
    source: str  # what was read, for the screen: "prometheus http://…:9090 (tokentop exporters)"
    mode: str  # "tokentop" | "agentless" | "ssh"; "unknown" before the source's first good read
    rate_window_s: float
    cost_window_s: float
    hosts: tuple[FleetHost, ...]
    fleet: FleetFigures
    status: str | None = None  # the source's trouble, in one line: "Prometheus unreachable: …"
    stale: bool = False  # the figures are the last good ones, not this refresh's
    messages: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class FleetSeries:
    """A graph's points: one host's or the fleet's, from range queries or a feed's past readings.
    Each point is the mean over the step that ends at its time. ``usd_per_hour`` covers only
    hosts with a price, and so does ``priced_tok_s_out``: $/Mtok of a point or of several is
    their cost over their priced tokens (None: every host is priced, use ``tok_s_out``)."""

    span_s: float
    step_s: float
    t_wall: tuple[float, ...]
    tok_s_out: tuple[float | None, ...]
    power_w: tuple[float | None, ...]
    usd_per_hour: tuple[float | None, ...]
    priced_tok_s_out: tuple[float | None, ...] | None = None


class FleetSource(Protocol):
    """Where fleet readings come from. ``read`` never raises: trouble goes in the reading."""

    description: str
    refresh_s: float

    def read(self) -> FleetReading: ...

    def series(self, span_s: float, host: str | None = None) -> FleetSeries | None:
        """Graph points over the last ``span_s`` (the fleet when ``host`` is None); None when the
        source keeps no past or it cannot be read now."""
        ...

    def focus(self, host: str | None) -> None:
        """Read per-GPU detail for ``host`` (the one the user opened) from the next refresh on;
        None: for no host. Called from the UI thread while ``read`` may run on another. A source
        whose readings always carry every GPU does nothing."""
        ...

    def close(self) -> None: ...


def sum_windows(windows: Iterable[Window], span_s: float) -> Window:
    """Windows added up as rates over ``span_s``: each is scaled to that span first, so a host
    whose window is still short (just started or reconnected) adds its rate, not a fraction of
    it. Windows that already cover ``span_s`` add exactly. A cost is known only when every
    window's is."""
    parts = [(w, span_s / w.span_s) for w in windows if w.span_s > 0]
    costs = [None if w.cost_usd is None else w.cost_usd * k for w, k in parts]
    busy_costs = [None if w.busy_cost_usd is None else w.busy_cost_usd * k for w, k in parts]
    return Window(
        span_s=span_s,
        tokens_in=sum(w.tokens_in * k for w, k in parts),
        tokens_out=sum(w.tokens_out * k for w, k in parts),
        energy_j=sum(w.energy_j * k for w, k in parts),
        cost_usd=None if not parts or None in costs else sum(c for c in costs if c is not None),
        busy_s=sum(w.busy_s * k for w, k in parts),
        busy_cost_usd=None if not parts or None in busy_costs else sum(c for c in busy_costs if c is not None),
        watched_gpu_s=sum((w.span_s if w.watched_gpu_s is None else w.watched_gpu_s) * k for w, k in parts),
    )


def fleet_figures(hosts: Iterable[FleetHost], rate_window_s: float, cost_window_s: float) -> FleetFigures:
    """The fleet's figures: sums over the hosts that have a snapshot. A host whose cost is
    unknown (a GPU without a price) is left out of both sides of $/Mtok and named."""
    listed = list(hosts)
    read = [h.snapshot.host for h in listed if h.snapshot is not None]
    priced = [f for f in read if f.cost_window.cost_usd is not None]
    unpriced = tuple(h.name for h in listed if h.snapshot is not None and h.snapshot.host.cost_window.cost_usd is None)
    powers = [f.power_w for f in read if f.power_w is not None]
    known_rates = [f.usd_per_hour_now for f in priced if f.usd_per_hour_now is not None]
    return FleetFigures(
        host_count=len(listed),
        hosts_up=sum(h.state == "up" for h in listed),
        gpu_count=sum(f.gpu_count for f in read),
        engines_up=sum(h.engines_up for h in listed),
        engines_total=sum(h.engines_total for h in listed),
        power_w=sum(powers) if powers else None,
        usd_per_hour_now=sum(known_rates) if known_rates else None,
        rate_window=sum_windows((f.rate_window for f in read), rate_window_s),
        cost_window=sum_windows((f.cost_window for f in read), cost_window_s),
        priced_window=sum_windows((f.cost_window for f in priced), cost_window_s),
        unpriced_hosts=unpriced,
    )
