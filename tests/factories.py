"""Snapshots built by hand for tests and benchmarks: ``build_snapshot``, the one builder.

The benchmarks import it with ``sys.path.insert(0, <repo>/tests)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tokentop.model import (
    EndpointFigures,
    EndpointSample,
    GpuFigures,
    GpuSample,
    HostFigures,
    Snapshot,
    Totals,
    Window,
)

NO_WINDOW = Window(span_s=0, tokens_in=0, tokens_out=0, energy_j=0, cost_usd=0, busy_s=0, busy_cost_usd=0)
MODEL = "meta-llama/Llama-3.3-70B-Instruct"

_GPU_SAMPLE_FIELDS = frozenset(f.name for f in dataclasses.fields(GpuSample))
_ENDPOINT_SAMPLE_FIELDS = frozenset(f.name for f in dataclasses.fields(EndpointSample))


def gpu_uuid(i: int) -> str:
    """The default UUID of GPU ``i``."""
    return f"GPU-{i:02d}3b1f0c-5d2e-4a8b-9c1d-0e2f3a4b5c6d"


def _split(fields: Mapping[str, Any], sample_fields: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides by name: those of the sample, then those of the figures."""
    sample = {k: v for k, v in fields.items() if k in sample_fields}
    return sample, {k: v for k, v in fields.items() if k not in sample_fields}


def build_snapshot(
    t: float,
    gpu_totals: Sequence[Totals],
    endpoint_tokens: Sequence[tuple[float, float]] = (),
    *,
    seq: int = 1,
    dt_s: float | None = 1.0,
    gpus: Sequence[Mapping[str, Any]] = (),
    endpoints: Sequence[Mapping[str, Any]] = (),
) -> Snapshot:
    """A Snapshot at wall time ``t`` of ``len(gpu_totals)`` GPUs and ``len(endpoint_tokens)``
    endpoints.

    GPU ``i`` has the cumulative ``gpu_totals[i]``; endpoint ``j`` delivered the (in, out) tokens
    ``endpoint_tokens[j]`` since the session started. The rest has plain defaults: GPU ``i`` is an
    H200 with UUID ``gpu_uuid(i)`` serving every endpoint, endpoint ``j`` is ``srv<j>``, an up
    vLLM server on every GPU. ``gpus[i]`` and ``endpoints[j]`` (when given) replace any field of
    that GPU's or endpoint's sample or figures, by name (``power_w``, ``engines``, ``pid``...).
    """
    gpu_fields = _padded(gpus, len(gpu_totals))
    endpoint_fields = _padded(endpoints, len(endpoint_tokens))
    names = tuple(str(fields.get("name", f"srv{j}")) for j, fields in enumerate(endpoint_fields))
    gpu_figures = tuple(_gpu(i, totals, gpu_fields[i], names) for i, totals in enumerate(gpu_totals))
    uuids = tuple(g.sample.uuid for g in gpu_figures)
    endpoint_figures = tuple(
        _endpoint(j, t, tokens, endpoint_fields[j], uuids) for j, tokens in enumerate(endpoint_tokens)
    )
    host = HostFigures(
        gpu_count=len(gpu_figures),
        power_w=None,
        usd_per_hour_now=None,
        totals=Totals(),
        rate_window=NO_WINDOW,
        cost_window=NO_WINDOW,
    )
    return Snapshot(
        seq=seq,
        t_wall=t,
        t_mono=t,
        dt_s=dt_s,
        rate_window_s=10,
        cost_window_s=60,
        gpu_available=True,
        gpu_reason=None,
        gpus=gpu_figures,
        endpoints=endpoint_figures,
        host=host,
    )


def _padded(fields: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    return [*fields[:n], *([{}] * (n - len(fields)))]


def _gpu(i: int, totals: Totals, fields: Mapping[str, Any], engines: tuple[str, ...]) -> GpuFigures:
    sample, figures = _split(fields, _GPU_SAMPLE_FIELDS)
    sample = {
        "uuid": gpu_uuid(i),
        "index": i,
        "name": "NVIDIA H200",
        "memory_total_bytes": 150_754_820_096,
        "power_source": "average_1s",
        "power_limit_w": 700.0,
        **sample,
    }
    figures = {
        "engines": engines,
        "price": None,
        "energy_method": "counter",
        "usd_per_hour_now": None,
        "rate_window": NO_WINDOW,
        "cost_window": NO_WINDOW,
        **figures,
    }
    return GpuFigures(sample=GpuSample(**sample), totals=totals, **figures)


def _endpoint(
    j: int, t: float, tokens: tuple[float, float], fields: Mapping[str, Any], uuids: tuple[str, ...]
) -> EndpointFigures:
    sample, figures = _split(fields, _ENDPOINT_SAMPLE_FIELDS)
    sample = {
        "name": f"srv{j}",
        "url": f"http://127.0.0.1:{8000 + j}/metrics?x=1",
        "t_mono": t,
        "status": "up",
        "kind": "vllm",
        "model": MODEL,
        **sample,
    }
    figures = {
        "gpus": uuids,
        "mapping": "process" if uuids else None,
        "pid": None,
        "tok_s_in": None,
        "tok_s_out": None,
        "ttft_p50_s": None,
        "ttft_p95_s": None,
        "itl_p50_s": None,
        **figures,
    }
    tokens_in, tokens_out = tokens
    return EndpointFigures(
        sample=EndpointSample(**sample), tokens_in_total=tokens_in, tokens_out_total=tokens_out, **figures
    )
