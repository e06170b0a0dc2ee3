"""read_figures' short cuts against the plain ways they stand for, on pages read one after another.

A histogram's buckets are summed by a layout found once for its label sets and kept while the
reader hands out the same label sets (collectors/buckets.py); the model is named once for its
label sets; rank checks are skipped while the reader has parsed no rank label. Here pages of
one label structure are read in a row with new values, then with changed labels, and each
reading must be the one of the plain ways (nothing kept, every histogram summed line by line,
every series checked for ranks): the same floats to the bit, the same notes, the same refusals.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kinds_figures import reference_histogram

from tokentop.collectors import buckets, kinds
from tokentop.collectors.exposition import PageSamples, read_samples
from tokentop.collectors.kinds import PROCESS_NAMES, SGLANG, VLLM, KindSpec, Reading, read_figures

TTFT = "vllm:time_to_first_token_seconds"
BOUNDS = ["0.001", "0.01", "0.1", "1", "1.0", "2.5", "10", "+Inf", "Inf", "NaN", "x", "-0", "0"]
HOSTILE = ["NaN", "-1", "1e300", "+Inf", "9007199254740994", "-0.0"]


def figures(spec: KindSpec, samples: PageSamples) -> str:
    """The reading as text (floats by repr: -0.0 and NaN are told apart), or the refusal."""
    try:
        return repr(read_figures(spec, samples, samples))
    except ValueError as refused:
        return f"{type(refused).__name__}: {refused}"


def plain_figures(spec: KindSpec, samples: PageSamples) -> str:
    """The same read with every short cut off: nothing kept, line by line, ranks checked."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(buckets, "_layout_of", lambda labels, _: None)
        for module in (buckets, kinds):
            patch.setattr(
                module,
                "by_label_sets",
                lambda name, series, make, argument=None: make([labels for labels, _ in series], argument),
            )
        patch.setattr(kinds, "_ranked", lambda samples: True)
        return figures(spec, samples)


def histogram_page(
    rng: random.Random, bounds: list[str], engines: int, layout: str, ranks: bool, hostile: float
) -> str:
    """A vLLM page: counters and the TTFT histogram of ``engines`` engines, its buckets laid out
    engine after engine, bound after bound or shuffled; values new on every call."""

    def value() -> str:
        if rng.random() < hostile:
            return rng.choice(HOSTILE)
        return repr(rng.choice([float(rng.randrange(0, 10 ** rng.randrange(1, 13))), rng.random() * 100]))

    def labels(engine: int) -> str:
        rank = f',tp_rank="{engine % 2}"' if ranks else ""
        return f'engine="{engine}",model_name="m{engine % 2}"{rank}'

    lines = [f"vllm:prompt_tokens_total{{{labels(e)}}} {value()}" for e in range(engines)]
    lines += [f"vllm:num_requests_running{{{labels(e)}}} {value()}" for e in range(engines)]
    cells = [(e, b) for e in range(engines) for b in bounds]
    if layout == "bound after bound":
        cells = [(e, b) for b in bounds for e in range(engines)]
    elif layout == "shuffled":
        rng.shuffle(cells)
    lines += [f'{TTFT}_bucket{{{labels(e)},le="{b}"}} {value()}' for e, b in cells]
    lines += [f"{TTFT}_sum{{{labels(e)}}} {value()}" for e in range(engines)]
    lines += [f"{TTFT}_count{{{labels(e)}}} {value()}" for e in range(engines) if e % 3 != 2]
    return "\n".join(lines) + "\n"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(BOUNDS), min_size=1, max_size=8, unique=True),
    st.integers(1, 5),
    st.sampled_from(["engine after engine", "bound after bound", "shuffled"]),
    st.booleans(),
    st.sampled_from([0.0, 0.0, 0.01, 0.2]),
    st.integers(0, 2**32),  # a seed: hypothesis' own Random rarely shuffles far
)
def test_pages_read_in_a_row_read_as_the_plain_ways_read_them(
    bounds: list[str], engines: int, layout: str, ranks: bool, hostile: float, seed: int
) -> None:
    rng = random.Random(seed)
    names = VLLM.names + PROCESS_NAMES
    pages = [histogram_page(rng, bounds, engines, layout, ranks, hostile) for _ in range(3)]
    pages.append(histogram_page(rng, bounds[::-1], engines + 1, layout, ranks, hostile))  # labels change
    for page in pages:
        samples = read_samples(page, names)
        for spec in (VLLM, SGLANG):
            assert figures(spec, samples) == plain_figures(spec, samples)
        if hostile == 0.0 and not ranks:
            reading = read_figures(VLLM, samples, samples)
            assert reading.ttft == reference_histogram(samples, TTFT)


