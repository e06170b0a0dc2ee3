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
of choices), in one place (``settle``), whoever makes the object: the TOML file, a flag or
code. A TOML boolean is needed for a boolean, a finite number for a number, a list for a list;
a wrong one ends with one line naming the key. Text that tokentop will show (names, price
keys, URLs) may not hold control or invisible characters: it is refused, not cleaned, so what
the user wrote is what the screen and the history say.

Secrets never live in the file or the database: only the *name* of the variable does.
"""

from __future__ import annotations

import codecs
import locale
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from tokentop.config_check import (
    ENVIRONMENT_NAME,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    ConfigError,
    build,
    in_range,
    one_of,
    settle,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

GpuRef = Annotated[str, "an NVML index (a whole number is accepted) or a GPU UUID"]


@dataclass(frozen=True)
class ApiPrice:
    """What the same tokens would cost through an API, for comparison."""

    name: str
    usd_per_mtok_in: float = field(metadata=in_range(0))
    usd_per_mtok_out: float = field(metadata=in_range(0))
    date: str = ""

    def __post_init__(self) -> None:
        settle(self)


@dataclass(frozen=True)
class CostConfig:
    """Inputs of the cost model (``shared/docs/COST_MODEL.md``)."""

    mode: str = field(default="cloud", metadata=one_of("cloud", "owned"))
    """``cloud``: pay a rate per GPU-hour. ``owned``: amortise the hardware."""
    gpu_hour_usd: dict[str, float] = field(default_factory=dict, metadata=in_range(0))
    """$/GPU-hour by model ("H200"), UUID or index. Cloud mode: overrides the built-in table.
    Owned mode: an all-in owner TCO rate that replaces capex and opex."""
    capex_usd: float = field(default=45_000.0, metadata=in_range(0))
    """Owned mode: all-in purchase price per GPU (H100-class default)."""
    life_years: float = field(default=4.0, metadata=in_range(0, low_open=True))
    """Owned mode: straight-line depreciation period."""
    residual: float = field(default=0.0, metadata=in_range(0, 1, high_open=True))
    """Owned mode: resale value at end of life, as a fraction of capex."""
    opex_usd_per_gpu_hour: float = field(default=0.0, metadata=in_range(0))
    """Owned mode: labour, colocation and other running costs per GPU-hour."""
    electricity_usd_per_kwh: float = field(default=0.10, metadata=in_range(0))
    """Electricity tariff."""
    pue: float = field(default=1.3, metadata=in_range(1))
    """Facility overhead: 1.0 is board power only; 1.56 is the 2024 industry average."""
    node_overhead: float = field(default=1.25, metadata=in_range(1))
    """CPU, RAM, NIC and fans on top of GPU board power."""
    energy_in_rate: bool | None = None
    """The hourly rate already pays for electricity: energy is shown, not added. Both modes.
    Not given: true in cloud mode (a renter pays no power bill), false in owned mode."""
    api_prices: tuple[ApiPrice, ...] = ()
    """Optional list of API prices to compare against."""
    usd_per_mtok_thresholds: tuple[float, float] | None = field(
        default=None, metadata={**in_range(0), "ascending": True}
    )
    """$/Mtok at or below the first number is drawn as good (green), at or above the second as a
    warning (yellow), in the live view's header and GPU table. Not given: the cheapest
    api_prices output price and twice it, or $1 and $5 when no API price is configured. The
    first must be below the second."""

    def __post_init__(self) -> None:
        settle(self)
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
    kind: str | None = field(default=None, metadata=one_of(*ENDPOINT_KINDS))
    """Engine kind (vllm, sglang, ...); detected from what the endpoint serves when not given."""
    gpus: tuple[GpuRef, ...] = ()
    """GPUs the engine behind this endpoint runs on (NVML indices or UUIDs); found by process when empty."""
    token_env: str | None = field(default=None, metadata=ENVIRONMENT_NAME)
    """Name of the environment variable holding a bearer token (never the token itself)."""

    def __post_init__(self) -> None:
        settle(self)
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
class PrometheusConfig:
    """The fleet's Prometheus, read by the fleet view (``--prometheus URL``)."""

    url: str | None = field(default=None, metadata={"max_chars": MAX_URL_CHARS})
    """Base URL of the Prometheus HTTP API (``http://prometheus:9090``); none: no fleet view."""
    token_env: str | None = field(default=None, metadata=ENVIRONMENT_NAME)
    """Name of the environment variable holding a bearer token (never the token itself)."""
    refresh_s: float = field(default=5.0, metadata=in_range(0.5, 3600))
    """Seconds between refreshes. Faster than the scrape interval only repeats the same figures."""
    timeout_s: float = field(default=4.0, metadata=in_range(0.1, 60))
    """Per-query timeout."""
    rate_window_s: float = field(default=60.0, metadata=in_range(2, 86_400))
    """Window of tok/s and W in the fleet view (the ``[range]`` of ``rate()``)."""
    cost_window_s: float = field(default=900.0, metadata=in_range(2, 86_400))
    """Window of $/Mtok, tok/J and busy share in the fleet view (the ``[range]`` of ``increase()``)."""

    def __post_init__(self) -> None:
        settle(self)
        if self.url is not None:
            _check_url(self.url)

    def bearer_token(self) -> str | None:
        return os.environ.get(self.token_env) if self.token_env else None


