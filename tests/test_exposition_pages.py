"""The reader against the slow, obvious one on hostile and interleaved pages.

``read_samples`` finds runs of lines in C and reads the usual line on a short cut; here the
same grammar is read line by line the plain way (``reference``), and generated pages, full
of what servers get wrong, must read the same: families interleaved, names that begin other
names, CRLF, tabs, timestamps, escapes, braces in label values, repeated series, garbage and
a cut last line. prometheus_client, the oracle of test_exposition.py, reads the interleaved
pages that are well formed.
"""

from __future__ import annotations

import math
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_exposition import mine, oracle, same

from tokentop.collectors import exposition
from tokentop.collectors.exposition import MAX_SAMPLE_LINES, PageSamples, TooManySamples, read_samples

# --- the reference: the grammar, line by line ---------------------------------------------

_PAIR = r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*'
_LABEL_LIST = re.compile(rf"(?:{_PAIR},)*(?:{_PAIR})?[ \t]*")
_PAIRS = re.compile(_PAIR)
_REST = re.compile(r"(?:\{(.*)\}[ \t]*|[ \t]+)([^ \t\r\n]+)(?:[ \t]+([^ \t\r\n]+))?[ \t]*\r?", re.DOTALL)
_ESCAPES = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}


def reference_labels(raw: str) -> dict[str, str] | None:
    if _LABEL_LIST.fullmatch(raw) is None:
        return None
    labels: dict[str, str] = {}
    for name, value in _PAIRS.findall(raw):
        if name in labels:
            return None
        labels[name] = re.sub(r'\\[\\n"]', lambda m: _ESCAPES[m.group()], value)
    return labels


def reference_value(token: str) -> float | None:
    if "_" in token:
        return None
    try:
        return float(token)
    except ValueError:
        bare = token.lower().lstrip("+-")
        return math.nan if bare.startswith("nan(") and bare.endswith(")") else None


def reference(text: str, names: list[str]) -> PageSamples:
    """Every complete line, in order: the wanted name, a ``{``, blank or tab, then the rest by
    the grammar; the last of a repeated series kept where it stands."""
    found: dict[str, dict[frozenset, tuple[dict[str, str], float]]] = {}
    duplicates = set()
    for line in text.split("\n")[:-1]:  # after the last "\n": a cut line, or nothing
        name = next((n for n in names if line.startswith(n) and line[len(n) : len(n) + 1] in ("{", " ", "\t")), None)
        match = _REST.fullmatch(line, len(name)) if name is not None else None
        if name is None or match is None:
            continue
        raw_labels, raw_value, raw_timestamp = match.groups()
        labels = reference_labels(raw_labels or "")
        value = reference_value(raw_value)
        if labels is None or value is None or (raw_timestamp and reference_value(raw_timestamp) is None):
            continue
        series = found.setdefault(name, {})
        key = frozenset(labels.items())
        if key in series:
            duplicates.add(name)
            del series[key]
        series[key] = (labels, value)
    return PageSamples({name: list(series.values()) for name, series in found.items()}, duplicates)


def readable(samples: PageSamples) -> tuple[dict[str, list[tuple[dict[str, str], str]]], set[str]]:
    """Series as comparable data, in order; a number as its repr, so that NaN equals NaN."""
    series = {name: [(dict(labels), repr(value)) for labels, value in found] for name, found in samples.series.items()}
    return series, samples.duplicates


# --- hostile pages ----------------------------------------------------------------------------

