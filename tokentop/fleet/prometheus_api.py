"""A small client of the Prometheus HTTP API (``/api/v1/query`` and ``/api/v1/query_range``).

Every failure becomes a ``PromError`` whose message is one plain line for a status bar:
unreachable (a host name that cannot be looked up included), timed out, an HTTP status, an answer
that is not the API's JSON or is too large, or the API's own ``"status": "error"``. Warnings
(partial data) come back beside the result. The timeout bounds the whole answer, not only each
read, so a Prometheus that trickles its answer cannot hold a refresh. After a failure the client
backs off (1 s, doubling to 60 s) and answers ``PromError`` at once until the wait is over, so a
Prometheus that is down is not asked again on every refresh. The bearer token is read from the
environment variable named in the config (its absence said plainly), sent in a header, and never
kept in a message, a ``repr`` or a log.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx

from tokentop import __version__
from tokentop.config import PrometheusConfig, shown_url
from tokentop.fleet.promql import UNION_LABEL
from tokentop.text import safe_text

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # an answer larger than this is refused, never read whole
MAX_MESSAGE_CHARS = 160

Labels = dict[str, str]


class PromError(Exception):
    """A query could not be answered; ``str()`` is one line for people, without secrets."""


class Sample(NamedTuple):
    """One series of an instant query: its labels and value (NaN and ±Inf dropped as unknown).
    A named tuple: a refresh makes thousands, and a tuple is the cheapest immutable record."""

    labels: Labels
    value: float | None


@dataclass(frozen=True)
class RangeSeries:
    labels: Labels
    points: tuple[tuple[float, float], ...]  # (Unix s, value), finite values only


@dataclass(frozen=True)
class Answer:
    """What a query gave: the samples (instant) or series (range), and Prometheus's warnings."""

    samples: tuple[Sample, ...] = ()
    series: tuple[RangeSeries, ...] = ()
    warnings: tuple[str, ...] = ()

    def parts(self) -> dict[str, list[Sample]]:
        """The samples of a ``promql.union`` by their ``tt_q`` tag (the tag left in the labels)."""
        out: dict[str, list[Sample]] = {}
        for sample in self.samples:
            out.setdefault(sample.labels.get(UNION_LABEL, ""), []).append(sample)
        return out


