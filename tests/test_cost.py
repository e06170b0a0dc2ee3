"""The cost model of COST_MODEL.md: prices, per-tick cost, and its worked example."""

from __future__ import annotations

import pytest

from tokentop.config import ConfigError, CostConfig
from tokentop.cost import (
    builtin_key,
    energy_cost_usd,
    energy_is_charged,
    model_key,
    price_for,
    tick_cost_usd,
)
from tokentop.model import Window


def test_worked_example_h200_at_1_41_and_90_tok_s() -> None:
    # COST_MODEL.md: 1.41 / (90 x 3600) x 1e6 = $4.35 per million tokens, the way tokentop
    # measures it: an hour's cost over an hour's output tokens.
    window = Window(
        span_s=3600, tokens_in=0, tokens_out=90 * 3600, energy_j=0, cost_usd=1.41, busy_s=3600, busy_cost_usd=1.41
    )
    assert window.usd_per_mtok == pytest.approx(4.3518, abs=1e-4)
    assert round(window.usd_per_mtok, 2) == 4.35
    assert window.tok_s_out == pytest.approx(90)


@pytest.mark.parametrize(
    ("nvml_name", "key"),
    [
        ("NVIDIA H200", "H200"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
        ("NVIDIA A100-SXM4-40GB", None),  # no default price for the 40 GB part
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA B200", "B200"),
        ("Tesla T4", None),
        # Variants without a row of their own get no price, never their sibling's (issue 9, 16).
        ("NVIDIA H100 PCIe", None),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H100 80GB HBM2e", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA GB200", None),
        ("NVIDIA A100 80GB PCIe", None),
        ("NVIDIA A100-PCIE-40GB", None),
        ("NVIDIA L40", None),
        ("NVIDIA A10", None),
        ("NVIDIA GeForce RTX 4090 D", None),
    ],
)
def test_gpu_model_matching(nvml_name: str, key: str | None) -> None:
    assert builtin_key(nvml_name) == key
    assert (price_for(nvml_name, "GPU-x", 0, CostConfig()) is None) == (key is None)


def test_a_configured_model_key_names_its_variants_too_most_specific_first() -> None:
    keys = ["H100", "H100 NVL", "L4"]
    assert model_key("NVIDIA H100 PCIe", keys) == "H100"  # the user's "H100" means their H100s
    assert model_key("NVIDIA H100 NVL", keys) == "H100 NVL"
    assert model_key("NVIDIA L40S", keys) is None
    cost = CostConfig(gpu_hour_usd={"H100": 2.0, "H100 NVL": 3.0})
    assert price_for("NVIDIA H100 NVL", "GPU-a", 0, cost).usd_per_gpu_hour == 3.0


def test_unknown_model_has_no_price_and_never_a_made_up_one() -> None:
    assert price_for("Tesla T4", "GPU-x", 0, CostConfig()) is None


def test_config_override_order_uuid_then_index_then_model() -> None:
    cost = CostConfig(gpu_hour_usd={"H200": 1.41, "3": 2.0, "GPU-abc": 9.0})
    assert price_for("NVIDIA H200", "GPU-abc", 3, cost).usd_per_gpu_hour == 9.0
    assert price_for("NVIDIA H200", "GPU-def", 3, cost).usd_per_gpu_hour == 2.0
    price = price_for("NVIDIA H200", "GPU-def", 4, cost)
    assert price.usd_per_gpu_hour == 1.41 and "config" in price.source
    builtin = price_for("NVIDIA H200", "GPU-def", 4, CostConfig())
    assert builtin.usd_per_gpu_hour == 3.50 and "spring 2026" in builtin.source


def test_owned_mode_amortises_capex_and_adds_opex() -> None:
    cost = CostConfig(mode="owned", capex_usd=35_040, life_years=4, residual=0.0, opex_usd_per_gpu_hour=0.25)
    price = price_for("NVIDIA H200", "GPU-a", 0, cost)
    assert price.usd_per_gpu_hour == pytest.approx(35_040 / (4 * 8760) + 0.25)  # 1.25
    # Owned mode works for any GPU: the capex is the user's, not a table's.
    assert price_for("Tesla T4", "GPU-b", 1, cost) is not None