@dataclass(frozen=True)
class SshHostConfig:
    """A host the fleet view reads over the user's own ``ssh`` (``--ssh TARGET``)."""

    ssh: str
    """``[user@]host[:port]`` or a Host alias from the user's ssh config."""
    command: str = field(default="tokentop", metadata={"max_chars": 1000})
    """How to run tokentop there (``~/venv/bin/tokentop --config ~/tt.toml``); run by the remote shell."""
    name: str = ""
    """Shown on screen; defaults to the ``ssh`` target."""

    def __post_init__(self) -> None:
        settle(self)
        if not self.ssh or self.ssh.startswith("-") or any(c.isspace() for c in self.ssh):
            raise ConfigError(f"not an ssh target: {self.ssh!r}", "ssh")
        host, colon, port = self.ssh.rpartition(":")
        if colon and port.isdigit() and (host.endswith("]") or ":" not in host) and not 0 < int(port) < 65536:
            raise ConfigError(f"port {port} of {self.ssh!r} is not between 1 and 65535", "ssh")
        if not self.command.strip():
            raise ConfigError("is empty: leave it out to run tokentop, or give how to run it there", "command")
        if not self.name:
            object.__setattr__(self, "name", self.ssh)


@dataclass(frozen=True)
class Config:
    interval_s: float = field(default=1.0, metadata=in_range(0.05, 3600))
    """Seconds between ticks. Rates always divide by the measured interval, not this."""
    endpoints: tuple[EndpointConfig, ...] = ()
    """Stats endpoints to read. Empty: discover local ones in the background."""
    discover: bool = True
    """Look for local servers when no endpoint is given."""
    db_path: Path | None = None
    """SQLite history; default ``$XDG_DATA_HOME/tokentop/history.db`` (``demo.db`` with ``demo``)."""
    history: bool = True
    """Keep a history at all (``--no-history`` turns it off)."""
    raw_retention_h: float = field(default=24.0, metadata=in_range(0.1, 24 * 365))
    """How long per-tick rows are kept."""
    rollup_retention_d: float = field(default=30.0, metadata=in_range(1 / 24, 3650))
    """How long 1-minute rollups are kept."""
    rate_window_s: float = field(default=10.0, metadata=in_range(1, 86_400))
    """Window for tok/s and W on screen."""
    cost_window_s: float = field(default=60.0, metadata=in_range(1, 86_400))
    """Window for $/Mtok, tok/J and busy share on screen."""
    process_interval_s: float = field(default=5.0, metadata=in_range(0.5, 3600))
    """Seconds between reads of each GPU's process list."""
    http_timeout_s: float | None = field(default=None, metadata=in_range(0.01, 60))
    """Per-request timeout; default 80 % of the interval so one slow server never delays a tick."""
    max_page_bytes: int = field(default=8 * 1024 * 1024, metadata=in_range(1024, 1 << 30))
    """Stats pages larger than this are cut off and reported, never read whole."""
    max_endpoint_tok_s: float = field(default=1e6, metadata=in_range(1, 1e9))
    """A counter step implying more tokens per second than this (per endpoint, in or out) is a
    glitch: that tick counts nothing for the endpoint and says so."""
    cost: CostConfig = field(default_factory=CostConfig)
    demo: bool = False
    """Simulate a host (8x H200, three engines) instead of reading real ones."""
    seed: int = field(default=7, metadata=in_range(0, 2**63 - 1))
    """Seed of the demo's simulation."""
    ascii_only: bool | None = None
    """Draw only ASCII characters (``--ascii``), for terminals and fonts without Unicode. Not
    given: on when the locale is not UTF-8 (``load_config`` decides, ``speaks_utf8``)."""
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    """The fleet view's Prometheus; with a ``url`` the live view, ``snapshot`` and ``summary``
    read the fleet from it instead of this host."""
    hosts: tuple[SshHostConfig, ...] = ()
    """The fleet view's hosts over ssh; when given, the live view, ``snapshot`` and ``summary``
    read them instead of this host."""

    def __post_init__(self) -> None:
        settle(self)
        for what, names in (("endpoints", [e.name for e in self.endpoints]), ("hosts", [h.name for h in self.hosts])):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ConfigError(f"two {what} are called {repeated[0]!r}: give each its own name=")
        if self.prometheus.url is not None and self.hosts:
            raise ConfigError(
                "a fleet is read from Prometheus or over ssh, not both: "
                "give prometheus.url (--prometheus) or hosts (--ssh)"
            )

    @property
    def fleet_source(self) -> str | None:
        """Where the fleet view reads from: ``"prometheus"``, ``"ssh"``, or None (this host)."""
        if self.prometheus.url is not None:
            return "prometheus"
        return "ssh" if self.hosts else None

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
            elif f.name in ("prometheus",):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            elif f.name == "hosts":
                value = [{"ssh": h.ssh, "command": h.command, "name": h.name} for h in value]
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


_PROMETHEUS_FLAGS = {"url": "--prometheus", "token_env": "--prometheus-token-env"}


def load_config(path: Path | None, **overrides: Any) -> Config:
    """Read the TOML file (when given), then apply flag overrides (``None`` means not given)."""
    config = Config() if path is None else _read_file(Path(path))
    given = {k: v for k, v in overrides.items() if v is not None}
    for listed in ("endpoints", "hosts"):  # the file's and the flags'; the same one given twice counts once
        if listed in given:
            given[listed] = tuple(dict.fromkeys(tuple(getattr(config, listed)) + tuple(given[listed])))
    if "prometheus" in given:  # --prometheus URL / --prometheus-token-env VAR: on top of the file's table
        try:
            given["prometheus"] = replace(config.prometheus, **given["prometheus"])
        except ConfigError as exc:  # named by the flag that gave it
            raise ConfigError(exc.problem, _PROMETHEUS_FLAGS.get(exc.key or "", "--prometheus")) from None
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
        config: Config = build(Config, data, "")
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return config
