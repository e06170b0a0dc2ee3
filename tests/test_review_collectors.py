"""Review of the endpoint collector's raw reads: a server that encodes the page although asked
for ``identity``, and a token that changes between reads."""

from __future__ import annotations

import gzip
import zlib

import pytest
from loopback import LoopbackServer, Reply
from test_collectors import make, vllm_page

from tokentop.collectors.fetch import PageClient


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "deflate"])
def test_a_page_encoded_although_identity_was_asked_reads_decoded(
    encoding: str, server: LoopbackServer, client: PageClient
) -> None:
    page = vllm_page(1234, 5678, running=3).encode()
    body = gzip.compress(page) if encoding.lower() == "gzip" else zlib.compress(page)
    server.route("/metrics", Reply(body=body, headers={"Content-Encoding": encoding}))
    sample = make(server.url, client).poll(1.0)
    assert server.requests[0].headers["accept-encoding"] == "identity"
    assert (sample.status, sample.prompt_tokens_total, sample.generation_tokens_total, sample.running) == (
        "up",
        1234,
        5678,
        3,
    )


def test_a_changing_token_is_sent_at_once(
    server: LoopbackServer, client: PageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/metrics", vllm_page(1, 2))
    collector = make(server.url, client, token_env="TT_REVIEW_TOKEN")
    for n in range(40):
        monkeypatch.setenv("TT_REVIEW_TOKEN", f"token-{n}")
        assert collector.poll(float(n)).status == "up"
        assert server.requests[-1].headers["authorization"] == f"Bearer token-{n}"
