"""A whole session's figures that outlive its per-tick rows.

Retention deletes a session's per-tick rows oldest first. The GPU totals and the range survive
through the rollups and the totals the history keeps for every session (``Store.window_totals``
and ``Store.session_bounds`` read them); the energy method, the engines and the endpoint figures
were read from the per-tick rows. Where those rows no longer reach back to a GPU's or an
endpoint's first reading, and the summary covers the whole session, they come from the kept
totals instead (``Store.gpu_session_totals``, ``Store.endpoint_session_totals``), so that a
closed session's summary does not change as its rows age; the summary says so (``KeptTotals``).
A range inside a session (``--since``/``--until``) reads the rows that remain, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokentop.history import EndpointSessionTotals, EndpointTrack, GpuSessionTotals, Store
from tokentop.report.figures import EndpointSummary
from tokentop.report.tracks import EnergyMethod
from tokentop.text import safe_optional, safe_text


@dataclass(frozen=True)
class KeptFigures:
    """The kept totals that stand in for per-tick rows that are gone."""

    energy_methods: dict[str, EnergyMethod] = field(default_factory=dict)  # by GPU UUID
    endpoints: tuple[EndpointSessionTotals, ...] = ()

    @property
    def used(self) -> bool:
        return bool(self.energy_methods or self.endpoints)

    def replaces(self, track: EndpointTrack) -> bool:
        """Whether ``track`` (what is left of an endpoint's rows) gives way to its kept totals."""
        return any((e.name, e.url) == (track.name, track.url) for e in self.endpoints)

    def endpoint_summaries(self, index_of: dict[str, int | None]) -> tuple[EndpointSummary, ...]:
        return tuple(_endpoint_summary(e, index_of) for e in self.endpoints)


def kept_figures(store: Store, session_id: int, *, whole_session: bool) -> KeptFigures:
    """What stands in for gone per-tick rows: nothing for a range inside the session, nor while
    the rows still reach back to each GPU's and endpoint's first reading."""
    if not whole_session:
        return KeptFigures()
    methods = {g.uuid: _energy_method(g) for g in store.gpu_session_totals(session_id) if not g.raw_from_first}
    endpoints = tuple(
        e for e in store.endpoint_session_totals(session_id) if not e.raw_from_first and e.t_last > e.t_first
    )
    return KeptFigures(methods, endpoints)


def _energy_method(gpu: GpuSessionTotals) -> EnergyMethod:
    """As ``tracks.energy_method`` names it, from the ticks counted by method."""
    counter, integrated = gpu.counter_ticks > 0, gpu.integrated_ticks > 0
    if counter and integrated:
        method: str | None = "mixed"
    elif counter:
        method = "counter"
    else:
        method = "power_integral" if integrated else None
    return EnergyMethod(method, gpu.integrated_ticks, gpu.unmeasured_ticks)


def _endpoint_summary(e: EndpointSessionTotals, index_of: dict[str, int | None]) -> EndpointSummary:
    duration_s = e.t_last - e.t_first
    return EndpointSummary(
        name=safe_text(e.name),
        url=safe_text(e.url),
        kind=safe_optional(e.kind),
        model=safe_optional(e.model),
        gpus=tuple(map(safe_text, e.gpus)),
        gpu_indices=tuple(index_of.get(uuid) for uuid in e.gpus),
        duration_s=duration_s,
        tokens_in=e.tokens_in,
        tokens_out=e.tokens_out,
        tok_s_in_mean=e.tokens_in / duration_s if duration_s > 0 else None,
        tok_s_out_mean=e.tokens_out / duration_s if duration_s > 0 else None,
        requests_completed=e.requests_completed,
        ttft_p50_s_mean=e.ttft_p50_s_mean,
        ttft_p95_s_mean=e.ttft_p95_s_mean,
        itl_p50_s_mean=e.itl_p50_s_mean,
    )
