"""read_figures' sums against the plain loops they replaced, on generated series.

Histograms are summed by the bound's text, then made numbers once a bound; series that repeat
each other's ranks are made one only after a C loop finds a rank label. Both are short cuts: the figures must be the
very numbers of the line-by-line loops (``reference_histogram``), whatever the spellings of
``le`` ("1", "1.0", "+Inf", "Inf", "nan", none), the ranks and the order.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tokentop.collectors.exposition import PageSamples, Series, read_samples
from tokentop.collectors.kinds import SGLANG, VLLM, Reading, read_figures
from tokentop.model import Histogram

RANKS = ("tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank")


def reference_one_per_group(series: Series) -> Series:
    """Series with rank labels that differ only in them (and ``pid``) repeat each other: the
    largest of each such group, in the order the groups first appear."""
    groups: dict[object, tuple[dict[str, str], float]] = {}
    for at, (labels, value) in enumerate(series):
        key: object = at
        if set(RANKS) & set(labels):
            key = tuple(sorted((k, v) for k, v in labels.items() if k not in (*RANKS, "pid")))
        if key not in groups or value > groups[key][1]:
            groups[key] = (dict(labels), value)
    return list(groups.values())


def reference_histogram(samples: PageSamples, base: str) -> Histogram | None:
    """The old loop: one float() a line, summed by number in line order (all values plausible)."""
    buckets: dict[float, float] = {}
    for labels, count in reference_one_per_group(samples.get(base + "_bucket")):
        try:
            upper = float(labels.get("le", ""))
        except ValueError:
            continue
        if not math.isnan(upper):
            buckets[upper] = buckets.get(upper, 0.0) + count
    sums = reference_one_per_group(samples.get(base + "_sum"))
    counts = reference_one_per_group(samples.get(base + "_count"))
    if not buckets or not sums or math.inf not in buckets:
        return None
    count = sum(v for _, v in counts) if counts else buckets[math.inf]
    return Histogram(tuple(sorted(buckets.items())), sum(v for _, v in sums), count)


bounds = st.sampled_from(["0.1", "0.10", "1", "1.0", "1e0", "2.5", "+Inf", "Inf", "inf", "NaN", "x", "-0", "0", None])
ranks = st.dictionaries(st.sampled_from(RANKS), st.sampled_from(["0", "0", "1", "2"]), max_size=2)
counts = st.one_of(st.integers(0, 10**6).map(float), st.floats(0, 1e6, allow_nan=False))


@st.composite
def histogram_series(draw: st.DrawFn, base: str) -> PageSamples:
    series: dict[str, Series] = {}
    for engine in range(draw(st.integers(1, 4))):
        rank = draw(ranks)
        for le in draw(st.lists(bounds, min_size=1, max_size=6)):
            labels = {"engine": str(engine), **rank, **({"le": le} if le is not None else {})}
            series.setdefault(base + "_bucket", []).append((labels, draw(counts)))
        series.setdefault(base + "_sum", []).append(({"engine": str(engine), **rank}, draw(counts)))
        if draw(st.booleans()):
            series.setdefault(base + "_count", []).append(({"engine": str(engine), **rank}, draw(counts)))
    return PageSamples(series)


@settings(max_examples=400, deadline=None)
@given(histogram_series("vllm:time_to_first_token_seconds"))
def test_histograms_are_the_sums_of_the_line_by_line_loop(samples: PageSamples) -> None:
    expected = reference_histogram(samples, "vllm:time_to_first_token_seconds")
    assert read_figures(VLLM, samples).ttft == expected


@settings(max_examples=200, deadline=None)
@given(histogram_series("sglang:time_to_first_token_seconds"), st.lists(ranks, min_size=1, max_size=4))
def test_counters_and_gauges_keep_one_series_of_each_group_of_ranks(samples: PageSamples, series_ranks: list) -> None:
    tokens = [({"dp_rank": str(i % 2), **rank}, float(10 * i + 1)) for i, rank in enumerate(series_ranks)]
    samples.series["sglang:prompt_tokens_total"] = tokens
    samples.series["sglang:token_usage"] = [(labels, 0.1 * (i + 1)) for i, (labels, _) in enumerate(tokens)]
    reading = read_figures(SGLANG, samples)
    kept = reference_one_per_group(tokens)
    assert reading.prompt_tokens_total == (sum(v for _, v in kept) if kept else None)
    assert reading.kv_cache_fraction == (max(0.1 * (tokens.index(s) + 1) for s in kept) if kept else None)
    assert reading.ttft == reference_histogram(samples, "sglang:time_to_first_token_seconds")


def test_a_page_without_the_histograms_reads_none_of_them() -> None:
    reading = read_figures(VLLM, PageSamples({"vllm:num_requests_running": [({}, 2.0)]}))
    assert reading == Reading(running=2.0)


def test_each_figure_lands_in_its_own_field() -> None:
    """read_figures builds the Reading by position: each figure of a page in its field."""
    page = (
        'vllm:prompt_tokens_total{model_name="m"} 1\nvllm:generation_tokens_total{model_name="m"} 2\n'
        'vllm:num_requests_running{model_name="m"} 3\nvllm:num_requests_waiting{model_name="m"} 4\n'
        'vllm:kv_cache_usage_perc{model_name="m"} 0.5\nvllm:request_success_total{model_name="m"} 6\n'
        "process_start_time_seconds 1700000000\n"
    )
    samples = read_samples(page, VLLM.page_names)
    histogram = Histogram(buckets=((math.inf, 1.0),), sum=0.25, count=1.0)
    itl = Histogram(buckets=((math.inf, 2.0),), sum=0.5, count=2.0)
    assert read_figures(VLLM, samples, samples, carried=(histogram, itl)) == Reading(
        model="m",
        prompt_tokens_total=1.0,
        generation_tokens_total=2.0,
        running=3.0,
        waiting=4.0,
        kv_cache_fraction=0.5,
        requests_finished_total=6.0,
        process_start_time_s=1.7e9,
        ttft=histogram,
        itl=itl,
    )


def test_a_reading_has_figures_when_any_server_figure_is_there() -> None:
    histogram = Histogram(buckets=((math.inf, 1.0),), sum=0.25, count=1.0)
    assert not Reading(model="m", note="n", kind_detail="d", process_start_time_s=1.0).has_figures
    assert Reading(ttft=histogram).has_figures and Reading(itl=histogram).has_figures
    assert Reading(waiting=0.0).has_figures and Reading(generation_tokens_in_flight=0.0).has_figures