@dataclass
class PromClient:
    """Queries one Prometheus. ``queries`` counts the HTTP requests made (benchmarks, tests)."""

    config: PrometheusConfig
    clock: Callable[[], float] = time.monotonic
    queries: int = 0
    _http: httpx.Client = field(init=False, repr=False)
    _retry_at: float = field(default=0.0, init=False)
    _backoff_s: float = field(default=0.0, init=False)
    _last_error: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.config.url is None:
            raise ValueError("PromClient needs prometheus.url")
        self.base = self.config.url.rstrip("/")
        self.shown = shown_url(self.base)
        self._http = httpx.Client(
            timeout=self.config.timeout_s,
            headers={"User-Agent": f"tokentop/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def instant(self, query: str, at: float | None = None) -> Answer:
        params = {"query": query} if at is None else {"query": query, "time": _num(at)}
        return _vector(*self._get("/api/v1/query", params), self.shown)

    def range(self, query: str, start: float, end: float, step_s: float) -> Answer:
        params = {"query": query, "start": _num(start), "end": _num(end), "step": _num(step_s)}
        data, warnings = self._get("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise PromError(f"Prometheus at {self.shown} answered a {data.get('resultType')!r}, not a matrix")
        return Answer(series=tuple(_matrix(data.get("result"))), warnings=warnings)

    def _get(self, path: str, params: dict[str, str]) -> tuple[dict[str, Any], tuple[str, ...]]:
        now = self.clock()
        if now < self._retry_at:
            raise PromError(f"{self._last_error} (retrying in {math.ceil(self._retry_at - now):.0f} s)")
        try:
            data, warnings = self._ask(path, params)
        except PromError as exc:
            self._backoff_s = min(BACKOFF_MAX_S, self._backoff_s * 2 or BACKOFF_FIRST_S)
            self._retry_at = self.clock() + self._backoff_s
            self._last_error = str(exc)
            raise
        self._backoff_s, self._retry_at, self._last_error = 0.0, 0.0, None
        return data, warnings

    def _ask(self, path: str, params: dict[str, str]) -> tuple[dict[str, Any], tuple[str, ...]]:
        headers = {"Authorization": f"Bearer {self._token()}"} if self.config.token_env else {}
        self.queries += 1
        too_slow = f"Prometheus at {self.shown} did not answer within {self.config.timeout_s:g} s"
        deadline = time.monotonic() + self.config.timeout_s
        try:
            with self._http.stream("POST", self.base + path, data=params, headers=headers) as response:
                body = _read_capped(response, self.shown, deadline, too_slow)
        except httpx.TimeoutException:
            raise PromError(too_slow) from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, OSError) as exc:
            # UnicodeError: a host name the IDNA codec refuses (an empty or over-long label)
            raise PromError(f"Prometheus at {self.shown} unreachable: {_short(type(exc).__name__, exc)}") from None
        return _decode(response.status_code, body, self.shown)

    def _token(self) -> str:
        """The bearer token from the configured variable; ``PromError`` naming the variable (never
        a value) when it is unset or empty, rather than an anonymous request answered 401."""
        token = self.config.bearer_token()
        if not token:
            name = safe_text(str(self.config.token_env))
            raise PromError(f"the environment variable {name} (prometheus.token_env) is not set or empty")
        return token


def _read_capped(response: httpx.Response, shown: str, deadline: float, too_slow: str) -> bytes:
    """The whole body, refused past ``MAX_ANSWER_BYTES`` or once ``deadline`` (monotonic) passes."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise PromError(f"Prometheus at {shown} answered more than {MAX_ANSWER_BYTES >> 20} MiB: refused")
        if time.monotonic() > deadline:
            raise PromError(too_slow)
        chunks.append(chunk)
    return b"".join(chunks)


def vector_answer(body: bytes, shown: str = "Prometheus", status: int = 200) -> Answer:
    """An instant query's answer from the API's JSON body; ``PromError`` when it is not one."""
    return _vector(*_decode(status, body, shown), shown)


def _vector(data: dict[str, Any], warnings: tuple[str, ...], shown: str) -> Answer:
    if data.get("resultType") != "vector":
        raise PromError(f"Prometheus at {shown} answered a {data.get('resultType')!r}, not a vector")
    return Answer(samples=tuple(_samples(data.get("result"))), warnings=warnings)


def _decode(status: int, body: bytes, shown: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``data`` and warnings of an API answer, or ``PromError`` saying what was wrong."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        what = f"HTTP {status}" if status >= 400 else "an answer that is not Prometheus's JSON"
        raise PromError(f"Prometheus at {shown} gave {what}")
    if answer["status"] == "error" or status >= 400:
        kind = safe_text(str(answer.get("errorType") or f"HTTP {status}"))
        raise PromError(f"Prometheus at {shown}: {kind}: {_short('', answer.get('error'))}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise PromError(f"Prometheus at {shown} gave an answer without data")
    warnings = answer.get("warnings")
    listed = tuple(_short("", w) for w in warnings) if isinstance(warnings, list) else ()
    return data, listed


def _short(prefix: str, what: object) -> str:
    text = safe_text(str(what or "no reason given")).replace("\n", " ")
    text = f"{prefix}: {text}" if prefix else text
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _num(value: float) -> str:
    return f"{value:.3f}"


def _value(pair: object) -> tuple[float, float] | None:
    """A ``[t, "value"]`` pair as numbers; None when malformed or not finite."""
    if not isinstance(pair, list) or len(pair) != 2:
        return None
    try:
        t, v = float(pair[0]), float(pair[1])
    except (TypeError, ValueError):
        return None
    return (t, v) if math.isfinite(v) and math.isfinite(t) else None


def _labels(item: object) -> Labels | None:
    """The series' labels: Prometheus's own dict when every key and value is text (as the API
    defines them), else None (the series is dropped)."""
    if not isinstance(item, dict):
        return None
    metric = item.get("metric")
    if type(metric) is not dict or any(type(v) is not str for v in metric.values()):
        return None
    return metric


def _samples(result: object) -> list[Sample]:
    """An instant vector's series; the hot path of a refresh (thousands of series), so kept plain."""
    out: list[Sample] = []
    append, isfinite = out.append, math.isfinite
    for item in result if isinstance(result, list) else ():
        labels = _labels(item)
        if labels is None:
            continue
        try:
            value: float | None = float(item["value"][1])
        except (TypeError, ValueError, IndexError, KeyError):
            value = None
        append(Sample(labels, value if value is not None and isfinite(value) else None))
    return out


def _matrix(result: object) -> list[RangeSeries]:
    out: list[RangeSeries] = []
    for item in result if isinstance(result, list) else ():
        labels = _labels(item)
        values = item.get("values") if isinstance(item, dict) else None
        if labels is not None and isinstance(values, list):
            points = tuple(p for p in map(_value, values) if p is not None)
            out.append(RangeSeries(labels, points))
    return out
