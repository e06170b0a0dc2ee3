"""The cost model of ``shared/docs/COST_MODEL.md``: prices per GPU and cost per tick. No I/O."""

from __future__ import annotations

import re

from tokentop.config import CostConfig
from tokentop.model import Price

PRICE_TABLE_SOURCE = "built-in table: typical neocloud on-demand, spring 2026"

# $/GPU-hour of the part each row names (the SXM part where there are several forms). A variant
# without its own row (H100 PCIe or NVL, H200 NVL, A100 80GB PCIe, A100 40GB, GH200, RTX 4090 D)
# gets no price rather than its sibling's: see ``builtin_key``.
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

# Words of an NVML name that do not make a variant: the vendor and product-line prefixes, the
# SXM form and HBM3 memory of the parts priced above, their memory sizes.
_PLAIN_WORDS = frozenset({"NVIDIA", "GEFORCE", "TESLA", "SXM", "SXM4", "SXM5", "HBM3", "HBM3E", "80GB", "141GB"})

J_PER_KWH = 3.6e6


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9]+", text.upper()))


def _most_specific_first(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: (len(_words(k)), len(k)), reverse=True)


def model_key(gpu_name: str, keys: list[str]) -> str | None:
    """The configured key naming this GPU model: every word of the key is a word of the NVML
    name ("H100" names "NVIDIA H100 PCIe" too; "L4" never names an "L40S"), most specific
    key first, so a user's "H100 NVL" row wins over their "H100" row."""
    words = _words(gpu_name)
    return next((key for key in _most_specific_first(keys) if _words(key) and _words(key) <= words), None)


def builtin_key(gpu_name: str) -> str | None:
    """The built-in row priced for exactly this part: the row's words are in the NVML name and
    every other word of the name is a plain one ("NVIDIA H100 80GB HBM3" is "H100"; "NVIDIA
    H100 NVL" has no row and no price)."""
    words = _words(gpu_name)
    for key in _most_specific_first(list(BUILTIN_GPU_HOUR_USD)):
        key_words = _words(key)
        if key_words <= words and not words - key_words - _PLAIN_WORDS:
            return key
    return None


def price_for(gpu_name: str, uuid: str, index: int, cost: CostConfig) -> Price | None:
    """The hourly rate for one GPU, or None when nothing is known for its model.

    The configured key is looked up by UUID, then index, then model. Cloud mode: that key, else
    the built-in table. Owned mode: that key as an all-in owner TCO rate, else capex straight-line
    over the life, net of the residual, plus opex. Energy is added per tick unless
    ``energy_in_rate``; the owned labels say which.
    """
    overrides = cost.gpu_hour_usd
    key = next((k for k in (uuid, str(index)) if k in overrides), None) or model_key(gpu_name, list(overrides))
    if cost.mode == "owned":
        return _owned_price(cost, key)
    if key is not None:
        return Price(overrides[key], f"config: cost.gpu_hour_usd.{key}", "cloud")
    row = builtin_key(gpu_name)
    if row is None:
        return None
    return Price(BUILTIN_GPU_HOUR_USD[row], f"{PRICE_TABLE_SOURCE}: {row}", "cloud")


def _owned_price(cost: CostConfig, key: str | None) -> Price:
    power = "power included" if cost.energy_in_rate else "power added"
    if key is not None:
        usd = cost.gpu_hour_usd[key]
        return Price(usd, f"owner TCO ${usd:g}/GPU·h, {power} (config: cost.gpu_hour_usd.{key})", "owned")
    hourly = cost.capex_usd * (1 - cost.residual) / (cost.life_years * 8760)
    return Price(
        hourly + cost.opex_usd_per_gpu_hour,
        f"owned: capex ${cost.capex_usd:,.0f} less {cost.residual * 100:g} % residual over {cost.life_years:g} y"
        f" + opex ${cost.opex_usd_per_gpu_hour:g}/h, {power}",
        "owned",
    )


def energy_cost_usd(board_energy_j: float, cost: CostConfig) -> float:
    """Electricity for some board energy: node overhead and PUE on top, at the tariff."""
    return board_energy_j / J_PER_KWH * cost.node_overhead * cost.pue * cost.electricity_usd_per_kwh


def energy_is_charged(cost: CostConfig) -> bool:
    """Energy is added unless the hourly rate already pays for it (``energy_in_rate``: by
    default true for a cloud rental, false for owned hardware)."""
    return not cost.energy_in_rate


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
