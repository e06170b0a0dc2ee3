"""The PromQL the fleet view asks: a fixed handful of queries per refresh, whatever the fleet's size.

Each query is a union of aggregated parts (``union``): every part is tagged with a ``tt_q``
label naming what it is, so one HTTP request brings back, for example, every counter's
``increase()`` over the cost window for every GPU of every host. Aggregation is always ``by``
the labels that name a GPU or a server, never per host in a loop, so the number of queries does
not grow with hosts (``QUERIES_PER_REFRESH``).

Two kinds of fleet (``detect_query``):

* tokentop exporters (``tokentop_*``, labels ``host``, ``gpu``, ``uuid``): exact; the counters are
  each host's own session totals, so ``increase()`` over a range is what that host's summary says.
* agentless: NVIDIA's dcgm-exporter for GPUs, the inference servers' token counters for tokens.
  Only counters are read, with ``increase()``/``rate()`` (which handle resets), never the
  servers' throughput gauges. Names of both dcgm-exporter generations are matched.
"""

from __future__ import annotations

from collections.abc import Mapping

UNION_LABEL = "tt_q"
QUERIES_PER_REFRESH = 4  # detect (now and then) + cost window + rate window + latest

# --- detection ---------------------------------------------------------------------------------

TOKENTOP_MARK = "tokentop_snapshot_timestamp_seconds"
DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"
DCGM_ENERGY_NAMES = ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total")
DCGM_UTIL = "DCGM_FI_DEV_GPU_UTIL"
DCGM_TEMP = "DCGM_FI_DEV_GPU_TEMP"
# Framebuffer memory, MiB before dcgm-exporter 4.9.0 and bytes from it; reserved is published
# by newer releases only (``tokentop.fleet.agentless`` makes them NVML's used and total).
DCGM_MEMORY = {
    "fb_used": "DCGM_FI_DEV_FB_USED",
    "fb_free": "DCGM_FI_DEV_FB_FREE",
    "fb_reserved": "DCGM_FI_DEV_FB_RESERVED",
}
FP64_BLANK_BELOW = 1e14  # dcgm-exporter's blank floats are 2^47 and up, blank integers ~9.2e18


def detect_query(window_s: float) -> str:
    """Which kinds of series the Prometheus holds over the window: ``tt_q`` tokentop | dcgm."""
    d = duration(window_s)
    return union(
        {
            "tokentop": f"count(last_over_time({TOKENTOP_MARK}[{d}]))",
            "dcgm": f"count(last_over_time({DCGM_POWER}[{d}]))",
        }
    )


# --- tokentop exporters ------------------------------------------------------------------------

GPU_BY = "host, gpu, uuid"
ENDPOINT_BY = "host, endpoint, kind"
INFO_LABELS = "name, engines, energy_method, price_source"
TOKENTOP_COUNTERS = {
    "tokens": "tokentop_gpu_tokens_total",
    "energy": "tokentop_gpu_energy_joules_total",
    "cost": "tokentop_gpu_cost_usd_total",
    "busy": "tokentop_gpu_busy_seconds_total",
    "busy_cost": "tokentop_gpu_busy_cost_usd_total",
    "watched": "tokentop_gpu_watched_seconds_total",
}


def _by(key: str, base: str) -> str:
    return base + ", direction" if key in ("tokens", "ep_tokens") else base


def _selected(name: str, host: str | None) -> str:
    """``name`` with a ``host="…"`` matcher (the value escaped) when ``host`` is given."""
    return name if host is None else f"{name}{{host={quote(host)}}}"


def tokentop_window_parts(window_s: float, host: str | None = None) -> dict[str, str]:
    """Every GPU counter's and endpoint token counter's ``increase()`` over the window, per GPU
    and per endpoint (only ``host``'s when given)."""
    d = duration(window_s)
    parts = {
        k: f"sum by ({_by(k, GPU_BY)}) (increase({_selected(name, host)}[{d}]))"
        for k, name in TOKENTOP_COUNTERS.items()
    }
    ep = _selected("tokentop_endpoint_tokens_total", host)
    parts["ep_tokens"] = f"sum by ({ENDPOINT_BY}, direction) (increase({ep}[{d}]))"
    return parts


