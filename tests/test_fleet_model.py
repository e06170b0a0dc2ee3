"""The fleet's figures are sums over its hosts: tokentop.fleet.model."""

from __future__ import annotations

import dataclasses

import pytest
from factories import build_snapshot

from tokentop.fleet.model import FleetHost, fleet_figures, sum_windows
from tokentop.model import Totals, Window


def window(
    span: float, tokens_out: float, cost: float | None, *, energy: float = 0.0, busy: float = 0.0, gpus: int = 8
) -> Window:
    busy_cost = None if cost is None else cost * busy / span if span else 0.0
    return Window(
        span_s=span,
        tokens_in=2 * tokens_out,
        tokens_out=tokens_out,
        energy_j=energy,
        cost_usd=cost,
        busy_s=busy,
        busy_cost_usd=busy_cost,
        watched_gpu_s=span * gpus,
    )


def host(
    name: str,
    tokens_out: float,
    cost: float | None,
    *,
    state: str = "up",
    power: float = 4000.0,
    busy: float = 3600,
    gpus: int = 8,
) -> FleetHost:
    snap = build_snapshot(1000.0, [Totals()] * gpus)
    figures = dataclasses.replace(
        snap.host,
        power_w=power,
        usd_per_hour_now=None if cost is None else cost * 4,
        rate_window=window(60, tokens_out / 15, None if cost is None else cost / 15, energy=power * 60),
        cost_window=window(900, tokens_out, cost, energy=power * 900, busy=busy, gpus=gpus),
    )
    return FleetHost(
        name=name, state=state, snapshot=dataclasses.replace(snap, host=figures), engines_up=2, engines_total=3
    )


def test_fleet_sums_its_hosts_and_divides_once() -> None:
    """$/Mtok is summed cost over summed tokens, not the mean of the hosts' ratios."""
    hosts = [host("a", 1_000_000, 2.0, busy=720, gpus=2), host("b", 3_000_000, 3.0, busy=6480)]
    fleet = fleet_figures(hosts, 60, 900)
    assert fleet.host_count == fleet.hosts_up == 2
    assert fleet.gpu_count == 10
    assert fleet.engines_up == 4 and fleet.engines_total == 6
    assert fleet.power_w == pytest.approx(8000.0)
    assert fleet.cost_window.tokens_out == 4_000_000
    assert fleet.cost_window.energy_j == pytest.approx(2 * 4000.0 * 900)
    assert fleet.usd_per_mtok == pytest.approx(5.0 / 4.0)  # the mean of ratios would be (2 + 1) / 2 = 1.5
    # busy GPU-seconds over watched ones: 7200 / 9000; the mean of the hosts' 40 % and 90 % would be 65 %
    assert fleet.cost_window.busy_share == pytest.approx(7200 / (10 * 900))
    assert fleet.rate_window.span_s == 60 and fleet.cost_window.span_s == 900


def test_unpriced_host_is_left_out_of_both_sides_and_named() -> None:
    hosts = [host("a", 1_000_000, 2.0), host("nopriced", 9_000_000, None)]
    fleet = fleet_figures(hosts, 60, 900)
    assert fleet.unpriced_hosts == ("nopriced",)
    assert fleet.usd_per_mtok == pytest.approx(2.0)  # not 2 / 10
    assert fleet.cost_window.cost_usd is None  # the whole fleet's cost is not known
    assert fleet.cost_window.tokens_out == 10_000_000  # but its tokens are
    assert fleet.usd_per_hour_now == pytest.approx(8.0)


def test_hosts_without_a_reading_count_as_hosts_not_figures() -> None:
    hosts = [
        host("a", 1_000_000, 2.0),
        FleetHost(name="new", state="connecting"),
        FleetHost(name="gone", state="down", reason="ssh: connection refused"),
        dataclasses.replace(host("old", 1_000_000, 1.0), state="stale"),
    ]
    fleet = fleet_figures(hosts, 60, 900)
    assert fleet.host_count == 4
    assert fleet.hosts_up == 1
    assert fleet.gpu_count == 16  # a and the stale host's kept figures
    assert fleet.usd_per_mtok == pytest.approx(1.5)


def test_no_host_read_yet_gives_empty_figures_not_errors() -> None:
    fleet = fleet_figures([FleetHost(name="a", state="connecting")], 60, 900)
    assert fleet.gpu_count == 0 and fleet.power_w is None and fleet.usd_per_hour_now is None
    assert fleet.usd_per_mtok is None and fleet.cost_window.tok_s_out == 0


def test_sum_windows_keeps_cost_unknown_when_any_part_is() -> None:
    both = sum_windows([window(10, 5, 1.0), window(10, 7, 2.0)], 10)
    assert both.tokens_out == 12 and both.cost_usd == pytest.approx(3.0)
    assert both.watched_gpu_s == 160
    assert sum_windows([window(10, 5, 1.0), window(10, 7, None)], 10).cost_usd is None
    assert sum_windows([], 10).cost_usd is None


def test_a_short_window_adds_its_rate_not_a_fraction_of_it() -> None:
    """A host that reconnected 6 s ago has a 6 s window: it adds 100 tok/s, not 6/60 of it."""
    fleet = sum_windows([window(60, 6000, 6.0), window(6, 600, 0.6)], 60)
    assert fleet.tok_s_out == pytest.approx(200.0)
    assert fleet.usd_per_hour == pytest.approx(2 * 6.0 * 60)
    assert fleet.usd_per_mtok == pytest.approx(1000.0)
    assert sum_windows([window(0, 0, 0.0)], 60).tokens_out == 0