def test_owned_label_states_every_input_the_residual_and_the_power() -> None:
    cost = CostConfig(mode="owned", capex_usd=40_000, life_years=5, residual=0.2, opex_usd_per_gpu_hour=0.1)
    price = price_for("NVIDIA H200", "GPU-a", 0, cost)
    assert price.usd_per_gpu_hour == pytest.approx(40_000 * 0.8 / (5 * 8760) + 0.1)
    assert price.source == "owned: capex $40,000 less 20 % residual over 5 y + opex $0.1/h, power added"


def test_owned_gpu_hour_usd_replaces_capex_and_opex_and_says_whether_power_is_added() -> None:
    """COST_MODEL.md: a gpu_hour_usd given in owned mode is an owner TCO rate; energy_in_rate
    says whether power is in it (issue 9, item 16)."""
    added = CostConfig(mode="owned", gpu_hour_usd={"H200": 1.41}, capex_usd=90_000, opex_usd_per_gpu_hour=5)
    price = price_for("NVIDIA H200", "GPU-a", 0, added)
    assert price.usd_per_gpu_hour == 1.41 and price.mode == "owned"
    assert price.source == "owner TCO $1.41/GPU·h, power added (config: cost.gpu_hour_usd.H200)"
    hour_at_700w = 700 * 3600.0
    assert tick_cost_usd(price, 3600, hour_at_700w, added) == pytest.approx(1.41 + 0.7 * 1.25 * 1.3 * 0.10)
    included = CostConfig(mode="owned", gpu_hour_usd={"H200": 1.41}, energy_in_rate=True)
    price = price_for("NVIDIA H200", "GPU-a", 0, included)
    assert price.source == "owner TCO $1.41/GPU·h, power included (config: cost.gpu_hour_usd.H200)"
    assert tick_cost_usd(price, 3600, hour_at_700w, included) == pytest.approx(1.41)


def test_energy_in_rate_defaults_by_mode_and_applies_in_both() -> None:
    """A renter pays no power bill: cloud mode no longer adds 2-12 % nobody pays (issue 9, 16)."""
    assert CostConfig().energy_in_rate is True and not energy_is_charged(CostConfig())
    assert CostConfig(mode="owned").energy_in_rate is False and energy_is_charged(CostConfig(mode="owned"))
    assert energy_is_charged(CostConfig(mode="cloud", energy_in_rate=False))
    assert not energy_is_charged(CostConfig(mode="owned", energy_in_rate=True))


def test_energy_cost_uses_node_overhead_pue_and_tariff() -> None:
    cost = CostConfig(electricity_usd_per_kwh=0.10, pue=1.3, node_overhead=1.25)
    one_kwh = 3.6e6
    assert energy_cost_usd(one_kwh, cost) == pytest.approx(0.10 * 1.3 * 1.25)


def test_tick_cost_adds_energy_unless_the_cloud_rate_includes_it() -> None:
    price = price_for("NVIDIA H200", "GPU-a", 0, CostConfig())
    hour_at_700w = 700 * 3600.0
    charged = tick_cost_usd(price, 3600, hour_at_700w, CostConfig(energy_in_rate=False))
    included = tick_cost_usd(price, 3600, hour_at_700w, CostConfig())  # the cloud default
    assert included == pytest.approx(3.50)
    assert charged == pytest.approx(3.50 + 0.7 * 1.25 * 1.3 * 0.10)
    assert tick_cost_usd(None, 3600, hour_at_700w, CostConfig()) is None


def test_idle_window_shows_no_cost_per_token_not_infinity() -> None:
    window = Window(span_s=60, tokens_in=0, tokens_out=0, energy_j=4200, cost_usd=0.06, busy_s=0, busy_cost_usd=0.0)
    assert window.usd_per_mtok is None
    assert window.idle_cost_usd == pytest.approx(0.06)
    assert window.busy_share == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "lease"},
        {"pue": 0.9},
        {"life_years": 0},
        {"residual": 1.0},
        {"gpu_hour_usd": {"H200": -1}},
        {"gpu_hour_usd": {"H200": float("nan")}},
        {"energy_in_rate": "false"},
    ],
)
def test_bad_cost_settings_are_refused_with_a_message(bad: dict) -> None:
    with pytest.raises(ConfigError):
        CostConfig(**bad)
