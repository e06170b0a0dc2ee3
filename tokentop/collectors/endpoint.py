"""One collector per configured endpoint (``poll.poll_all`` reads every one each tick).

A base URL (``http://host:8000``) is probed once: ``/metrics``, ``/v1/metrics`` (NIM),
``/prometheus/metrics`` (trtllm-serve), ``/api/ps`` (Ollama), ``/slots`` (llama.cpp without
``--metrics``); what answered is remembered until the endpoint fails, and probed for afresh
when it comes back (it may be another server now). A full stats URL is used as given.

``poll`` never raises: every failure becomes a short reason in the sample. Pages are got by
``fetch`` (cut at ``max_page_bytes`` and at the deadline); the bearer token goes into a header
and nowhere else.
A bug in a reader is logged as one WARNING line per distinct error, its traceback at DEBUG
only (the log at ``-v``): a hostile page must not print a traceback every tick.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from tokentop.collectors.body import BodyProblem, JsonBody, decode_body
from tokentop.collectors.by_name import filtered_urls, keeps_figures
from tokentop.collectors.exposition import TooManySamples, read_samples
from tokentop.collectors.fetch import Answer, FetchFailed, FetchTimedOut, PageClient
from tokentop.collectors.json_pages import (
    SlotsProgress,
    is_ollama_ps,
    is_trtllm_iterations,
    llamacpp_model,
    read_llamacpp_slots,
    read_ollama_ps,
    read_trtllm_iterations,
    slots_only_reading,
)
from tokentop.collectors.kinds import Detection, KindSpec, Reading, detect, read_figures
from tokentop.collectors.plausible import Implausible, plausible
from tokentop.config import EndpointConfig
from tokentop.model import EndpointSample
from tokentop.text import safe_optional, safe_text

log = logging.getLogger(__name__)

STALE_AFTER_S = 5.0
"""A failed read within this long of the last good one gives a "stale" sample, not "error"."""
QUICK_READ_S = 0.05  # a read this quick, last time, is done on the sampler's thread (poll_all)
LATENCY_EVERY_S = 5.0  # seconds between reads of the TTFT / inter-token histograms
PROBE_PATHS = ("/metrics", "/v1/metrics", "/prometheus/metrics", "/api/ps", "/slots")
_FULL_URL_ENDINGS = ("/metrics", "/api/ps", "/slots")
_LLAMACPP_SLOTS_OFF = "/slots is off: tokens show up only when requests finish"
_LLAMACPP_METRICS_OFF = "metrics off: /slots"
_ERRORS_WARNED_MAX = 32  # distinct reader errors remembered per endpoint, to warn of each once


class _TooSlowHere(Exception):
    """An inline read (``poll_within(t_mono, give_up_after_s)``) passed its own limit: not a failure of
    the endpoint, which is read again on a thread of its own."""


class _Failed(Exception):
    """A read that gave nothing usable; ``reason`` is shown to the user as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Source:
    """What answered, and how to read it."""

    url: str
    form: str  # "prometheus" | "llamacpp-slots" | "ollama" | "trtllm-json"
    kind: str
    detail: str | None = None
    spec: KindSpec | None = None
    by_name: tuple[str, str] | None = None  # (scalar, full) URLs asking for what is read (by_name.py)


