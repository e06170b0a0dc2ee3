"""Asking a server for only the samples tokentop reads: ``/metrics?name[]=a&name[]=b``.

vLLM's and LMDeploy's ``/metrics`` is ``prometheus_client``'s app, which answers such a query
with only the samples named (``CollectorRegistry.restricted_registry``). A busy vLLM page of
128 KiB holds about 6 KiB of what a tick reads, so both sides gain: the server renders less on
the process that serves its API, and tokentop reads less.

The filter is used only once it is known to give the same figures. A registry in
multiprocess mode (vLLM with ``--api-server-count`` > 1) answers it with an empty page, and a
server behind a proxy may drop the query or refuse it. So the read after the one that found
the server asks for the filtered page with every name (the latency histograms too, as the
whole page was read), and the filter is kept when that page gives every figure the whole page
gave, from under 90 % of its bytes (``EndpointCollector._try_name_filter``); otherwise the
whole page is read in the same tick, and from then on: a URL whose filter was not usable is
not tried again. A filtered read that gives fewer figures than the read before it is dropped
the same way, for the whole page, in the same tick.
"""

from __future__ import annotations

from itertools import compress
from operator import attrgetter, is_not
from urllib.parse import urlencode, urlsplit

from tokentop.collectors.kinds import PROCESS_NAMES, Reading
from tokentop.model import EndpointSample

_FIGURES = (
    "model",
    "prompt_tokens_total",
    "generation_tokens_total",
    "running",
    "waiting",
    "kv_cache_fraction",
    "requests_finished_total",
    "process_start_time_s",
    "ttft",
    "itl",
)
_FIGURES_OF = attrgetter(*_FIGURES)
_NONES = (None,) * len(_FIGURES)


def filtered_urls(url: str, scalar_names: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, str]:
    """``url`` asking for the names of a scalar read, and for those of a full read."""
    return _asking(url, scalar_names + PROCESS_NAMES), _asking(url, names + PROCESS_NAMES)


def keeps_figures(reading: Reading, last: EndpointSample) -> bool:
    """``reading`` has every figure ``last`` had (run on every read of a filtered page: in C)."""
    had = map(is_not, _FIGURES_OF(last), _NONES)
    return all(map(is_not, compress(_FIGURES_OF(reading), had), _NONES))


def _asking(url: str, names: tuple[str, ...]) -> str:
    """``url`` asking for ``names`` only; a query already in ``url`` is kept."""
    query = urlencode([("name[]", name) for name in names])
    parts = urlsplit(url)
    return parts._replace(query=f"{parts.query}&{query}" if parts.query else query).geturl()
