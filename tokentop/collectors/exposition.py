"""A small reader of the Prometheus text format that reads only the samples it is asked for.

The official ``prometheus_client`` parser builds every family of a page: 16-45 ms for a
100-280 KiB vLLM page, every second. tokentop needs about twenty sample names, so this reader
lets one compiled regular expression (``"\\n"`` + an alternation of the wanted names) pick
their lines out of the page in C, and parses only those. Label sets repeat from one scrape to
the next, so parsed labels are cached by their raw text. ``prometheus_client`` stays the test
oracle (tests/test_exposition.py).

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
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

Labels = dict[str, str]
Series = list[tuple[Labels, float]]

_LABEL_CACHE_MAX = 50_000
# raw label text -> (series key, labels), or None when the text is not a valid label set
_label_cache: dict[str, tuple[frozenset[tuple[str, str]], Labels] | None] = {}

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
    """Read the samples called exactly ``names`` from a Prometheus text page."""
    result = PageSamples()
    wanted = tuple(dict.fromkeys(names))
    if not wanted:
        return result
    lines = _lines_of(wanted)
    found: dict[str, dict[frozenset[tuple[str, str]], tuple[Labels, float]]] = {}
    matches = lines.findall(text)
    if text.startswith(wanted):  # the first line has no "\n" before it
        first_line = text[: text.find("\n") + 1]  # empty when the page is one cut line
        matches[:0] = lines.findall("\n" + first_line) if first_line else []
    for name, raw_labels, raw_value, raw_timestamp in matches:
        value = _parse_value(raw_value)
        if value is None or (raw_timestamp and _parse_value(raw_timestamp) is None):
            continue
        parsed = _labels_of(raw_labels)
        if parsed is None:
            continue
        key, labels = parsed
        series = found.setdefault(name, {})
        if key in series:
            result.duplicates.add(name)
            del series[key]  # re-inserted below: the kept sample sits where the last one was
        series[key] = (dict(labels), value)
    result.series = {name: list(series.values()) for name, series in found.items()}
    return result


@functools.lru_cache(maxsize=64)
def _lines_of(names: tuple[str, ...]) -> re.Pattern[str]:
    """Whole, newline-terminated sample lines of ``names``: (name, labels, value, timestamp).

    The labels group runs to the last ``}`` on the line (values may hold ``}``); the label
    parser checks it. The trailing ``(?=\\n)`` drops a last line cut short.
    """
    alternation = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(
        rf"\n({alternation})(?:\{{([^\n]*)\}}[ \t]*|[ \t]+)"
        r"([^ \t\r\n]+)(?:[ \t]+([^ \t\r\n]+))?[ \t]*\r?(?=\n)"
    )


def _labels_of(raw: str) -> tuple[frozenset[tuple[str, str]], Labels] | None:
    try:
        return _label_cache[raw]
    except KeyError:
        pass
    labels = _parse_labels(raw)
    parsed = None if labels is None else (frozenset(labels.items()), labels)
    if len(_label_cache) >= _LABEL_CACHE_MAX:
        _label_cache.clear()
    _label_cache[raw] = parsed
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
