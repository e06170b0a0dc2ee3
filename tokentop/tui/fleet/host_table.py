"""The hosts table: one row per host of a fleet reading, its columns as data (``ColumnSpec``, as
the local view's GPU and engine tables). A host's figures are its snapshot's host figures, the
ones its own header would show; a stale host (or a down one whose source keeps them) shows its
last figures, dimmed, and its state column says so with the reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tokentop.fleet.model import CLOCK_OFFSET_SHOWN_S, FleetHost, FleetReading
from tokentop.model import HostFigures
from tokentop.tui.columns import BAD, DEFAULT_BANDS, DIM, PLAIN, WARN, Cell, ColumnSpec, CostBands
from tokentop.units import DASH, NA, fmt_duration, fmt_pct, fmt_tok_s, fmt_usd, fmt_usd_per_mtok, fmt_watts, gpu_labels

STATE_ORDER = {"down": 0, "stale": 1, "connecting": 2, "up": 3}  # sorting by state: trouble first


@dataclass(frozen=True)
class HostRow:
    host: FleetHost
    bands: CostBands = DEFAULT_BANDS

    @property
    def key(self) -> str:
        return self.host.name

    @property
    def figures(self) -> HostFigures | None:
        return None if self.host.snapshot is None else self.host.snapshot.host

    @property
    def serving(self) -> bool:
        """The host has engines (so no token in the window is ``idle``, not ``—``): from its
        rows, or its engine count when the source read no rows for it (a host not opened)."""
        snapshot = self.host.snapshot
        if snapshot is None:
            return False
        return bool(snapshot.endpoints) or any(g.engines for g in snapshot.gpus) or self.host.engines_total > 0


def host_rows(reading: FleetReading, bands: CostBands = DEFAULT_BANDS) -> list[HostRow]:
    return [HostRow(host, bands) for host in reading.hosts]


def host_power_w(figures: HostFigures) -> float | None:
    """A host's power over the rate window (its energy over the span); its latest reading when
    the window holds no energy (a source that gives power only)."""
    return figures.rate_window.watts if figures.rate_window.energy_j > 0 else figures.power_w


def gpu_models(host: FleetHost) -> tuple[str, tuple[str, ...]]:
    """``8× H200`` (``4× H200, 4× L40S`` shortened to ``8 GPUs`` when narrow), from the host's
    GPU rows; from its GPU count and models when the source read no rows for it (a host not
    opened: ``8 GPUs: H200, L40S`` when only the models are known); its ``models`` when it has
    no snapshot yet."""
    if host.snapshot is None:
        return (", ".join(host.models) or DASH), ()
    counts = Counter(g.sample.name for g in host.snapshot.gpus)
    gpu_count = host.snapshot.host.gpu_count
    if not counts and gpu_count > 0:
        counts = Counter(dict(host.model_counts))
        if sum(counts.values()) != gpu_count:  # no per-model counts: the models, and the total
            return _count_and_models(gpu_count, host.models), ()
    if not counts:
        return "no GPU", ()
    labels = gpu_labels(counts)
    text = ", ".join(f"{n}× {labels[name]}" for name, n in counts.most_common())
    total = sum(counts.values())
    return text, ((f"{total} GPUs",) if len(counts) > 1 else ())


def _count_and_models(gpu_count: int, models: tuple[str, ...]) -> str:
    labels = gpu_labels(models)
    if len(models) == 1:
        return f"{gpu_count}× {labels[models[0]]}"
    named = f": {', '.join(labels[m] for m in models)}" if models else ""
    return f"{gpu_count} GPUs{named}"


def _dim_if_old(row: HostRow, cell: Cell) -> Cell:
    """A stale or down host's figures are its last ones: dimmed, the state column says why."""
    return Cell(cell.text, DIM, cell.fill, cell.shorter) if row.host.state != "up" else cell


def _figure(row: HostRow, text: str) -> Cell:
    return _dim_if_old(row, Cell(text, DIM if text in (NA, DASH) else PLAIN))


def _gpus_cell(row: HostRow) -> Cell:
    text, shorter = gpu_models(row.host)
    return Cell(text, DIM if text == DASH else PLAIN, shorter=shorter)


def _usd_per_mtok_cell(row: HostRow) -> Cell:
    figures = row.figures
    if figures is None:
        return Cell(DASH, DIM)
    window = figures.cost_window
    text = fmt_usd_per_mtok(window.usd_per_mtok, tokens_out=window.tokens_out, serving=row.serving)
    return _dim_if_old(row, Cell(text, row.bands.style(window.usd_per_mtok)))


