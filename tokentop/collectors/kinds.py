"""Which server a Prometheus page comes from, and where each figure lives on it.

One ``KindSpec`` per server (and per spelling of its names): mostly a table of sample names
over the shared reader (``exposition.read_samples``). Detection follows
``shared/docs/SERVERS.md`` section 12; the names and their renames are catalogued there too.

Summing rules (SERVERS.md sections 13-14):

- Token counters, request counts and queue gauges are summed over every series on the page:
  data-parallel engines (vLLM ``engine``, SGLang ``dp_rank``), replicas (Ray ``WorkerId``),
  models (Triton ``model``) and partitions (``finished_reason``, ``is_streaming``).
- Series that differ only in their rank (SGLang ``tp_rank``, ``pp_rank``, ... and ``pid``) repeat
  each other (``--enable-metrics-for-all-schedulers``): one is kept before summing; DP attention's
  ranks differ in ``dp_rank`` too, and are summed. No series is looked at while the reader has
  parsed no rank label (``PageSamples.label_names``).
- The KV-cache fraction is the fullest engine's (max), never a sum.
- Histograms are summed bucket by bucket, in seconds (``buckets.py``: in C, by a layout kept
  while the page's label sets stay the same).
- A value no server can mean (``plausible.py``: NaN, infinite, negative, over 2^53; a KV
  fraction over 1) is never passed on. In a token counter it rejects the whole reading
  (``Implausible``): a counter that vanished for a tick would look like "no counter" or a
  restart downstream. In any other figure it makes that figure unknown, and the note says
  which series held what.
- ``process_start_time_seconds`` (the standard process metric) is the engine's start time:
  the newest of them, when the page has several processes'. It is read in the same scan as a
  server's names (``PROCESS_NAMES``): the reader's prefix tree of names makes it next to free.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from itertools import chain
from operator import attrgetter, is_not, itemgetter

from tokentop.collectors.buckets import by_label_sets, layout_of, sums_line_by_line
from tokentop.collectors.exposition import Labels, PageSamples, Series
from tokentop.collectors.plausible import Implausible, all_plausible, first_bad, plausible
from tokentop.model import MAX_COUNT, Histogram, stored_by_slots
from tokentop.text import MAX_TEXT, safe_text

_RANK_LABELS = frozenset(("tp_rank", "pp_rank", "moe_ep_rank", "attn_tp_rank"))
_REPEATING = _RANK_LABELS | {"pid"}  # what tells apart the ranks of one group
_SELECTOR = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(\w+)="([^"]*)"\})?$')
MODEL_NAMES_SHOWN = 3
MODEL_NAME_CHARS = 60  # each name, when several are shown on one line
PROCESS_NAMES = ("process_start_time_seconds",)  # the standard process metrics tokentop reads
_LABELS, _VALUE = itemgetter(0), itemgetter(1)  # of a sample, (labels, value)


@dataclass(frozen=True)
class Selector:
    """A sample name, optionally narrowed to series with one label value."""

    name: str
    label: str | None = None
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Selector:
        match = _SELECTOR.match(text)
        if match is None:
            raise ValueError(f"bad selector {text!r}")
        return cls(*match.groups())

    def pick(self, series: Series) -> Series:
        if self.label is None:
            return series
        return [(labels, value) for labels, value in series if labels.get(self.label) == self.value]


def _pick(*texts: str) -> tuple[Selector, ...]:
    """Alternatives for one figure: the first one present on the page is used."""
    return tuple(Selector.parse(text) for text in texts)


_PROCESS_START = _pick(*PROCESS_NAMES)


@dataclass(frozen=True)
class KindSpec:
    kind: str
    prompt: tuple[Selector, ...] = ()
    generation: tuple[Selector, ...] = ()
    running: tuple[Selector, ...] = ()
    waiting: tuple[Selector, ...] = ()
    kv: tuple[Selector, ...] = ()
    finished: tuple[Selector, ...] = ()
    ttft: tuple[str, ...] = ()  # histogram base names, first present wins
    itl: tuple[str, ...] = ()
    latency_unit_s: float = 1.0  # 0.001 when the server's histograms count milliseconds
    model_labels: tuple[str, ...] = ("model_name",)
    model_from: tuple[str, ...] = ()  # names whose labels name the model; default: the figures'
    answers_by_name: bool = False  # prometheus_client's app: ``?name[]=`` gives only those (by_name.py)
    names: tuple[str, ...] = field(init=False)  # every sample name to read
    scalar_names: tuple[str, ...] = field(init=False)  # the same without the latency histograms
    # the same and ``PROCESS_NAMES``: what a page is read for, one tuple each, made once
    page_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    scalar_page_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        scalar = [s.name for group in self._scalar_groups() for s in group]
        histograms = [base + end for base in self.ttft + self.itl for end in ("_bucket", "_sum", "_count")]
        object.__setattr__(self, "names", tuple(dict.fromkeys([*scalar, *histograms, *self.model_from])))
        object.__setattr__(self, "scalar_names", tuple(dict.fromkeys([*scalar, *self.model_from])))
        object.__setattr__(self, "page_names", self.names + PROCESS_NAMES)
        object.__setattr__(self, "scalar_page_names", self.scalar_names + PROCESS_NAMES)

    def _scalar_groups(self) -> tuple[tuple[Selector, ...], ...]:
        return (self.prompt, self.generation, self.running, self.waiting, self.kv, self.finished)


def _vllm_like(
    kind: str,
    prefix: str,
    *,
    kv: tuple[str, ...] = ("kv_cache_usage_perc", "gpu_cache_usage_perc"),  # renamed in 0.9.2
    itl: tuple[str, ...] = ("inter_token_latency_seconds", "time_per_output_token_seconds"),  # 0.10.2
    waiting_fallback: tuple[str, ...] = (),
    model_labels: tuple[str, ...] = ("model_name",),
    answers_by_name: bool = False,
) -> KindSpec:
    """vLLM's names, as vLLM, Ray, NIM, LMDeploy and Triton's vLLM backend spell them."""
    return KindSpec(
        kind=kind,
        prompt=_pick(prefix + "prompt_tokens_total"),
        generation=_pick(prefix + "generation_tokens_total"),
        running=_pick(prefix + "num_requests_running"),
        waiting=_pick(prefix + "num_requests_waiting", *waiting_fallback),
        kv=_pick(*(prefix + name for name in kv)),
        finished=_pick(prefix + "request_success_total"),
        ttft=(prefix + "time_to_first_token_seconds",),
        itl=tuple(prefix + name for name in itl),
        model_labels=model_labels,
        answers_by_name=answers_by_name,
    )


VLLM = _vllm_like("vllm", "vllm:", answers_by_name=True)
RAY = _vllm_like("ray", "ray_vllm:")
RAY_SANITIZED = _vllm_like("ray", "ray_vllm_")  # newer vLLM: ':' is not allowed in OpenTelemetry
NIM = _vllm_like("nim", "")
LMDEPLOY = _vllm_like(
    "lmdeploy", "lmdeploy:", itl=("iter_token_latency", "time_per_output_token_seconds"), answers_by_name=True
)
TRITON_VLLM = _vllm_like(
    "triton", "vllm:", waiting_fallback=("nv_inference_pending_request_count",), model_labels=("model",)
)
SGLANG = KindSpec(
    kind="sglang",
    prompt=_pick("sglang:prompt_tokens_total"),
    generation=_pick("sglang:generation_tokens_total"),
    running=_pick("sglang:num_running_reqs"),
    waiting=_pick("sglang:num_queue_reqs"),
    kv=_pick("sglang:token_usage"),
    finished=_pick("sglang:num_requests_total"),
    ttft=("sglang:time_to_first_token_seconds",),
    itl=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
)
TGI = KindSpec(  # no _total on counters; tokens only as histogram sums; no model label
    kind="tgi",
    prompt=_pick("tgi_request_input_length_sum"),
    generation=_pick("tgi_request_generated_tokens_sum"),
    running=_pick("tgi_batch_current_size"),
    waiting=_pick("tgi_queue_size"),
    finished=_pick("tgi_request_success"),
    model_labels=(),
)
LLAMACPP = KindSpec(  # counters move when a request finishes; /slots adds the progress
    kind="llamacpp",
    prompt=_pick("llamacpp:prompt_tokens_total"),
    generation=_pick("llamacpp:tokens_predicted_total"),
    running=_pick("llamacpp:requests_processing"),
    waiting=_pick("llamacpp:requests_deferred"),
    kv=_pick("llamacpp:kv_cache_usage_ratio"),  # removed from llama.cpp in May 2025
    model_labels=(),
)
# Triton with the TensorRT-LLM backend. The backend's nv_trt_llm_v1_metrics and
# nv_trt_llm_inflight_batcher_metrics token figures are gauges of the current iteration, not
# cumulative counters, so they are not token totals; the totals are the nv_llm_*_token_len sums.
TRITON = KindSpec(
    kind="triton",
    prompt=_pick("nv_llm_input_token_len_sum"),
    generation=_pick("nv_llm_output_token_len_sum"),
    running=_pick('nv_trt_llm_request_metrics{request_type="active"}'),
    waiting=_pick('nv_trt_llm_request_metrics{request_type="waiting"}', "nv_inference_pending_request_count"),
    kv=_pick('nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}'),
    finished=_pick("nv_inference_request_success"),
    ttft=("nv_inference_first_response_histogram_ms",),
    latency_unit_s=0.001,
    model_labels=("model",),
)


def _trtllm(prefix: str) -> KindSpec:
    """trtllm-serve's Prometheus page (``/prometheus/metrics``); early builds had no prefix."""
    return KindSpec(
        kind="trtllm",
        prompt=_pick(prefix + "prompt_tokens_total"),
        generation=_pick(prefix + "generation_tokens_total"),
        running=_pick(prefix + "num_requests_running"),
        waiting=_pick(prefix + "num_requests_waiting"),
        kv=_pick(prefix + "kv_cache_utilization"),
        finished=_pick(prefix + "request_success_total"),
        ttft=(prefix + "time_to_first_token_seconds",),
        # its time_per_output_token_seconds is one value per request (TPOT), not inter-token
    )


