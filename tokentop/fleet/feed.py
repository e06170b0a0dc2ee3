"""A ``snapshot --json`` line back into a ``model.Snapshot``: the inverse of
``tokentop.snapshot_json.snapshot_dict``, for feeds read from other hosts.

What comes down a feed is written by another program on another machine, so every line is
checked before anything is built from it: the schema version first (one plain reason when it is
not the one this tokentop reads), then every key and its type. Texts go through ``safe_text``
(an escape sequence in an engine's name never reaches the terminal), numbers must be finite,
lists are bounded. ``LineSplitter`` cuts the byte stream into lines without ever holding more
than ``MAX_LINE_BYTES`` of one: a longer line is dropped as it streams past.

The JSON carries windows as rates and shares; ``Window`` holds the sums they came from, so they
are rebuilt: busy GPU-seconds from ``busy_pct`` over the watched GPU-seconds (the host's GPUs
times the span; a host with no GPU is one unit, as its own deriver counts it), the busy cost
from the cost less ``idle_usd``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tokentop.model import (
    EndpointFigures,
    EndpointSample,
    GpuFigures,
    GpuSample,
    HostFigures,
    Price,
    Snapshot,
    Totals,
    Window,
)
from tokentop.snapshot_json import SCHEMA_VERSION
from tokentop.text import safe_text

MAX_LINE_BYTES = 4 * 1024 * 1024  # a snapshot of 64 GPUs and 64 endpoints is about 150 KiB
MAX_ITEMS = 4096  # GPUs, endpoints, messages, engine names in one snapshot
READ_CHUNK = 64 * 1024
MAX_NUMBER = 10**300  # a larger JSON integer is no figure of ours (and would overflow a float)


class FeedError(ValueError):
    """A line that is not a snapshot this tokentop can read; the message says why, plainly."""


class SchemaError(FeedError):
    """A snapshot of another schema version: every line will be so, until the host upgrades."""


# --- bytes to lines ------------------------------------------------------------------------


class LineSplitter:
    """Bytes in (any chunking), complete lines out. A line longer than ``max_bytes`` is never
    kept: what was held of it is dropped at once and the rest skipped up to its newline; each
    such line is counted in ``oversized``."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.oversized = 0
        self._held = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            if end < 0:
                self._hold(chunk[start:])
                return
            if self._skipping:
                self._skipping = False
            elif len(self._held) + end - start > self.max_bytes:
                self._held.clear()
                self.oversized += 1
            else:
                self._held += chunk[start:end]
                line = bytes(self._held)
                self._held.clear()
                yield line
            start = end + 1

    def _hold(self, part: bytes) -> None:
        if self._skipping:
            return
        if len(self._held) + len(part) > self.max_bytes:
            self._held.clear()
            self._skipping = True
            self.oversized += 1
            return
        self._held += part


# --- JSON to a Snapshot --------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise FeedError(f"not a finite number: {name}")


def parse_line(line: bytes, t_mono: float) -> Snapshot:
    """One feed line as a Snapshot; ``t_mono`` is the viewer's monotonic time of receipt (the
    remote host's monotonic clock means nothing here). ``FeedError`` says what is wrong."""
    try:
        data = json.loads(line, parse_constant=_reject_constant)
    except FeedError:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FeedError("a line that is not JSON") from None
    return snapshot_from_dict(data, t_mono)


def check_schema(data: object) -> None:
    """The one check that comes first: a feed from another version says so in one line."""
    if not isinstance(data, dict):
        raise FeedError("a line that is not a JSON object")
    version = data.get("schema_version")
    if version is None:
        raise FeedError("a JSON line without schema_version: not a tokentop snapshot")
    if version != SCHEMA_VERSION:
        shown = version if isinstance(version, int) and not isinstance(version, bool) else safe_text(version, 20)
        raise SchemaError(f"remote tokentop speaks snapshot schema {shown}; this one reads {SCHEMA_VERSION}")


