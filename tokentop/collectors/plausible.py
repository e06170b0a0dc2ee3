"""Which numbers a server can mean, and how to name one that it cannot.

Every figure tokentop reads is a count, a size, a fraction or a time, so it is finite and not
negative; none gets anywhere near 2^53, beyond which a float no longer counts by ones. A value
outside that range (a counter alternating 1e308 and 1.7e308, +Inf, -3, a 400-digit integer in
JSON) is never passed on: downstream, ``inf`` is not JSON, a rate over it is nonsense and
Python's ``float()`` of a huge integer raises. What becomes of the rest of the tick is the
reader's choice: a bad token counter rejects it (``Implausible``), a bad gauge becomes unknown
with a note that names it.
"""

from __future__ import annotations

import math

from tokentop.collectors.exposition import Labels, Series
from tokentop.model import MAX_COUNT
from tokentop.text import safe_text

SERIES_SHOWN = 100  # characters of ``name{labels}`` shown in a note or an error


class Implausible(ValueError):
    """A figure no server can mean, that the tick cannot do without; the text names it."""


def plausible(value: float, upper: float = MAX_COUNT) -> bool:
    """0 <= value <= upper: false for NaN and the infinities. Integers of any size are compared
    exactly (no conversion to float, which raises OverflowError beyond 1e308)."""
    return 0 <= value <= upper


def shown(value: object) -> str:
    """A number as a person reads it, cut short: ``1e+308``, ``-3``, ``11111111111111111111…``."""
    return safe_text(f"{value:g}" if isinstance(value, float) else value, 24)


def series_text(name: str, labels: Labels, value: float) -> str:
    """``vllm:num_requests_running{engine="0",model_name="m"} = -3``, printable and bounded."""
    label_text = ",".join(f'{label}="{text}"' for label, text in labels.items())
    series = safe_text(f"{name}{{{label_text}}}" if label_text else name, SERIES_SHOWN)
    return f"{series} = {shown(value)}"


def all_plausible(values: list[float], upper: float = MAX_COUNT) -> bool:
    """Every value plausible, in three C loops: a NaN or an infinity makes the sum non-finite."""
    return math.isfinite(sum(values)) and min(values) >= 0 and max(values) <= upper


def first_bad(name: str, series: Series, upper: float = MAX_COUNT) -> str | None:
    """The first series whose value is not plausible, as text; None when all are."""
    for labels, value in series:
        if not plausible(value, upper):
            return series_text(name, labels, value)
    return None