TRTLLM = _trtllm("trtllm_")
TRTLLM_UNPREFIXED = _trtllm("")
DYNAMO = KindSpec(
    kind="dynamo",
    prompt=_pick("dynamo_frontend_input_sequence_tokens_sum"),
    generation=_pick("dynamo_frontend_output_tokens_total"),
    running=_pick("dynamo_frontend_inflight_requests"),
    waiting=_pick("dynamo_frontend_queued_requests"),
    finished=_pick('dynamo_frontend_requests_total{status="success"}'),
    ttft=("dynamo_frontend_time_to_first_token_seconds",),
    itl=("dynamo_frontend_inter_token_latency_seconds",),
    model_labels=("model",),
    # request metrics lower-case the model label; the model_* gauges keep its case
    model_from=("dynamo_frontend_model_context_length", "dynamo_frontend_output_tokens_total"),
)

# The spec used when the configured kind is not what the page looks like.
DEFAULT_SPECS: dict[str, KindSpec] = {
    spec.kind: spec for spec in (VLLM, SGLANG, TGI, LLAMACPP, TRITON, TRTLLM, NIM, LMDEPLOY, DYNAMO, RAY)
}


@dataclass(frozen=True)
class Detection:
    spec: KindSpec
    detail: str | None = None
    from_page: bool = True  # False: the configured kind, not recognised on the page


