"""The short session summary: printed after the live view closes, written to a file on ``e``.

Built only from the last snapshot's host totals (the fuller summary reads the history).
"""

from __future__ import annotations

import time
from pathlib import Path

from tokentop.model import Snapshot, usd_per_mtok
from tokentop.tui.gpu_table import gpu_summary
from tokentop.units import fmt_duration, fmt_energy, fmt_tokens, fmt_usd, fmt_usd_per_mtok, to_ascii


def short_summary(snapshot: Snapshot | None, host_name: str, *, ascii_only: bool | None = False) -> str:
    """A few plain lines: duration, tokens in and out, energy, cost, effective $/Mtok; only
    ASCII with ``ascii_only`` (``--ascii``: the terminal it is printed on cannot draw more)."""
    text = _short_summary(snapshot, host_name)
    return to_ascii(text) if ascii_only else text


def _short_summary(snapshot: Snapshot | None, host_name: str) -> str:
    if snapshot is None:
        return f"tokentop on {host_name}: no reading was taken.\n"
    totals = snapshot.host.totals
    per_mtok = usd_per_mtok(totals.cost_usd, totals.tokens_out)
    serving = bool(snapshot.endpoints)
    start = time.strftime("%Y-%m-%d %H:%M", time.localtime(snapshot.t_wall - totals.elapsed_s))
    lines = [
        f"tokentop session on {host_name} ({gpu_summary(snapshot)}), from {start}, {fmt_duration(totals.elapsed_s)}",
        f"  tokens       in {fmt_tokens(totals.tokens_in)}, out {fmt_tokens(totals.tokens_out)}",
        f"  energy       {fmt_energy(totals.energy_j)} (GPU boards)",
        f"  cost         {fmt_usd(totals.cost_usd)}"
        + ("" if totals.cost_usd is not None else " (no price for some GPU models)"),
        f"  $/Mtok       {fmt_usd_per_mtok(per_mtok, tokens_out=totals.tokens_out, serving=serving)}"
        " (all cost, idle included, per million output tokens)",
    ]
    return "\n".join(lines) + "\n"


def write_summary(text: str, directory: Path, t_wall: float, suffix: str = ".txt") -> Path:
    """Write ``text`` to a new file in ``directory``; returns its path. Raises OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(t_wall))
    path = directory / f"tokentop-summary-{stamp}{suffix}"
    counter = 1
    while path.exists():
        counter += 1
        path = directory / f"tokentop-summary-{stamp}-{counter}{suffix}"
    path.write_text(text)
    return path
