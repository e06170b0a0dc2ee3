"""Settings: a TOML file, then command-line flags on top. Every field says what it means.

Example ``tokentop.toml``::

    interval_s = 1.0

    [cost]
    mode = "cloud"                 # or "owned"
    electricity_usd_per_kwh = 0.12
    [cost.gpu_hour_usd]
    H200 = 1.41                    # by GPU model (as in the built-in table) ...
    "GPU-3b1f..." = 2.00           # ... or by UUID, or by NVML index as a string

    [[endpoints]]
    url = "http://127.0.0.1:8000"
    name = "llama-70b"
    kind = "vllm"                  # optional: detected from the page when left out
    gpus = ["0", "1"]              # optional: NVML indices or UUIDs; else found by process
    token_env = "VLLM_API_KEY"     # optional: bearer token read from this variable

Secrets never live in the file or the database: only the *name* of the variable does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ConfigError(ValueError):
    """A setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ApiPrice:
    """What the same tokens would cost through an API, for comparison."""

    name: str
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    date: str = ""


@dataclass(frozen=True)
class CostConfig:
    """Inputs of the cost model (``shared/docs/COST_MODEL.md``)."""

    mode: str = "cloud"
    """``cloud``: pay a rate per GPU-hour. ``owned``: amortise the hardware."""
    gpu_hour_usd: dict[str, float] = field(default_factory=dict)
    """Overrides of the built-in $/GPU-hour table, keyed by model ("H200"), UUID or index."""
    capex_usd: float = 45_000.0
    """Owned mode: all-in purchase price per GPU (H100-class default)."""
    life_years: float = 4.0
    """Owned mode: straight-line depreciation period."""
    residual: float = 0.0
    """Owned mode: resale value at end of life, as a fraction of capex."""
    opex_usd_per_gpu_hour: float = 0.0
    """Owned mode: labour, colocation and other running costs per GPU-hour."""
    electricity_usd_per_kwh: float = 0.10
    """Electricity tariff."""
    pue: float = 1.3
    """Facility overhead: 1.0 is board power only; 1.56 is the 2024 industry average."""
    node_overhead: float = 1.25
    """CPU, RAM, NIC and fans on top of GPU board power."""
    energy_in_rate: bool = False
    """Cloud mode: the hourly rate already pays for electricity; energy is shown, not added."""
    api_prices: tuple[ApiPrice, ...] = ()
    """Optional list of API prices to compare against."""

    def __post_init__(self) -> None:
        if self.mode not in ("cloud", "owned"):
            raise ConfigError(f"cost.mode must be 'cloud' or 'owned', not {self.mode!r}")
        for name in ("capex_usd", "opex_usd_per_gpu_hour", "electricity_usd_per_kwh"):
            if getattr(self, name) < 0:
                raise ConfigError(f"cost.{name} cannot be negative")
        if self.life_years <= 0:
            raise ConfigError("cost.life_years must be above zero")
        if not 0 <= self.residual < 1:
            raise ConfigError("cost.residual must be a fraction in [0, 1)")
        if self.pue < 1 or self.node_overhead < 1:
            raise ConfigError("cost.pue and cost.node_overhead must be at least 1.0")
        for key, value in self.gpu_hour_usd.items():
            if value < 0:
                raise ConfigError(f"cost.gpu_hour_usd.{key} cannot be negative")


ENDPOINT_KINDS = ("vllm", "sglang", "tgi", "llamacpp", "triton", "trtllm", "nim", "lmdeploy", "dynamo", "ray", "ollama")
"""The kinds ``kind=`` accepts; ``tokentop.collectors`` reads each of them (a test checks)."""


