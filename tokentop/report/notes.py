"""The summary's notes in words, the same in Markdown and JSON."""

from __future__ import annotations

from tokentop.report.figures import (
    EndpointUnmapped,
    FewWindows,
    GpusUnpriced,
    GpusWithoutEnergy,
    GpuWithoutReadings,
    KeptTotals,
    NoGpu,
    Note,
    RollupWindows,
    SessionStillOpen,
)
from tokentop.units import fmt_count, fmt_local_time, fmt_window


def note_text(note: Note) -> str:
    if isinstance(note, SessionStillOpen):
        return (
            "the session was still open: still recording, or it ended without closing; "
            f"figures up to {fmt_local_time(note.figures_until)}"
        )
    if isinstance(note, RollupWindows):
        rest = "" if note.kept_totals else "; the energy method and endpoint figures cover the per-tick rows left"
        return (
            "per-tick rows are gone for part of the range (retention): peaks and "
            f"percentiles are over whole minutes of the 1-minute rollups{rest}"
        )
    if isinstance(note, KeptTotals):
        return (
            "per-tick rows of the session's start are gone (retention): the energy method, the "
            "engines and the endpoint figures are the session's own totals, which the history keeps "
            "(latencies: means over every tick)"
        )
    if isinstance(note, FewWindows):
        length = fmt_window(note.length_s)
        if note.count == 0:
            return f"the range is shorter than half a {length} window: no p50, p95 or peak"
        windows = "one window" if note.count == 1 else f"{note.count} windows"
        return f"the range holds {windows} of {length}, fewer than 3: no p50 or p95, only the peak"
    if isinstance(note, NoGpu):
        return (
            "no GPU was read in this session (no NVIDIA driver, or no GPU visible): the figures are "
            "the endpoints' own; energy, cost and $/Mtok are not known"
        )
    if isinstance(note, EndpointUnmapped):
        return f"endpoint {note.name} is not mapped to a GPU here: its tokens are not in the GPU and host figures"
    if isinstance(note, GpuWithoutReadings):
        return f"GPU {note.index} ({note.uuid}) has no readings in the range"
    if isinstance(note, GpusUnpriced):
        return (
            f"{fmt_count(note.count)} GPU(s) have no price (set cost.gpu_hour_usd in the "
            "config): host cost and $/Mtok are not shown"
        )
    if isinstance(note, GpusWithoutEnergy):
        gpus = ", ".join("?" if i is None else str(i) for i in note.indices)
        cost = "; their cost counts no energy" if note.energy_charged else ""
        return (
            f"GPU {gpus}: no power or energy reading in the range, so their energy, W, tok/J and "
            f"J/tok are not known, nor are the host's{cost}"
        )
    raise AssertionError(f"unknown note {note!r}")
