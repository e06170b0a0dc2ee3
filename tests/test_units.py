"""How figures are written: every formatter, its edges, and N/A for what is not known."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokentop.units import (
    DASH,
    IDLE,
    NA,
    bar,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_energy,
    fmt_gib,
    fmt_gpu_models,
    fmt_kwh,
    fmt_latency,
    fmt_local_time,
    fmt_number,
    fmt_pct,
    fmt_power_over_limit,
    fmt_share,
    fmt_sig,
    fmt_temp,
    fmt_tok_s,
    fmt_tokens,
    fmt_usd,
    fmt_usd_per_mtok,
    fmt_watts,
    fmt_window,
    short_gpu_name,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.42, "0.42"),
        (3.14, "3.1"),
        (850, "850"),
        (999.4, "999"),
        (999.6, "1.00k"),
        (1234, "1.23k"),
        (12_345, "12.3k"),
        (456_000, "456k"),
        (1_200_000, "1.20M"),
        (45_600_000, "45.6M"),
        (-1234, "-1.23k"),
    ],
)
def test_numbers_are_compact(value: float, text: str) -> None:
    assert fmt_number(value) == text


@pytest.mark.parametrize(
    "formatter",
    [
        fmt_number,
        fmt_tok_s,
        fmt_tokens,
        fmt_watts,
        fmt_usd,
        fmt_bytes,
        fmt_gib,
        fmt_pct,
        fmt_temp,
        fmt_latency,
        fmt_duration,
        fmt_energy,
        fmt_count,
        fmt_sig,
        fmt_kwh,
        fmt_local_time,
    ],
)
@pytest.mark.parametrize("unknown", [None, math.nan, math.inf])
def test_unknown_is_na_everywhere(formatter, unknown) -> None:  # type: ignore[no-untyped-def]
    assert formatter(unknown) == NA


def test_tok_s_zero_small_and_large() -> None:
    assert fmt_tok_s(0) == "0"
    assert fmt_tok_s(0.01) == "<0.1"
    assert fmt_tok_s(0.5) == "0.5"
    assert fmt_tok_s(2400) == "2.40k"


def test_watts_switch_to_kilowatts() -> None:
    assert fmt_watts(612.4) == "612 W"
    assert fmt_watts(4083.5) == "4.08 kW"
    assert fmt_power_over_limit(612.4, 700) == "612/700"
    assert fmt_power_over_limit(None, 700) == "N/A/700"
    assert fmt_power_over_limit(612.4, None) == "612"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "$0.00"),
        (0.0042, "$0.0042"),
        (0.4231, "$0.423"),
        (1.114, "$1.11"),
        (28.66, "$28.66"),
        (123.4, "$123"),
        (12_345, "$12.3k"),
        (-2.5, "-$2.50"),
    ],
)
def test_money_keeps_the_digits_that_matter(value: float, text: str) -> None:
    assert fmt_usd(value) == text


def test_usd_per_mtok_tells_idle_unknown_and_not_serving_apart() -> None:
    assert fmt_usd_per_mtok(1.234, tokens_out=10) == "$1.23"
    assert fmt_usd_per_mtok(None, tokens_out=0) == IDLE
    assert fmt_usd_per_mtok(None, tokens_out=5000) == NA  # tokens but no price
    assert fmt_usd_per_mtok(None) == NA
    assert fmt_usd_per_mtok(None, tokens_out=0, serving=False) == DASH


def test_bytes_in_binary_units() -> None:
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(512 * 2**20) == "512 MiB"
    assert fmt_bytes(143_771_000_832) == "134 GiB"
    assert fmt_bytes(1.5 * 2**30) == "1.5 GiB"
    assert fmt_gib(132_269_320_765) == "123"
    assert fmt_gib(512 * 2**20) == "0.5"


def test_durations_latencies_windows_energy() -> None:
    assert [fmt_duration(s) for s in (45, 185, 3720, 183600)] == ["45s", "3m05s", "1h02m", "2d03h"]
    assert [fmt_latency(s) for s in (0.0042, 0.35, 1.25, 12.0)] == ["4.2ms", "350ms", "1.2s", "12s"]
    assert [fmt_window(s) for s in (10, 60, 90, 3600, 86400)] == ["10s", "1m", "90s", "1h", "24h"]
    assert fmt_energy(3600) == "1.0 Wh"
    assert fmt_energy(3.6e6 * 4.56) == "4.56 kWh"
    assert fmt_energy(3.6e9 * 1.23) == "1.23 MWh"


def test_percent_share_and_temperature() -> None:
    assert fmt_pct(87.4) == "87%"
    assert fmt_pct(0.874, fraction=True) == "87%"
    assert fmt_share(1) == "1/1" and fmt_share(4) == "1/4"
    assert fmt_temp(61.4) == "61"


def test_bar_is_shape_not_colour() -> None:
    assert bar(0, 5) == "     "
    assert bar(1, 5) == "█████"
    assert bar(0.5, 4) == "██  "
    assert bar(0.55, 5) == "██▊  "
    assert bar(None, 3) == "   "
    assert bar(7.0, 2) == "██"  # clamped


@given(st.floats(allow_nan=True, allow_infinity=True) | st.none())
def test_compact_formatters_never_raise_and_stay_short(value: float | None) -> None:
    for formatter in (fmt_number, fmt_tok_s, fmt_usd):
        text = formatter(value)
        assert isinstance(text, str) and 0 < len(text) <= 8
    assert len(bar(value, 6)) == 6


# --- report styles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (850.4, "850"), (1_301_987, "1,301,987"), (1_301_987.6, "1,301,988"), (-4_200, "-4,200")],
)
def test_counts_are_whole_and_grouped(value: float, text: str) -> None:
    assert fmt_count(value) == text


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (0, 3, "0"),
        (0.0012345, 3, "0.00123"),
        (0.2134, 3, "0.213"),
        (1.2345, 3, "1.23"),
        (85.6, 3, "85.6"),
        (818.4, 3, "818"),
        (32_712.3, 3, "32,712"),  # more integer digits than asked: all kept, none invented
        (999.7, 3, "1,000"),
        (-4.689, 3, "-4.69"),
        (1.3, 3, "1.30"),
        (0.0044583, 4, "0.004458"),
    ],
)
def test_significant_figures(value: float, digits: int, text: str) -> None:
    assert fmt_sig(value, digits) == text


def test_kwh_keeps_four_significant_figures() -> None:
    assert fmt_kwh(0.015437276) == "0.01544"
    assert fmt_kwh(1.23456) == "1.235"
    assert fmt_kwh(1234.56) == "1,235"


def test_local_time_to_the_second() -> None:
    t = 1_700_000_000.0
    assert fmt_local_time(t) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    assert fmt_local_time(1e300) == NA  # beyond what the platform can write


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("Tesla T4", "T4"),
        ("NVIDIA", "NVIDIA"),
    ],
)
def test_gpu_names_lose_the_vendor_words(name: str, short: str) -> None:
    assert short_gpu_name(name) == short


def test_a_host_s_gpus_by_model() -> None:
    assert fmt_gpu_models(["NVIDIA H200"] * 8) == "8× NVIDIA H200"
    assert fmt_gpu_models(["NVIDIA L4", "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]) == "3 GPUs: 2× H100, 1× L4"
    assert fmt_gpu_models(iter(())) == "no GPU"


@given(st.floats(allow_nan=True, allow_infinity=True) | st.none(), st.integers(min_value=1, max_value=6))
def test_report_formatters_never_raise(value: float | None, digits: int) -> None:
    for text in (fmt_count(value), fmt_sig(value, digits), fmt_kwh(value), fmt_local_time(value)):
        assert isinstance(text, str) and text
