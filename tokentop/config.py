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

Every field is checked against its type hint and the rules in its ``metadata`` (a range, a list
of choices), in one place (``_settle``), whoever makes the object: the TOML file, a flag or
code. A TOML boolean is needed for a boolean, a finite number for a number, a list for a list;
a wrong one ends with one line naming the key. Text that tokentop will show (names, price
keys, URLs) may not hold control or invisible characters: it is refused, not cleaned, so what
the user wrote is what the screen and the history say.

Secrets never live in the file or the database: only the *name* of the variable does.
"""

from __future__ import annotations

import codecs
import locale
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from itertools import pairwise
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import parse_qs, urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MAX_TEXT_CHARS = 200
"""Longest name or key accepted (the bound ``tokentop.text`` puts on outside text)."""
MAX_URL_CHARS = 2048

GpuRef = Annotated[str, "an NVML index (a whole number is accepted) or a GPU UUID"]


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it (``key``) and says why."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.problem = problem
        self.key = key

    def under(self, prefix: str) -> ConfigError:
        """The same error for a setting inside the table or list entry ``prefix``."""
        return ConfigError(self.problem, f"{prefix}.{self.key}" if self.key else prefix)


@dataclass(frozen=True)
class Bounds:
    """Where a number setting may lie; an ``*_open`` end is excluded."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above_low = value > self.low if self.low_open else value >= self.low
        below_high = value < self.high if self.high_open else value <= self.high
        return above_low and below_high

    def __str__(self) -> str:
        low = f"above {self.low:g}" if self.low_open else f"at least {self.low:g}"
        if self.high == math.inf:
            return low
        high = f"below {self.high:g}" if self.high_open else f"at most {self.high:g}"
        if not (self.low_open or self.high_open):
            return f"between {self.low:g} and {self.high:g}"
        return f"{low} and {high}"