class EndpointCollector:
    """Reads one inference server's stats endpoint into a ``EndpointSample``."""

    def __init__(
        self,
        endpoint: EndpointConfig,
        pages: PageClient,
        *,
        timeout_s: float,
        max_page_bytes: int,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.endpoint = endpoint
        self._connection = pages.connection()
        self._timeout_s = timeout_s
        self._max_page_bytes = max_page_bytes
        self._stale_after_s = stale_after_s
        self._candidates = _candidate_urls(endpoint.url)
        self._source: _Source | None = None
        self._api_model: str | None = None  # from llama.cpp /props or TGI /info, once per source
        self._last_good: EndpointSample | None = None
        self._kind = endpoint.kind
        self.pending: Future[EndpointSample] | None = None  # poll_all's read in progress
        self.quick = False  # the last read answered "up" within QUICK_READ_S: poll_all reads it inline
        self._give_up_at = math.inf
        self._latency_read_at = -math.inf
        self._tick_t = -math.inf  # the time of the tick being read
        self._errors_warned: set[str] = set()
        self._filter_untried = False  # the server found answers ``?name[]=``: try it on the next read
        self._filter_refused: set[str] = set()  # URLs whose filtered page was not usable: not tried again
        self._whole_page_bytes = 0  # the size of the page that found the server

    def __repr__(self) -> str:
        return f"EndpointCollector(name={self.endpoint.name!r}, url={self.endpoint.url!r}, kind={self._kind!r})"

    def poll(self, t_mono: float) -> EndpointSample:
        """Read the endpoint once. Never raises; ``t_mono`` is the tick's time."""
        sample = self.poll_within(t_mono, math.inf)
        assert sample is not None  # with no limit of its own, a read gives a sample
        return sample

    def poll_within(self, t_mono: float, give_up_after_s: float) -> EndpointSample | None:
        """``poll``, but None when the read takes longer than ``give_up_after_s`` (shorter than
        the endpoint's timeout): the endpoint is not failed for that, only read elsewhere."""
        started = time.monotonic()
        deadline = started + self._timeout_s
        self._give_up_at = started + give_up_after_s if give_up_after_s < self._timeout_s else math.inf
        self._tick_t = t_mono
        self.quick = False
        try:
            source, reading = self._read(deadline)
        except _TooSlowHere:
            return None
        except _Failed as failure:
            return self._forget_and_fail(t_mono, failure.reason)
        except Exception as exc:  # a bug here must not stop the sampler
            self._log_internal_error(exc)
            return self._forget_and_fail(t_mono, "internal error (see the log)")
        finally:
            self._connection.drop_unread()  # a request sent ahead that this read never got to
        # trtllm-serve's JSON list is emptied by each read: never read it twice in a tick
        self.quick = time.monotonic() - started < QUICK_READ_S and source.form != "trtllm-json"
        was = self._source
        if source is not was and (
            was is None or (source.url, source.kind, source.detail) != (was.url, was.kind, was.detail)
        ):
            log.info("%s: %s (%s) at %s", self.endpoint.name, source.kind, source.detail or "-", source.url)
        self._source = source
        self._kind = source.kind
        sample = EndpointSample(
            name=self.endpoint.name,
            url=self.endpoint.url,
            t_mono=t_mono,
            status="up",
            kind=source.kind,
            kind_detail=reading.kind_detail or source.detail,
            model=reading.model or self._api_model,
            prompt_tokens_total=reading.prompt_tokens_total,
            generation_tokens_total=reading.generation_tokens_total,
            prompt_tokens_in_flight=reading.prompt_tokens_in_flight,
            generation_tokens_in_flight=reading.generation_tokens_in_flight,
            running=reading.running,
            waiting=reading.waiting,
            kv_cache_fraction=reading.kv_cache_fraction,
            requests_finished_total=reading.requests_finished_total,
            process_start_time_s=reading.process_start_time_s,
            ttft=reading.ttft,
            itl=reading.itl,
            note=safe_optional(reading.note),  # notes joined from several reads: one bounded line
        )
        self._last_good = sample
        return sample

    def send_ahead(self, t_mono: float) -> None:
        """Send this tick's (``t_mono``) request now, for ``poll_within`` to read its answer:
        ``poll_all`` sends every inline read's first, so that the servers answer at the same
        time. Only the usual read of a known server goes ahead; never raises."""
        known = self._source
        if known is None or self._filter_untried:
            return
        self._tick_t = t_mono  # what the read asks for depends on it (the histograms' turn)
        try:
            self._connection.send_ahead(self._page_url(known), self._headers())
        except Exception as exc:  # a bug here must not stop the sampler
            self._log_internal_error(exc)

    @property
    def connected(self) -> bool:
        """A connection to the server is open: a read needs no connect nor name lookup."""
        return self._connection.is_open

    def close(self) -> None:
        """Close the connection to the server (a read under way on another thread fails)."""
        self._connection.close()

    def failed_sample(self, t_mono: float, reason: str) -> EndpointSample:
        """This tick's sample when the endpoint gave nothing usable: "stale" or "error"."""
        last = self._last_good
        if last is not None and 0 <= t_mono - last.t_mono <= self._stale_after_s:
            return replace(last, t_mono=t_mono, status="stale", error=reason)
        return EndpointSample(
            name=self.endpoint.name, url=self.endpoint.url, t_mono=t_mono, status="error", error=reason, kind=self._kind
        )

    # --- reading ---------------------------------------------------------------

    def _log_internal_error(self, exc: Exception) -> None:
        """The traceback at DEBUG; one WARNING line, without it, per distinct error."""
        log.debug("%s: reading the endpoint failed", self.endpoint.name, exc_info=exc)
        what = safe_text(f"{type(exc).__name__}: {exc}", 120)  # the message may quote the page
        if what in self._errors_warned:
            return
        if len(self._errors_warned) >= _ERRORS_WARNED_MAX:
            self._errors_warned.clear()
        self._errors_warned.add(what)
        log.warning("%s: reading the endpoint failed (%s); tokentop -v logs the details", self.endpoint.name, what)

    def _forget_and_fail(self, t_mono: float, reason: str) -> EndpointSample:
        if self._source is not None:
            log.info("%s: %s", self.endpoint.name, reason)
        self._source = None  # probe afresh when it answers again: it may be another server
        self._api_model = None
        return self.failed_sample(t_mono, reason)

    def _read(self, deadline: float) -> tuple[_Source, Reading]:
        self._check_token()
        known = self._source
        if known is None:
            source, reading = self._probe(deadline)
            self._api_model = self._model_from_api(source, deadline)
            spec = source.spec
            self._filter_untried = spec is not None and spec.answers_by_name and source.url not in self._filter_refused
        else:
            source, reading = self._read_known(known, deadline)
        if source.kind == "llamacpp" and source.form == "prometheus":
            reading = self._add_slots(source.url, reading, deadline)
        return source, reading

    def _read_known(self, known: _Source, deadline: float) -> tuple[_Source, Reading]:
        if self._filter_untried and (tried := self._try_name_filter(known, deadline)) is not None:
            return tried
        read_at = self._latency_read_at
        answer = self._get(self._page_url(known), deadline)
        if answer.status != 200:
            raise _Failed(_http_reason(answer.status, self.endpoint.token_env is not None))
        found = self._understand(known.url, answer, known)
        if isinstance(found, str):
            raise _Failed(found)
        last = self._last_good
        if known.by_name is not None and last is not None and not keeps_figures(found[1], last):
            self._filter_refused.add(known.url)
            self._latency_read_at = read_at  # the whole page is read as this one was
            log.info("%s: a page filtered by name lost figures: reads the whole page", self.endpoint.name)
            return self._read_known(replace(known, by_name=None), deadline)
        return found

    def _try_name_filter(self, known: _Source, deadline: float) -> tuple[_Source, Reading] | None:
        """Read the page filtered by name, once per server found, with the latency histograms
        (as the whole page was read when the server was found): the filter is kept when it
        gives every figure the whole page gave, from fewer bytes. None: read the whole page.
        The histograms' schedule (``LATENCY_EVERY_S``) stays as it was: when they were not due,
        the last ones are carried forward as by any read between two of theirs."""
        assert known.spec is not None
        trial = replace(known, by_name=filtered_urls(known.url, known.spec.scalar_names, known.spec.names))
        due, read_at = self._latency_due(), self._latency_read_at
        self._latency_read_at = -math.inf  # a full read: the trial asks for every name
        try:
            answer = self._get(self._page_url(trial), deadline)
            found = self._understand(known.url, answer, trial) if answer.status == 200 else f"HTTP {answer.status}"
        except _Failed as failure:  # refused by a proxy, say: not the server's fault
            found = failure.reason
        except _TooSlowHere:  # tried again on a thread, on the same schedule
            self._latency_read_at = read_at
            raise
        self._filter_untried = False  # a _TooSlowHere above leaves it to the read on a thread
        last, name = self._last_good, self.endpoint.name
        if not due:
            self._latency_read_at = read_at
        if isinstance(found, str) or last is None or not keeps_figures(found[1], last):
            self._filter_refused.add(known.url)
            why = found if isinstance(found, str) else "other figures than the whole page"
            log.info("%s: a page filtered by name was not usable (%s): reads the whole page", name, why)
            return None
        if not due:
            found = found[0], replace(found[1], ttft=last.ttft, itl=last.itl)
        if len(answer.body) >= 0.9 * self._whole_page_bytes:  # the query was ignored: a whole page it is
            self._filter_refused.add(known.url)
            log.info("%s: the server ignores a filter by name: reads the whole page", name)
            return replace(found[0], by_name=None), found[1]
        log.info(
            "%s: asks for what it reads by name (%d bytes, not %d)", name, len(answer.body), self._whole_page_bytes
        )
        return found

    def _probe(self, deadline: float) -> tuple[_Source, Reading]:
        first_problem: str | None = None
        json_stats: tuple[_Source, Reading] | None = None
        for url in self._candidates:
            try:
                answer = self._get(url, deadline)
            except _Failed as failure:  # unreachable, too slow or too big: other paths won't help
                raise _Failed(first_problem or failure.reason) from None
            found = (
                self._understand(url, answer, None)
                if answer.status == 200
                else _http_reason(answer.status, self.endpoint.token_env is not None)
            )
            if isinstance(found, str):
                first_problem = first_problem or found
            elif found[0].form == "trtllm-json" and json_stats is None:
                json_stats = found  # trtllm-serve: its /prometheus/metrics has token counters
            else:
                self._whole_page_bytes = len(answer.body)
                return found
        if json_stats is not None:
            return json_stats
        raise _Failed(first_problem or "no stats endpoint found")

    def _understand(self, url: str, answer: Answer, known: _Source | None) -> tuple[_Source, Reading] | str:
        """Turn a 200 answer into figures, or say in a few words why it cannot be; raise
        ``_Failed`` for a known server's page that holds nonsense."""
        text = decode_body(answer)
        if isinstance(text, JsonBody):
            return self._understand_json(url, text.data)
        if isinstance(text, BodyProblem):
            return text.reason
        kind = self.endpoint.kind
        detection: Detection | None = None  # the page's, when the server is not known yet
        if known is not None and known.spec is not None:
            spec, detail = known.spec, known.detail
        else:
            detection = detect(text, kind)
            if detection is None:
                return "no known metrics on page"
            spec, detail = detection.spec, detection.detail
        try:
            reading = self._read_page(text, spec, fresh=known is None)
        except (Implausible, TooManySamples) as refused:  # the server is found: other paths won't help
            raise _Failed(str(refused)) from None
        if not reading.has_figures:
            recognised = detection or detect(text, kind)
            if recognised is None or not recognised.from_page or recognised.spec.kind != spec.kind:
                return "no known metrics on page"
        if reading.process_start_time_s is None and answer.start_time:
            reading = replace(reading, process_start_time_s=_start_time(answer.start_time))
        if known is not None and known.url == url and known.form == "prometheus" and known.spec is spec:
            return known, reading  # the server as it was found: the same source
        by_name = known.by_name if known is not None else None
        return _Source(url, "prometheus", spec.kind, detail, spec, by_name), reading

    def _read_page(self, text: str, spec: KindSpec, *, fresh: bool) -> Reading:
        """Figures from a Prometheus page. Latency histograms are most of a busy page's lines
        and feed percentiles over a minute, so they are read every ``LATENCY_EVERY_S`` only;
        between reads the last ones are carried forward."""
        last = self._last_good
        if fresh or last is None or self._latency_due():
            self._latency_read_at = self._tick_t
            samples = read_samples(text, spec.page_names)  # one scan of the page
            return read_figures(spec, samples, samples)
        samples = read_samples(text, spec.scalar_page_names)
        return read_figures(spec, samples, samples, carried=(last.ttft, last.itl))

    def _latency_due(self) -> bool:
        return self._last_good is None or self._tick_t - self._latency_read_at >= LATENCY_EVERY_S

    def _page_url(self, known: _Source) -> str:
        """Where this tick's page is read: filtered by name to what this tick reads, when it can be."""
        if known.by_name is None:
            return known.url
        scalar, full = known.by_name
        return full if self._latency_due() else scalar

    def _understand_json(self, url: str, data: object) -> tuple[_Source, Reading] | str:
        kind = self.endpoint.kind
        # trtllm-serve drains its list on every read: an empty one at /metrics is an idle engine
        idle_trtllm = data == [] and urlsplit(url).path.endswith("/metrics")
        if kind in (None, "trtllm") and (is_trtllm_iterations(data) or idle_trtllm):
            source = _Source(url, "trtllm-json", "trtllm", "JSON iteration stats")
            reading = read_trtllm_iterations(data)
        elif kind in (None, "ollama") and is_ollama_ps(data):
            source = _Source(url, "ollama", "ollama")
            reading = read_ollama_ps(data)
        elif kind in (None, "llamacpp") and (progress := _slots_of(data)) is not None:
            if isinstance(progress, Implausible):  # the server is found: other paths won't help
                raise _Failed(str(progress))
            source = _Source(url, "llamacpp-slots", "llamacpp", _LLAMACPP_METRICS_OFF)
            reading = slots_only_reading(progress)
        else:
            return "no known metrics on page"
        return source, reading

    def _add_slots(self, metrics_url: str, reading: Reading, deadline: float) -> Reading:
        """llama.cpp: the progress of running requests, read after /metrics (never counted twice)."""
        try:
            answer = self._get(_sibling(metrics_url, "slots"), deadline)
        except _Failed as failure:
            return replace(reading, note=_join_notes(reading.note, f"/slots: {failure.reason}"))
        content = decode_body(answer) if answer.status == 200 else None
        progress = _slots_of(content.data) if isinstance(content, JsonBody) else None
        if progress is None:
            return replace(reading, note=_join_notes(reading.note, _LLAMACPP_SLOTS_OFF))
        if isinstance(progress, Implausible):
            return replace(reading, note=_join_notes(reading.note, str(progress)))
        # prompt progress is left out: the prompt counter already holds part of it (json_pages)
        return replace(reading, generation_tokens_in_flight=progress.generated_tokens)

    def _model_from_api(self, source: _Source, deadline: float) -> str | None:
        """llama.cpp and TGI pages carry no model label: ask ``/props`` or ``/info`` once."""
        path = {"llamacpp": "props", "tgi": "info"}.get(source.kind)
        if path is None:
            return None
        try:
            answer = self._get(_sibling(source.url, path), deadline)
        except _Failed:
            return None
        content = decode_body(answer) if answer.status == 200 else None
        if not isinstance(content, JsonBody):
            return None
        if source.kind == "llamacpp":
            return llamacpp_model(content.data)
        model_id = content.data.get("model_id") if isinstance(content.data, dict) else None
        return safe_text(model_id) if isinstance(model_id, str) and model_id else None

    def _check_token(self) -> None:
        """An unset or empty ``token_env`` is said before any request, not as a 401 later."""
        variable = self.endpoint.token_env
        if variable is None:
            return
        token = self.endpoint.bearer_token()
        if token is None:
            raise _Failed(f"token_env {variable} is not set")
        if not token.strip():
            raise _Failed(f"token_env {variable} is empty")

    def _headers(self) -> dict[str, str]:
        token = self.endpoint.bearer_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _get(self, url: str, deadline: float) -> Answer:
        try:
            return self._connection.get(url, self._headers(), min(deadline, self._give_up_at), self._max_page_bytes)
        except FetchTimedOut:
            if self._give_up_at < deadline:
                raise _TooSlowHere from None
            raise _Failed(self._timeout_reason()) from None
        except FetchFailed as failure:
            raise _Failed(failure.reason) from None

    def _timeout_reason(self) -> str:
        return f"timed out after {self._timeout_s:g} s"


# --- helpers ---------------------------------------------------------------------


def _candidate_urls(url: str) -> tuple[str, ...]:
    parsed = urlsplit(url)
    path = parsed.path.rstrip("/")
    if path.endswith(_FULL_URL_ENDINGS):
        if path.endswith("/metrics"):  # llama.cpp answers 501 there without --metrics
            return (url, _sibling(url, "slots"))
        return (url,)
    return tuple(parsed._replace(path=path + probe).geturl() for probe in PROBE_PATHS)


def _sibling(url: str, name: str) -> str:
    """``http://h/x/metrics?model=m`` -> ``http://h/x/<name>?model=m``."""
    parsed = urlsplit(url)
    return parsed._replace(path=parsed.path.rsplit("/", 1)[0] + "/" + name).geturl()


def _start_time(header: str) -> float | None:
    """Unix seconds from a ``Process-Start-Time-Unix`` header; None unless plausible."""
    try:
        value = float(header)
    except ValueError:
        return None
    return value if plausible(value) else None


def _slots_of(data: object) -> SlotsProgress | Implausible | None:
    """llama.cpp's /slots progress; the reason when a slot holds a token count no server means."""
    try:
        return read_llamacpp_slots(data)
    except Implausible as bad:
        return bad


def _join_notes(*notes: str | None) -> str | None:
    return "; ".join(note for note in notes if note) or None


def _http_reason(status: int, token_sent: bool) -> str:
    if status in (401, 403):
        problem = "the bearer token was refused" if token_sent else "needs a bearer token (token_env)"
        return f"HTTP {status}: {problem}"
    if status == 501:
        return "HTTP 501: metrics are off on this server"
    return f"HTTP {status}"
