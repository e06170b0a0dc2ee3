"""A histogram's bucket counts summed by upper bound, and what else is made from label sets alone.

Every engine of a multi-engine server writes the same buckets, so that a busy page holds a few
hundred bucket lines for two dozen bounds. Summed line by line (``sums_line_by_line``: a dict
lookup on the bound's text a line) they cost more than every other figure of the page together.
But the reader (``exposition.py``) hands out one shared, parsed label set for each distinct
label text, page after page, so that a histogram whose series have not changed has the very
same label sets in the same order: one C comparison of their identities finds that out, and
the layout found for them once (every engine with the same bounds in the same order, engine
after engine or bound after bound) lets the counts be added one engine at a time, as lists, in
C. Each sum is made in line order, as the line-by-line loop makes it: the same float, to the
bit. Any other layout is summed line by line. With every count in a sum, the sums also tell
in two short C loops that no count is over 2^53 (``Layout.surely_plausible``).

``by_label_sets`` keeps the layouts (and kinds.py the model names) for the label sets they
were made of, never for a value; it is bounded by the characters of the label sets it keeps
alive (``KEPT_CHARS``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from operator import add, itemgetter
from typing import Any, TypeVar

from tokentop.collectors.exposition import Labels, Series
from tokentop.model import MAX_COUNT

KEPT_CHARS = 1 << 20  # characters of the label sets kept alive (a few MiB); past it, all are dropped
_SET_CHARS = 64  # what one label set's own objects weigh, in characters, about
_LABELS, _LE = itemgetter(0), itemgetter("le")
_Made = TypeVar("_Made")
_Key = tuple[Callable[..., Any], Hashable, str, int, int]


class _Kept:
    """``by_label_sets``' entries: key -> (label sets, what was made of them, their characters)."""

    def __init__(self) -> None:
        self.entries: dict[_Key, tuple[list[Labels], Any, int]] = {}
        self.chars = 0
        self.lock = threading.Lock()  # pages are read on several threads at once

    def keep(self, key: _Key, labels: list[Labels], made: object) -> None:
        chars = sum(len(label) + len(value) + 8 for one in labels for label, value in one.items())
        chars += _SET_CHARS * len(labels)
        if chars > KEPT_CHARS:
            return
        with self.lock:
            replaced = self.entries.pop(key, None)
            self.chars -= replaced[2] if replaced is not None else 0
            if self.chars + chars > KEPT_CHARS:
                self.entries.clear()
                self.chars = 0
            self.entries[key] = (labels, made, chars)
            self.chars += chars


_kept = _Kept()


def by_label_sets(
    name: str, series: Series, make: Callable[[list[Labels], Any], _Made], argument: Hashable = None
) -> _Made:
    """``make(label sets, argument)`` for the label sets of ``series`` (not empty), samples of
    ``name``: made once, and again only when the page's label sets for ``name`` change."""
    labels = list(map(_LABELS, series))
    key = (make, argument, name, id(labels[0]), len(labels))  # the entry holds labels[0]: the id stays its own
    kept = _kept.entries.get(key)
    if kept is not None and kept[0] == labels:  # identities first, in C; contents where they differ
        made: _Made = kept[1]
        return made
    made = make(labels, argument)
    _kept.keep(key, labels, made)
    return made


def layout_of(name: str, series: Series) -> Layout | None:
    """How the bucket series ``series`` (samples of ``name``) lie; None: sum them line by line."""
    return by_label_sets(name, series, _layout_of)


@dataclass(frozen=True)
class Layout:
    """Every engine has ``bounds`` (distinct numbers, in this order): engine after engine, or
    bound after bound with the engines in the same order. Every series is in a bucket."""

    bounds: tuple[float, ...]
    rounds: int  # the engines
    engine_after_engine: bool

    def sums(self, counts: list[float]) -> dict[float, float]:
        """The counts (the series' values, in line order) summed by bound, as ``sums_line_by_line``."""
        width = len(self.bounds)
        if self.engine_after_engine:
            cuts = [counts[start : start + width] for start in range(0, len(counts), width)]
        else:
            cuts = [counts[turn :: self.rounds] for turn in range(self.rounds)]
        sums = [0.0] * width
        for cut in cuts:  # each sum from 0.0, in line order, as sums_line_by_line adds
            sums = list(map(add, sums, cut))
        return dict(zip(self.bounds, sums))

    def surely_plausible(self, counts: list[float], sums: dict[float, float]) -> bool:
        """Are all ``counts`` plausible (``sums``: what ``sums`` made of them)? One C loop over
        the counts and two over the sums: every count is in a sum, and a sum of counts >= 0
        added in order is never below one of them, so no sum over 2^53 means no count is.
        False: some may not be (or only a sum is over 2^53), which the counts themselves tell."""
        return min(counts) >= 0 and math.isfinite(sum(sums.values())) and max(sums.values()) <= MAX_COUNT


def _layout_of(labels: list[Labels], _: object) -> Layout | None:
    """The layout of these label sets; None (line by line) for a missing, odd, NaN or twice
    spelled bound ("1", "1.0") or any other layout."""
    try:
        texts = list(map(_LE, labels))
        distinct = list(dict.fromkeys(texts))
        if not all(isinstance(text, str) for text in distinct):
            return None
        bounds = tuple(map(float, distinct))
    except (KeyError, ValueError):
        return None
    if len(set(bounds)) < len(bounds) or any(map(math.isnan, bounds)):
        return None
    rounds, rest = divmod(len(texts), len(distinct))
    if rest:
        return None
    if texts == distinct * rounds:
        return Layout(bounds, rounds, engine_after_engine=True)
    if all(texts[turn::rounds] == distinct for turn in range(rounds)):
        return Layout(bounds, rounds, engine_after_engine=False)
    return None


def sums_line_by_line(series: Series, by_text: bool = True) -> dict[float, float]:
    """Counts summed by upper bound; a series without a numeric ``le`` is left out. Summed by
    the bound's text, a dict lookup a line, then made numbers once a bound; by number where two
    spellings name one bound ("1", "1.0"), so that each sum is made in the same order."""
    sums: dict[str | float | None, float] = {}
    for labels, count in series:
        bound = labels.get("le") if by_text else _bound(labels.get("le"))
        sums[bound] = sums.get(bound, 0.0) + count
    buckets: dict[float, float] = {}
    for bound, count in sums.items():
        upper = _bound(bound) if by_text else bound
        if isinstance(upper, float):
            if upper in buckets:
                return sums_line_by_line(series, by_text=False)
            buckets[upper] = count
    return buckets


def _bound(le: object) -> float | None:
    """A bucket's upper bound as a number; None when ``le`` is missing, not a number or NaN."""
    try:
        upper = float(le) if isinstance(le, str) else math.nan
    except ValueError:
        return None
    return None if math.isnan(upper) else upper