def tokentop_window(window_s: float) -> str:
    return union(tokentop_window_parts(window_s))


def tokentop_latest_parts(seen_window_s: float, host: str | None = None) -> dict[str, str]:
    """Latest values per GPU and endpoint (only ``host``'s when given): gauges, the session
    counters (totals) and each GPU's description."""
    d = duration(seen_window_s)

    def sel(name: str) -> str:
        return _selected(name, host)

    parts = {f"total_{k}": f"sum by ({_by(k, GPU_BY)}) ({sel(name)})" for k, name in TOKENTOP_COUNTERS.items()}
    parts.update(
        {
            "power": f"sum by ({GPU_BY}) ({sel('tokentop_gpu_power_watts')})",
            "util": f"sum by ({GPU_BY}) ({sel('tokentop_gpu_utilization_ratio')})",
            "usd_h": f"sum by ({GPU_BY}) ({sel('tokentop_gpu_usd_per_hour')})",
            "memory_used": f"max by ({GPU_BY}) ({sel('tokentop_gpu_memory_used_bytes')})",
            "memory_total": f"max by ({GPU_BY}) ({sel('tokentop_gpu_memory_total_bytes')})",
            "temperature": f"max by ({GPU_BY}) ({sel('tokentop_gpu_temperature_celsius')})",
            "info": f"max by ({GPU_BY}, {INFO_LABELS}) (last_over_time({sel('tokentop_gpu_info')}[{d}]))",
            "ep_up": f"max by ({ENDPOINT_BY}) ({sel('tokentop_endpoint_up')})",
            "ep_info": f"max by ({ENDPOINT_BY}, model) (last_over_time({sel('tokentop_endpoint_info')}[{d}]))",
            "ep_total": f"sum by ({ENDPOINT_BY}, direction) ({sel('tokentop_endpoint_tokens_total')})",
            "ep_running": f"sum by ({ENDPOINT_BY}) ({sel('tokentop_endpoint_requests_running')})",
            "ep_waiting": f"sum by ({ENDPOINT_BY}) ({sel('tokentop_endpoint_requests_waiting')})",
            "ep_ttft": f"max by ({ENDPOINT_BY}, quantile) ({sel('tokentop_endpoint_ttft_seconds')})",
            "ep_itl": f"max by ({ENDPOINT_BY}, quantile) ({sel('tokentop_endpoint_itl_seconds')})",
        }
    )
    return parts


def seen_parts(seen_window_s: float) -> dict[str, str]:
    """Each host's latest snapshot time over the window, and whether Prometheus can scrape its
    exporter now."""
    d = duration(seen_window_s)
    return {
        "seen": f"max by (host) (last_over_time({TOKENTOP_MARK}[{d}]))",
        "up": f"min by (host) (last_over_time(tokentop_info[{d}]) * 0 + on (instance, job) group_left () up)",
    }


def tokentop_latest(seen_window_s: float) -> str:
    """Latest values of every GPU and endpoint, and each host's latest snapshot time and ``up``."""
    return union({**tokentop_latest_parts(seen_window_s), **seen_parts(seen_window_s)})


# Per-host aggregates (``h_*`` parts): what the hosts table and the fleet header show, about ten
# series a host whatever its GPU count; per-GPU parts are added for the one host opened.


def host_window_parts(window_s: float) -> dict[str, str]:
    """Each host's counters' ``increase()`` over the window summed over its GPUs, and the GPUs
    without a cost counter there (unpriced: the host's cost is unknown)."""
    d = duration(window_s)
    parts = {f"h_{k}": f"sum by ({_by(k, 'host')}) (increase({name}[{d}]))" for k, name in TOKENTOP_COUNTERS.items()}
    watched, cost = TOKENTOP_COUNTERS["watched"], TOKENTOP_COUNTERS["cost"]
    parts["h_unpriced"] = (
        f"group by (host, uuid) (increase({watched}[{d}]) unless on (host, uuid) increase({cost}[{d}]))"
    )
    return parts