@dataclass(frozen=True)
class EndpointConfig:
    """One inference server's stats endpoint."""

    url: str
    """Base URL (``http://host:8000``) or the full stats URL (``.../metrics``)."""
    name: str = ""
    """Shown on screen and stored; defaults to ``host:port``."""
    kind: str | None = None
    """Engine kind (vllm, sglang, ...); detected from what the endpoint serves when not given."""
    gpus: tuple[str, ...] = ()
    """GPUs the engine behind this endpoint runs on (NVML indices or UUIDs); found by process when empty."""
    token_env: str | None = None
    """Name of the environment variable holding a bearer token (never the token itself)."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint URL must start with http:// or https://: {self.url!r}")
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ConfigError(f"endpoint URL {self.url!r} is not usable: {exc}") from None
        if not parts.hostname:
            raise ConfigError(f"endpoint URL {self.url!r} names no host")
        if parts.username or parts.password:
            raise ConfigError(
                f"endpoint URL {parts.hostname}:... carries credentials: put the token "
                "in an environment variable and name it with token_env="
            )
        extra = sorted(set(parse_qs(parts.query, keep_blank_values=True)) - {"model"})
        if extra:  # llama.cpp's router mode needs ?model=; anything else may be a credential
            raise ConfigError(
                f"endpoint URL {parts.netloc}: query {', '.join(extra)} not accepted (only "
                "model=); put a token in an environment variable and name it with token_env="
            )
        if self.kind is not None and self.kind not in ENDPOINT_KINDS:
            raise ConfigError(f"endpoint kind {self.kind!r} unknown; known: {', '.join(ENDPOINT_KINDS)}")
        if not self.name:
            object.__setattr__(self, "name", parts.netloc)

    def bearer_token(self) -> str | None:
        return os.environ.get(self.token_env) if self.token_env else None


def parse_endpoint_flag(text: str) -> EndpointConfig:
    """``URL[,kind=K][,name=N][,gpus=0+1][,token_env=VAR]`` from ``--endpoint``."""
    url, *options = [part.strip() for part in text.split(",")]
    values: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in ("kind", "name", "gpus", "token_env"):
            raise ConfigError(f"--endpoint option {option!r} not understood; use kind=, name=, gpus=, token_env=")
        values[key] = tuple(v for v in value.split("+") if v) if key == "gpus" else value
    return EndpointConfig(url=url, **values)


# (setting, lowest, highest) checked when a Config is made.
_RANGES = (
    ("interval_s", 0.05, 3600),
    ("raw_retention_h", 0.1, 24 * 365),
    ("rollup_retention_d", 1 / 24, 3650),
    ("rate_window_s", 1, 86_400),
    ("cost_window_s", 1, 86_400),
    ("process_interval_s", 0.5, 3600),
    ("http_timeout_s", 0.01, 60),
    ("max_page_bytes", 1024, 1 << 30),
)


@dataclass(frozen=True)
class Config:
    interval_s: float = 1.0
    """Seconds between ticks. Rates always divide by the measured interval, not this."""
    endpoints: tuple[EndpointConfig, ...] = ()
    """Stats endpoints to read. Empty: discover local ones in the background."""
    discover: bool = True
    """Look for local servers when no endpoint is given."""
    db_path: Path | None = None
    """SQLite history; default ``$XDG_DATA_HOME/tokentop/history.db``."""
    history: bool = True
    """Keep a history at all (``--no-history`` turns it off)."""
    raw_retention_h: float = 24.0
    """How long per-tick rows are kept."""
    rollup_retention_d: float = 30.0
    """How long 1-minute rollups are kept."""
    rate_window_s: float = 10.0
    """Window for tok/s and W on screen."""
    cost_window_s: float = 60.0
    """Window for $/Mtok, tok/J and busy share on screen."""
    process_interval_s: float = 5.0
    """Seconds between reads of each GPU's process list."""
    http_timeout_s: float | None = None
    """Per-request timeout; default 80 % of the interval so one slow server never delays a tick."""
    max_page_bytes: int = 8 * 1024 * 1024
    """Stats pages larger than this are cut off and reported, never read whole."""
    max_endpoint_tok_s: float = 1e6
    """A counter step implying more tokens per second than this (per endpoint, in or out) is a
    glitch: that tick counts nothing for the endpoint and says so."""
    cost: CostConfig = field(default_factory=CostConfig)
    demo: bool = False
    """Simulate a host (8x H200, three engines) instead of reading real ones."""
    seed: int = 7
    """Seed of the demo's simulation."""

    def __post_init__(self) -> None:
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if value is None and name == "http_timeout_s":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigError(f"{name} must be a number between {low:g} and {high:g}, not {value!r}")
        names = [e.name for e in self.endpoints]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            urls = [e.url for e in self.endpoints if e.name in repeated]
            raise ConfigError(f"two endpoints are called {repeated[0]!r} ({', '.join(urls)}): give each its own name=")

    @property
    def timeout_s(self) -> float:
        """80 % of the interval, at most 10 s: a slow server never holds a tick or an exit long."""
        return self.http_timeout_s if self.http_timeout_s is not None else min(0.8 * self.interval_s, 10.0)

    def public_dict(self) -> dict[str, Any]:
        """The settings as plain data, safe to store: no secrets (only variable names)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "endpoints":
                value = [
                    {"url": e.url, "name": e.name, "kind": e.kind, "gpus": list(e.gpus), "token_env": e.token_env}
                    for e in value
                ]
            elif f.name == "cost":
                value = {g.name: getattr(value, g.name) for g in fields(value)}
                value["api_prices"] = [vars(p) for p in value["api_prices"]]
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out


def default_db_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "tokentop" / "history.db"


def load_config(path: Path | None, **overrides: Any) -> Config:
    """Read the TOML file (when given), then apply flag overrides (``None`` means not given)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        config = _from_dict(data)
        given = {k: v for k, v in overrides.items() if v is not None}
        if "endpoints" in given:  # the file's and the flags'; the same one given twice counts once
            given["endpoints"] = tuple(dict.fromkeys(tuple(config.endpoints) + tuple(given["endpoints"])))
        return replace(config, **given)
    except TypeError as exc:
        raise ConfigError(f"setting not understood in {path}: {exc}") from None


def _from_dict(data: dict[str, Any]) -> Config:
    data = dict(data)
    cost = dict(data.pop("cost", {}))
    cost["api_prices"] = tuple(ApiPrice(**p) for p in cost.get("api_prices", ()))
    endpoints = tuple(
        EndpointConfig(**{**e, "gpus": tuple(str(g) for g in e.get("gpus", ()))}) for e in data.pop("endpoints", ())
    )
    if "db_path" in data:
        data["db_path"] = Path(data["db_path"]).expanduser()
    return Config(cost=CostConfig(**cost), endpoints=endpoints, **data)