def state_forms(host: FleetHost) -> tuple[str, ...]:
    """The state in plain words, longest first: ``STALE 45s: no sample since 12:03:01``, then
    ``STALE 45s``; ``up 2s, clock +3.4s``, then ``up 2s``; ``DOWN: connection refused``, ``DOWN``."""
    age = "" if host.age_s is None else f" {fmt_duration(host.age_s)}"
    if host.state == "down":
        short = "DOWN"
    elif host.state == "stale":
        short = f"STALE{age}"
    elif host.state == "connecting":
        return ("connecting",)
    else:
        short = f"up{age}"
    extra = []
    offset = host.clock_offset_s
    if offset is not None and abs(offset) > CLOCK_OFFSET_SHOWN_S:
        extra.append(f"clock {offset:+.1f}s")
    if host.reason and host.state != "up":
        extra.insert(0, host.reason)
    if not extra:
        return (short,)
    joiner = ", " if host.state == "up" else ": "
    return (f"{short}{joiner}{', '.join(extra)}", short)


def _state_cell(row: HostRow) -> Cell:
    full, *shorter = state_forms(row.host)
    style = {"down": BAD, "stale": WARN, "connecting": DIM}.get(row.host.state, PLAIN)
    return Cell(full, style, shorter=tuple(shorter))


def _engines_cell(row: HostRow) -> Cell:
    host = row.host
    if host.snapshot is None and host.engines_total == 0:
        return Cell(DASH, DIM)
    return _figure(row, f"{host.engines_up}/{host.engines_total}")


def _rate(row: HostRow, value: str | None) -> Cell:
    return Cell(DASH, DIM) if value is None else _figure(row, value)


HOST_COLUMNS: tuple[ColumnSpec[HostRow], ...] = (
    ColumnSpec(
        "host",
        "host",
        "",
        6,
        0,
        lambda r: Cell(r.host.name),
        lambda r: r.host.name,
        descending=False,
        right=False,
        flex_max=24,
        help="the host's name (the exporter's host label, or the ssh target's name)",
        identity=True,
    ),
    ColumnSpec(
        "gpus",
        "GPUs",
        "",
        7,
        4,
        _gpus_cell,
        lambda r: r.figures.gpu_count if r.figures else None,
        right=False,
        flex_max=24,
        help="the host's GPUs by model ('8 GPUs' on a narrow screen when the models are mixed)",
    ),
    ColumnSpec(
        "tok_out",
        "tok/s",
        "out {rate}",
        7,
        3,
        lambda r: _rate(r, fmt_tok_s(r.figures.rate_window.tok_s_out) if r.figures else None),
        lambda r: r.figures.rate_window.tok_s_out if r.figures else None,
        help="generated (output) tokens per second, the host's GPUs together",
    ),
    ColumnSpec(
        "power",
        "power",
        "{rate}",
        7,
        5,
        lambda r: _rate(r, fmt_watts(host_power_w(r.figures)) if r.figures else None),
        lambda r: host_power_w(r.figures) if r.figures else None,
        help="GPU board power, W or kW: the host's energy over the rate window",
    ),
    ColumnSpec(
        "usd_h",
        "$/h",
        "now",
        6,
        6,
        lambda r: _rate(r, fmt_usd(r.figures.usd_per_hour_now) if r.figures else None),
        lambda r: r.figures.usd_per_hour_now if r.figures else None,
        help="what the host's GPUs cost per hour at its last reading",
    ),
    ColumnSpec(
        "usd_mtok",
        "$/Mtok",
        "{cost}",
        7,
        2,
        _usd_per_mtok_cell,
        lambda r: r.figures.cost_window.usd_per_mtok if r.figures else None,
        help="effective: all the host's cost over the window (idle included) per million output tokens",
    ),
    ColumnSpec(
        "busy",
        "busy",
        "{cost}",
        4,
        7,
        lambda r: _rate(r, fmt_pct(r.figures.cost_window.busy_share, fraction=True) if r.figures else None),
        lambda r: r.figures.cost_window.busy_share if r.figures else None,
        help="busy share: busy GPU-seconds over watched GPU-seconds (not NVML's utilisation)",
    ),
    ColumnSpec(
        "engines",
        "eng",
        "up/all",
        6,
        8,
        _engines_cell,
        lambda r: (r.host.engines_up, r.host.engines_total),
        help="inference engines answering, of those known on the host",
    ),
    ColumnSpec(
        "state",
        "state",
        "age",
        9,
        1,
        _state_cell,
        lambda r: (STATE_ORDER.get(r.host.state, 9), -(r.host.age_s or 0.0)),
        descending=False,
        right=False,
        flex_max=60,
        help="up, STALE or DOWN with the age of the latest sample and, where there is room, the "
        "reason; the host's clock offset when over 2 s",
        identity=True,
    ),
)