NAMES = ["a", "a_total", "a_total_created", "ab", "b:c", "b:c_bucket", "b:c_sum", "vllm:x"]
label_values = st.sampled_from(["1", "2", "a b", 'q\\"', "}", "x}y{", "\\\\", "\\n", "", "é", "\\t", "="])
label_pair = st.builds(
    lambda name, value, space: f'{space}{name}{space}={space}"{value}"{space}',
    st.sampled_from(["x", "le", "y", "x"]),
    label_values,
    st.sampled_from(["", "", "", " ", "\t"]),
)
label_parts = st.one_of(
    st.just(""),
    st.just("{}"),
    st.builds(
        lambda pairs, comma: "{" + ",".join(pairs) + comma + "}",
        st.lists(label_pair, max_size=3),
        st.sampled_from(["", "", ","]),
    ),
)
numbers = st.sampled_from(["1", "-2", "3.5", "1e3", "0.0", "NaN", "nan", "+Inf", "-Inf", "-nan(ind)", "12345678901"])
ODDITIES = {  # one thing wrong (or unusual) at a time, in a line otherwise well formed
    "labels": st.sampled_from(["{a=1}", '{a="1"', '{a="1"}}', "{,}", '{a="1"} {b="2"}', '{a="1",a="2"}']),
    "separator": st.sampled_from(["  ", "\t", "", " \t"]),
    "value": st.sampled_from(["1_000", "x", "5}", "", "0x10", "1.5e", "+-1", "½", "inf", "nan(snan)"])
    | st.sampled_from(["\x0b5", "5\x0b", "5\t\x0b", "\x0b\t5", "\xa05", "5\x0b\r", "\r5"]),  # float() strips these
    "timestamp": st.sampled_from([" 1700000000000", "\t17", " x", " 1_7", "  17", " 17 18"]),
    "end": st.sampled_from([" ", "\t", "\r", " \r", "\r\r", "\r ", "\t\r"]),
}


@st.composite
def sample_lines(draw: st.DrawFn, names: list[str] = NAMES) -> str:
    parts = {
        "labels": label_parts,
        "separator": st.just(" "),
        "value": numbers,
        "timestamp": st.just(""),
        "end": st.just(""),
    }
    odd = draw(st.sampled_from([None, None, None, *ODDITIES]))
    if odd is not None:
        parts[odd] = ODDITIES[odd]
    return draw(st.sampled_from(names)) + "".join(draw(part) for part in parts.values())


other_lines = st.sampled_from(
    ["", "#", "# HELP a a help", "# TYPE a_total counter", "}{", "a", "a_total", "\x01 junk", "\r"]
)