def host_latest_parts(seen_window_s: float) -> dict[str, str]:
    """Each host's session totals, gauges summed (and counted: a sum is known only when every
    GPU has one), GPUs by model, engines up and known, and its latest sample time and ``up``."""
    d = duration(seen_window_s)
    watched, cost = TOKENTOP_COUNTERS["watched"], TOKENTOP_COUNTERS["cost"]
    parts = {f"h_total_{k}": f"sum by ({_by(k, 'host')}) ({name})" for k, name in TOKENTOP_COUNTERS.items()}
    parts.update(
        {
            "h_total_elapsed": f"max by (host) ({watched})",
            "h_total_unpriced": f"group by (host, uuid) ({watched} unless on (host, uuid) {cost})",
            "h_power": "sum by (host) (tokentop_gpu_power_watts)",
            "h_usd_h": "sum by (host) (tokentop_gpu_usd_per_hour)",
            "h_usd_h_count": "count by (host) (tokentop_gpu_usd_per_hour)",
            "h_models": f"count by (host, name) (max by (host, uuid, name) (last_over_time(tokentop_gpu_info[{d}])))",
            "h_ep_up": "count by (host) (tokentop_endpoint_up == 1)",
            "h_ep_total": "count by (host) (tokentop_endpoint_up)",
        }
    )
    return {**parts, **seen_parts(seen_window_s)}


def tokentop_hosts_window(window_s: float, focus: str | None) -> str:
    """Per-host aggregates over the window for every host, per GPU and endpoint for ``focus``."""
    detail = {} if focus is None else tokentop_window_parts(window_s, focus)
    return union({**host_window_parts(window_s), **detail})


def tokentop_hosts_latest(seen_window_s: float, focus: str | None) -> str:
    """Per-host latest values for every host, per GPU and endpoint for ``focus``."""
    detail = {} if focus is None else tokentop_latest_parts(seen_window_s, focus)
    return union({**host_latest_parts(seen_window_s), **detail})


def tokentop_graph(rate_s: float, host: str | None) -> str:
    """The fleet's (or one host's) output tok/s, W and $/h, for a range query; and the output
    tok/s of the GPUs that have a cost counter (``priced_tok_s_out``), the only tokens $/h may be
    divided by: a GPU without a price is left out of both sides of $/Mtok."""
    d = duration(rate_s)
    sel = "" if host is None else f"host={quote(host)}"
    out = f'direction="out",{sel}' if sel else 'direction="out"'
    tokens, cost = f"rate(tokentop_gpu_tokens_total{{{out}}}[{d}])", f"rate(tokentop_gpu_cost_usd_total{{{sel}}}[{d}])"
    return union(
        {
            "tok_s_out": f"sum({tokens})",
            "priced_tok_s_out": f"sum({tokens} and on (host, uuid) {cost})",
            "power_w": f"sum(tokentop_gpu_power_watts{{{sel}}})",
            "usd_h": f"sum({cost}) * 3600",
        }
    )


# --- agentless: dcgm-exporter + the servers' own counters --------------------------------------

# The labels that tell GPUs apart and say where they are; dcgm-exporter's workload labels arrive
# as exported_* when the scrape does not honour labels. MIG instances (GPU_I_ID) and the pods
# sharing a time-sliced GPU are kept apart here and folded per UUID in ``tokentop.fleet.agentless``.
DCGM_GPU_BY = "instance, gpu, UUID, modelName, Hostname, hostname"
DCGM_BY = f"{DCGM_GPU_BY}, pod, namespace, exported_pod, exported_namespace"
SERVER_BY = "instance, pod, namespace, exported_pod, exported_namespace, model_name"