def has_lines(text: str, prefix: str) -> bool:
    """Does any sample line of the page start with ``prefix``?"""
    return text.startswith(prefix) or ("\n" + prefix) in text


def detect(text: str, kind: str | None = None) -> Detection | None:
    """The server behind a Prometheus page (SERVERS.md section 12), or None.

    With ``kind`` given, only that kind is accepted: its spelling is still read from the page.
    """
    found = _detect(text)
    if kind is None or (found is not None and found.spec.kind == kind):
        return found
    spec = DEFAULT_SPECS.get(kind)
    return Detection(spec, from_page=False) if spec is not None else None


def _detect(text: str) -> Detection | None:
    def has(prefix: str) -> bool:
        return has_lines(text, prefix)

    worker = "via Dynamo worker" if has("dynamo_component_") else None
    if has("vllm:"):
        if has("nv_inference_"):
            return Detection(TRITON_VLLM, "vLLM backend")
        return Detection(VLLM, _join(_vllm_version(text), worker))
    if has("sglang:"):
        return Detection(SGLANG, worker)
    if has("tgi_"):
        return Detection(TGI)
    if has("llamacpp:"):
        return Detection(LLAMACPP)
    if has("nv_trt_llm_") or has("nv_llm_"):
        return Detection(TRITON, "TensorRT-LLM backend")
    if has("nv_inference_") or has("nv_gpu_"):
        return Detection(TRITON)
    if has("trtllm_"):
        return Detection(TRTLLM, worker)
    if has("num_requests_running") and (has("num_request_max") or has("gpu_cache_usage_perc")):
        return Detection(NIM)
    if has("request_success_total") and has("time_to_first_token_seconds"):
        return Detection(TRTLLM_UNPREFIXED, "early trtllm-serve names")
    if has("lmdeploy:"):
        return Detection(LMDEPLOY)
    if has("dynamo_frontend_"):
        return Detection(DYNAMO, "frontend")
    if has("ray_vllm:"):
        return Detection(RAY, "vLLM")
    if has("ray_vllm_"):
        return Detection(RAY_SANITIZED, "vLLM")
    return None