@st.composite
def hostile_pages(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A page of a few names (so that series repeat), in any order among other lines, and the
    names to read: some of those and some others."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    lines = draw(st.lists(st.one_of(sample_lines(names), sample_lines(names), other_lines), min_size=1, max_size=30))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    page = newline.join(lines) + newline
    page = page[: draw(st.sampled_from([len(page), len(page) - 1, len(page) * 2 // 3]))]
    wanted = draw(st.lists(st.sampled_from([*names, *names, *NAMES, "missing"]), min_size=1, max_size=4, unique=True))
    return page, wanted


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(hostile_pages())
def test_hostile_pages_read_like_the_line_by_line_reference(page_and_names: tuple[str, list[str]]) -> None:
    page, names = page_and_names
    assert readable(read_samples(page, names)) == readable(reference(page, names))


def name_of(line: str) -> str:
    return next((name for name in sorted(NAMES, key=len, reverse=True) if line.startswith(name)), "")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(sample_lines(), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_an_interleaved_page_reads_like_its_lines_grouped_by_name(lines: list[str], rng: random.Random) -> None:
    """The same lines, each family's together or scattered among the others (each family's in
    the same order): the same series, in the same order, the same repeats."""
    grouped = sorted(lines, key=name_of)
    by_name = {
        name: [line for line in grouped if name_of(line) == name] for name in dict.fromkeys(map(name_of, grouped))
    }
    interleaved = _interleave(list(by_name.values()), rng)
    assert readable(read_samples("\n".join(interleaved) + "\n", NAMES)) == readable(
        read_samples("\n".join(grouped) + "\n", NAMES)
    )


def _interleave(families: list[list[str]], rng: random.Random) -> list[str]:
    """The families' lines merged at random, each family's lines kept in their order."""
    queues = [list(reversed(family)) for family in families if family]
    merged = []
    while queues:
        queue = rng.choice(queues)
        merged.append(queue.pop())
        if not queue:
            queues.remove(queue)
    return merged


# --- interleaved, well-formed pages: prometheus_client agrees ---------------------------------

clean_values = st.sampled_from(["1", "-2", "3.5", "1e3", "0", "NaN", "+Inf", "-Inf", "17.25"])


@st.composite
def interleaved_pages(draw: st.DrawFn) -> str:
    lines = []
    for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=8)):
        labels = draw(
            st.dictionaries(st.sampled_from(["x", "le", "y"]), st.sampled_from(["1", "2", "a b", "}"]), max_size=2)
        )
        inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
        lines.append(f"{name}{{{inner}}} {draw(clean_values)}" if labels else f"{name} {draw(clean_values)}")
    draw(st.randoms(use_true_random=False)).shuffle(lines)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + newline


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(interleaved_pages())
def test_interleaved_clean_pages_read_like_prometheus_client(page: str) -> None:
    expected = oracle(page)
    assert same(mine(page, expected), expected)


# --- hand-made cases ----------------------------------------------------------------------------


def test_a_family_split_in_two_places_gives_every_line() -> None:
    page = 'x{e="0"} 1\ny 9\nx{e="1"} 2\n# HELP x again\nx_total 3\nx{e="2"} 4\n'
    assert read_samples(page, ["x", "y"]).series == {
        "x": [({"e": "0"}, 1.0), ({"e": "1"}, 2.0), ({"e": "2"}, 4.0)],
        "y": [({}, 9.0)],
    }


def test_the_usual_shape_and_the_full_grammar_read_the_same_numbers() -> None:
    usual = 'm{a="1"} 5\nm{a="2"} 0.25\nm 7\n'
    odd = 'm{a="1"}\t5\t1700000000000\nm{ a = "2" } 0.25  \r\nm\t7\n'
    assert read_samples(usual, ["m"]).series == read_samples(odd, ["m"]).series


def test_values_next_to_tabs_and_carriage_returns_follow_the_grammar() -> None:
    """float() would take "\\r5" and "5\\r\\r"; the grammar reads \\r only at a line's end."""
    page = 'm{a="1"} \r5\nm{a="2"} 5\r\r\nm{a="3"} 5\r\nm{a="4"} 1_0\n'
    assert read_samples(page, ["m"]).series == {"m": [({"a": "3"}, 5.0)]}


def test_the_line_limit_counts_lines_of_every_run() -> None:
    half = MAX_SAMPLE_LINES // 2
    page = "".join(f'n{{i="{i}"}} 1\nother 2\n' for i in range(half)) + "".join(
        f'n{{j="{j}"}} 1\n' for j in range(half)
    )
    assert len(read_samples(page, ["n"]).get("n")) == MAX_SAMPLE_LINES
    with pytest.raises(TooManySamples):
        read_samples(page + "n 1\n", ["n"])


# --- the runs read by their skeleton, against the line-by-line loop -----------------------------


def line_by_line(page: str, names: list[str]) -> PageSamples:
    """``read_samples`` with no run read by a skeleton: every line through ``_read_lines``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exposition, "_by_skeleton", lambda name, run, budget: None)
        return read_samples(page, names)


@st.composite
def pages_of_one_structure(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Pages of the same lines, labels and order with new values on each (as a busy server's
    page, second after second), and the names to read."""
    lines = draw(st.lists(st.one_of(sample_lines(), sample_lines(), other_lines), min_size=1, max_size=30))
    shaped = [line.rpartition(" ")[0] if " " in line and line[:1] != "#" else None for line in lines]
    pages = []
    for _ in range(draw(st.integers(2, 4))):
        page = [line if head is None else f"{head} {draw(numbers)}" for line, head in zip(lines, shaped, strict=True)]
        pages.append("\n".join(page) + "\n")
    return pages, draw(st.lists(st.sampled_from([*NAMES, "missing"]), min_size=1, max_size=5, unique=True))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pages_of_one_structure())
def test_pages_of_one_structure_read_by_skeletons_as_line_by_line(pages_and_names: tuple[list[str], list[str]]) -> None:
    """The second and later pages of a structure are read by the runs' skeletons (values only):
    the same samples, floats, label sets, repeats and refusals as the line-by-line loop."""
    pages, names = pages_and_names
    for page in pages:
        try:
            expected: object = readable(line_by_line(page, names))
        except TooManySamples as refused:
            expected = repr(refused)
        try:
            got: object = readable(read_samples(page, names))
        except TooManySamples as refused:
            got = repr(refused)
        assert got == expected
        assert expected == readable(reference(page, names))


def test_a_busy_page_read_again_with_new_values_is_read_by_its_skeletons() -> None:
    """A page of usual lines: read once (labels parsed), then with new values it is read by
    skeletons alone, not a line through ``_read_lines``; the same samples as the plain loop."""
    rng = random.Random(7)

    def page() -> str:
        lines = [f'm{{engine="{e}",model="x y"}} {rng.random() * 100!r}' for e in range(5)]
        lines += [f'n_total{{engine="{e}",reason="{r}"}} {rng.randrange(99)}.0' for e in range(3) for r in "ab"]
        return "# HELP m a gauge\n" + "\n".join(lines) + "\nn_total 7\n"

    names = ["m", "n_total"]
    read_samples(page(), names)
    texts = [page() for _ in range(3)]
    expected = [readable(line_by_line(text, names)) for text in texts]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exposition, "_read_lines", None)  # any line read the plain way would fail
        assert [readable(read_samples(text, names)) for text in texts] == expected


def test_skeletons_are_bounded_by_the_bytes_they_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a bound of 200 KB: a run of 100 lines is kept, one of 1,000 (about 420 KB) is read
    and not kept, and pages of new label texts never hold more than the bound."""
    monkeypatch.setattr(exposition, "SKELETON_BYTES", 200_000)
    exposition._skeletons.clear()

    def run(page: int, lines: int) -> str:
        return "# TYPE n gauge\n" + "".join(f'n{{page="{page}",i="{i}"}} 1\n' for i in range(lines))

    small, large = run(-1, 100), run(-2, 1000)
    for text in (small, large):
        read_samples(text, ["n"])  # labels parsed: the next read makes the skeleton
    read_samples(small, ["n"])
    assert 0 < exposition._skeletons.size_bytes <= 200_000  # kept
    kept = exposition._skeletons.size_bytes
    assert len(read_samples(large, ["n"]).get("n")) == 1000
    assert exposition._skeletons.size_bytes == kept  # read, not kept
    for page in range(40):
        text = run(page, 150)
        read_samples(text, ["n"])
        read_samples(text, ["n"])
        assert 0 < exposition._skeletons.size_bytes <= 200_000
    exposition._skeletons.clear()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(hostile_pages())
def test_possessive_patterns_find_what_the_greedy_ones_find(page_and_names: tuple[str, list[str]]) -> None:
    """Python 3.10 has no possessive repeats: the patterns are greedy there, and must find the
    very runs and values the possessive ones find."""
    page, names = page_and_names
    wanted = tuple(dict.fromkeys(names))
    possessive = exposition._runs_of(wanted)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exposition, "_POSSESSIVE", "")
        greedy = exposition._runs_of(wanted)
    assert "+" not in greedy.pattern.replace(r"\+", "")
    assert [m.span() for m in greedy.finditer(page)] == [m.span() for m in possessive.finditer(page)]
    blank = re.compile(exposition._AT_LAST_BLANK.pattern.replace("*+", "*"), re.MULTILINE)
    assert blank.split(page) == exposition._AT_LAST_BLANK.split(page)