# (kind, output-token counter, prompt-token counter): the counters only, never throughput gauges.
SERVER_COUNTERS = (
    ("vllm", "vllm:generation_tokens_total", "vllm:prompt_tokens_total"),
    ("sglang", "sglang:generation_tokens_total", "sglang:prompt_tokens_total"),
    ("tgi", "tgi_request_generated_tokens_sum", "tgi_request_input_length_sum"),
    ("llamacpp", "llamacpp:tokens_predicted_total", "llamacpp:prompt_tokens_total"),
    ("nim", "generation_tokens_total", "prompt_tokens_total"),
    ("ray", "ray_vllm:generation_tokens_total", "ray_vllm:prompt_tokens_total"),
    ("ray", "ray_vllm_generation_tokens_total", "ray_vllm_prompt_tokens_total"),
    ("trtllm", "trtllm_generation_tokens_total", "trtllm_prompt_tokens_total"),
)

_ITL = ("inter_token_latency_seconds", "time_per_output_token_seconds")  # renamed in vLLM 0.10.2
# (kind, TTFT histogram, ITL histograms: the first a server has wins, observations in the window
# or not), in seconds, as ``tokentop.collectors.kinds`` reads them from the servers' own pages.
# trtllm-serve's time_per_output_token_seconds is one value per request, not inter-token: never
# read for it, nor for the unprefixed names, which are NIM's and those of trtllm-serve builds
# without a prefix (``kinds.TRTLLM_UNPREFIXED``).
SERVER_LATENCY = (
    ("vllm", "vllm:time_to_first_token_seconds", tuple("vllm:" + name for name in _ITL)),
    ("sglang", "sglang:time_to_first_token_seconds", tuple("sglang:" + name for name in _ITL)),
    ("nim", "time_to_first_token_seconds", _ITL[:1]),
    ("ray", "ray_vllm:time_to_first_token_seconds", tuple("ray_vllm:" + name for name in _ITL)),
    ("ray", "ray_vllm_time_to_first_token_seconds", tuple("ray_vllm_" + name for name in _ITL)),
    ("trtllm", "trtllm_time_to_first_token_seconds", ()),
)


_KV = ("kv_cache_usage_perc", "gpu_cache_usage_perc")  # renamed in vLLM 0.9.2
_VLLM_GAUGES = (("running", ("num_requests_running",)), ("waiting", ("num_requests_waiting",)), ("kv", _KV))
# (kind, figure, names: the first a server has wins): requests running and waiting (summed over
# engines) and the KV-cache fraction (the fullest engine's), as ``tokentop.collectors.kinds``
# reads them; the unprefixed names are NIM's and those of trtllm-serve builds without a prefix
# (whose KV is kv_cache_utilization)
SERVER_GAUGES = (
    *((kind, figure, tuple(prefix + name for name in names))
      for kind, prefix in (("vllm", "vllm:"), ("ray", "ray_vllm:"), ("ray", "ray_vllm_"))
      for figure, names in _VLLM_GAUGES),
    ("nim", "running", ("num_requests_running",)),
    ("nim", "waiting", ("num_requests_waiting",)),
    ("nim", "kv", (*_KV, "kv_cache_utilization")),
    ("sglang", "running", ("sglang:num_running_reqs",)),
    ("sglang", "waiting", ("sglang:num_queue_reqs",)),
    ("sglang", "kv", ("sglang:token_usage",)),
    ("tgi", "running", ("tgi_batch_current_size",)),
    ("tgi", "waiting", ("tgi_queue_size",)),
    ("llamacpp", "running", ("llamacpp:requests_processing",)),
    ("llamacpp", "waiting", ("llamacpp:requests_deferred",)),
    ("llamacpp", "kv", ("llamacpp:kv_cache_usage_ratio",)),
    ("trtllm", "running", ("trtllm_num_requests_running",)),
    ("trtllm", "waiting", ("trtllm_num_requests_waiting",)),
    ("trtllm", "kv", ("trtllm_kv_cache_utilization",)),
)  # fmt: skip
# SGLang's series that differ only in their tensor, pipeline or expert rank (and each rank's
# pid) repeat each other: one of each group (the largest) before any sum, as the local reader
# keeps one (``kinds._one_per_group``); DP attention's ranks differ in dp_rank and are summed
REPEATING = "tp_rank, pp_rank, moe_ep_rank, attn_tp_rank, pid"