def _range(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> dict:
    return {"bounds": Bounds(low, high, low_open, high_open)}


def _choices(*allowed: str) -> dict:
    return {"choices": allowed}


@dataclass(frozen=True)
class ApiPrice:
    """What the same tokens would cost through an API, for comparison."""

    name: str
    usd_per_mtok_in: float = field(metadata=_range(0))
    usd_per_mtok_out: float = field(metadata=_range(0))
    date: str = ""

    def __post_init__(self) -> None:
        _settle(self)


@dataclass(frozen=True)
class CostConfig:
    """Inputs of the cost model (``shared/docs/COST_MODEL.md``)."""

    mode: str = field(default="cloud", metadata=_choices("cloud", "owned"))
    """``cloud``: pay a rate per GPU-hour. ``owned``: amortise the hardware."""
    gpu_hour_usd: dict[str, float] = field(default_factory=dict, metadata=_range(0))
    """$/GPU-hour by model ("H200"), UUID or index. Cloud mode: overrides the built-in table.
    Owned mode: an all-in owner TCO rate that replaces capex and opex."""
    capex_usd: float = field(default=45_000.0, metadata=_range(0))
    """Owned mode: all-in purchase price per GPU (H100-class default)."""
    life_years: float = field(default=4.0, metadata=_range(0, low_open=True))
    """Owned mode: straight-line depreciation period."""
    residual: float = field(default=0.0, metadata=_range(0, 1, high_open=True))
    """Owned mode: resale value at end of life, as a fraction of capex."""
    opex_usd_per_gpu_hour: float = field(default=0.0, metadata=_range(0))
    """Owned mode: labour, colocation and other running costs per GPU-hour."""
    electricity_usd_per_kwh: float = field(default=0.10, metadata=_range(0))
    """Electricity tariff."""
    pue: float = field(default=1.3, metadata=_range(1))
    """Facility overhead: 1.0 is board power only; 1.56 is the 2024 industry average."""
    node_overhead: float = field(default=1.25, metadata=_range(1))
    """CPU, RAM, NIC and fans on top of GPU board power."""
    energy_in_rate: bool | None = None
    """The hourly rate already pays for electricity: energy is shown, not added. Both modes.
    Not given: true in cloud mode (a renter pays no power bill), false in owned mode."""
    api_prices: tuple[ApiPrice, ...] = ()
    """Optional list of API prices to compare against."""
    usd_per_mtok_thresholds: tuple[float, float] | None = field(default=None, metadata={**_range(0), "ascending": True})
    """$/Mtok at or below the first number is drawn as good (green), at or above the second as a
    warning (yellow), in the live view's header and GPU table. Not given: the cheapest
    api_prices output price and twice it, or $1 and $5 when no API price is configured. The
    first must be below the second."""

    def __post_init__(self) -> None:
        _settle(self)
        if self.energy_in_rate is None:
            object.__setattr__(self, "energy_in_rate", self.mode == "cloud")


ENDPOINT_KINDS = ("vllm", "sglang", "tgi", "llamacpp", "triton", "trtllm", "nim", "lmdeploy", "dynamo", "ray", "ollama")
"""The kinds ``kind=`` accepts; ``tokentop.collectors`` reads each of them (a test checks)."""

_USERINFO = re.compile(r"(?<=//)[^/?#]*@")


def shown_url(url: str) -> str:
    """A URL as it may appear in a message: no user, password, query or fragment."""
    return _USERINFO.sub("…@", re.split(r"[?#]", url, maxsplit=1)[0])[:MAX_TEXT_CHARS]


@dataclass(frozen=True)
class EndpointConfig:
    """One inference server's stats endpoint."""

    url: str = field(metadata={"max_chars": MAX_URL_CHARS})
    """Base URL (``http://host:8000``) or the full stats URL (``.../metrics``)."""
    name: str = ""
    """Shown on screen and stored; defaults to ``host:port``."""
    kind: str | None = field(default=None, metadata=_choices(*ENDPOINT_KINDS))
    """Engine kind (vllm, sglang, ...); detected from what the endpoint serves when not given."""
    gpus: tuple[GpuRef, ...] = ()
    """GPUs the engine behind this endpoint runs on (NVML indices or UUIDs); found by process when empty."""
    token_env: str | None = None
    """Name of the environment variable holding a bearer token (never the token itself)."""

    def __post_init__(self) -> None:
        _settle(self)
        _check_url(self.url)
        if not self.name:
            object.__setattr__(self, "name", urlsplit(self.url).netloc)

    def bearer_token(self) -> str | None:
        return os.environ.get(self.token_env) if self.token_env else None


def _check_url(url: str) -> None:
    """A usable http(s) URL that carries no credential. Credentials are looked for first and no
    message ever repeats them (``shown_url``)."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"must start with http:// or https://: {shown_url(url)!r}", "url")
    try:
        parts = urlsplit(url)
        has_credentials = bool(parts.username or parts.password)
    except ValueError as exc:
        raise ConfigError(f"{shown_url(url)!r} is not usable: {exc}", "url") from None
    if has_credentials:
        raise ConfigError(
            f"{shown_url(url)!r} carries credentials: put the token in an environment variable "
            "and name it with token_env=",
            "url",
        )
    extra = sorted(set(parse_qs(parts.query, keep_blank_values=True)) - {"model"})
    if extra:  # llama.cpp's router mode needs ?model=; anything else may be a credential
        raise ConfigError(
            f"{shown_url(url)!r}: query {', '.join(map(repr, extra))} not accepted (only model=); "
            "put a token in an environment variable and name it with token_env=",
            "url",
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError as exc:
        raise ConfigError(f"{shown_url(url)!r} is not usable: {exc}", "url") from None
    if not parts.hostname:
        raise ConfigError(f"{shown_url(url)!r} names no host", "url")


_FLAG_OPTIONS = ("kind", "name", "gpus", "token_env")


def parse_endpoint_flag(text: str) -> EndpointConfig:
    """``URL[,kind=K][,name=N][,gpus=0+1][,token_env=VAR]`` from ``--endpoint``."""
    url, *options = [part.strip() for part in text.split(",")]
    values: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in _FLAG_OPTIONS:
            which = f"option {key!r}" if sep else "an option without '='"
            raise ConfigError(f"--endpoint: {which} not understood; use kind=, name=, gpus=, token_env=")
        values[key] = tuple(v for v in value.split("+") if v) if key == "gpus" else value
    try:
        return EndpointConfig(url=url, **values)
    except ConfigError as exc:
        raise ConfigError(f"--endpoint {exc}") from None


@dataclass(frozen=True)
class Config:
    interval_s: float = field(default=1.0, metadata=_range(0.05, 3600))
    """Seconds between ticks. Rates always divide by the measured interval, not this."""
    endpoints: tuple[EndpointConfig, ...] = ()
    """Stats endpoints to read. Empty: discover local ones in the background."""
    discover: bool = True
    """Look for local servers when no endpoint is given."""
    db_path: Path | None = None
    """SQLite history; default ``$XDG_DATA_HOME/tokentop/history.db`` (``demo.db`` with ``demo``)."""
    history: bool = True
    """Keep a history at all (``--no-history`` turns it off)."""
    raw_retention_h: float = field(default=24.0, metadata=_range(0.1, 24 * 365))
    """How long per-tick rows are kept."""
    rollup_retention_d: float = field(default=30.0, metadata=_range(1 / 24, 3650))
    """How long 1-minute rollups are kept."""
    rate_window_s: float = field(default=10.0, metadata=_range(1, 86_400))
    """Window for tok/s and W on screen."""
    cost_window_s: float = field(default=60.0, metadata=_range(1, 86_400))
    """Window for $/Mtok, tok/J and busy share on screen."""
    process_interval_s: float = field(default=5.0, metadata=_range(0.5, 3600))
    """Seconds between reads of each GPU's process list."""
    http_timeout_s: float | None = field(default=None, metadata=_range(0.01, 60))
    """Per-request timeout; default 80 % of the interval so one slow server never delays a tick."""
    max_page_bytes: int = field(default=8 * 1024 * 1024, metadata=_range(1024, 1 << 30))
    """Stats pages larger than this are cut off and reported, never read whole."""
    max_endpoint_tok_s: float = field(default=1e6, metadata=_range(1, 1e9))
    """A counter step implying more tokens per second than this (per endpoint, in or out) is a
    glitch: that tick counts nothing for the endpoint and says so."""
    cost: CostConfig = field(default_factory=CostConfig)
    demo: bool = False
    """Simulate a host (8x H200, three engines) instead of reading real ones."""
    seed: int = field(default=7, metadata=_range(0, 2**63 - 1))
    """Seed of the demo's simulation."""
    ascii_only: bool | None = None
    """Draw only ASCII characters (``--ascii``), for terminals and fonts without Unicode. Not
    given: on when the locale is not UTF-8 (``load_config`` decides, ``speaks_utf8``)."""

    def __post_init__(self) -> None:
        _settle(self)
        names = [e.name for e in self.endpoints]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            urls = [shown_url(e.url) for e in self.endpoints if e.name in repeated]
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


def default_db_path(*, demo: bool = False) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "tokentop" / ("demo.db" if demo else "history.db")


def load_config(path: Path | None, **overrides: Any) -> Config:
    """Read the TOML file (when given), then apply flag overrides (``None`` means not given)."""
    config = Config() if path is None else _read_file(Path(path))
    given = {k: v for k, v in overrides.items() if v is not None}
    if "endpoints" in given:  # the file's and the flags'; the same one given twice counts once
        given["endpoints"] = tuple(dict.fromkeys(tuple(config.endpoints) + tuple(given["endpoints"])))
    if given.get("ascii_only", config.ascii_only) is None:
        given["ascii_only"] = not speaks_utf8()
    return replace(config, **given)


def speaks_utf8() -> bool:
    """Whether the terminal's locale is UTF-8. Under the C or POSIX locale Python switches to
    UTF-8 by itself (PEP 538, 540): then its own encoding says nothing of the terminal's."""
    try:
        encoding = codecs.lookup(getattr(sys.stdout, "encoding", None) or locale.getpreferredencoding(False))
    except LookupError:
        return False
    asked = os.environ.get("PYTHONUTF8") == "1" or "utf8" in getattr(sys, "_xoptions", {})
    return encoding.name == "utf-8" and (not sys.flags.utf8_mode or asked)


def _read_file(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:  # missing, a directory, unreadable
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        config: Config = _build(Config, data, "")
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return config


# --- the one check of every field, driven by its type hint and metadata -----------------------


_HINTS: dict[type, dict[str, Any]] = {}  # resolved once per settings class


def _settle(instance: Any) -> None:
    """Check every field of a settings dataclass and store its normal form (a list becomes a
    tuple, a table a dataclass, an integer a float where a float is meant)."""
    cls = type(instance)
    hints = _HINTS.get(cls) or _HINTS.setdefault(cls, get_type_hints(cls, include_extras=True))
    for f in fields(instance):
        value = _convert(getattr(instance, f.name), hints[f.name], f.name, f.metadata)
        object.__setattr__(instance, f.name, value)


def _build(cls: Any, value: object, key: str) -> Any:
    """A settings dataclass from a TOML table; errors name the setting under ``key``."""
    if isinstance(value, cls):
        return value
    table = _expect(value, dict, "a table", key)
    known = [f.name for f in fields(cls) if f.init]
    unknown = [name for name in table if name not in known]
    if unknown:
        raise ConfigError(f"setting {unknown[0]!r} not understood; known: {', '.join(known)}", key or None)
    required = (f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)
    missing = next((name for name in required if name not in table), None)
    if missing is not None:
        raise ConfigError(f"setting {missing!r} is missing", key or None)
    try:
        return cls(**table)
    except ConfigError as exc:
        raise (exc.under(key) if key else exc) from None


def _convert(value: object, hint: Any, key: str, rules: Mapping[str, Any]) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):  # X | None
        (inner,) = [a for a in args if a is not NoneType]
        return None if value is None else _convert(value, inner, key, rules)
    if origin is Annotated:  # GpuRef: an index may be written as a whole number
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = str(value)
        return _convert(value, args[0], key, rules)
    if origin is tuple:
        return _sequence(value, args, key, rules)
    if origin is dict:
        table = _expect(value, dict, "a table", key)
        return {_text(k, f"{key} key", {}): _convert(v, args[1], f"{key}.{k}", rules) for k, v in table.items()}
    if is_dataclass(hint):
        return _build(hint, value, key)
    return _SCALARS[hint](value, key, rules)


def _sequence(value: object, args: tuple[Any, ...], key: str, rules: Mapping[str, Any]) -> tuple[Any, ...]:
    """A list: ``tuple[X, ...]`` of any length, ``tuple[X, Y]`` of two; ``ascending``: each below the next."""
    items = _expect(value, (list, tuple), "a list", key)
    if args[-1] is not Ellipsis and len(items) != len(args):
        raise ConfigError(f"must be a list of {len(args)} values, not {len(items)}", key)
    kinds = (args[0],) * len(items) if args[-1] is Ellipsis else args
    out = tuple(_convert(item, kind, f"{key}[{i}]", rules) for i, (item, kind) in enumerate(zip(items, kinds)))
    if rules.get("ascending") and any(low >= high for low, high in pairwise(out)):
        numbers = ", ".join(_number_text(v) for v in out)
        raise ConfigError(f"must go up (each number below the next), not [{numbers}]", key)
    return out


def _expect(value: object, kind: type | tuple[type, ...], what: str, key: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"must be {what}, not {_described(value)}", key or None)
    return value


def _described(value: object) -> str:
    """A wrong value in a message: its kind, and for a short printable scalar the value."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" if value.isprintable() else "a string with control characters"
    if isinstance(value, (int, float)):
        return f"the number {_number_text(value)}"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a table" if isinstance(value, dict) else type(value).__name__


def _flag(value: object, key: str, rules: Mapping[str, Any]) -> bool:
    return bool(_expect(value, bool, "true or false (a TOML boolean, without quotes)", key))


def _whole(value: object, key: str, rules: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be a whole number, not {_described(value)}", key)
    return int(_in_bounds(value, key, rules))


def _number(value: object, key: str, rules: Mapping[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"must be a number, not {_described(value)}", key)
    if (isinstance(value, int) and abs(value) > _BIG) or not math.isfinite(value):
        raise ConfigError(f"must be a finite number, not {_number_text(value)}", key)
    return float(_in_bounds(value, key, rules))


def _in_bounds(value: float, key: str, rules: Mapping[str, Any]) -> float:
    bounds: Bounds | None = rules.get("bounds")
    if bounds is not None and not bounds.holds(value):
        raise ConfigError(f"must be {bounds}, not {_number_text(value)}", key)
    return value


_BIG = 1e300  # TOML integers are unbounded in Python; beyond this one is as good as infinite


def _number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) or abs(value) <= _BIG else "a number too large to use"


def _text(value: object, key: str, rules: Mapping[str, Any]) -> str:
    text = _expect(value, str, "a string (in quotes)", key)
    bad = next((i for i, c in enumerate(text) if not c.isprintable()), None)
    if bad is not None:  # not echoed: the control characters would act on the terminal
        raise ConfigError(f"holds a control or invisible character (at position {bad})", key)
    limit = rules.get("max_chars", MAX_TEXT_CHARS)
    if len(text) > limit:
        raise ConfigError(f"is longer than {limit} characters", key)
    choices = rules.get("choices")
    if choices is not None and text not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}, not {text!r}", key)
    return str(text)


def _path(value: object, key: str, rules: Mapping[str, Any]) -> Path:
    if isinstance(value, Path):
        return value
    return Path(_text(value, key, {"max_chars": 4096})).expanduser()


_SCALARS = {bool: _flag, int: _whole, float: _number, str: _text, Path: _path}
