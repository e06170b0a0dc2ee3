"""Raw counters turned into what tokentop counts, leaving out readings that cannot be true.

* Tokens (``DeliveredCounter``): an engine's cumulative counter, differenced. A step implying
  more than ``max_tok_s`` is a glitch. A counter that goes down is a restart (counted from
  zero) only when the engine could have restarted (its start time or PID changed, or it
  publishes no start time) and the new value is one it could have reached since the last good
  reading; any other drop is a glitch. A glitch counts nothing and keeps the last good
  reading; a level that stays ``REBASE_AFTER`` readings becomes the new baseline.
* Energy (``energy_delta_j``): the NVML counter's difference, unless it went down (a driver
  reload) or rose more than twice the power limit allows; then the power trapezoid.

Each ignored reading is described once, when a run of them starts (``event``), for a message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from tokentop.model import GpuSample

REBASE_AFTER = 3  # consecutive implausible readings after which their level is the new baseline
ENERGY_LIMIT_FACTOR = 2.0  # an energy step above this x power limit x interval is not believed
# For a GPU that reports no power limit: about the highest board limit shipping (GB300, 1,400 W).
FALLBACK_POWER_LIMIT_W = 1500.0


@dataclass(slots=True)
class DeliveredCounter:
    """A server's cumulative counter turned into tokens delivered since we started watching."""

    max_tok_s: float = 1e6
    last_raw: float | None = None  # the last good reading
    last_t: float = 0.0  # when it was taken (monotonic s)
    high_water: float = 0.0
    delivered: float = 0.0
    progress_only: bool = False
    held: int = 0  # implausible readings in a row, held back
    ignoring: bool = False  # the last reading was ignored
    event: str | None = None  # what the last update ignored, when a run of ignored readings starts

    def update(
        self,
        raw: float | None,
        in_flight: float | None,
        t: float,
        *,
        same_process: bool = False,
        fresh_s: float | None = None,
    ) -> float:
        """Feed one reading taken at ``t``; returns the tokens it adds (never negative).

        ``same_process``: the engine's own start time (and PID) show it has not restarted since
        the last reading, so a drop cannot be a restart. ``fresh_s``: for an engine that started
        during this session, the seconds since it started (its first reading counts from zero).
        """
        self.event = None
        if raw is None:
            return 0.0 if in_flight is None else self._add_progress_only(in_flight, t)
        effective = raw + (in_flight or 0.0)
        if not math.isfinite(effective):
            return self._ignore(f"read {effective}: ignored")
        if self.last_raw is None:
            return self._first(raw, effective, t, fresh_s)
        elapsed = t - self.last_t
        if raw < self.last_raw:
            if same_process or effective > self.max_tok_s * elapsed:
                why = (
                    "while the engine kept running (same start time)"
                    if same_process
                    else f"which a restarted engine could not have reached in {elapsed:.1f} s"
                )
                return self._hold(raw, effective, t, f"fell from {self.last_raw:,.0f} to {raw:,.0f}, {why}")
            self.high_water = effective  # restarted: the new counter starts from zero
            return self._accept(raw, t, max(0.0, effective))
        added = max(0.0, effective - self.high_water)
        if added > self.max_tok_s * elapsed:
            what = f"jumped by {added:,.0f} in {elapsed:.1f} s (over {self.max_tok_s:,.0f} tok/s)"
            return self._hold(raw, effective, t, what)
        self.high_water = max(self.high_water, effective)
        return self._accept(raw, t, added)

    def _first(self, raw: float, effective: float, t: float, fresh_s: float | None) -> float:
        """The first reading: a baseline (tokens from before we watched are not ours), or counted
        from zero for an engine that started during this session."""
        self.last_raw, self.last_t, self.high_water = raw, t, effective
        if fresh_s is None:
            return 0.0
        if effective > self.max_tok_s * max(0.0, fresh_s):
            self.event = (
                f"read {effective:,.0f} first, more than the engine could have made since it started"
                f" {fresh_s:.1f} s ago: taken as a baseline"
            )
            return 0.0
        return self._accept(raw, t, max(0.0, effective))

    def _accept(self, raw: float, t: float, added: float) -> float:
        if not math.isfinite(self.delivered + added):
            return self._ignore(f"would total {self.delivered + added}: ignored")
        self.last_raw, self.last_t = raw, t
        self.held, self.ignoring = 0, False
        self.delivered += added
        return added

    def _hold(self, raw: float, effective: float, t: float, what: str) -> float:
        """Count nothing and keep the last good reading; a level that stays ``REBASE_AFTER``
        readings becomes the new baseline (counting nothing from before)."""
        self.held += 1
        if self.held < REBASE_AFTER:
            return self._ignore(f"{what}: ignored")
        self.last_raw, self.last_t, self.high_water = raw, t, effective
        self.held, self.ignoring = 0, False
        self.event = f"{what}, {REBASE_AFTER} readings in a row: taken as a new baseline, nothing counted"
        return 0.0

    def _ignore(self, what: str) -> float:
        if not self.ignoring:
            self.event = what
        self.ignoring = True
        return 0.0

    def _add_progress_only(self, in_flight: float, t: float) -> float:
        """No counters (llama.cpp with metrics off): count progress increases only."""
        if not math.isfinite(in_flight):
            return self._ignore(f"read {in_flight} in flight: ignored")
        if not self.progress_only:
            self.progress_only, self.high_water, self.last_t = True, in_flight, t
            return 0.0
        added = max(0.0, in_flight - self.high_water)
        elapsed = t - self.last_t
        self.high_water, self.last_t = in_flight, t
        if added > self.max_tok_s * elapsed:
            return self._ignore(f"progress jumped by {added:,.0f} in {elapsed:.1f} s: ignored")
        self.ignoring = False
        self.delivered += added
        return added


class EnergyStep(NamedTuple):
    """Board energy between two readings of one GPU, how it was measured, and the counter step
    left out when the counter rose more than the GPU could draw."""

    joules: float
    method: str | None  # "counter" | "power_integral" | None (no power reading)
    ignored_j: float | None = None


def first_energy_method(sample: GpuSample) -> str | None:
    """The method the next readings will use (the first reading measures nothing yet)."""
    if sample.energy_counter_mj is not None:
        return "counter"
    return "power_integral" if sample.power_w is not None else None


def energy_delta_j(prev: GpuSample | None, cur: GpuSample, dt_s: float) -> EnergyStep:
    """Board energy between two readings of one GPU: the counter's difference, or the power
    trapezoid where there is no counter, it went down (a driver reload) or it rose more than
    ``ENERGY_LIMIT_FACTOR`` x the power limit x ``dt_s`` (a spike)."""
    ignored: float | None = None
    counter = cur.energy_counter_mj
    if prev is not None and prev.energy_counter_mj is not None and counter is not None:
        step_j = (counter - prev.energy_counter_mj) / 1000.0
        limit_w = cur.power_limit_w or FALLBACK_POWER_LIMIT_W
        if 0 <= step_j <= ENERGY_LIMIT_FACTOR * limit_w * dt_s:
            return EnergyStep(step_j, "counter")
        if step_j > 0:
            ignored = step_j
    power_w = cur.power_w
    if power_w is None:
        return EnergyStep(0.0, None, ignored)
    before = prev.power_w if prev is not None and prev.power_w is not None else power_w
    return EnergyStep((before + power_w) / 2.0 * dt_s, "power_integral", ignored)
