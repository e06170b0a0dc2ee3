"""Inference servers' stats endpoints -> ``EndpointSample`` (see ``shared/docs/SERVERS.md``)."""

from tokentop.collectors.endpoint import EndpointCollector
from tokentop.collectors.exposition import PageSamples, read_samples
from tokentop.collectors.poll import poll_all

__all__ = ["EndpointCollector", "PageSamples", "poll_all", "read_samples"]
