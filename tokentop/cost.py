"""The cost model of ``shared/docs/COST_MODEL.md``: prices per GPU and cost per tick. No I/O."""

from __future__ import annotations

import re

from tokentop.config import CostConfig
from tokentop.model import Price

PRICE_TABLE_SOURCE = "built-in table: typical neocloud on-demand, spring 2026"

# $/GPU-hour by GPU model. Keys are matched against NVML names as whole words, longest
# first, so "L4" never matches an "L40S" and "A100 80GB" needs both words.
BUILTIN_GPU_HOUR_USD: dict[str, float] = {
    "H100": 2.50,
    "H200": 3.50,
    "B200": 5.50,
    "A100 80GB": 1.40,
    "L40S": 1.20,
    "L4": 0.75,
    "A10G": 1.00,
    "RTX 4090": 0.60,
}

J_PER_KWH = 3.6e6


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text.upper())


def model_key(gpu_name: str, keys: list[str]) -> str | None:
    """The table key naming this GPU model, e.g. "NVIDIA H100 80GB HBM3" -> "H100"."""
    words = _words(gpu_name)
    for key in sorted(keys, key=len, reverse=True):
        key_words = _words(key)
        if key_words and all(w in words for w in key_words):
            return key
    return None


def price_for(gpu_name: str, uuid: str, index: int, cost: CostConfig) -> Price | None:
    """The hourly hardware rate for one GPU, or None when nothing is known for its model.

    Order: config by UUID, by index, by model; then (cloud mode) the built-in table. In owned
    mode the rate is capex straight-line over the life, plus opex; energy comes per tick.
    """
    overrides = cost.gpu_hour_usd
    key = next((k for k in (uuid, str(index)) if k in overrides), None)
    if key is None:
        key = model_key(gpu_name, list(overrides))
    if key is not None:
        return Price(overrides[key], f"config: cost.gpu_hour_usd.{key}", cost.mode)
    if cost.mode == "owned":
        hourly = cost.capex_usd * (1 - cost.residual) / (cost.life_years * 8760)
        return Price(
            hourly + cost.opex_usd_per_gpu_hour,
            f"owned: capex ${cost.capex_usd:,.0f} over {cost.life_years:g} y + opex ${cost.opex_usd_per_gpu_hour:g}/h",
            "owned",
        )
    key = model_key(gpu_name, list(BUILTIN_GPU_HOUR_USD))
    if key is None:
        return None
    return Price(BUILTIN_GPU_HOUR_USD[key], f"{PRICE_TABLE_SOURCE}: {key}", "cloud")


def energy_cost_usd(board_energy_j: float, cost: CostConfig) -> float:
    """Electricity for some board energy: node overhead and PUE on top, at the tariff."""
    return board_energy_j / J_PER_KWH * cost.node_overhead * cost.pue * cost.electricity_usd_per_kwh


def energy_is_charged(cost: CostConfig) -> bool:
    """Owned hardware always pays its electricity; a cloud rate may already include it."""
    return cost.mode == "owned" or not cost.energy_in_rate


def tick_cost_usd(price: Price | None, dt_s: float, board_energy_j: float, cost: CostConfig) -> float | None:
    """What one GPU cost over ``dt_s`` seconds in which it used ``board_energy_j``."""
    if price is None:
        return None
    usd = price.usd_per_gpu_hour * dt_s / 3600.0
    if energy_is_charged(cost):
        usd += energy_cost_usd(board_energy_j, cost)
    return usd


def api_equivalent_usd(tokens_in: float, tokens_out: float, usd_per_mtok_in: float, usd_per_mtok_out: float) -> float:
    """What the same tokens would cost through an API priced per million tokens."""
    return tokens_in / 1e6 * usd_per_mtok_in + tokens_out / 1e6 * usd_per_mtok_out
