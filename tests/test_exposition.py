"""The fast Prometheus reader against prometheus_client's parser (the oracle)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tokentop.collectors import exposition
from tokentop.collectors.exposition import MAX_SAMPLE_LINES, TooManySamples, read_samples

Found = dict[str, dict[frozenset, float]]


def oracle(text: str) -> Found:
    """prometheus_client's samples as {name: {labels: value}}, the last of a repeated series kept.

    prometheus_client renames the samples of a ``# TYPE x counter`` family to ``x_total``;
    the wire name (what a reader of the page sees) is restored here.
    """
    found: Found = {}
    for family in text_string_to_metric_families(text):
        renamed = family.type == "counter" and f"# TYPE {family.name} counter" in text
        for sample in family.samples:
            name = sample.name[: -len("_total")] if renamed else sample.name
            found.setdefault(name, {})[frozenset(sample.labels.items())] = float(sample.value)
    return found


def mine(text: str, names) -> Found:
    result = read_samples(text, names)
    return {
        name: {frozenset(labels.items()): value for labels, value in series} for name, series in result.series.items()
    }


def same(a: Found, b: Found) -> bool:
    if a.keys() != b.keys():
        return False
    for name, series in a.items():
        if series.keys() != b[name].keys():
            return False
        for key, value in series.items():
            other = b[name][key]
            if not (value == other or (math.isnan(value) and math.isnan(other))):
                return False
    return True


# --- real pages (tests/fixtures/metrics, reached through tests/conftest.py) ------------------


def test_every_fixture_page_reads_like_the_oracle(captured_page: Path) -> None:
    text = captured_page.read_text()
    expected = oracle(text)
    assert expected, "the oracle found nothing: not a Prometheus page?"
    assert same(mine(text, expected), expected)


def test_reads_only_the_names_asked_for(fixture_page: Callable[[str], str]) -> None:
    text = fixture_page("vllm/v1-qwen3-0.6b-via-dynamo.txt")
    result = read_samples(text, ["vllm:prompt_tokens_total", "vllm:no_such_metric"])
    assert list(result.series) == ["vllm:prompt_tokens_total"]
    assert result.get("vllm:prompt_tokens_total") == [({"engine": "0", "model_name": "Qwen/Qwen3-0.6B"}, 66.0)]
    # the _created companion is there but not asked for
    assert "vllm:prompt_tokens_created" not in result
    created = read_samples(text, ["vllm:prompt_tokens_created"]).get("vllm:prompt_tokens_created")
    assert created[0][1] == pytest.approx(1.768264339889982e9)


# --- hand-made pages ---------------------------------------------------------------------


def test_labels_with_escapes_commas_and_braces() -> None:
    page = (
        "# HELP m help with a \\\\ backslash\n# TYPE m gauge\n"
        'm{path="C:\\\\dir\\\\",quote="say \\"hi\\"",nl="a\\nb",list="x,y}z{",eq="a=b",tab="\\t"} 1\n'
        'm{ spaced = "v" , trailing="comma", } 2\n'
    )
    result = read_samples(page, ["m"]).get("m")
    assert result == [
        ({"path": "C:\\dir\\", "quote": 'say "hi"', "nl": "a\nb", "list": "x,y}z{", "eq": "a=b", "tab": "\\t"}, 1.0),
        ({"spaced": "v", "trailing": "comma"}, 2.0),
    ]
    assert same(mine(page, ["m"]), oracle(page))


def test_value_spellings_and_timestamps() -> None:
    page = "".join(
        f'v{{i="{i}"}} {text}\n'
        for i, text in enumerate(
            ["1", "-2", "3.5", "1e3", "NaN", "nan", "+Inf", "-Inf"]
            + ["4 1700000000000", "5\t1700000000000", "-nan(ind)", "nan(snan)"]
        )
    )
    values = [value for _, value in read_samples(page, ["v"]).get("v")]
    assert values[:4] == [1.0, -2.0, 3.5, 1000.0]
    assert math.isnan(values[4]) and math.isnan(values[5])
    assert values[6:10] == [math.inf, -math.inf, 4.0, 5.0]
    assert math.isnan(values[10]) and math.isnan(values[11])  # C library spellings (MSVC llama.cpp)


def test_page_that_starts_with_a_sample_and_names_that_share_a_prefix() -> None:
    page = 'a 1\na_total 2\na_sum{x="1"} 3\nab 4\n# HELP a a is not a sample\n'
    result = read_samples(page, ["a", "a_sum"])
    assert result.get("a") == [({}, 1.0)]
    assert result.get("a_sum") == [({"x": "1"}, 3.0)]


def test_crlf_line_endings() -> None:
    page = '# TYPE c counter\r\nc_total{k="v"} 7\r\nd 8\r\n'
    assert mine(page, ["c_total", "d"]) == {"c_total": {frozenset({("k", "v")}): 7.0}, "d": {frozenset(): 8.0}}


def test_garbage_lines_are_skipped_and_the_rest_still_counts(fixture_page: Callable[[str], str]) -> None:
    clean = fixture_page("vllm/v0-0.5-opt125m-datadog.txt")
    garbage = "\n".join(
        [
            'vllm:prompt_tokens_total{model_name="x" 9',  # no closing brace
            'vllm:prompt_tokens_total{model_name="x"} nine',  # not a number
            'vllm:prompt_tokens_total{model_name="x"} 1_000',  # underscores are not allowed
            'vllm:prompt_tokens_total{model_name="x"} 9 10 11',  # too many fields
            'vllm:prompt_tokens_total{model_name="x",model_name="y"} 9',  # label twice
            'vllm:prompt_tokens_total{model name="x"} 9',
            "vllm:prompt_tokens_total",
            "\x01\x02 binary \ufffd junk",
            "}{",
        ]
    )
    at = clean.index("vllm:generation_tokens_total{")
    dirty = clean[:at] + garbage + "\n" + clean[at:]
    expected = oracle(clean)
    assert same(mine(dirty, expected), expected)
    with pytest.raises(ValueError):
        list(text_string_to_metric_families(dirty))  # the oracle itself gives up on such a page


def test_truncated_page_drops_the_cut_last_line() -> None:
    assert read_samples("x 123\ny 456", ["x", "y"]).series == {"x": [({}, 123.0)]}
    for cut in range(len("x 1\ny 123456 17000")):
        page = ("x 1\ny 123456 17000\n")[:cut]
        assert read_samples(page, ["y"]).get("y") == []  # never 1, 12, 123...
    assert read_samples("", ["x"]).series == {}


def test_duplicate_series_keep_the_last_and_are_reported() -> None:
    page = 'd{a="1",b="2"} 1\nd{a="9"} 5\nd{b="2",a="1"} 3\ne 1\n'
    result = read_samples(page, ["d", "e"])
    assert result.get("d") == [({"a": "9"}, 5.0), ({"b": "2", "a": "1"}, 3.0)]
    assert result.duplicates == {"d"}


def test_returned_labels_are_read_only_so_the_shared_cache_cannot_be_changed() -> None:
    page = 'm{a="1"} 1\n'
    labels = read_samples(page, ["m"]).get("m")[0][0]
    with pytest.raises(TypeError):
        labels["a"] = "changed"  # type: ignore[index]
    assert read_samples(page, ["m"]).get("m") == [({"a": "1"}, 1.0)]


def test_reading_stops_past_the_line_limit() -> None:
    at_limit = "".join(f'n{{i="{i}"}} 1\n' for i in range(MAX_SAMPLE_LINES))
    assert len(read_samples(at_limit, ["n"]).get("n")) == MAX_SAMPLE_LINES
    with pytest.raises(TooManySamples, match=f"over {MAX_SAMPLE_LINES:,} series"):
        read_samples(at_limit + 'n{i="x"} 1\n', ["n"])
    other_lines = at_limit.replace("n{", "other{") * 3  # lines of names not asked for cost no parsing
    assert read_samples(other_lines + at_limit, ["n"]).get("n")[-1] == ({"i": str(MAX_SAMPLE_LINES - 1)}, 1.0)


def test_the_label_cache_is_bounded_by_bytes_and_keeps_no_huge_label_set() -> None:
    exposition._label_cache.clear()
    huge = "".join(f'n{{model="{i}{"x" * 100_000}"}} 1\n' for i in range(5))
    assert len(read_samples(huge, ["n"]).get("n")) == 5
    assert exposition._label_cache.size_bytes == 0  # parsed, used, not kept
    for page in range(40):
        read_samples("".join(f'n{{page="{page}",i="{i}"}} 1\n' for i in range(1000)), ["n"])
        assert exposition._label_cache.size_bytes <= exposition.LABEL_CACHE_BYTES
    assert read_samples('n{a="1"} 2\n', ["n"]).get("n") == [({"a": "1"}, 2.0)]


# --- generated pages ------------------------------------------------------------------------

metric_names = st.from_regex(r"\A[a-zA-Z_:][a-zA-Z0-9_:]{0,12}\Z")
label_names = st.from_regex(r"\A[a-zA-Z_][a-zA-Z0-9_]{0,8}\Z").filter(lambda n: not n.startswith("__"))
label_values = st.text(alphabet=st.sampled_from('ab "\\\n,{}=# é\t'), max_size=8)
values = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "+Inf", "-Inf", "0", "1.0", "-0.0", "1e-9"]),
)
timestamps = st.one_of(st.just(""), st.integers(min_value=0, max_value=2**41).map(lambda t: f" {t}"))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def sample_lines(draw, name: str) -> str:
    labels = draw(st.dictionaries(label_names, label_values, max_size=3))
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    label_text = f"{{{inner}}}" if labels or draw(st.booleans()) else ""
    return f"{name}{label_text} {draw(values)}{draw(timestamps)}"


@st.composite
def pages(draw) -> str:
    lines: list[str] = []
    for name in draw(st.lists(metric_names, min_size=1, max_size=6)):
        kind = draw(st.sampled_from(["none", "untyped", "gauge", "counter"]))
        if kind != "none":
            lines.append(f"# HELP {name} {draw(st.text(alphabet='ab c', max_size=10))}")
            lines.append(f"# TYPE {name} {kind}")
        lines.extend(draw(sample_lines(name)) for _ in range(draw(st.integers(1, 4))))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# a comment", "#"])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + newline


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pages())
def test_generated_pages_read_like_the_oracle(page: str) -> None:
    expected = oracle(page)
    assert same(mine(page, expected), expected)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pages())
def test_long_pages_read_like_the_oracle(page: str) -> None:
    """A page long enough to hold ``MAX_SAMPLE_LINES`` lines, most of it one long comment."""
    expected = oracle(page)
    padded = page + "# " + "x" * (MAX_SAMPLE_LINES * 40) + "\n"  # a comment: nothing to read
    assert same(mine(padded, expected), expected)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pages(), st.floats(min_value=0, max_value=1))
def test_a_cut_page_yields_exactly_its_complete_lines(page: str, where: float) -> None:
    cut = page[: int(len(page) * where)]
    complete = cut[: cut.rfind("\n") + 1]
    names = oracle(page)
    assert same(mine(cut, names), oracle(complete))


def test_names_that_start_alike_are_told_apart() -> None:
    """The wanted names become one tree of shared prefixes: a name that begins another, or
    that a longer name on the page begins with, still matches only itself."""
    page = "vllm:x 1\nvllm:x_total 2\nvllm:xy 3\nvllm:xyz 4\nvllm:x_totalx 5\nvllm:x_tot 6\nvllm: 7\n"
    names = ["vllm:x", "vllm:x_total", "vllm:xy", "vllm:", "other"]
    found = {name: [v for _, v in series] for name, series in read_samples(page, names).series.items()}
    assert found == {"vllm:x": [1.0], "vllm:x_total": [2.0], "vllm:xy": [3.0], "vllm:": [7.0]}
