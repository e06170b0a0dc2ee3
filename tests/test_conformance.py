"""Every real captured page, served on loopback, yields what EXPECTED.md says it should.

The pages are in ``tests/fixtures/metrics`` (SOURCES.md there says where each came from); the
``fixture_page`` and ``fixtures_dir`` fixtures of ``tests/conftest.py`` reach them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loopback import LoopbackServer, Reply

from tokentop.collectors import EndpointCollector
from tokentop.collectors.fetch import PageClient
from tokentop.config import EndpointConfig
from tokentop.model import EndpointSample

_ = None  # EXPECTED.md's "-": the page has no such figure, so it must be unknown, not zero

# file: (kind, kind_detail, prompt tokens, generation tokens, running, waiting), as in EXPECTED.md
EXPECTED = {
    "vllm/v0-0.5-opt125m-datadog.txt": ("vllm", "V0", 5, 7, 0, 0),
    "vllm/v1-qwen3-0.6b-via-dynamo.txt": ("vllm", "V1", 66, 600, 0, 0),
    "dynamo/dynamo-vllm-worker-qwen3-0.6b.txt": ("vllm", "V1, via Dynamo worker", 66, 600, 0, 0),
    "dynamo/dynamo-frontend-qwen3-0.6b.txt": ("dynamo", "frontend", 33, 300, 0, 0),
    "sglang/sglang-0.4-docs-llama8b.txt": ("sglang", _, 8128902, 7557572, 162, 2826),
    "sglang/sglang-qwen3-0.6b-via-dynamo.txt": ("sglang", _, 33, 300, 0, 0),
    "nim/nim-llm-llama3.1-8b-datadog.txt": ("nim", _, 109, 174, 1, 0),
    "ray/ray-2.32-vllm-llama70b-datadog.txt": ("ray", "vLLM", 58, 300, 0, 0),
    "llamacpp/metrics-busy-4slots-gemma3-270m-cpu.txt": ("llamacpp", _, 45, 64, 4, 0),
    "llamacpp/metrics-idle-after-load-gemma3-270m-cpu.txt": ("llamacpp", _, 45, 864, 0, 0),
    "trtllm/trtllm-prometheus-qwen3-0.6b-via-dynamo.txt": ("trtllm", _, _, _, _, _),
    "trtllm/triton-trtllm-backend-ifb-readme.txt": ("triton", "TensorRT-LLM backend", _, _, 0, 1),
    # EXPECTED.md lists 5 and 20 here, read from nv_trt_llm_v1_metrics{total_context_tokens,
    # total_generation_tokens}. Those are gauges of the current iteration, not cumulative
    # counters: as token totals they would fall back to 0 between iterations and read as
    # counter resets. tokentop takes Triton's token totals only from nv_llm_*_token_len sums.
    "trtllm/triton-trtllm-backend-v1-readme.txt": ("triton", "TensorRT-LLM backend", _, _, _, _),
    "triton/triton-base-metrics-trtllm-readme.txt": ("triton", _, _, _, _, 0),
    # "per model" in EXPECTED.md: the eight models' pending counts, summed
    "triton/triton-densenet-t4-datadog.txt": ("triton", _, _, _, _, 0),
}
# where each server serves its page; the others answer 404 there, so probing is exercised
PATHS = {"nim": "/v1/metrics", "trtllm": "/prometheus/metrics"}


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as loopback:
        yield loopback


@pytest.fixture(scope="module")
def client() -> Iterator[PageClient]:
    pages = PageClient()
    yield pages
    pages.close()


def read_once(server: LoopbackServer, client: PageClient, routes: dict[str, str | Reply]) -> EndpointSample:
    server.reset()
    for path, reply in routes.items():
        server.route(path, reply)
    collector = EndpointCollector(EndpointConfig(server.url), client, timeout_s=2.0, max_page_bytes=8 << 20)
    return collector.poll(t_mono=1.0)


def test_every_page_is_in_the_table(fixtures_dir: Path) -> None:
    on_disk = {p.relative_to(fixtures_dir).as_posix() for p in fixtures_dir.glob("*/*.txt")}
    assert on_disk == set(EXPECTED), "a page was added or removed: extend EXPECTED here"


@pytest.mark.parametrize("page", sorted(EXPECTED))
def test_page_yields_the_expected_figures(
    page: str, server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    kind, detail, prompt, generation, running, waiting = EXPECTED[page]
    sample = read_once(server, client, {PATHS.get(kind, "/metrics"): fixture_page(page)})
    assert sample.status == "up", sample.error
    assert (sample.kind, sample.kind_detail) == (kind, detail)
    assert sample.prompt_tokens_total == prompt
    assert sample.generation_tokens_total == generation
    assert sample.running == running
    assert sample.waiting == waiting


def test_triton_trtllm_kv_fraction(
    server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    page = fixture_page("trtllm/triton-trtllm-backend-ifb-readme.txt")
    assert read_once(server, client, {"/metrics": page}).kv_cache_fraction == 0.4875


def test_vllm_histograms_and_request_count(
    server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    sample = read_once(server, client, {"/metrics": fixture_page("vllm/v1-qwen3-0.6b-via-dynamo.txt")})
    assert sample.model == "Qwen/Qwen3-0.6B"
    assert sample.requests_finished_total == 2
    assert sample.ttft is not None and sample.itl is not None
    assert (sample.ttft.count, sample.itl.count) == (2, 598)
    assert sample.ttft.sum == pytest.approx(0.4143967628479004)
    assert sample.ttft.buckets[-1] == (float("inf"), 2)
    uppers = [upper for upper, _ in sample.ttft.buckets]
    assert uppers == sorted(uppers) and uppers[0] == 0.001


def test_llamacpp_busy_page_with_its_slots(
    server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    sample = read_once(
        server,
        client,
        {
            "/metrics": fixture_page("llamacpp/metrics-busy-4slots-gemma3-270m-cpu.txt"),
            "/slots": fixture_page("llamacpp/slots-busy-4slots-gemma3-270m-cpu.json"),
        },
    )
    # four slots, each 79 tokens into its answer; their 39 prompt tokens are already in the
    # counter (45 here, still 45 on the idle page once they finished), so none are added
    assert (sample.generation_tokens_total, sample.generation_tokens_in_flight) == (64, 4 * 79)
    assert (sample.prompt_tokens_total, sample.prompt_tokens_in_flight) == (45, None)


def test_llamacpp_readme_slots_without_metrics(
    server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    sample = read_once(
        server,
        client,
        {
            "/metrics": Reply(status=501),
            "/slots": fixture_page("llamacpp/slots-readme-2slots-gptoss.json"),
        },
    )
    assert (sample.status, sample.kind, sample.kind_detail) == ("up", "llamacpp", "metrics off: /slots")
    assert sample.prompt_tokens_total is None and sample.generation_tokens_total is None
    assert (sample.running, sample.generation_tokens_in_flight) == (2, 136)  # the old dict-shaped next_token


def test_ollama_ps(server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]) -> None:
    text = fixture_page("ollama/api-ps-docs-mistral.json")
    size_vram = json.loads(text)["models"][0]["size_vram"]
    sample = read_once(server, client, {"/api/ps": Reply(body=text, content_type="application/json")})
    assert (sample.status, sample.kind, sample.model) == ("up", "ollama", "mistral:latest")
    assert sample.kind_detail == f"1 model loaded, {size_vram / 1024**3:.1f} GiB in VRAM"
    assert "no token counters" in (sample.note or "")
    assert sample.generation_tokens_total is None
