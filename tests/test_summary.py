"""``tokentop summary``: figures checked against arithmetic done by hand, on real SQLite files
written by the real Deriver and Store from scripted readings on a fake clock."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

import pytest

from tokentop import report
from tokentop.cli import summary as summary_command
from tokentop.config import ApiPrice, Config, CostConfig
from tokentop.demo import DemoGpuReader, DemoHost
from tokentop.derive import Deriver, Point, sum_windows, window_between
from tokentop.history import GpuTrack, Store
from tokentop.model import EndpointSample, EngineMapping, GpuReading, GpuSample, Histogram, Totals, Window
from tokentop.report.tracks import host_windows, settled, windows_from_track
from tokentop.sampler import Sampler

T0 = 1_700_000_040.0  # wall-clock time of the first tick (a whole minute)
G0, G1, G2, G3 = (f"GPU-{i}0000000-aaaa-bbbb-cccc-00000000000{i}" for i in range(4))
INF = float("inf")

# Cost inputs chosen so the arithmetic is easy: $0.001 per H200-second, $0.0002 per L4-second,
# electricity 0.10 $/kWh x node overhead 1.2 x PUE 1.5 = 0.18 $/kWh = 5e-8 $ per joule.
COST = CostConfig(
    gpu_hour_usd={"H200": 3.6, "L4": 0.72},
    energy_in_rate=False,  # energy added to the rate (no longer the cloud default: issue 9, item 16)
    electricity_usd_per_kwh=0.10,
    pue=1.5,
    node_overhead=1.2,
    api_prices=(ApiPrice("api-x", 0.5, 2.0, "2026-04-01"),),
)
USD_PER_J = 5e-8
H200_USD_S, L4_USD_S = 0.001, 0.0002


# --- the scripted session ---------------------------------------------------------------------
#
# 41 ticks, one second apart (t = 0 .. 40; t = 0 is the baseline).
#   GPU0, GPU1: H200 with the energy counter, engine "big" (tensor parallel over both).
#   GPU2: L4 with no energy counter (power only: energy integrated), engine "small".
#   GPU3: H200 with the counter, no engine (idle the whole time).
# Engine "big": busy t = 1..20 (200 out, 1000 in per second, 4 running), idle t = 21..30
# (counters still, nothing running), restarted at t = 31 (its counters start again from zero:
# 150 out, 600 in, 1 request), busy t = 32..40 (300 out, 900 in per second).
# Engine "small": 50 out, 100 in, 2 requests per second, 2 running, all along.
# GPU0's energy counter is reset at t = 35 (driver reload): that tick is integrated from power.


def big_busy(t: int) -> bool:
    return 1 <= t <= 20 or t >= 31


def power_big(t: int, gpu: int) -> float:
    if gpu == 0 and t == 35:
        return 600.0
    return 500.0 if big_busy(t) or t == 0 else 100.0


def power_l4(t: int) -> float:
    return 40.0 + t


def one_bucket(upper: float, count: float) -> Histogram:
    """Every observation in (upper / 2, upper]: the median is 0.75 x upper, p95 0.975 x."""
    return Histogram(buckets=((upper / 2, 0.0), (upper, count), (INF, count)), sum=0.0, count=count)


@dataclass
class Engines:
    big_out: float = 5000.0
    big_in: float = 20000.0
    big_requests: float = 100.0
    big_hist: float = 10.0
    small_out: float = 1000.0
    small_in: float = 3000.0
    small_requests: float = 10.0

    def advance(self, t: int) -> None:
        if t == 31:  # restart: counters from zero
            self.big_out, self.big_in, self.big_requests, self.big_hist = 150.0, 600.0, 1.0, 2.0
        elif t >= 32:
            self.big_out += 300
            self.big_in += 900
            self.big_requests += 1
            self.big_hist += 2
        elif 1 <= t <= 20:
            self.big_out += 200
            self.big_in += 1000
            self.big_requests += 1
            self.big_hist += 2
        if t >= 1:
            self.small_out += 50
            self.small_in += 100
            self.small_requests += 2

    def samples(self, t: int) -> tuple[EndpointSample, ...]:
        big = EndpointSample(
            name="big",
            url="http://127.0.0.1:8001/metrics",
            t_mono=float(t),
            status="up",
            kind="vllm",
            model="m-big",
            prompt_tokens_total=self.big_in,
            generation_tokens_total=self.big_out,
            running=4.0 if big_busy(t) else 0.0,
            requests_finished_total=self.big_requests,
            ttft=one_bucket(0.2, self.big_hist),
            itl=one_bucket(0.02, self.big_hist * 100),
        )
        small = EndpointSample(
            name="small",
            url="http://127.0.0.1:8002/metrics",
            t_mono=float(t),
            status="up",
            kind="sglang",
            model="m-small",
            prompt_tokens_total=self.small_in,
            generation_tokens_total=self.small_out,
            running=2.0,
            requests_finished_total=self.small_requests,
        )
        return big, small


MAPPING = {"big": EngineMapping(gpus=(G0, G1), source="config"), "small": EngineMapping(gpus=(G2,), source="config")}


def record_scripted(path: Path, ticks: int = 41, t0: float = T0) -> int:
    """Write the scripted session through the real Deriver and Store, its first tick at wall
    time ``t0``; returns its id."""
    deriver = Deriver(COST)
    engines = Engines()
    counters = [1_000_000_000, 2_000_000_000, None, 3_000_000_000]
    with Store.open(path, host="test-host", version="0.1.0", config=Config(cost=COST).public_dict()) as store:
        for t in range(ticks):
            engines.advance(t)
            powers = [power_big(t, 0), power_big(t, 1), power_l4(t), 80.0]
            for i in (0, 1, 3):
                if t > 0:
                    counters[i] += int(powers[i] * 1000)  # joules of this second, in mJ
            if t == 35:
                counters[0] = 2_000  # driver reload: the counter starts again
            gpus = (
                GpuSample(G0, 0, "NVIDIA H200", power_w=powers[0], energy_counter_mj=counters[0]),
                GpuSample(G1, 1, "NVIDIA H200", power_w=powers[1], energy_counter_mj=counters[1]),
                GpuSample(G2, 2, "NVIDIA L4", power_w=powers[2]),
                GpuSample(G3, 3, "NVIDIA H200", power_w=powers[3], energy_counter_mj=counters[3]),
            )
            snapshot = deriver.step(GpuReading(float(t), gpus), engines.samples(t), MAPPING, t0 + t)
            assert store.append(snapshot) is None
        assert store.session_id is not None
        return store.session_id


@pytest.fixture(scope="module")
def scripted_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scripted") / "history.db"
    record_scripted(path)
    return path


def summary_json(path: Path, **kwargs: object) -> dict:
    data = report.to_json_dict(report.summarize(path, **kwargs))
    json.dumps(data, allow_nan=False)  # plain JSON, no NaN or infinity
    return data


approx = pytest.approx


# --- the hand arithmetic ----------------------------------------------------------------------


def test_every_figure_matches_hand_arithmetic(scripted_db: Path) -> None:
    data = summary_json(scripted_db)
    assert data["schema_version"] == report.SCHEMA_VERSION
    assert data["session"]["host"] == "test-host" and data["session"]["open"] is False
    assert data["range"] == {
        "since_unix_s": T0,
        "since_utc": "2023-11-14T22:14:00Z",
        "until_unix_s": T0 + 40,
        "until_utc": "2023-11-14T22:14:40Z",
        "duration_s": 40.0,
        "whole_session": True,
    }
    assert data["rate_windows"] == {"length_s": 10.0, "source": "raw", "endpoint_step_s": 10.0, "count": 4}
    gpus = {g["index"]: g for g in data["gpus"]}
    assert [g["uuid"] for g in data["gpus"]] == [G0, G1, G2, G3]

    # Tokens. "big" delivered 20 x 200 + 150 (restart: counted from zero) + 9 x 300 = 6,850 out
    # and 20 x 1000 + 600 + 9 x 900 = 28,700 in, split equally over its two GPUs.
    big_out, big_in = 20 * 200 + 150 + 9 * 300, 20 * 1000 + 600 + 9 * 900
    small_out, small_in = 40 * 50, 40 * 100
    expected_tokens = {
        0: (big_in / 2, big_out / 2),
        1: (big_in / 2, big_out / 2),
        2: (small_in, small_out),
        3: (0.0, 0.0),
    }
    for index, (tokens_in, tokens_out) in expected_tokens.items():
        g = gpus[index]
        assert (g["tokens_in"], g["tokens_out"]) == approx((tokens_in, tokens_out))
        assert g["duration_s"] == 40.0
        assert g["tok_s_in_mean"] == approx(tokens_in / 40)
        assert g["tok_s_out_mean"] == approx(tokens_out / 40)

    # 10 s windows ending at t = 10, 20, 30, 40. GPU0 out: 100, 100, 0 (idle), (150 + 9 x 300)
    # / 2 / 10 = 142.5 tok/s; sorted [0, 100, 100, 142.5]: p50 100, p95 100 + 0.85 x 42.5.
    g0 = gpus[0]
    assert g0["tok_s_out_p50"] == approx(100.0)
    assert g0["tok_s_out_p95"] == approx(100 + 0.85 * 42.5)
    assert g0["tok_s_out_peak"] == approx(142.5)
    # in: 500, 500, 0, (600 + 8100) / 2 / 10 = 435; sorted [0, 435, 500, 500].
    assert g0["tok_s_in_p50"] == approx((435 + 500) / 2)
    assert g0["tok_s_in_p95"] == approx(500.0) and g0["tok_s_in_peak"] == approx(500.0)
    g2 = gpus[2]
    assert (g2["tok_s_out_p50"], g2["tok_s_out_p95"], g2["tok_s_out_peak"]) == approx((50, 50, 50))
    assert gpus[3]["tok_s_out_peak"] == 0.0 and gpus[3]["tok_s_out_mean"] == 0.0

    # Energy. GPU0: the counter's 500 J per busy second and 100 J per idle second, except t = 35
    # where the counter was reset: the trapezoid of 500 W and 600 W over that second, 550 J.
    energy = {
        0: 29 * 500 + 10 * 100 + (500 + 600) / 2,
        1: 30 * 500 + 10 * 100,
        2: sum((power_l4(t - 1) + power_l4(t)) / 2 for t in range(1, 41)),  # 2,400 J
        3: 40 * 80.0,
    }
    assert energy[2] == 2400.0
    for index, joules in energy.items():
        assert gpus[index]["energy_kwh"] == approx(joules / 3.6e6)
        assert gpus[index]["power_w_mean"] == approx(joules / 40)
    assert [(gpus[i]["energy_method"], gpus[i]["energy_integrated_ticks"]) for i in range(4)] == [
        ("mixed", 1),
        ("counter", 0),
        ("power_integral", 40),
        ("counter", 0),
    ]
    assert all(g["energy_unmeasured_ticks"] == 0 for g in gpus.values())
    # Peak W over the 10 s windows: GPU0 window 4 is (9 x 500 + 550) / 10; the L4's windows
    # average 39.5 + t over t = 1..10, 11..20, ...: 45, 55, 65, 75.
    assert g0["power_w_peak"] == approx((9 * 500 + 550) / 10)
    assert g2["power_w_peak"] == approx(75.0)
    # Tokens per joule (output) and joules per output token.
    assert g0["tok_per_j"] == approx(big_out / 2 / energy[0])
    assert g0["j_per_tok_out"] == approx(energy[0] / (big_out / 2))
    assert gpus[3]["tok_per_j"] == 0.0 and gpus[3]["j_per_tok_out"] is None

    # Cost: the hourly rate for the 40 s plus energy at 5e-8 $/J. Busy: the seconds in which
    # tokens flowed or requests ran (GPU0/1: 30 of 40; the L4 all 40; GPU3 none).
    rate = {0: H200_USD_S, 1: H200_USD_S, 2: L4_USD_S, 3: H200_USD_S}
    busy_s = {0: 30.0, 1: 30.0, 2: 40.0, 3: 0.0}
    busy_energy = {0: 28 * 500 + 550 + 500, 1: 30 * 500, 2: energy[2], 3: 0.0}
    cost = {i: 40 * rate[i] + energy[i] * USD_PER_J for i in range(4)}
    busy_cost = {i: busy_s[i] * rate[i] + busy_energy[i] * USD_PER_J for i in range(4)}
    assert cost[0] == approx(0.0408025)  # written out once, to be sure of the formula
    for i in range(4):
        g = gpus[i]
        assert g["cost_usd"] == approx(cost[i])
        assert g["usd_per_hour_mean"] == approx(cost[i] / 40 * 3600)
        assert g["busy_gpu_s"] == approx(busy_s[i])
        assert g["busy_pct"] == approx(busy_s[i] / 40 * 100)
        assert g["idle_usd"] == approx(cost[i] - busy_cost[i])
        tokens_out = expected_tokens[i][1]
        if tokens_out:
            assert g["usd_per_mtok"] == approx(cost[i] / tokens_out * 1e6)
            assert g["busy_usd_per_mtok"] == approx(busy_cost[i] / tokens_out * 1e6)
        else:  # idle: no $/Mtok at all, never infinity
            assert g["usd_per_mtok"] is None and g["busy_usd_per_mtok"] is None
    assert gpus[2]["price_usd_per_gpu_hour"] == 0.72
    assert gpus[2]["price_source"] == "config: cost.gpu_hour_usd.L4"

    # The host: sums of the GPUs, and ratios of the sums (never an average of ratios).
    host = data["host"]
    total_out = big_out + small_out
    total_in = big_in + small_in
    total_energy = sum(energy.values())
    total_cost = sum(cost.values())
    total_busy_cost = sum(busy_cost.values())
    assert host["gpu_count"] == 4 and host["unpriced_gpus"] == []
    assert (host["tokens_in"], host["tokens_out"]) == approx((total_in, total_out))
    assert host["duration_s"] == 40.0
    assert host["tok_s_out_mean"] == approx(total_out / 40)
    assert host["energy_kwh"] == approx(total_energy / 3.6e6)
    assert host["power_w_mean"] == approx(total_energy / 40)
    assert host["cost_usd"] == approx(total_cost)
    assert host["usd_per_mtok"] == approx(total_cost / total_out * 1e6)
    assert host["usd_per_mtok"] != approx(
        sum(gpus[i]["usd_per_mtok"] for i in range(3)) / 3
    )  # the average of ratios differs
    assert host["busy_usd_per_mtok"] == approx(total_busy_cost / total_out * 1e6)
    assert host["busy_gpu_s"] == approx(30 + 30 + 40 + 0)  # GPU-seconds, summed over the GPUs
    assert host["busy_pct"] == approx((30 + 30 + 40 + 0) / 160 * 100)  # over watched GPU-seconds
    assert host["idle_usd"] == approx(total_cost - total_busy_cost)
    assert host["tok_per_j"] == approx(total_out / total_energy)
    # Host windows: out 250, 250, 50, 335 tok/s; W 1125, 1135, 345, 1160.
    assert host["tok_s_out_p50"] == approx(250.0)
    assert host["tok_s_out_p95"] == approx(250 + 0.85 * 85)
    assert host["tok_s_out_peak"] == approx(335.0)
    assert host["power_w_peak"] == approx(505 + 500 + 75 + 80)

    # Engines: the engine's own totals (counted once, not per GPU), requests through a restart.
    engines = {e["name"]: e for e in data["endpoints"]}
    big, small = engines["big"], engines["small"]
    assert (big["kind"], big["model"], big["gpus"], big["gpu_indices"]) == ("vllm", "m-big", [G0, G1], [0, 1])
    assert (big["tokens_in"], big["tokens_out"]) == approx((big_in, big_out))
    assert big["tok_s_out_mean"] == approx(big_out / 40)
    assert big["requests_completed"] == 20 + 1 + 9
    assert big["ttft_p50_s_mean"] == approx(0.15) and big["ttft_p95_s_mean"] == approx(0.195)
    assert big["itl_p50_s_mean"] == approx(0.015)
    assert (small["kind"], small["gpu_indices"], small["requests_completed"]) == ("sglang", [2], 80)
    assert small["ttft_p50_s_mean"] is None  # not published: unknown, not zero

    # The API comparison and the cost inputs the figures rest on.
    [api] = data["api_equivalent"]
    api_cost = total_in / 1e6 * 0.5 + total_out / 1e6 * 2.0
    assert api == approx(
        {
            "name": "api-x",
            "date": "2026-04-01",
            "usd_per_mtok_in": 0.5,
            "usd_per_mtok_out": 2.0,
            "api_cost_usd": api_cost,
            "measured_cost_usd": total_cost,
            "saved_usd": api_cost - total_cost,
        }
    )
    inputs = data["cost_inputs"]
    assert (
        inputs["mode"],
        inputs["pue"],
        inputs["electricity_usd_per_kwh"],
        inputs["node_overhead"],
        inputs["energy_charged"],
    ) == ("cloud", 1.5, 0.10, 1.2, True)
    assert inputs["prices"] == [
        {"usd_per_gpu_hour": 3.6, "source": "config: cost.gpu_hour_usd.H200", "gpu_indices": [0, 1, 3]},
        {"usd_per_gpu_hour": 0.72, "source": "config: cost.gpu_hour_usd.L4", "gpu_indices": [2]},
    ]
    assert inputs["api_prices"] == [
        {"name": "api-x", "usd_per_mtok_in": 0.5, "usd_per_mtok_out": 2.0, "date": "2026-04-01"}
    ]
    assert data["notes"] == []


def test_a_range_inside_the_session_counts_only_its_ticks(scripted_db: Path) -> None:
    data = summary_json(scripted_db, since=T0 + 10, until=T0 + 30)
    assert data["range"]["whole_session"] is False and data["range"]["duration_s"] == 20.0
    g0 = data["gpus"][0]
    assert g0["tokens_out"] == approx(10 * 200 / 2)  # t = 11..20 busy, 21..30 idle
    assert g0["energy_kwh"] == approx((10 * 500 + 10 * 100) / 3.6e6)
    assert g0["busy_pct"] == approx(50.0)
    # Two 10 s windows (100 and 0 tok/s): too few for percentiles; the peak, and a note that says so.
    assert (g0["tok_s_out_p50"], g0["tok_s_out_p95"], g0["tok_s_out_peak"]) == (None, None, approx(100.0))
    assert data["rate_windows"]["count"] == 2
    assert "the range holds 2 windows of 10s, fewer than 3: no p50 or p95, only the peak" in data["notes"]
    assert g0["energy_method"] == "counter"  # the reset at t = 35 is outside
    assert {e["name"]: e["requests_completed"] for e in data["endpoints"]} == {"big": 10, "small": 40}


def test_markdown_and_csv_show_the_same_figures(scripted_db: Path) -> None:
    result = report.summarize(scripted_db)
    text = report.render(result, "md")
    assert text.startswith(f"# tokentop session {result.session.id} on test-host (4 GPUs: 3× H200, 1× L4)")
    host_rows = [line for line in text.splitlines() if line.startswith("| **host**")]
    assert len(host_rows) == 2  # one in each table
    assert host_rows[0].startswith("| **host** | 4 GPUs | 32,700 | 8,850 | 818 |")
    assert "| 250 | 322 | 335 |" in host_rows[0]  # out p50, p95, peak
    # Written by tokentop.units, as on screen: money, $/Mtok, the busy share.
    assert "| $0.130 | $11.69 | $14.68 | $7.87 | 62% | $0.060 |" in host_rows[1]
    # GPU 3 serves no endpoint: no $/Mtok to show (an em dash, as on screen), its cost still counted.
    assert "| 3 H200 | counter | 0.0008889 | 80.0 | 80.0 | 0 | N/A | $0.040 | $3.61 | — | — | 0% | $0.040 |" in text
    assert "| 3 H200 | — |" in text  # no engine: one word for "nothing to show", as on screen
    assert "| big | vllm | m-big | 0,1 | 28,700 | 6,850 | 171 | 30 | 150ms | 195ms | 15ms |" in text
    assert "| small | sglang | m-small | 2 | 4,000 | 2,000 | 50.0 | 80 | N/A | N/A | N/A |" in text
    assert "(40s), the whole session" in text and "## Endpoints" in text and "| busy |" in text
    assert "—" not in text.replace("| — | — |", "").replace("| 3 H200 | — |", "")  # unknown is N/A elsewhere
    assert "counter; 1 tick(s) power integrated" in text
    assert "config: cost.gpu_hour_usd.L4" in text and "api-x" in text

    rows = list(csv.DictReader(io.StringIO(report.render(result, "csv"))))
    assert [r["scope"] for r in rows] == ["gpu"] * 4 + ["total"]
    assert all(
        column.endswith(
            (
                "_s",
                "_usd",
                "_kwh",
                "_pct",
                "_w_mean",
                "_w_peak",
                "_j",
                "_in",
                "_out",
                "_mean",
                "_p50",
                "_p95",
                "_peak",
                "_mtok",
                "_hour",
                "_ticks",
                "_method",
                "_index",
            )
        )
        or column in ("scope", "uuid", "name", "engines")
        for column in rows[0]
    )
    assert float(rows[0]["tokens_out"]) == result.gpus[0].figures.tokens_out
    assert float(rows[4]["cost_usd"]) == approx(result.host.cost_usd)
    assert rows[3]["usd_per_mtok"] == ""  # the idle GPU: no figure
    assert float(rows[4]["usd_per_mtok"]) == approx(result.host.usd_per_mtok)


# --- the fixed windows follow derive's rules ---------------------------------------------------


def _track(uuid: str, t: list[float], rng: random.Random) -> GpuTrack:
    tin, tout, energy = [0.0], [0.0], [0.0]
    for _ in t[1:]:
        tin.append(tin[-1] + rng.choice([0.0, rng.uniform(0, 5000)]))
        tout.append(tout[-1] + rng.uniform(0, 900))
        energy.append(energy[-1] + rng.uniform(500, 7000))
    none = (None,) * len(t)
    return GpuTrack(uuid, tuple(t), tuple(tin), tuple(tout), tuple(energy), none, none)


def _by_derive(track: GpuTrack) -> dict[float, Window]:
    """Each window between consecutive points by ``window_between``."""
    points = [
        Point(t, Totals(tokens_in=a, tokens_out=b, energy_j=e, cost_usd=None))
        for t, a, b, e in zip(track.t, track.tokens_in_cum, track.tokens_out_cum, track.energy_j_cum)
    ]
    return {new.t: window_between(old, new) for old, new in pairwise(points)}


@pytest.mark.parametrize("aligned", [True, False], ids=["same ticks", "a GPU missing ticks"])
def test_fixed_windows_are_window_between_and_the_host_sum_windows(aligned: bool) -> None:
    """The columns behind peaks and percentiles hold exactly what derive's functions give."""
    rng = random.Random(11)
    ticks = [T0 + 10.0 * i + rng.uniform(-0.2, 0.2) for i in range(60)] + [T0 + 593.0]  # a short last window
    gaps = ticks if aligned else [t for i, t in enumerate(ticks) if i % 7 != 3]
    late = ticks if aligned else ticks[20:]
    tracks = [_track(G0, ticks, rng), _track(G1, gaps, rng), _track(G2, late, rng)]
    per_gpu = [windows_from_track(track) for track in tracks]
    expected = [_by_derive(track) for track in tracks]
    for got, want in zip(per_gpu, expected):
        assert got.ends == list(want)
        assert list(zip(got.span_s, got.tokens_in, got.tokens_out, got.energy_j)) == [
            (w.span_s, w.tokens_in, w.tokens_out, w.energy_j) for w in want.values()
        ]
    host = host_windows(per_gpu)
    ends = sorted({end for windows in expected for end in windows})
    summed = {end: sum_windows([w[end] for w in expected if end in w]) for end in ends}
    assert sorted(host.ends) == ends
    got_host = {end: (span, a, b, e) for end, span, a, b, e in zip(*host)}
    assert got_host == {end: (w.span_s, w.tokens_in, w.tokens_out, w.energy_j) for end, w in summed.items()}
    # Settled: the short last window (3 s) joins the one before; nothing is lost. (A GPU missing
    # ticks gives the host longer windows there, by sum_windows' rule.)
    for windows in (per_gpu[0], host) if aligned else per_gpu[:1]:
        joined = settled(windows, 10.0)
        assert joined.ends == windows.ends[:-2] + windows.ends[-1:]
        assert joined.span_s[-1] == approx(windows.span_s[-2] + windows.span_s[-1])
        for column in ("span_s", "tokens_in", "tokens_out", "energy_j"):
            assert sum(getattr(joined, column)) == approx(sum(getattr(windows, column)))


