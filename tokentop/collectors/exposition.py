"""A small reader of the Prometheus text format that reads only the samples it is asked for.

The official ``prometheus_client`` parser builds every family of a page: 16-45 ms for a
100-280 KiB vLLM page, every second. tokentop needs about twenty sample names, so this reader
lets one compiled regular expression (``"\\n"`` + the wanted names as a tree of their shared
prefixes) pick their lines out of the page in C: a line of a family nobody asked for is left
after its first few characters, never turned into Python objects, and only the wanted lines
are parsed. Label sets repeat from one scrape to the next, so parsed labels are cached by their
raw text. ``prometheus_client`` stays the test oracle (tests/test_exposition.py).

A server can also attack the reader, so what one page costs is bounded: the label cache by an
estimate of its bytes (a page of fresh 120 KB label values each second must not pile up), and
the lines read by ``MAX_SAMPLE_LINES`` (a page of 110,000 series took most of a core).

Rules, all chosen so that a bad or cut page never yields a wrong number:

- A last line without a newline (a page cut short) is dropped, whatever it holds.
- Lines that do not parse are skipped; the rest of the page still counts.
- The same name with the same labels twice: the last one wins and the name is reported in
  ``PageSamples.duplicates``.
- Values: floats, integers without ``.0``, ``NaN``/``+Inf``/``-Inf`` and the C library spellings
  ``nan``, ``-nan``, ``-nan(ind)`` (MSVC); a trailing timestamp is read and dropped.
- ``*_created`` companions and ``# HELP``/``# TYPE`` lines are never read unless asked for by name.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

Labels = dict[str, str]
Series = list[tuple[Labels, float]]
_Parsed = tuple[frozenset[tuple[str, str]], Labels]  # (series key, labels)

MAX_SAMPLE_LINES = 10_000
"""Lines of the wanted names read from one page at most: a real server writes a few hundred."""
LABEL_CACHE_BYTES = 16 << 20
_CACHED_LABEL_CHARS = 1024  # longer label sets (no real server writes one) are parsed, not kept
_ENTRY_BYTES = 1024  # the dict, frozenset, tuples and strings of one short entry, about


class TooManySamples(ValueError):
    """The page holds more than ``MAX_SAMPLE_LINES`` lines of the wanted names."""


class _LabelCache(dict[str, _Parsed | None]):
    """Raw label text -> parsed labels (None: not a valid label set), bounded by bytes.

    A dict, so that a hit costs one C lookup; ``size_bytes`` is an estimate (4 bytes a
    character, the widest ``str``, plus the entry's objects) and the whole cache is dropped
    when it would pass ``LABEL_CACHE_BYTES``: the next page fills it again in a millisecond.
    """

    def __init__(self) -> None:
        super().__init__()
        self.size_bytes = 0

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
_MISSING: _Parsed = (frozenset(), {})  # a cache miss, told apart by identity

# One ``name="value"`` pair, whitespace allowed around the tokens, value with escapes.
_LABEL_PAIR = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*')
_LABEL_ESCAPE = re.compile(r'\\([\\n"])')
_UNESCAPED = {"\\": "\\", "n": "\n", '"': '"'}


@dataclass
class PageSamples:
    """Samples by name, in page order: ``series["vllm:prompt_tokens_total"] == [(labels, value)]``."""

    series: dict[str, Series] = field(default_factory=dict)
    duplicates: set[str] = field(default_factory=set)  # names whose series appeared twice

    def get(self, name: str) -> Series:
        return self.series.get(name, [])

    def __contains__(self, name: object) -> bool:
        return name in self.series


def read_samples(text: str, names: Iterable[str]) -> PageSamples:
    """Read the samples called exactly ``names`` from a Prometheus text page.

    Raises ``TooManySamples`` past ``MAX_SAMPLE_LINES`` lines of those names, having read no
    more of the page than that.
    """
    result = PageSamples()
    wanted = tuple(dict.fromkeys(names))
    if not wanted:
        return result
    found: dict[str, dict[frozenset[tuple[str, str]], tuple[Labels, float]]] = {}
    cached = _label_cache.get
    for name, raw_labels, raw_value, raw_timestamp in _sample_lines(text, wanted):
        try:  # the usual value, "12" or "0.25", in one C call; the rest by the rules
            value = float(raw_value) if "_" not in raw_value else None
        except ValueError:
            value = _parse_value(raw_value)
        if value is None or (raw_timestamp and _parse_value(raw_timestamp) is None):
            continue
        parsed = cached(raw_labels, _MISSING)
        if parsed is _MISSING:
            parsed = _labels_of(raw_labels)
        if parsed is None:
            continue
        key, labels = parsed
        series = found.get(name)
        if series is None:
            series = found[name] = {}
        elif key in series:
            result.duplicates.add(name)
            del series[key]  # re-inserted below: the kept sample sits where the last one was
        series[key] = (dict(labels), value)
    result.series = {name: list(series.values()) for name, series in found.items()}
    return result


def _sample_lines(text: str, wanted: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    """(name, labels, value, timestamp) of each line of ``wanted``, in page order.

    A page too short to hold ``MAX_SAMPLE_LINES`` of them (every page a real server writes) is
    read in one C call; a longer one line by line, so that reading stops at the limit.
    """
    lines = _lines_of(wanted)
    first_line = text[: text.find("\n") + 1] if text.startswith(wanted) else ""  # no "\n" before it
    if len(text) <= MAX_SAMPLE_LINES * (min(map(len, wanted)) + 3):  # "\n", name, " ", a digit
        matches = lines.findall(text)
        matches[:0] = lines.findall("\n" + first_line) if first_line else []
        return matches
    found = lines.finditer(text)
    if first_line:
        found = itertools.chain(lines.finditer("\n" + first_line), found)
    return _at_most(MAX_SAMPLE_LINES, found)


def _at_most(limit: int, matches: Iterator[re.Match[str]]) -> Iterator[tuple[str, ...]]:
    for count, match in enumerate(matches, 1):
        if count > limit:
            raise TooManySamples(
                f"page has over {limit:,} series of the figures tokentop reads; it reads at most {limit:,}"
            )
        yield match.groups("")


@functools.lru_cache(maxsize=64)
def _lines_of(names: tuple[str, ...]) -> re.Pattern[str]:
    """Whole, newline-terminated sample lines of ``names``: (name, labels, value, timestamp).

    The names are one alternation shaped as a tree of their shared prefixes (``vllm:(?:num_
    requests_(?:running|waiting)|...)``), so a line of a family nobody asked for is given up
    after a few characters, without trying each name in turn: a third less time on a vLLM page,
    and names from other families (``process_start_time_seconds``) cost next to nothing more.
    The labels group runs to the last ``}`` on the line (values may hold ``}``); the label
    parser checks it. The trailing ``(?=\\n)`` drops a last line cut short.
    """
    return re.compile(
        rf"\n({_alternation(sorted(set(names)))})(?:\{{([^\n]*)\}}[ \t]*|[ \t]+)"
        r"([^ \t\r\n]+)(?:[ \t]+([^ \t\r\n]+))?[ \t]*\r?(?=\n)"
    )


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
    try:
        return _label_cache[raw]
    except KeyError:
        pass
    labels = _parse_labels(raw)
    parsed = None if labels is None else (frozenset(labels.items()), labels)
    _label_cache.keep(raw, parsed)
    return parsed


def _parse_labels(raw: str) -> Labels | None:
    """``a="1",b="x\\"y"`` -> dict; None unless the whole text is label pairs."""
    labels: Labels = {}
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
