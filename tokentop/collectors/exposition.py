"""A small reader of the Prometheus text format that reads only the samples it is asked for.

The official ``prometheus_client`` parser builds every family of a page: 16-45 ms for a
100-280 KiB vLLM page, every second. tokentop needs about twenty sample names, so this reader
lets one compiled regular expression find their lines in C: ``"\\n"`` + the wanted names as a
tree of their shared prefixes, then every next line that starts with the same name (a
back-reference), so that a family's block of lines is found as one *run*. A line of a family
nobody asked for is given up after its first few characters and never becomes a Python object;
that one pass over the page is most of what a read costs (about 0.1 ms for 128 KiB). A run is
cut into lines with one ``str.split`` on ``"\\n" + name``, and the usual line (``{labels}
value``) is cut at its last blank: its labels are looked up in a cache of parsed label sets,
its value in the page's value texts (zeros and the top buckets of histograms repeat). Any
other line goes through the full grammar, so both ways give the same numbers. A run whose
lines have the label texts they had on a page read before is read by its *skeleton*: one
more C pass cuts each line at its last blank, the texts before the blanks joined (the name and
label texts of every line, no value) give the labels of its lines in one dict lookup
(``_Skeletons``), and only the values are read. Skeletons are kept for label texts, never for
a value: a busy page, whose values all change each second, is read by them
as fast as a still one. Parsed labels are shared read-only mappings, the same objects page
after page (kinds.py and buckets.py find unchanged series by them), and the names of every
label set parsed go into one set that only grows (``PageSamples.label_names``): a reader
learns in one lookup that no series has some label. ``prometheus_client`` stays the test
oracle (tests/test_exposition.py); tests/test_exposition_pages.py checks generated hostile
pages, and pages of one structure read again with new values, against a plain line-by-line
reading of the grammar.

A server can also attack the reader, so what one page costs is bounded: the label cache by an
estimate of its bytes, and so are the skeletons (a page of fresh 120 KB label values
each second must not pile up), and the lines parsed by ``MAX_SAMPLE_LINES`` (a page of 110,000
series took most of a core).

Rules, all chosen so that a bad or cut page never yields a wrong number:

- A last line without a newline (a page cut short) is dropped, whatever it holds.
- A first line has no newline before it and is read all the same.
- The lines of a name are found wherever they are: a page that interleaves families reads the
  same as one that groups them.
- Lines that do not parse are skipped; the rest of the page still counts.
- The same name with the same labels twice: the last one wins and the name is reported in
  ``PageSamples.duplicates``.
- Values: floats, integers without ``.0``, ``NaN``/``+Inf``/``-Inf`` and the C library spellings
  ``nan``, ``-nan``, ``-nan(ind)`` (MSVC); a trailing timestamp is read and dropped.
- ``*_created`` companions and ``# HELP``/``# TYPE`` lines are never read unless asked for by name.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from types import MappingProxyType

Labels = Mapping[str, str]  # read-only: one parsed label set is shared by every page that has it
Series = list[tuple[Labels, float]]
_Key = frozenset[tuple[str, str]]
_Parsed = tuple[_Key, Labels]  # (series key, labels)
_ByKey = dict[str, dict[_Key, tuple[Labels, float]]]  # name -> series key -> sample

MAX_SAMPLE_LINES = 10_000
"""Lines of the wanted names read from one page at most: a real server writes a few hundred."""
LABEL_CACHE_BYTES = 16 << 20
LABEL_NAMES_KEPT = 1024  # label names the reader remembers having parsed; past it, none
_CACHED_LABEL_CHARS = 1024  # longer label sets (no real server writes one) are parsed, not kept
_ENTRY_BYTES = 1024  # the dict, frozenset, tuples and strings of one short entry, about
SKELETON_BYTES = 16 << 20
_SKELETON_LINE_BYTES = 320  # a line's label set kept alive (mapping, dict, strings) and its slot, about


class TooManySamples(ValueError):
    """The page holds more than ``MAX_SAMPLE_LINES`` lines of the wanted names."""


class _LabelCache(dict[str, "_Parsed | None"]):
    """Raw label text (``""`` or ``{...}``) -> parsed labels (None: not a label set), bounded
    by bytes.

    A dict, so that a hit costs one C lookup; ``size_bytes`` is an estimate (4 bytes a
    character, the widest ``str``, plus the entry's objects) and the whole cache is dropped
    when it would pass ``LABEL_CACHE_BYTES``: the next page fills it again in a millisecond.

    ``names`` is every label name parsed so far, kept or not (None past ``LABEL_NAMES_KEPT``):
    it only grows, so that it holds the names of every page read before it was looked at, and
    a reader of the samples learns that no series has a label in one lookup.
    """

    def __init__(self) -> None:
        super().__init__()
        self.size_bytes = 0
        self.names: frozenset[str] | None = frozenset()
        self._names_lock = threading.Lock()  # pages are read on several threads at once

    def note_names(self, labels: dict[str, str]) -> None:
        if self.names is None or self.names.issuperset(labels):
            return
        with self._names_lock:
            if self.names is not None:
                grown = self.names.union(labels)
                self.names = grown if len(grown) <= LABEL_NAMES_KEPT else None

    def keep(self, raw: str, parsed: _Parsed | None) -> None:
        if len(raw) > _CACHED_LABEL_CHARS:
            return
        cost = _ENTRY_BYTES + 4 * len(raw)
        if self.size_bytes + cost > LABEL_CACHE_BYTES:
            self.clear()
        self[raw] = parsed
        self.size_bytes += cost

    def clear(self) -> None:
        super().clear()
        self.size_bytes = 0


_label_cache = _LabelCache()


class _Skeletons(dict[str, list[Labels]]):
    """A run's *skeleton* (its text with each line's value cut off: ``"\\n"``, the name and
    the label text of every line) -> the labels of its lines, in order. Made of names and label
    texts only, never of a value: a page of new values each second is read by them as one of
    the same values. Bounded by an estimate of their bytes (the skeleton's characters, 4 bytes
    each as in the widest ``str``, and per line the label set it keeps alive, even once the
    label cache has dropped it): past ``SKELETON_BYTES`` all are dropped (a page of fresh label
    texts every second must not pile up). Only a new skeleton takes the lock: pages are read
    on several threads at once."""

    def __init__(self) -> None:
        super().__init__()
        self.size_bytes = 0
        self._lock = threading.Lock()

    def made(self, skeleton: str, name: str, value_count: int) -> list[Labels] | None:
        """The labels of the lines of ``skeleton`` (a run of ``name`` that had ``value_count``
        values), kept; None unless each line had a value, its label text is a parsed label set
        (``_label_cache``) and no two are the same series."""
        raw_labels = skeleton.split("\n" + name)
        del raw_labels[0]  # the "" before the first line
        if len(raw_labels) != value_count:
            return None
        cached = _label_cache.get
        labels, keys = [], set()
        for raw in raw_labels:
            parsed = cached(raw)
            if parsed is None:
                return None
            keys.add(parsed[0])
            labels.append(parsed[1])
        cost = 4 * len(skeleton) + _SKELETON_LINE_BYTES * value_count
        if len(keys) < value_count or cost > SKELETON_BYTES:
            return None
        with self._lock:
            if self.size_bytes + cost > SKELETON_BYTES:
                self.clear()
            self[skeleton] = labels
            self.size_bytes += cost
        return labels

    def clear(self) -> None:
        super().clear()
        self.size_bytes = 0


_skeletons = _Skeletons()
# Possessive repeats (``*+``; from Python 3.11.5, which fixed gh-100061 and gh-106052) match
# what the greedy ones match where nothing after them could match with less, as in the patterns
# below, and keep no state to backtrack to: the engine runs a third fewer instructions on a page
# of histograms.
_POSSESSIVE = "+" if sys.version_info >= (3, 11, 5) else ""
# A line's last blank and what follows it to the line's end: its value (by ``split``, the text
# before it comes first). A line without a blank has no match: it stays in the text before.
_AT_LAST_BLANK = re.compile(rf" ([^ \n]*{_POSSESSIVE})$", re.MULTILINE)
_ODD: _Parsed = (frozenset(), MappingProxyType({}))  # told apart by identity: not the usual shape of a line

# One ``name="value"`` pair, whitespace allowed around the tokens, value with escapes.
_LABEL_PAIR = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*')
_LABEL_ESCAPE = re.compile(r'\\([\\n"])')
_UNESCAPED = {"\\": "\\", "n": "\n", '"': '"'}
# What follows the name on a line, by the full grammar: (labels, value, timestamp).
_LINE_REST = re.compile(
    r"(?:\{([^\n]*)\}[ \t]*|[ \t]+)([^ \t\r\n]+)(?:[ \t]+([^ \t\r\n]+))?[ \t]*\r?\Z",
)


@dataclass
class PageSamples:
    """Samples by name, in page order: ``series["vllm:prompt_tokens_total"] == [(labels, value)]``."""

    series: dict[str, Series] = field(default_factory=dict)
    duplicates: set[str] = field(default_factory=set)  # names whose series appeared twice
    # A superset of the label names of ``series`` (every name the reader had parsed when it
    # read the page): a label missing from it is on no series. None: not known.
    label_names: frozenset[str] | None = field(default=None, compare=False, repr=False)

    def get(self, name: str) -> Series:
        return self.series.get(name, [])

    def __contains__(self, name: object) -> bool:
        return name in self.series


def read_samples(text: str, names: Iterable[str]) -> PageSamples:
    """Read the samples called exactly ``names`` from a Prometheus text page.

    Raises ``TooManySamples`` past ``MAX_SAMPLE_LINES`` lines of those names, having parsed
    no more of them than that.
    """
    wanted, runs = _pattern_of(names if isinstance(names, tuple) else tuple(names))
    if runs is None:
        return PageSamples()
    found: dict[str, Series] = {}  # in page order; a name read line by line is in ``by_key``
    by_key: _ByKey = {}
    duplicates: set[str] = set()
    values: dict[str, float] = {}
    budget = MAX_SAMPLE_LINES
    found_runs: Iterable[re.Match[str]] = runs.finditer(text, 0, text.rfind("\n") + 1)  # complete lines only
    if text.startswith(wanted):  # the first line has no "\n" before it: read on its own
        found_runs = chain(runs.finditer("\n" + text[: text.find("\n") + 1]), found_runs)
    for run in found_runs:
        name, run_text = run[1], run[0]
        if name not in found and (samples := _by_skeleton(name, run_text, budget)) is not None:
            found[name] = samples
            budget -= len(samples)
            continue
        lines = run_text.split("\n" + name)  # what follows the name on each line
        del lines[0]  # the "" before the first "\n" + name
        budget -= len(lines)
        if budget < 0:
            raise TooManySamples(
                f"page has over {MAX_SAMPLE_LINES:,} series of the figures tokentop reads; "
                f"it reads at most {MAX_SAMPLE_LINES:,}"
            )
        _read_lines(name, lines, found, by_key, duplicates, values)
    for name, series in by_key.items():  # in place: the names keep their order
        if series:
            found[name] = list(series.values())
        else:
            del found[name]
    return PageSamples(found, duplicates, _label_cache.names)  # the names after the page's


def _read_lines(
    name: str,
    lines: list[str],
    found: dict[str, Series],
    by_key: _ByKey,
    duplicates: set[str],
    values: dict[str, float],
) -> None:
    """Add the samples of one run of lines of ``name`` to ``by_key`` (``lines``: what follows
    the name on each line), the way every line is read when its run's skeleton does not read it.

    A usual line is ``{labels} value`` after the name: cut at its last blank, the labels are
    looked up in the label cache and the value in ``values``, the page's value text ->
    number (zeros and the top buckets of histograms repeat, and ``float()`` costs more than a
    dict lookup). Any other line (labels not parsed yet, a timestamp, tabs, two blanks) goes
    through ``_unusual_line``.
    """
    series = by_key.get(name)
    if series is None:  # the name's first run read line by line, or after one read by its skeleton
        earlier = found.get(name) or []
        series = by_key[name] = {frozenset(labels.items()): (labels, value) for labels, value in earlier}
        found[name] = earlier  # a place in page order, filled at the end of the page
    cached, known_value = _label_cache.get, values.get
    for rest in lines:
        raw_labels, _, raw_value = rest.rpartition(" ")
        value = known_value(raw_value)
        # float() takes "1_000", and tabs and carriage returns around a number, which the
        # grammar reads as separators (one carriage return may end a line): the full grammar
        # reads those lines
        if value is None and not (
            "_" in raw_value or "\t" in raw_value or ("\r" in raw_value and "\r" in raw_value[:-1])
        ):
            try:
                value = values[raw_value] = float(raw_value)
            except ValueError:
                value = None  # the full grammar has the last word
        if value is None or (parsed := cached(raw_labels)) is None:
            sample = _unusual_line(rest, raw_labels, value)
            if sample is None:
                continue
            parsed, value = sample
        key, labels = parsed
        if key in series:
            duplicates.add(name)
            del series[key]  # re-inserted below: the kept sample sits where the last one was
        series[key] = (labels, value)


def _by_skeleton(name: str, run: str, budget: int) -> Series | None:
    """The samples of a run of lines of ``name`` read by the skeleton of its label texts; None:
    ``_read_lines`` reads it (as it does any run of more than ``budget`` lines).

    One C pass cuts each line at its last blank (``_AT_LAST_BLANK``): the texts before the
    blanks, joined, are the run's *skeleton*, the name and label texts of every line; those
    after them are the values. A run whose skeleton is known (``_Skeletons``) and has a value
    for each of its lines is those lines as ``_read_lines`` reads them, ``{labels} value``
    with labels parsed and no series twice: its values are all that is read, by ``float()``,
    when none holds what the grammar reads otherwise (``_``, a tab, a carriage return).
    """
    pieces = _AT_LAST_BLANK.split(run)  # skeleton, value, skeleton, value, ..., "" (the end)
    raw_values = pieces[1::2]
    skeleton = "".join(pieces[0::2])
    labels = _skeletons.get(skeleton)
    if labels is None and (labels := _skeletons.made(skeleton, name, len(raw_values))) is None:
        return None
    joined = "".join(raw_values)
    if len(labels) != len(raw_values) or len(labels) > budget or "_" in joined or "\t" in joined or "\r" in joined:
        return None  # a line without a blank, or values the full grammar reads (as it reads "1_0")
    try:
        return list(zip(labels, map(float, raw_values)))
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _pattern_of(names: tuple[str, ...]) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
    """The distinct names, in order, and their pattern (None: no names), made once for the
    tuple of names a collector asks for on every tick."""
    wanted = tuple(dict.fromkeys(names))
    return wanted, _runs_of(wanted) if wanted else None


def _runs_of(names: tuple[str, ...]) -> re.Pattern[str]:
    """Runs of lines of ``names``: ``"\\n"``, a name, a label brace or a blank, the rest of the
    line, and each next line that starts with the same name (at most ``MAX_SAMPLE_LINES``:
    the limit is checked between runs). Group 1 is the name.

    The names are one alternation shaped as a tree of their shared prefixes (``vllm:(?:num_
    requests_(?:running|waiting)|...)``), so a line of a family nobody asked for is given up
    after a few characters, without trying each name in turn. The rest of a line and the
    repeat of lines are possessive where Python has it (``_POSSESSIVE``).
    """
    tree = _alternation(sorted(set(names)))
    line_end = rf"[{{ \t][^\n]*{_POSSESSIVE}"
    return re.compile(rf"\n({tree}){line_end}(?:\n\1{line_end}){{0,{MAX_SAMPLE_LINES}}}{_POSSESSIVE}")


def _unusual_line(after_name: str, raw_labels: str, value: float | None) -> tuple[_Parsed, float] | None:
    """(labels, value) of a line that the label cache and the page's values do not read alone
    (``raw_labels`` and ``value``: the line cut at its last blank), or None if it is not a
    sample line: labels to parse, labels known not to be a label set, or a line off the usual
    shape (a timestamp, tabs, two blanks...) that the full grammar reads."""
    if value is not None:
        if raw_labels in _label_cache:  # kept as None: not a label set
            return None
        parsed = _labels_of(raw_labels)
        if parsed is not _ODD:
            return None if parsed is None else (parsed, value)
    match = _LINE_REST.match(after_name)
    if match is None:
        return None
    raw_labels, raw_value, raw_timestamp = match.groups()
    value = _parse_value(raw_value)
    if value is None or (raw_timestamp is not None and _parse_value(raw_timestamp) is None):
        return None
    parsed = _labels_of("" if raw_labels is None else "{" + raw_labels + "}")
    return None if parsed is None else (parsed, value)


def _alternation(names: list[str]) -> str:
    """Distinct ``names`` (``""`` among them: the end of a shorter name) as a prefix tree;
    the regular expression tries a longer name before a shorter one it starts with."""
    if len(names) == 1:
        return re.escape(names[0])
    by_first: dict[str, list[str]] = {}
    for name in names:
        if name:
            by_first.setdefault(name[0], []).append(name[1:])
    branches = []
    for first, rests in by_first.items():
        shared = _shared_prefix(rests)
        rest = [r[len(shared) :] for r in rests]
        branches.append(re.escape(first + shared) + (_alternation(rest) if len(rest) > 1 else ""))
    tree = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{tree})?" if "" in names else tree


def _shared_prefix(words: list[str]) -> str:
    """The characters every word starts with (those of the first and last in order)."""
    low, high = min(words), max(words)
    size = next((i for i, (a, b) in enumerate(zip(low, high)) if a != b), min(len(low), len(high)))
    return low[:size]


def _labels_of(raw: str) -> _Parsed | None:
    """Parse and cache ``raw``, the text before a line's value: ``""`` or ``{labels}`` (None:
    not a label set); ``_ODD`` (not kept) for any other text, which only the full grammar can
    read."""
    if raw and not (raw[0] == "{" and raw[-1] == "}"):
        return _ODD
    labels = _parse_labels(raw[1:-1]) if raw else {}
    parsed = None
    if labels is not None:
        _label_cache.note_names(labels)
        parsed = (frozenset(labels.items()), MappingProxyType(labels))
    _label_cache.keep(raw, parsed)
    return parsed


def _parse_labels(raw: str) -> dict[str, str] | None:
    """``a="1",b="x\\"y"`` -> dict; None unless the whole text is label pairs."""
    labels: dict[str, str] = {}
    pos, end = 0, len(raw)
    while True:
        match = _LABEL_PAIR.match(raw, pos)
        if match is None:  # the end, after the last pair and maybe a trailing comma
            return labels if not raw[pos:].strip(" \t") else None
        label_name, value = match.groups()
        if label_name in labels:
            return None
        labels[label_name] = _LABEL_ESCAPE.sub(_unescape, value) if "\\" in value else value
        pos = match.end()
        if pos == end:
            return labels
        if raw[pos] != ",":
            return None
        pos += 1


def _unescape(match: re.Match[str]) -> str:
    return _UNESCAPED[match.group(1)]


def _parse_value(token: str) -> float | None:
    if "_" in token:  # float() accepts "1_000"; the exposition format does not
        return None
    try:
        return float(token)
    except ValueError:
        bare = token.lower().lstrip("+-")
        if bare.startswith("nan(") and bare.endswith(")"):  # C library spellings: -nan(ind)
            return math.nan
        return None