def _one_per_group(expr: str) -> str:
    return f"max without ({REPEATING}) ({expr})"


def _server_parts(template: str, d: str, *, inputs: bool = True) -> dict[str, str]:
    """``template`` (``{name}``, ``{d}``) over every server counter; keys ``srv|kind|dir|name``."""
    parts: dict[str, str] = {}
    for kind, out_name, in_name in SERVER_COUNTERS:
        for direction, name in (("out", out_name), ("in", in_name)) if inputs else (("out", out_name),):
            parts[f"srv|{kind}|{direction}|{name}"] = template.format(name=name, d=d)
    return parts


def _latency_parts(d: str) -> dict[str, str]:
    """Each server's TTFT p50 and p95 and ITL p50 over the window, as the local view works them
    out (Prometheus's ``histogram_quantile`` of the buckets' increase, engines summed; NaN, a
    value that is not known, when the histogram had no observation in the window); keys
    ``fig|kind|figure|rank|name``, rank 0 the histogram to read first."""
    parts: dict[str, str] = {}
    for kind, ttft, itl in SERVER_LATENCY:
        for figure, q, names in (("ttft_p50", 0.5, (ttft,)), ("ttft_p95", 0.95, (ttft,)), ("itl_p50", 0.5, itl)):
            for rank, name in enumerate(names):
                buckets = f"sum by (le, {SERVER_BY}) ({_one_per_group(f'increase({name}_bucket[{d}])')})"
                parts[f"fig|{kind}|{figure}|{rank}|{name}"] = f"histogram_quantile({q:g}, {buckets})"
    return parts


def _gauge_parts() -> dict[str, str]:
    """Each server's latest requests running and waiting and KV-cache fraction; keys
    ``fig|kind|figure|rank|name``, rank 0 the name to read first."""
    parts: dict[str, str] = {}
    for kind, figure, names in SERVER_GAUGES:
        for rank, name in enumerate(names):
            per_server = (
                f"max by ({SERVER_BY}) ({name})" if figure == "kv" else f"sum by ({SERVER_BY}) ({_one_per_group(name)})"
            )
            parts[f"fig|{kind}|{figure}|{rank}|{name}"] = per_server
    return parts


def agentless_window(window_s: float, *, busy: bool, latency: bool = False) -> str:
    """GPU energy and mean power, server tokens over the window; with ``busy``, how many scrape
    intervals each server's output counter moved in (``changes``) out of how many it has. A
    window asked without ``busy`` has no busy share of its own (``tokentop.fleet.agentless``
    never borrows another window's): ask every window that is shown with it. With ``latency``,
    the servers' latency percentiles over the window (the local view's are over its cost window)."""
    d = duration(window_s)
    parts = {f"energy|{name}": f"max by ({DCGM_BY}) (increase({name}[{d}]))" for name in DCGM_ENERGY_NAMES}
    parts["power_avg"] = f"max by ({DCGM_BY}) (avg_over_time({DCGM_POWER}[{d}]))"
    parts.update(_server_parts(f"sum by ({SERVER_BY}) ({_one_per_group('increase({name}[{d}])')})", d))
    if busy:
        changes = _server_parts(f"max by ({SERVER_BY}) (changes({{name}}[{{d}}]))", d, inputs=False)
        counts = _server_parts(f"max by ({SERVER_BY}) (count_over_time({{name}}[{{d}}]))", d, inputs=False)
        parts.update({"changes|" + k: v for k, v in changes.items()})
        parts.update({"count|" + k: v for k, v in counts.items()})
    if latency:
        parts.update(_latency_parts(d))
    return union(parts)


