"""Inference servers' stats endpoints -> ``EndpointSample`` (see ``shared/docs/SERVERS.md``)."""

from tokentop.collectors.endpoint import EndpointCollector, poll_all
from tokentop.collectors.exposition import PageSamples, read_samples

__all__ = ["EndpointCollector", "PageSamples", "poll_all", "read_samples"]