def _vllm_version(text: str) -> str | None:
    """V1 pages carry an ``engine`` label or the V1-only names; V0 pages the swap/CPU-cache gauges."""
    if has_lines(text, "vllm:kv_cache_usage_perc") or has_lines(text, "vllm:inter_token_latency_seconds"):
        return "V1"
    if has_lines(text, "vllm:num_requests_swapped") or has_lines(text, "vllm:cpu_cache_usage_perc"):
        return "V0"
    return "V1" if re.search(r'\nvllm:[^{\n]*\{(?:[^\n]*,)?engine="', text) else None


def _join(*parts: str | None) -> str | None:
    return ", ".join(p for p in parts if p) or None


# --- reading the figures -------------------------------------------------------


@stored_by_slots
@dataclass(frozen=True, slots=True)
class Reading:
    """What one answer says, in ``EndpointSample``'s terms (same field names)."""

    model: str | None = None
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    prompt_tokens_in_flight: float | None = None
    generation_tokens_in_flight: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_fraction: float | None = None
    requests_finished_total: float | None = None
    process_start_time_s: float | None = None
    ttft: Histogram | None = None
    itl: Histogram | None = None
    note: str | None = None
    kind_detail: str | None = None  # when it changes from one answer to the next (Ollama)

    @property
    def has_figures(self) -> bool:
        """Any figure of an inference server (any Python process has a start time)."""
        return any(map(is_not, _FIGURES(self), _NONES))  # in C: by identity, no histogram's ``__eq__``


_WORDS = ("model", "note", "kind_detail", "process_start_time_s")
_FIGURES = attrgetter(*(f.name for f in fields(Reading) if f.name not in _WORDS))
_NONES = (None,) * len(_FIGURES(Reading()))
_NO_SERIES: Series = []  # never changed
_Found = dict[str, Series]  # PageSamples.series
_Picks = tuple[Selector, ...]  # a figure's alternatives, the first present used


def read_figures(
    spec: KindSpec,
    samples: PageSamples,
    process: PageSamples | None = None,
    carried: tuple[Histogram | None, Histogram | None] | None = None,
) -> Reading:
    """The figures of one page (``samples`` of ``spec.names``, ``process`` of ``PROCESS_NAMES``);
    raises ``Implausible`` when a token counter holds nonsense. ``carried``: the latency
    histograms (TTFT, ITL) of an earlier read, for a read of ``spec.scalar_names`` only."""
    found, ranked = samples.series, _ranked(samples)
    ignored: list[str] = []
    prompt = _figure(found, spec.prompt, MAX_COUNT, ranked, ignored)
    generation = _figure(found, spec.generation, MAX_COUNT, ranked, ignored)
    if ignored:  # a token counter that holds nonsense rejects the whole reading
        raise Implausible(f"{ignored[0]}: not a token count")
    running = _figure(found, spec.running, MAX_COUNT, ranked, ignored)
    waiting = _figure(found, spec.waiting, MAX_COUNT, ranked, ignored)
    kv = _figure(found, spec.kv, 1.0, ranked, ignored, largest=True)
    finished = _figure(found, spec.finished, MAX_COUNT, ranked, ignored)
    started = None
    if process is not None:
        started = _figure(process.series, _PROCESS_START, MAX_COUNT, _ranked(process), ignored, largest=True)
    if carried is None:
        ttft = _histogram(found, spec.ttft, spec.latency_unit_s, ranked, ignored)
        itl = _histogram(found, spec.itl, spec.latency_unit_s, ranked, ignored)
    else:
        ttft, itl = carried
    repeated = samples.duplicates and not samples.duplicates.issubset(PROCESS_NAMES)  # ``process``'s, read with them
    notes = ["the page repeats some series; the last of each was used"] if repeated else []
    if ignored:
        notes.append("not plausible, left out: " + "; ".join(ignored))
    note = safe_text("; ".join(notes), MAX_TEXT) if notes else None
    # by position, in Reading's order (a call by keyword builds a dict); no tokens in flight
    return Reading(
        _model(spec, found), prompt, generation, None, None, running, waiting, kv, finished, started, ttft, itl, note
    )


def _ranked(samples: PageSamples) -> bool:
    """May a series have a rank label? Not when the reader's label names say none has."""
    return samples.label_names is None or not _RANK_LABELS.isdisjoint(samples.label_names)


def _one_per_group(series: Series) -> Series:
    """The largest series of each group that differs only in rank labels and ``pid``: they
    repeat each other. Groups are summed after: DP attention's ranks (``dp_rank``; their
    ``tp_rank`` is the global rank, not 0), engines, models. A series without ranks stays."""
    if _RANK_LABELS.isdisjoint(chain.from_iterable(map(_LABELS, series))):
        return series  # no rank labels (every server but SGLang): one C loop over the label names
    kept: dict[object, tuple[Labels, float]] = {}
    for labels, value in series:
        ranked = not _RANK_LABELS.isdisjoint(labels)
        group = frozenset(item for item in labels.items() if item[0] not in _REPEATING) if ranked else id(labels)
        held = kept.get(group)
        if held is None or value > held[1]:
            kept[group] = (labels, value)
    return list(kept.values())