@dataclass(frozen=True)
class JsonObject:
    """A JSON object from outside whose fields are read with their type checked (``FeedError``
    naming the key otherwise) and whose texts come out safe; ``where`` names it."""

    data: dict[str, Any]
    where: str

    @classmethod
    def of(cls, value: object, where: str) -> JsonObject:
        if not isinstance(value, dict):
            raise FeedError(f"{where} is not an object")
        return cls(value, where)

    def _get(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise FeedError(f"{self.where}.{key} is missing") from None

    def _wrong(self, key: str, what: str) -> FeedError:
        return FeedError(f"{self.where}.{key} is not {what}")

    def num(self, key: str) -> float:
        return self._number(key, self._get(key))

    def num_or_none(self, key: str) -> float | None:
        value = self._get(key)
        return None if value is None else self._number(key, value)

    def _number(self, key: str, value: object) -> float:
        # The hot path (some 270 numbers a snapshot): exact type checks, no bool, finite only
        # (NaN and infinities do not survive ``v - v == 0``), no integer too large for a float.
        if type(value) is float and value - value == 0.0:
            return value
        if type(value) is int and -MAX_NUMBER < value < MAX_NUMBER:
            return float(value)
        raise self._wrong(key, "a number")

    def int_(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "a whole number")
        return value

    def int_or_none(self, key: str) -> int | None:
        return None if self._get(key) is None else self.int_(key)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return safe_text(value)

    def text_or_none(self, key: str) -> str | None:
        return None if self._get(key) is None else self.text(key)

    def items(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "a list")
        if len(value) > MAX_ITEMS:
            raise FeedError(f"{self.where}.{key} holds more than {MAX_ITEMS} items")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        values = self.items(key)
        if not all(isinstance(v, str) for v in values):
            raise self._wrong(key, "a list of strings")
        return tuple(safe_text(v) for v in values)

    def obj(self, key: str) -> JsonObject:
        return JsonObject.of(self._get(key), f"{self.where}.{key}")


def _window(o: JsonObject, watched_units: int | None) -> Window:
    """A window back from its rates: ``watched_units`` GPUs for the host's (None: one GPU)."""
    span = o.num("span_s")
    cost = o.num_or_none("cost_usd")
    idle = o.num_or_none("idle_usd")
    busy_pct = o.num_or_none("busy_pct")
    watched = None if watched_units is None else watched_units * span
    busy_s = 0.0 if busy_pct is None else busy_pct / 100.0 * (span if watched is None else watched)
    return Window(
        span_s=span,
        tokens_in=o.num("tokens_in"),
        tokens_out=o.num("tokens_out"),
        energy_j=o.num("energy_j"),
        cost_usd=cost,
        busy_s=busy_s,
        busy_cost_usd=None if cost is None or idle is None else cost - idle,
        watched_gpu_s=watched,
    )


def _totals(o: JsonObject, watched_units: int | None) -> Totals:
    elapsed = o.num("elapsed_s")
    return Totals(
        tokens_in=o.num("tokens_in"),
        tokens_out=o.num("tokens_out"),
        energy_j=o.num("energy_j"),
        cost_usd=o.num_or_none("cost_usd"),
        busy_s=o.num("busy_gpu_s"),
        busy_cost_usd=o.num_or_none("busy_cost_usd"),
        elapsed_s=elapsed,
        watched_gpu_s=None if watched_units is None else watched_units * elapsed,
    )


def _gpu(o: JsonObject, cost_mode: str) -> GpuFigures:
    sample = GpuSample(
        uuid=o.text("uuid"),
        index=o.int_("index"),
        name=o.text("name"),
        status=o.text("status"),
        error=o.text_or_none("error"),
        utilization_pct=o.num_or_none("utilization_pct"),
        memory_used_bytes=o.int_or_none("memory_used_bytes"),
        memory_total_bytes=o.int_or_none("memory_total_bytes"),
        power_w=o.num_or_none("power_w"),
        power_source=o.text_or_none("power_source"),
        power_limit_w=o.num_or_none("power_limit_w"),
        energy_counter_mj=o.int_or_none("energy_counter_mj"),
        temperature_c=o.num_or_none("temperature_c"),
        sm_clock_mhz=o.int_or_none("sm_clock_mhz"),
    )
    rate = o.num_or_none("price_usd_per_gpu_hour")
    price = None if rate is None else Price(rate, o.text_or_none("price_source") or "", cost_mode)
    return GpuFigures(
        sample=sample,
        engines=o.texts("engines"),
        price=price,
        energy_method=o.text_or_none("energy_method"),
        usd_per_hour_now=o.num_or_none("usd_per_hour_now"),
        totals=_totals(o.obj("session"), None),
        rate_window=_window(o.obj("rate_window"), None),
        cost_window=_window(o.obj("cost_window"), None),
    )


def _endpoint(o: JsonObject, t_mono: float) -> EndpointFigures:
    kv = o.num_or_none("kv_cache_pct")
    sample = EndpointSample(
        name=o.text("name"),
        url=o.text("url"),
        t_mono=t_mono,
        status=o.text("status"),
        error=o.text_or_none("error"),
        kind=o.text_or_none("kind"),
        kind_detail=o.text_or_none("kind_detail"),
        model=o.text_or_none("model"),
        prompt_tokens_total=o.num_or_none("prompt_tokens_counter"),
        generation_tokens_total=o.num_or_none("generation_tokens_counter"),
        prompt_tokens_in_flight=o.num_or_none("prompt_tokens_in_flight"),
        generation_tokens_in_flight=o.num_or_none("generation_tokens_in_flight"),
        running=o.num_or_none("requests_running"),
        waiting=o.num_or_none("requests_waiting"),
        kv_cache_fraction=None if kv is None else kv / 100.0,
        note=o.text_or_none("note"),
    )
    return EndpointFigures(
        sample=sample,
        gpus=o.texts("gpus"),
        mapping=o.text_or_none("gpu_mapping"),
        pid=o.int_or_none("pid"),
        tokens_in_total=o.num("session_tokens_in"),
        tokens_out_total=o.num("session_tokens_out"),
        tok_s_in=o.num_or_none("tok_s_in"),
        tok_s_out=o.num_or_none("tok_s_out"),
        ttft_p50_s=o.num_or_none("ttft_p50_s"),
        ttft_p95_s=o.num_or_none("ttft_p95_s"),
        itl_p50_s=o.num_or_none("itl_p50_s"),
    )


def _host(o: JsonObject) -> HostFigures:
    count = o.int_("gpu_count")
    if count < 0:
        raise FeedError("snapshot.host.gpu_count is negative")
    units = max(count, 1)  # watched units: with no GPU, the host's endpoints count as one
    return HostFigures(
        gpu_count=count,
        power_w=o.num_or_none("power_w_now"),
        usd_per_hour_now=o.num_or_none("usd_per_hour_now"),
        totals=_totals(o.obj("session"), units),
        rate_window=_window(o.obj("rate_window"), units),
        cost_window=_window(o.obj("cost_window"), units),
        unpriced_gpus=o.texts("unpriced_gpus"),
    )


def snapshot_from_dict(data: object, t_mono: float) -> Snapshot:
    """A ``snapshot_dict`` back as a Snapshot, every key and type checked (``FeedError``)."""
    check_schema(data)
    o = JsonObject.of(data, "snapshot")
    mode = o.obj("cost_inputs").text("mode")
    return Snapshot(
        seq=o.int_("tick"),
        t_wall=o.num("time_unix_s"),
        t_mono=t_mono,
        dt_s=o.num_or_none("tick_interval_measured_s"),
        rate_window_s=o.num("rate_window_s"),
        cost_window_s=o.num("cost_window_s"),
        gpu_available=o.flag("gpu_available"),
        gpu_reason=o.text_or_none("gpu_unavailable_reason"),
        gpus=tuple(_gpu(JsonObject.of(g, "snapshot.gpus[]"), mode) for g in o.items("gpus")),
        endpoints=tuple(_endpoint(JsonObject.of(e, "snapshot.endpoints[]"), t_mono) for e in o.items("endpoints")),
        host=_host(o.obj("host")),
        messages=o.texts("messages"),
    )