# --- choosing sessions and ranges; the command ------------------------------------------------


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    summary_command.add_arguments(parser)
    return parser.parse_args(argv)


def run(path: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = summary_command.run(args(*argv), Config(db_path=path))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_prints_json_and_writes_files(
    scripted_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(scripted_db, "--format", "json", capsys=capsys)
    assert code == 0 and err == ""
    assert json.loads(out)["host"]["tokens_out"] == approx(8850)
    target = tmp_path / "s.csv"
    code, out, _ = run(scripted_db, "--format", "csv", "--output", str(target), capsys=capsys)
    assert code == 0 and out == "" and target.read_text().startswith("scope,gpu_index")


def test_list_shows_every_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.db"
    first = record_scripted(path, ticks=5)
    second = record_scripted(path, ticks=3)
    code, out, _ = run(path, "--list", capsys=capsys)
    assert code == 0
    assert out.count("| test-host |") == 2 and "| 4s |" in out and "| 2s |" in out
    code, out, _ = run(path, "--list", "--format", "json", capsys=capsys)
    assert [s["id"] for s in json.loads(out)["sessions"]] == [first, second]
    # The latest session is the default; --session picks another.
    assert summary_json(path)["host"]["duration_s"] == 2.0
    assert summary_json(path, session_id=first)["host"]["duration_s"] == 4.0


def test_a_range_picks_the_latest_session_with_readings_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.db"
    early = record_scripted(path, ticks=11, t0=T0)
    late = record_scripted(path, ticks=21, t0=T0 + 3600)
    assert summary_json(path)["session"]["id"] == late
    assert summary_json(path, until=T0 + 60)["session"]["id"] == early
    code, out, _ = run(path, "--until", "2023-11-14T22:15:00Z", "--format", "json", capsys=capsys)
    assert code == 0 and json.loads(out)["session"]["id"] == early
    assert json.loads(out)["range"]["duration_s"] == 10.0


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty file",
        "no sessions",
        "unknown session",
        "range without data",
        "bad time",
        "until before since",
        "not a history",
        "single reading",
    ],
)
def test_nothing_to_summarise_is_one_line_and_exit_2(
    case: str, scripted_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, argv, expected = scripted_db, [], ""
    if case == "missing":
        path, expected = tmp_path / "nope.db", "no history at"
    elif case == "empty file":
        path, expected = tmp_path / "empty.db", "empty SQLite database"
        path.touch()
    elif case == "no sessions":
        path, expected = tmp_path / "fresh.db", "has no sessions yet"
        Store.open(path, host="h", version="v", config={}).close()
        sqlite3.connect(path).execute("DELETE FROM sessions").connection.commit()
    elif case == "unknown session":
        argv, expected = ["--session", "999"], "no session 999"
    elif case == "range without data":
        argv, expected = ["--since", "2001-01-01T00:00", "--until", "2001-01-02T00:00"], "no session in"
    elif case == "bad time":
        argv, expected = ["--since", "yesterday-ish"], "cannot read the time 'yesterday-ish'"
    elif case == "until before since":
        argv, expected = ["--since", "1h", "--until", "2h"], "--until must be later"
    elif case == "single reading":
        path, expected = tmp_path / "one.db", "has a single reading"
        record_scripted(path, ticks=1)
    elif case == "not a history":
        path, expected = tmp_path / "other.db", "another program"
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    code, out, err = run(path, *argv, capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith("tokentop: ") and expected in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_range_in_the_session_with_no_readings_says_so(scripted_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = report.summarize(scripted_db).session.id
    code, _, err = run(
        scripted_db,
        "--session",
        str(session),
        "--since",
        "2001-01-01T00:00",
        "--until",
        "2001-01-02T00:00",
        capsys=capsys,
    )
    assert code == 2 and f"session {session} has no readings between" in err


def test_times_are_iso_or_a_time_ago() -> None:
    now = 1_700_000_000.0
    assert report.parse_time("2h", now) == now - 7200
    assert report.parse_time("1h30m", now) == now - 5400
    assert report.parse_time("45s", now) == now - 45
    assert report.parse_time("2d", now) == now - 172800
    assert report.parse_time("2023-11-14T22:13:20Z", now) == now
    assert report.parse_time("2023-11-14T23:13:20+01:00", now) == now
    local = time.mktime(time.strptime("2023-11-14 22:13:20", "%Y-%m-%d %H:%M:%S"))
    assert report.parse_time("2023-11-14 22:13:20", now) == local
    for bad in ("", "h", "2x", "tomorrow"):
        with pytest.raises(report.SummaryError, match="cannot read the time"):
            report.parse_time(bad, now)


def test_print_session_summary_for_the_live_view_and_record(
    scripted_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = report.summarize(scripted_db).session.id
    stream = io.StringIO()
    assert summary_command.print_session_summary(scripted_db, session, stream) == 0
    assert stream.getvalue().startswith(f"# tokentop session {session} on test-host")
    stream = io.StringIO()
    assert summary_command.print_session_summary(scripted_db, session, stream, fmt="json") == 0
    assert json.loads(stream.getvalue())["session"]["id"] == session
    assert summary_command.print_session_summary(scripted_db, 999, io.StringIO()) == 2
    assert "no session summary: no session 999" in capsys.readouterr().err


# --- harder histories ---------------------------------------------------------------------------


def test_unpriced_gpu_hides_host_cost_but_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    deriver = Deriver(CostConfig(energy_in_rate=False))  # energy added (issue 9, item 16)
    with Store.open(path, host="h", version="v", config=Config().public_dict()) as store:
        for t in range(11):
            gpus = (
                GpuSample(G0, 0, "NVIDIA H200", power_w=300.0),
                GpuSample(G1, 1, "Mystery Accelerator 9000", power_w=200.0),
            )
            sample = EndpointSample(
                name="e",
                url="http://x/metrics",
                t_mono=float(t),
                status="up",
                generation_tokens_total=100.0 * t,
                prompt_tokens_total=0.0,
                running=1.0,
            )
            mapping = {"e": EngineMapping(gpus=(G0, G1), source="config")}
            store.append(deriver.step(GpuReading(float(t), gpus), (sample,), mapping, T0 + t))
    data = summary_json(path)
    assert data["host"]["unpriced_gpus"] == [G1]
    assert data["host"]["cost_usd"] is None and data["host"]["usd_per_mtok"] is None
    assert data["host"]["tokens_out"] == approx(1000.0)
    assert data["gpus"][0]["usd_per_mtok"] == approx((10 * 3.5 / 3600 + 3000 * 0.10 * 1.25 * 1.3 / 3.6e6) / 500 * 1e6)
    assert data["gpus"][1]["price_source"] is None
    assert any("no price" in note for note in data["notes"])
    text = report.render(report.summarize(path), "md")
    host_row = next(line for line in text.splitlines() if line.startswith("| **host** | sum of"))
    assert "| N/A | N/A |" in host_row  # cost and $/hour unknown, not zero


# Written by other programs and stored raw by a history from before safe_text: a name with a
# column separator, a formula, a line break and terminal escapes.
HOSTILE_HOST = "=calc|\x1b[2J host"
HOSTILE_GPU = '=HYPERLINK("http://x")|\x1b]0;t\x07 H200'
HOSTILE_ENDPOINT = "=cmd|x\n\x1b[31mred"
HOSTILE_MODEL = "-m|y\r\x9b2J"


def record_unmeasured_and_hostile(path: Path) -> None:
    """GPU 0 with power and a counter; GPU 1 with neither, all along; one endpoint over both,
    named, modelled and hosted with hostile strings."""
    deriver = Deriver(COST)
    with Store.open(path, host=HOSTILE_HOST, version="0.1.0", config=Config(cost=COST).public_dict()) as store:
        for t in range(11):
            gpus = (
                GpuSample(G0, 0, HOSTILE_GPU, power_w=400.0, energy_counter_mj=1_000_000 + 400_000 * t),
                GpuSample(G1, 1, "NVIDIA H200"),  # NOT_SUPPORTED to power and energy
            )
            sample = EndpointSample(
                name=HOSTILE_ENDPOINT,
                url="http://127.0.0.1:8001/metrics|z",
                t_mono=float(t),
                status="up",
                kind="vllm\x1b[0m",
                model=HOSTILE_MODEL,
                generation_tokens_total=100.0 * t,
                prompt_tokens_total=0.0,
                running=1.0,
            )
            mapping = {HOSTILE_ENDPOINT: EngineMapping(gpus=(G0, G1), source="config")}
            store.append(deriver.step(GpuReading(float(t), gpus), (sample,), mapping, T0 + t))


UNKNOWN_ENERGY_KEYS = ("energy_kwh", "power_w_mean", "power_w_peak", "tok_per_j", "j_per_tok_out")


def test_energy_never_measured_is_null_not_zero_for_the_gpu_and_the_host(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    record_unmeasured_and_hostile(path)
    data = summary_json(path)
    measured, unmeasured = data["gpus"]
    assert measured["energy_kwh"] == approx(10 * 400 / 3.6e6) and measured["power_w_mean"] == approx(400.0)
    assert unmeasured["energy_method"] is None
    assert {key: unmeasured[key] for key in UNKNOWN_ENERGY_KEYS} == dict.fromkeys(UNKNOWN_ENERGY_KEYS)
    assert unmeasured["tokens_out"] == approx(500.0)  # what is known stays
    assert unmeasured["cost_usd"] == approx(10 * H200_USD_S)  # the hourly rate; no energy in it
    # The host is the sum of its GPUs: one unknown makes the sum unknown (as cost with no price).
    assert {key: data["host"][key] for key in UNKNOWN_ENERGY_KEYS} == dict.fromkeys(UNKNOWN_ENERGY_KEYS)
    assert data["host"]["tokens_out"] == approx(1000.0)
    assert any("GPU 1: no power or energy reading" in note for note in data["notes"])

    text = report.render(report.summarize(path), "md")
    assert "| 1 H200 | no power reading | N/A | N/A | N/A | N/A | N/A | $0.010 |" in text
    assert "| **host** | sum of GPUs | N/A | N/A | N/A | N/A | N/A |" in text
    rows = list(csv.DictReader(io.StringIO(report.render(report.summarize(path), "csv"))))
    assert [rows[i]["energy_kwh"] for i in range(3)] == [repr(10 * 400 / 3.6e6), "", ""]
    assert rows[1]["power_w_mean"] == rows[2]["tok_per_j"] == ""


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells, split on the ``|`` that are not escaped."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_hostile_names_from_the_history_are_made_safe_in_every_format(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    record_unmeasured_and_hostile(path)
    result = report.summarize(path)
    outputs = {fmt: report.render(result, fmt) for fmt in report.FORMATS}
    for fmt, text in outputs.items():
        assert not any(c in text for c in "\x1b\x07\x9b\r"), fmt  # no terminal escape survives

    markdown = outputs["md"].splitlines()
    header = next(line for line in markdown if line.startswith("| endpoint |"))
    endpoint_row = next(line for line in markdown if line.startswith("| =cmd"))
    assert _cells(endpoint_row)[:4] == ["=cmd\\|x \ufffd[31mred", "vllm\ufffd[0m", "-m\\|y \ufffd2J", "0,1"]
    assert len(_cells(endpoint_row)) == len(_cells(header))  # no column added
    gpu_rows = [line for line in markdown if line.startswith("| 0 ")]
    assert len(gpu_rows) == 2  # one in each table, each with the GPU's name in one cell
    assert all(_cells(line)[0] == '0 =HYPERLINK("http://x")\\|\ufffd]0;t\ufffd' for line in gpu_rows)
    assert _cells(gpu_rows[0])[1] == "=cmd\\|x \ufffd[31mred"  # its engines
    assert markdown[0].startswith(f"# tokentop session {result.session.id} on =calc|\ufffd[2J host")

    data = json.loads(outputs["json"])
    [endpoint] = data["endpoints"]
    assert (endpoint["name"], endpoint["model"]) == ("=cmd|x \ufffd[31mred", "-m|y \ufffd2J")
    assert endpoint["url"] == "http://127.0.0.1:8001/metrics|z"
    assert data["gpus"][0]["name"] == '=HYPERLINK("http://x")|\ufffd]0;t\ufffd H200'
    assert data["gpus"][1]["engines"] == ["=cmd|x \ufffd[31mred"]
    assert data["session"]["host"] == "=calc|\ufffd[2J host"

    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert rows[0]["name"] == "'" + data["gpus"][0]["name"]  # OWASP: a leading = is quoted away
    assert rows[0]["engines"] == "'=cmd|x \ufffd[31mred"
    assert rows[0]["uuid"] == G0 and rows[0]["scope"] == "gpu"
    assert float(rows[0]["tokens_out"]) == approx(500.0)  # numbers stay numbers

    with report.open_history(path) as store:
        listing = report.render_session_list(store, "csv")
    assert "'=calc|\ufffd[2J host" in listing


def test_a_negative_figure_is_a_number_in_the_csv_only_text_is_quoted(scripted_db: Path) -> None:
    figures = report.Figures(**{f.name: -1.5 for f in dataclasses.fields(report.Figures)})
    gpu = report.GpuSummary(0, "-uuid", "@name", ("+e",), "counter", 0, 0, -2.0, None, figures)
    summary = replace(report.summarize(scripted_db), gpus=(gpu,), host=figures)
    rows = list(csv.DictReader(io.StringIO(report.render_csv(summary))))
    assert (rows[0]["uuid"], rows[0]["name"], rows[0]["engines"]) == ("'-uuid", "'@name", "'+e")
    assert rows[0]["cost_usd"] == rows[1]["cost_usd"] == "-1.5"
    assert rows[0]["price_usd_per_gpu_hour"] == "-2.0"


def test_a_restart_hidden_between_two_read_points_is_still_counted(tmp_path: Path) -> None:
    """Rows are read 10 s apart; an engine that restarts in between and whose request counter
    is back above its old value by the next point is caught by its token counters."""
    path = tmp_path / "h.db"
    deriver = Deriver(CostConfig())
    requests, generated = 100.0, 9000.0
    with Store.open(path, host="h", version="v", config=Config().public_dict()) as store:
        for t in range(11):
            if 1 <= t <= 4:
                requests, generated = requests + 1, generated + 10
            elif t == 5:  # restart: both counters start again from zero
                requests, generated = 1.0, 10.0
            elif t > 5:
                requests, generated = requests + 50, generated + 500
            sample = EndpointSample(
                name="e",
                url="http://x/metrics",
                t_mono=float(t),
                status="up",
                generation_tokens_total=generated,
                prompt_tokens_total=0.0,
                requests_finished_total=requests,
            )
            gpus = (GpuSample(G0, 0, "NVIDIA H200", power_w=100.0),)
            mapping = {"e": EngineMapping(gpus=(G0,), source="config")}
            store.append(deriver.step(GpuReading(float(t), gpus), (sample,), mapping, T0 + t))
    [endpoint] = summary_json(path)["endpoints"]
    assert requests == 251.0  # above the 100 it started from: the plain difference says 151
    assert endpoint["requests_completed"] == 4 + 1 + 5 * 50
    assert endpoint["tokens_out"] == 4 * 10 + 10 + 5 * 500


def test_after_retention_the_rollups_give_the_same_totals(tmp_path: Path) -> None:
    """Per-tick rows older than a minute are deleted; totals come from the rollups and the
    percentiles are over whole minutes, and the summary says so."""
    path = tmp_path / "h.db"
    deriver = Deriver(CostConfig())
    start = T0 - 0.5  # ticks at xx:xx:59.5: minutes hold 60 ticks each
    with Store.open(path, host="h", version="v", config=Config().public_dict(), raw_retention_h=1 / 60) as store:
        for t in range(301):
            gpus = (GpuSample(G0, 0, "NVIDIA H200", power_w=400.0),)
            sample = EndpointSample(
                name="e",
                url="http://x/metrics",
                t_mono=float(t),
                status="up",
                generation_tokens_total=120.0 * t,
                prompt_tokens_total=360.0 * t,
                running=1.0,
            )
            mapping = {"e": EngineMapping(gpus=(G0,), source="config")}
            store.append(deriver.step(GpuReading(float(t), gpus), (sample,), mapping, start + t))
    [(raw_first,)] = sqlite3.connect(path).execute("SELECT min(t) FROM gpu_ticks").fetchall()
    assert raw_first > start + 200, "retention did not delete old rows"
    data = summary_json(path)
    # Under an hour; the first minute (0.5 s of it) joins the next: five windows.
    assert data["rate_windows"] == {"length_s": 60.0, "source": "rollup_1m", "endpoint_step_s": 10.0, "count": 5}
    assert any("retention" in note for note in data["notes"])
    g = data["gpus"][0]
    assert g["duration_s"] == approx(300.0, abs=0.5)
    assert g["tokens_out"] == approx(120.0 * 300, rel=0.01)
    assert (g["tok_s_out_p50"], g["tok_s_out_peak"]) == approx((120.0, 120.0))
    assert g["power_w_peak"] == approx(400.0)


def writer(path: Path) -> subprocess.Popen[str]:
    """tests/test_store.py's writer: another process appending ticks as fast as it can."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("test_store.py")), "writer", str(path), "0", "5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    for line in process.stdout:
        if int(line.split()[1]) >= 30:
            break
    return process


def test_a_session_still_being_written_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    process = writer(path)
    try:
        seen = []
        for _ in range(5):
            data = summary_json(path)
            assert data["session"]["open"] is True
            assert any("still open" in note for note in data["notes"])
            # Every figure comes from one consistent end point: the host's tokens are the GPUs'.
            assert data["host"]["tokens_out"] == approx(sum(g["tokens_out"] for g in data["gpus"]))
            seen.append(data["range"]["until_unix_s"])
            time.sleep(0.05)
        assert seen == sorted(seen) and seen[-1] > seen[0], "the writer did not move on"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


# --- the demo ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_demo_session_summary_matches_the_simulation_truth(tmp_path: Path) -> None:
    """The demo through the real reader, HTTP collectors, derive and store, on a fake clock:
    the summary's per-GPU figures are the simulation's own closed-form truth."""
    clock = FakeClock()
    host = DemoHost(seed=7, clock=clock)
    config = replace(Config(demo=True, db_path=tmp_path / "h.db"), endpoints=host.serve())
    store = Store.open(config.db_path, host="demo", version="0.1.0", config=config.public_dict())
    sampler = Sampler(config, DemoGpuReader(host), store=store, clock=clock, wall_clock=lambda: T0 + clock.now)
    try:
        first = host.now()
        for _ in range(31):
            sampler.tick()
            clock.now += 1.0
        last = host.now() - 1.0
    finally:
        sampler.stop()
        host.close()
    truth = host.truth(first, last)
    data = summary_json(config.db_path)
    assert data["host"]["duration_s"] == approx(30.0)
    for g in data["gpus"]:
        i = g["index"]
        engine = next((e for e in host.engines if i in e.gpus), None)
        share = 1 / len(engine.gpus) if engine else 1.0
        assert g["tokens_out"] == approx(truth.tokens_out[i], abs=1.0 * share)  # counters floor()ed
        assert g["tokens_in"] == approx(truth.tokens_in[i], abs=1.0 * share)
        assert g["energy_kwh"] * 3.6e6 == approx(truth.energy_j[i], abs=0.01)
        assert g["energy_method"] == "counter"
        cost = 3.5 * 30 / 3600  # the cloud default: the rate pays for the power (issue 9, item 16)
        assert g["cost_usd"] == approx(cost, rel=1e-6)
        assert g["price_source"].startswith("built-in table")
    assert data["gpus"][7]["engines"] == [] and data["gpus"][7]["usd_per_mtok"] is None
    assert {e["name"]: e["kind"] for e in data["endpoints"]} == {
        "llama-70b": "vllm",
        "llama-8b": "vllm",
        "qwen-32b": "vllm",
    }


@pytest.mark.parametrize("text", ["0001-01-01T00:00", "9" * 400 + "d", "yesterday", ""])
def test_times_out_of_range_or_unreadable_are_a_summary_error(text: str) -> None:
    with pytest.raises(report.SummaryError, match="cannot read the time"):
        report.parse_time(text, 1.7e9)