def _figure(
    found: _Found, selectors: _Picks, upper: float, ranked: bool, problems: list[str], largest: bool = False
) -> float | None:
    """The first present selector's series summed (``largest``: the largest of them); None,
    and which series is bad added to ``problems``, when a value or the sum is not plausible.
    ``ranked``: a series may have a rank label."""
    for selector in selectors:
        series = found.get(selector.name)
        if series and ranked:
            series = _one_per_group(series)
        if series and selector.label is not None:
            series = selector.pick(series)
        if not series:
            continue
        values = list(map(_VALUE, series))
        total = sum(values)
        if total <= upper and not largest and min(values) >= 0:  # so finite, and each value too
            return float(total)
        high = max(values)
        if not (math.isfinite(total) and min(values) >= 0 and high <= upper):  # as ``all_plausible``
            if (bad := first_bad(selector.name, series, upper)) is not None:
                problems.append(bad)
            return None
        value = float(high if largest else total)
        if value <= upper:  # and >= 0: a sum of plausible values
            return value
        problems.append(f"{selector.name} sums to {value:g}")
        return None
    return None


def _histogram(
    found: _Found, bases: tuple[str, ...], unit_s: float, ranked: bool, problems: list[str]
) -> Histogram | None:
    """The first present histogram, summed bucket by bucket; None, and which series is bad
    added to ``problems``, when one is not plausible."""
    for base in bases:
        bucket_series = found.get(base + "_bucket")
        if bucket_series and ranked:
            bucket_series = _one_per_group(bucket_series)
        if not bucket_series:
            continue
        bucket_values = list(map(_VALUE, bucket_series))
        layout = layout_of(base + "_bucket", bucket_series)
        buckets = sums_line_by_line(bucket_series) if layout is None else layout.sums(bucket_values)
        if not buckets:
            continue
        sums = found.get(base + "_sum") or _NO_SERIES
        counts = found.get(base + "_count") or _NO_SERIES
        if ranked:
            sums, counts = _one_per_group(sums), _one_per_group(counts)
        if not sums or math.inf not in buckets:
            return None
        sum_values, count_values = list(map(_VALUE, sums)), list(map(_VALUE, counts))
        parts = [("_sum", sums, sum_values), ("_count", counts, count_values)]
        if layout is None or not layout.surely_plausible(bucket_values, buckets):
            parts.insert(0, ("_bucket", bucket_series, bucket_values))
        for suffix, series, values in parts:
            if series and not all_plausible(values) and (bad := first_bad(base + suffix, series)) is not None:
                problems.append(bad)
                return None
        count = sum(count_values) if counts else buckets[math.inf]
        if max(buckets.values()) > MAX_COUNT or not plausible(count):  # each sum is finite and >= 0
            problems.append(f"{base} sums to more than 2^53")
            return None
        scaled = buckets.items() if unit_s == 1.0 else ((upper * unit_s, n) for upper, n in buckets.items())
        return Histogram(buckets=tuple(sorted(scaled)), sum=sum(sum_values) * unit_s, count=count)
    return None


def _model(spec: KindSpec, found: _Found) -> str | None:
    """The models named by the series of the first name whose series carry a model label."""
    if not spec.model_labels:
        return None
    for name in spec.model_from or spec.names:
        series = found.get(name)
        if series and (model := by_label_sets(name, series, _models_of, spec.model_labels)) is not None:
            return model
    return None


def _models_of(label_sets: list[Labels], model_labels: tuple[str, ...]) -> str | None:
    names: dict[str, None] = {}
    for labels in label_sets:
        for label in model_labels:
            if model := labels.get(label):
                names[model] = None
    return describe_models(list(names))


def describe_models(names: list[str]) -> str | None:
    """``a``, ``a, b`` or ``a, b, c (+4 more)``: one printable line of at most 200 characters,
    however many names a server gives and whatever they hold."""
    if not names:
        return None
    each = MAX_TEXT if len(names) == 1 else MODEL_NAME_CHARS
    shown = ", ".join(safe_text(name, each) for name in names[:MODEL_NAMES_SHOWN])
    more = len(names) - MODEL_NAMES_SHOWN
    return safe_text(f"{shown} (+{more} more)" if more > 0 else shown)
