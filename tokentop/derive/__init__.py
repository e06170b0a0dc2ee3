"""Readings in, a Snapshot out: counter deltas, restarts, glitches, energy, attribution, cost
and windows. No I/O.

How each figure is computed (the README repeats this for users):

* Tokens (``counters``): the engine's cumulative counters, differenced. A drop is a restart,
  counted from zero, only when the engine could have restarted (its start time or PID changed,
  or it publishes no start time) and the new value is one it could have reached since the last
  good reading; a step above ``max_endpoint_tok_s`` or any other drop is a glitch: counted as
  nothing, the last good reading kept, and said once. An engine that started after the session
  did counts its first reading from zero. Servers whose counters move only when a request ends
  (llama.cpp) also report in-flight progress; we follow the high-water mark of
  ``counter + in-flight`` so tokens show up live and are never counted twice.
* Energy (``counters``): the NVML energy counter's difference; where the GPU has no counter,
  it went down, or it rose more than twice the power limit allows, the trapezoid of the power
  readings over the measured interval. The method is kept per tick.
* Attribution (``deriver``): an endpoint's tokens are split equally over its GPUs (one
  tensor/pipeline parallel group); separate endpoints (data-parallel replicas) add up.
* Cost: the GPU's hourly rate for the measured interval, plus electricity when charged
  (``tokentop.cost``). Host figures are sums of cost over sums of tokens, never an average
  of per-GPU ratios.
* Host (``windows.sum_windows``): the sum of its GPUs (tokens attributed to them; busy time in
  GPU-seconds, its share over watched GPU-seconds), as the history and the summary add them
  up. A host with no GPU reading counts what its endpoints delivered. An endpoint mapped to no
  GPU is named in the snapshot's messages.
* Windows (``windows.Series``; an endpoint's ``windows.Ring`` keeps its points too): a window
  of N seconds starts exactly N seconds before the newest reading, interpolated between the
  two readings around that instant; ``span_s`` is what it covers (less while the session is
  younger than N).
* Nothing that is not a finite number reaches a Snapshot: such a tick is left out, and said.
"""

from tokentop.derive.counters import DeliveredCounter, EnergyStep, energy_delta_j
from tokentop.derive.deriver import HOST, Deriver, TickTokens, endpoints_tick
from tokentop.derive.windows import (
    Point,
    Ring,
    advance,
    histogram_quantile,
    host_tick,
    sum_windows,
    window_between,
)

__all__ = [
    "HOST",
    "DeliveredCounter",
    "Deriver",
    "EnergyStep",
    "Point",
    "Ring",
    "TickTokens",
    "advance",
    "endpoints_tick",
    "energy_delta_j",
    "histogram_quantile",
    "host_tick",
    "sum_windows",
    "window_between",
]
