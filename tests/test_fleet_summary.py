"""A fleet summary adds its hosts' summaries up and writes them out: tokentop.fleet.summary."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tokentop.fleet.summary import HostSummary, fleet_summary
from tokentop.fleet.summary_render import render_fleet
from tokentop.report.figures import Figures


def figures(
    tokens_out: float,
    cost: float | None,
    *,
    kwh: float | None = 1.0,
    duration: float = 3600.0,
    busy: float = 0.5,
    gpus: int = 8,
) -> Figures:
    return Figures(
        duration_s=duration,
        tokens_in=3 * tokens_out,
        tokens_out=tokens_out,
        tok_s_in_mean=3 * tokens_out / duration,
        tok_s_in_p50=1.0,
        tok_s_in_p95=2.0,
        tok_s_in_peak=3.0,
        tok_s_out_mean=tokens_out / duration,
        tok_s_out_p50=1.0,
        tok_s_out_p95=2.0,
        tok_s_out_peak=3.0,
        energy_kwh=kwh,
        power_w_mean=None if kwh is None else kwh * 3.6e6 / duration,
        power_w_peak=9999.0,
        tok_per_j=None if kwh is None else tokens_out / (kwh * 3.6e6),
        j_per_tok_out=None,
        cost_usd=cost,
        usd_per_hour_mean=None if cost is None else cost / duration * 3600,
        usd_per_mtok=None if cost is None else cost / tokens_out * 1e6,
        busy_usd_per_mtok=None,
        busy_s=busy * gpus * duration,
        busy_pct=busy * 100.0,
        idle_usd=None if cost is None else cost / 2,
    )


HOSTS = (
    HostSummary("h1", "ok", None, 8, figures(1_000_000, 10.0, busy=0.25)),
    HostSummary("h2", "ok", None, 8, figures(4_000_000, 20.0, kwh=3.0)),
    HostSummary("h3", "ok", None, 4, figures(5_000_000, None, kwh=None, busy=1.0, gpus=4)),
    HostSummary("h4", "down", "ssh: Connection refused", 0, None),
)


def test_fleet_figures_are_sums_and_one_division() -> None:
    summary = fleet_summary("ssh: h1, h2, h3, h4", "ssh", 0.0, 3600.0, HOSTS)
    f = summary.fleet
    assert f is not None
    assert f.tokens_out == 10_000_000 and f.tokens_in == 30_000_000
    assert f.tok_s_out_mean == pytest.approx(10_000_000 / 3600)
    assert f.cost_usd == pytest.approx(30.0)
    assert f.usd_per_mtok == pytest.approx(30.0 / 5.0)  # priced hosts only, both sides
    assert f.busy_usd_per_mtok == pytest.approx(15.0 / 5.0)
    assert f.energy_kwh == pytest.approx(4.0)
    assert f.tok_per_j == pytest.approx(5_000_000 / (4.0 * 3.6e6))  # hosts with energy only
    assert f.power_w_mean == pytest.approx(4000.0)
    # busy GPU-seconds over watched ones, (2 + 4 + 4) / 20 GPU-hours; the mean of 25, 50 and 100 % is 58 %
    assert f.busy_pct == pytest.approx(50.0)
    assert f.tok_s_out_peak is None and f.power_w_peak is None  # a sum of peaks is no peak
    assert summary.gpu_count == 20
    assert summary.unpriced_hosts == ("h3",)
    assert any("h3" in n for n in summary.notes) and any("h4" in n for n in summary.notes)


def test_a_host_without_gpus_and_never_busy_still_counts_its_watched_time() -> None:
    """Its own summary counts it as one unit: its idle hour weighs in the fleet's busy share."""
    hosts = [
        HostSummary("gpu", "ok", None, 8, figures(1.0, 1.0)),
        HostSummary("cpu", "ok", None, 0, figures(1.0, None, busy=0.0, gpus=1)),
    ]
    f = fleet_summary("x", "ssh", 0.0, 3600.0, hosts).fleet
    assert f is not None and f.busy_pct == pytest.approx(100.0 * 4 / 9)


def test_no_host_summarised_gives_no_fleet_figures() -> None:
    summary = fleet_summary("x", "ssh", 0.0, 60.0, HOSTS[3:])
    assert summary.fleet is None and summary.gpu_count == 0
    assert json.loads(render_fleet(summary, "json"))["fleet"] is None
    assert "not summarised" in render_fleet(summary, "md")


def test_json_csv_and_markdown_agree() -> None:
    summary = fleet_summary("prometheus http://127.0.0.1:9090", "tokentop", 0.0, 3600.0, HOSTS)
    data = json.loads(render_fleet(summary, "json"))
    assert data["kind"] == "fleet" and data["range"]["duration_s"] == 3600.0
    assert [h["name"] for h in data["hosts"]] == ["h1", "h2", "h3", "h4"]
    assert data["hosts"][3]["host"] is None and data["hosts"][3]["reason"] == "ssh: Connection refused"
    assert data["fleet"]["usd_per_mtok"] == pytest.approx(6.0)
    assert data["fleet"]["host_count"] == 4 and data["fleet"]["hosts_summarised"] == 3
    assert sum(h["host"]["tokens_out"] for h in data["hosts"] if h["host"]) == data["fleet"]["tokens_out"]
    rows = list(csv.DictReader(io.StringIO(render_fleet(summary, "csv"))))
    assert [r["scope"] for r in rows] == ["host", "host", "host", "fleet"]
    assert float(rows[-1]["usd_per_mtok"]) == pytest.approx(6.0)
    assert rows[-1]["tok_s_out_peak"] == ""
    md = render_fleet(summary, "md")
    assert "| **fleet** | 20 |" in md and "| h4 | 0 | not summarised: ssh: Connection refused |" in md


def test_hostile_host_names_stay_inert() -> None:
    evil = HostSummary("=cmd|' /C calc'!A0", "ok", None, 1, figures(1.0, 1.0))
    rows = list(csv.reader(io.StringIO(render_fleet(fleet_summary("x", "ssh", 0, 1, [evil]), "csv"))))
    assert rows[1][:2] == ["host", "'=cmd|' /C calc'!A0"]
    pipe = HostSummary("a|b", "ok", None, 1, figures(1.0, 1.0))
    assert "| a\\|b |" in render_fleet(fleet_summary("x", "ssh", 0, 1, [pipe]), "md")