def agentless_latest(seen_window_s: float) -> str:
    """Latest GPU power, utilisation, temperature and memory (blank-value sentinels dropped),
    when each GPU and server was last scraped, which were there at all over the window, and
    each server's requests running and waiting and KV-cache fraction."""
    d = duration(seen_window_s)
    parts = {
        "power": f"max by ({DCGM_BY}) ({DCGM_POWER} < {FP64_BLANK_BELOW:g})",
        "util": f"max by ({DCGM_BY}) ({DCGM_UTIL} < {FP64_BLANK_BELOW:g})",
        "temperature": f"max by ({DCGM_BY}) ({DCGM_TEMP} < {FP64_BLANK_BELOW:g})",
        "gpu_ts": f"max by ({DCGM_BY}) (timestamp({DCGM_POWER}))",
        "gpu_seen": f"max by ({DCGM_BY}) (present_over_time({DCGM_POWER}[{d}]))",
    }
    # A MIG instance's row has its own memory (pods sharing it repeat it): one row per GPU, the
    # sum over its instances, those that have both used and free (a blank one left out of both)
    needed = (DCGM_MEMORY["fb_used"], DCGM_MEMORY["fb_free"])
    for key, name in DCGM_MEMORY.items():
        rows = [f"{n} < {FP64_BLANK_BELOW:g}" for n in (name, *(n for n in needed if n != name))]
        known = f" and on ({DCGM_GPU_BY}, GPU_I_ID) ".join(rows)
        parts[key] = f"sum by ({DCGM_GPU_BY}) (max by ({DCGM_GPU_BY}, GPU_I_ID) ({known}))"
    parts.update({"now|" + k: v for k, v in _server_parts(f"max by ({SERVER_BY}) (timestamp({{name}}))", d).items()})
    parts.update(_gauge_parts())
    return union(parts)


def agentless_graph(rate_s: float, instance_host: str | None) -> str:
    """Fleet (or one host's) output tok/s, W, and GPUs by model (priced in Python), for a range query."""
    d = duration(rate_s)
    sel = "" if instance_host is None else f'instance=~"{instance_regex(instance_host)}"'
    parts = {
        "power_w": f"sum(max by (instance, UUID) ({DCGM_POWER}{{{sel}}} < {FP64_BLANK_BELOW:g}))",
        "gpus": f"count by (modelName) (max by (instance, UUID, modelName) ({DCGM_POWER}{{{sel}}}))",
    }
    for _, out_name, _ in SERVER_COUNTERS:
        parts[f"tok|{out_name}"] = f"sum({_one_per_group(f'rate({out_name}{{{sel}}}[{d}])')})"
    return union(parts)


# --- text ---------------------------------------------------------------------------------------


def union(parts: Mapping[str, str]) -> str:
    """One query from several, each result tagged ``tt_q="<key>"``."""
    return " or ".join(f'label_replace({expr}, "{UNION_LABEL}", {quote(key)}, "", "")' for key, expr in parts.items())


def duration(seconds: float) -> str:
    """A PromQL duration: whole milliseconds (``1500ms``), at least 1 ms."""
    return f"{max(1, round(seconds * 1000))}ms"


def quote(text: str) -> str:
    """A PromQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def regex_quote(text: str) -> str:
    """``text`` matched literally inside a PromQL regex literal."""
    special = set(".^$*+?()[]{}|\\")
    escaped = "".join("\\" + c if c in special else c for c in text)
    return escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def instance_regex(host: str) -> str:
    """A regex literal's body matching every ``instance`` on ``host``: ``host``, ``host:port``, and
    for an IPv6 address ``[host]:port`` (the inverse of ``agentless.instance_host``)."""
    literal = regex_quote(host)
    if ":" in host:
        return f"{literal}|\\\\[{literal}\\\\](:[0-9]+)?"
    return f"{literal}(:[0-9]+)?"


def graph_step(span_s: float, max_points: int = 500, min_step_s: float = 1.0) -> float:
    """A step that keeps a graph of ``span_s`` under ``max_points`` points, in whole seconds."""
    step = max(min_step_s, span_s / (max_points - 1))
    return float(int(step) + (0 if step == int(step) else 1))
