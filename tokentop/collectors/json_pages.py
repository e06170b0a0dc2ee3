"""Servers, or parts of servers, that answer JSON instead of a Prometheus page.

- llama.cpp ``/slots``: the progress of running requests. ``/metrics`` adds a request's
  generated tokens to ``tokens_predicted_total`` only when it finishes, so the busy slots'
  ``n_decoded`` are exactly the generated tokens the counter lacks. The prompt counter has no
  such simple rule: on a real llama-server (the build of the captured pages) it jumped at a
  slot's first token by the prompt tokens of every slot, then followed other slots' prompt
  processing batch by batch, but only while some slot was generating. Adding the slots'
  ``n_prompt_tokens_processed`` to it counted the same tokens twice, so prompt progress from
  ``/slots`` is used only when ``/metrics`` is off.
- llama.cpp ``/props``: the model name.
- Ollama ``/api/ps``: loaded models and how much of them is in VRAM; no token counters.
- trtllm-serve ``/metrics``: a list of iteration stats, drained on every read.

JSON numbers are checked before use (``plausible.py``): a 400-digit integer is a Python int
that ``float()`` cannot take, and NaN or 1e400 parse as floats.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from tokentop.collectors.kinds import Reading, describe_models
from tokentop.collectors.plausible import Implausible, plausible, shown
from tokentop.text import safe_text

GIB = 1024**3
OLLAMA_NOTE = "Ollama publishes no token counters; tokens/s needs a proxy in front of it"


def _number(value: Any) -> float | None:
    """A count or size from JSON; None for anything else, or for a number no server can mean."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if plausible(value) else None


def _tokens(slot: dict[str, Any], container: dict[str, Any], key: str) -> float:
    """A slot's token count: 0 when absent; ``Implausible`` when it is a number no server means."""
    value = container.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    if not plausible(value):
        raise Implausible(f"/slots: slot {shown(slot.get('id'))} {key} = {shown(value)}: not a token count")
    return float(value)


# --- llama.cpp -----------------------------------------------------------------


@dataclass(frozen=True)
class SlotsProgress:
    """Sums over the slots that are processing a request."""

    slots: int
    busy: int
    prompt_tokens: float  # n_prompt_tokens_processed
    generated_tokens: float  # next_token[0].n_decoded


def _is_llamacpp_slots(data: Any) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(slot, dict) and "n_ctx" in slot and "id" in slot for slot in data)
    )


def read_llamacpp_slots(data: Any) -> SlotsProgress | None:
    """The busy slots' progress; None when ``data`` is not a /slots answer."""
    if not _is_llamacpp_slots(data):
        return None
    busy, prompt, generated = 0, 0.0, 0.0
    for slot in data:
        # newer builds: is_processing; older ones: state (0 = idle)
        processing = slot.get("is_processing") if "is_processing" in slot else slot.get("state", 0) != 0
        if not processing:
            continue
        busy += 1
        next_token = slot.get("next_token")
        if isinstance(next_token, list):  # newer builds: one entry per sequence
            next_token = next_token[0] if next_token else None
        if isinstance(next_token, dict):
            generated += _tokens(slot, next_token, "n_decoded")
        prompt += _tokens(slot, slot, "n_prompt_tokens_processed")
    return SlotsProgress(len(data), busy, prompt, generated)


def slots_only_reading(progress: SlotsProgress) -> Reading:
    """llama.cpp without ``--metrics``: no counters, only the progress of running requests."""
    return Reading(
        running=float(progress.busy),
        prompt_tokens_in_flight=progress.prompt_tokens,
        generation_tokens_in_flight=progress.generated_tokens,
        note="llama.cpp runs without --metrics: token totals are unknown, live progress is from /slots",
    )


def llamacpp_model(props: Any) -> str | None:
    """``model_alias`` when one was given, else the file name of ``model_path`` (``/props``)."""
    if not isinstance(props, dict):
        return None
    alias, path = props.get("model_alias"), props.get("model_path")
    path = path if isinstance(path, str) else ""
    if isinstance(alias, str) and alias and alias != path:  # the alias defaults to the path
        return safe_text(alias)
    return safe_text(posixpath.basename(path.replace("\\", "/"))) or None


# --- Ollama ----------------------------------------------------------------------


def is_ollama_ps(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("models"), list)


def read_ollama_ps(data: Any) -> Reading:
    """Loaded models, and a kind detail such as ``1 model loaded, 4.8 GiB in VRAM``."""
    models = [m for m in data["models"] if isinstance(m, dict)]
    names = [str(m.get("name") or m.get("model") or "?") for m in models]
    in_vram = sum(_number(m.get("size_vram")) or 0.0 for m in models)
    size = sum(_number(m.get("size")) or 0.0 for m in models)
    if not models:
        detail = "no model loaded"
    else:
        loaded = f"{len(models)} model{'s' if len(models) > 1 else ''} loaded"
        share = f"{in_vram / GIB:.1f} GiB" if in_vram >= size else f"{in_vram / GIB:.1f} of {size / GIB:.1f} GiB"
        detail = f"{loaded}, {share} in VRAM"
    return Reading(model=describe_models(names), note=OLLAMA_NOTE, kind_detail=detail)


# --- trtllm-serve iteration stats ------------------------------------------------------------


def is_trtllm_iterations(data: Any) -> bool:
    return isinstance(data, list) and any(isinstance(i, dict) and "iterLatencyMS" in i for i in data)


def read_trtllm_iterations(data: Any) -> Reading:
    """The latest iteration's queue and KV figures; this JSON has no token counters."""
    stats = [i for i in data if isinstance(i, dict)] if isinstance(data, list) else []
    if not stats:
        return Reading(note="no engine iterations since the last read (or enable_iter_perf_stats is off)")
    last = stats[-1]
    kv_stats = last.get("kvCacheStats")
    kv = kv_stats if isinstance(kv_stats, dict) else {}
    used, total = _number(kv.get("usedNumBlocks")), _number(kv.get("maxNumBlocks"))
    return Reading(
        running=_number(last.get("numActiveRequests")),
        waiting=_number(last.get("numQueuedRequests")),
        kv_cache_fraction=used / total if used is not None and total and used <= total else None,
        note="trtllm-serve JSON stats have no token counters; /prometheus/metrics has them",
    )