@pytest.mark.parametrize("odd", [*HOSTILE, "9007199254740992"])  # 2^53: plausible alone, not in a sum
@pytest.mark.parametrize("layout", ["engine after engine", "bound after bound"])
def test_one_value_no_server_can_mean_is_named_as_the_plain_ways_name_it(odd: str, layout: str) -> None:
    lines = histogram_page(random.Random(0), ["0.1", "1", "+Inf"], 3, layout, False, 0.0).splitlines()
    for at, line in enumerate(lines):
        lines[at] = line.rsplit(" ", 1)[0] + " " + odd
        samples = read_samples("\n".join(lines) + "\n", VLLM.names)
        assert figures(VLLM, samples) == plain_figures(VLLM, samples)
        lines[at] = line


def test_a_histogram_read_again_sums_its_new_counts() -> None:
    def page(scale: float) -> str:
        return "".join(
            f'{TTFT}_bucket{{engine="{engine}",le="{le}"}} {count * scale}\n'
            for engine in range(2)
            for le, count in (("0.1", 1.0), ("1", 2.0), ("+Inf", 3.0))
        ) + "".join(f'{TTFT}_sum{{engine="{engine}"}} 5\n' for engine in range(2))

    first, second = (read_figures(VLLM, read_samples(page(scale), VLLM.names)) for scale in (1.0, 10.0))
    assert first.ttft is not None and second.ttft is not None
    assert first.ttft.buckets == ((0.1, 2.0), (1.0, 4.0), (math.inf, 6.0))
    assert second.ttft.buckets == ((0.1, 20.0), (1.0, 40.0), (math.inf, 60.0))


def test_the_model_follows_the_labels_from_page_to_page() -> None:
    def model(name: str) -> str | None:
        return read_figures(
            VLLM, read_samples(f'vllm:num_requests_running{{model_name="{name}"}} 1\n', VLLM.names)
        ).model

    assert [model("a"), model("b"), model("a")] == ["a", "b", "a"]


def test_label_names_hold_every_label_name_read_and_hand_made_samples_have_none() -> None:
    read = read_samples('m{engine="0",odd_label_name="x"} 1\nm{tp_rank="1"} 2\n', ["m"])
    assert read.label_names is not None and {"engine", "odd_label_name", "tp_rank"} <= read.label_names
    later = read_samples("m 1\n", ["m"])
    assert later.label_names is not None and "odd_label_name" in later.label_names  # only ever grows
    assert PageSamples({"m": [({"tp_rank": "1"}, 2.0)]}).label_names is None
    ranked = PageSamples({"sglang:num_running_reqs": [({"tp_rank": "0"}, 2.0), ({"tp_rank": "1"}, 2.0)]})
    assert read_figures(SGLANG, ranked) == Reading(running=2.0)  # not known: every series checked


def test_what_is_kept_for_label_sets_is_bounded_by_their_characters() -> None:
    long_value = "v" * 2000
    for page in range(buckets.KEPT_CHARS // (2000 * 40) + 5):
        text = "".join(f'{TTFT}_bucket{{page="{page}",x="{long_value}",le="{le}"}} 1\n' for le in range(40))
        read_figures(VLLM, read_samples(text + f'{TTFT}_bucket{{page="{page}",le="+Inf"}} 1\n', VLLM.names))
        assert buckets._kept.chars <= buckets.KEPT_CHARS
