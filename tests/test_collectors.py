"""EndpointCollector and poll_all against real HTTP servers on loopback, failing in every way."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from loopback import LoopbackServer, Reply, Seen

from tokentop.collectors import EndpointCollector, poll_all
from tokentop.collectors.fetch import PageClient
from tokentop.config import EndpointConfig


def vllm_page(prompt: float | str, generation: float | str, running: float | str = 0, engines: int = 1) -> str:
    lines = ["# HELP vllm:prompt_tokens_total Prefill tokens.", "# TYPE vllm:prompt_tokens_total counter"]
    for figure, value in (
        ("prompt_tokens_total", prompt),
        ("generation_tokens_total", generation),
        ("num_requests_running", running),
        ("num_requests_waiting", 0),
        ("kv_cache_usage_perc", 0.25),
    ):
        for engine in range(engines):
            lines.append(f'vllm:{figure}{{engine="{engine}",model_name="m"}} {value}')
    return "\n".join(lines) + "\n"


def make(
    url: str, client: PageClient, *, timeout_s: float = 1.0, max_page_bytes: int = 8 << 20, **endpoint: str
) -> EndpointCollector:
    config = EndpointConfig(url, **endpoint)
    return EndpointCollector(config, client, timeout_s=timeout_s, max_page_bytes=max_page_bytes)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- figures ------------------------------------------------------------------------------


def test_data_parallel_engines_are_summed_kv_is_the_fullest(server: LoopbackServer, client: PageClient) -> None:
    fullest = 'vllm:kv_cache_usage_perc{engine="2",model_name="m"} '
    page = vllm_page(10, 20, running=1, engines=3).replace(fullest + "0.25", fullest + "0.75")
    server.route("/metrics", page)
    sample = make(server.url, client).poll(1.0)
    assert (sample.prompt_tokens_total, sample.generation_tokens_total, sample.running) == (30, 60, 3)
    assert sample.kv_cache_fraction == 0.75


def test_sglang_tensor_parallel_ranks_are_not_summed(server: LoopbackServer, client: PageClient) -> None:
    page = (
        "".join(
            f'sglang:num_running_reqs{{dp_rank="{dp}",model_name="m",tp_rank="{tp}"}} 5\n'
            for dp in (0, 1)
            for tp in (0, 1, 2, 3)
        )
        + 'sglang:generation_tokens_total{model_name="m"} 9\n'
    )
    server.route("/metrics", page)
    sample = make(server.url, client).poll(1.0)
    assert (sample.kind, sample.running, sample.generation_tokens_total) == ("sglang", 10, 9)  # 2 DP ranks x 5


def test_sglang_dp_attention_ranks_are_summed_and_their_repeats_are_not(
    server: LoopbackServer, client: PageClient
) -> None:
    """``--tp 4 --dp 2 --enable-dp-attention --enable-metrics-for-all-schedulers``: DP rank 1's
    schedulers are the global tensor ranks 2 and 3 (attention TP 2), each with its own pid, and
    repeat each other."""
    schedulers = [("0", "0", 3, 0.25), ("0", "1", 3, 0.25), ("1", "2", 4, 0.5), ("1", "3", 4, 0.5)]
    page = 'sglang:generation_tokens_total{model_name="m"} 9\n'
    for dp, tp, running, kv in schedulers:
        labels = f'dp_rank="{dp}",model_name="m",pid="{100 + int(tp)}",pp_rank="0",tp_rank="{tp}"'
        page += f"sglang:num_running_reqs{{{labels}}} {running}\nsglang:token_usage{{{labels}}} {kv}\n"
    server.route("/metrics", page)
    sample = make(server.url, client).poll(1.0)
    assert (sample.kind, sample.running, sample.kv_cache_fraction) == ("sglang", 7, 0.5)


def test_nan_and_inf_gauges_become_unknown_a_nan_counter_rejects_the_read(
    server: LoopbackServer, client: PageClient
) -> None:
    server.route("/metrics", vllm_page(5, 7, running="+Inf").replace("0.25", "-nan(ind)"), vllm_page("NaN", 7))
    gauges = make(server.url, client).poll(1.0)
    assert gauges.status == "up" and (gauges.prompt_tokens_total, gauges.generation_tokens_total) == (5, 7)
    assert gauges.running is None and gauges.kv_cache_fraction is None
    assert "num_requests_running" in (gauges.note or "")
    counter = make(server.url, client).poll(1.0)  # unknown tokens are not "no counter"
    assert counter.status == "error" and "vllm:prompt_tokens_total" in (counter.error or "")


def test_duplicate_series_keep_the_last_and_say_so(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", vllm_page(5, 7) + 'vllm:prompt_tokens_total{engine="0",model_name="m"} 6\n')
    sample = make(server.url, client).poll(1.0)
    assert sample.prompt_tokens_total == 6
    assert "repeats" in (sample.note or "")


def test_a_counter_going_backwards_is_reported_as_read(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", vllm_page(100, 500), vllm_page(3, 4))  # a restart: derive handles resets
    collector = make(server.url, client)
    assert collector.poll(1.0).generation_tokens_total == 500
    assert collector.poll(2.0).generation_tokens_total == 4


KIND_PAGES = {
    "tgi": (
        "# TYPE tgi_request_input_length histogram\n"
        'tgi_request_input_length_bucket{le="10"} 1\ntgi_request_input_length_bucket{le="+Inf"} 2\n'
        "tgi_request_input_length_sum 17\ntgi_request_input_length_count 2\n"
        "tgi_request_generated_tokens_sum 40\ntgi_request_generated_tokens_count 2\n"
        "# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 3\ntgi_queue_size 1\n"
        "# TYPE tgi_request_success counter\ntgi_request_success 2\n",
        ("tgi", None, 17, 40, 3, 1, None),
    ),
    "lmdeploy": (
        'lmdeploy:prompt_tokens_total{engine="0",model_name="l"} 4\n'
        'lmdeploy:generation_tokens_total{engine="0",model_name="l"} 5\n'
        'lmdeploy:num_requests_running{engine="0",model_name="l"} 1\n'
        'lmdeploy:num_requests_waiting{engine="0",model_name="l"} 2\n'
        'lmdeploy:gpu_cache_usage_perc{engine="0",model_name="l"} 0.5\n',
        ("lmdeploy", None, 4, 5, 1, 2, 0.5),
    ),
    "ray-sanitized": (
        'ray_vllm_prompt_tokens_total{SessionName="s",WorkerId="a",model_name="r"} 3\n'
        'ray_vllm_prompt_tokens_total{SessionName="s",WorkerId="b",model_name="r"} 4\n'
        'ray_vllm_generation_tokens_total{SessionName="s",WorkerId="a",model_name="r"} 9\n'
        'ray_vllm_kv_cache_usage_perc{SessionName="s",WorkerId="a",model_name="r"} 0.1\n',
        ("ray", "vLLM", 7, 9, None, None, 0.1),
    ),
    "vllm-0.10-both-kv-names": (
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.9\n'
        'vllm:generation_tokens_total{engine="0",model_name="m"} 1\n',
        ("vllm", "V1", None, 1, None, None, 0.2),
    ),
    "triton-vllm-backend": (
        'nv_inference_request_success{model="vm",version="1"} 1\n'
        'vllm:prompt_tokens_total{model="vm",version="1"} 10\nvllm:generation_tokens_total{model="vm",version="1"} 20\n'
        'nv_inference_pending_request_count{model="vm",version="1"} 2\n',
        ("triton", "vLLM backend", 10, 20, None, 2, None),
    ),
    "trtllm-early-unprefixed": (
        'request_success_total{finished_reason="stop",model_name="t"} 2\n'
        'time_to_first_token_seconds_bucket{le="+Inf",model_name="t"} 2\n'
        'time_to_first_token_seconds_sum{model_name="t"} 0.5\ntime_to_first_token_seconds_count{model_name="t"} 2\n',
        ("trtllm", "early trtllm-serve names", None, None, None, None, None),
    ),
}


@pytest.mark.parametrize("name", sorted(KIND_PAGES))
def test_each_kinds_names(name: str, server: LoopbackServer, client: PageClient) -> None:
    page, expected = KIND_PAGES[name]
    server.route("/metrics", page)
    sample = make(server.url, client).poll(1.0)
    assert sample.status == "up", sample.error
    figures = (sample.prompt_tokens_total, sample.generation_tokens_total, sample.running, sample.waiting)
    assert (sample.kind, sample.kind_detail, *figures, sample.kv_cache_fraction) == expected


def test_tgi_model_comes_from_info(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", KIND_PAGES["tgi"][0])
    server.route("/info", Reply(body='{"model_id": "bigscience/bloom-560m"}', content_type="application/json"))
    assert make(server.url, client).poll(1.0).model == "bigscience/bloom-560m"


def test_triton_first_response_histogram_is_converted_from_ms(server: LoopbackServer, client: PageClient) -> None:
    labels = 'model="m",version="1"'
    server.route(
        "/metrics",
        f'nv_inference_first_response_histogram_ms_bucket{{{labels},le="100"}} 1\n'
        f'nv_inference_first_response_histogram_ms_bucket{{{labels},le="+Inf"}} 2\n'
        f"nv_inference_first_response_histogram_ms_sum{{{labels}}} 250\n"
        f"nv_inference_first_response_histogram_ms_count{{{labels}}} 2\n"
        f'nv_llm_output_token_len_sum{{{labels},response_metric_type="total_output_tokens"}} 90\n',
    )
    sample = make(server.url, client).poll(1.0)
    assert (sample.kind, sample.generation_tokens_total) == ("triton", 90)
    assert sample.ttft is not None
    assert (sample.ttft.buckets, sample.ttft.sum, sample.ttft.count) == (((0.1, 1), (math.inf, 2)), 0.25, 2)


# --- failures -------------------------------------------------------------------------------


def test_connection_refused(client: PageClient) -> None:
    sample = make(f"http://127.0.0.1:{closed_port()}", client).poll(1.0)
    assert (sample.status, sample.error) == ("error", "connection refused")
    assert sample.prompt_tokens_total is None


def test_a_slow_server_times_out_at_the_collectors_timeout(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", Reply(body=vllm_page(1, 1), delay_s=5))
    started = time.monotonic()
    sample = make(server.url, client, timeout_s=0.3).poll(1.0)
    assert time.monotonic() - started < 1.0
    assert (sample.status, sample.error) == ("error", "timed out after 0.3 s")


def test_a_dripping_server_cannot_hold_the_tick(server: LoopbackServer, client: PageClient) -> None:
    def drip() -> Iterator[bytes]:
        for _ in range(100):
            yield b"# still here\n"
            time.sleep(0.1)

    server.route("/metrics", Reply(stream=drip))
    started = time.monotonic()
    sample = make(server.url, client, timeout_s=0.3).poll(1.0)
    assert time.monotonic() - started < 1.0
    assert sample.error == "timed out after 0.3 s"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(status=500, body="boom"), "HTTP 500"),
        (
            Reply(body="<!doctype html><html><body>login</body></html>", content_type="text/html"),
            "not a metrics page (HTML)",
        ),
        (Reply(body=bytes(range(256)) * 8, content_type="application/octet-stream"), "binary data"),
        (Reply(body=vllm_page(1, 1), declared_length=10_000), "connection closed before the answer was complete"),
        (Reply(drop=True), "connection closed before the answer was complete"),
        (Reply(body="just some words\nnothing = metric here\n"), "no known metrics on page"),
        (Reply(body=""), "empty page"),
    ],
    ids=["500", "html", "binary", "cut-short", "dropped", "unknown-text", "empty"],
)
def test_unusable_answers_give_a_plain_reason(
    reply: Reply, reason: str, server: LoopbackServer, client: PageClient
) -> None:
    server.route("/metrics", reply)
    sample = make(server.url + "/metrics", client).poll(1.0)
    assert (sample.status, sample.error) == ("error", reason)


def test_a_page_cut_at_the_end_gives_only_its_complete_lines(server: LoopbackServer, client: PageClient) -> None:
    page = vllm_page(12, 345)
    cut = page[: page.index("345") + 2]  # "...generation_tokens_total{...} 34" and the connection closes
    server.route("/metrics", Reply(stream=lambda: [cut.encode()]))
    sample = make(server.url, client).poll(1.0)
    assert (sample.status, sample.prompt_tokens_total, sample.generation_tokens_total) == ("up", 12, None)


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "streamed"])
def test_a_50_mb_page_is_not_read(announced: bool, server: LoopbackServer, client: PageClient) -> None:
    block = ('vllm:prompt_tokens_total{engine="0",model_name="' + "x" * 200 + '"} 1\n').encode() * 256
    count = 50 * 1024 * 1024 // len(block)
    headers = {"Content-Length": str(len(block) * count)} if announced else {}
    server.route("/metrics", Reply(stream=lambda: (block for _ in range(count)), headers=headers))
    collector = make(server.url, client, max_page_bytes=1 << 20, timeout_s=5.0)
    tracemalloc.start()
    try:
        started = time.monotonic()
        sample = collector.poll(1.0)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (sample.status, sample.error) == ("error", "page over 1 MiB, not read")
    assert peak < 4 << 20  # a few times the cap, never the page
    assert elapsed < 2.0


def test_stale_keeps_the_last_figures_then_turns_to_error(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", vllm_page(10, 20), Reply(status=500))
    collector = make(server.url, client)
    assert collector.poll(100.0).status == "up"
    stale = collector.poll(101.0)
    assert (stale.status, stale.error, stale.t_mono) == ("stale", "HTTP 500", 101.0)
    assert (stale.prompt_tokens_total, stale.generation_tokens_total, stale.kind) == (10, 20, "vllm")
    gone = collector.poll(110.0)
    assert (gone.status, gone.error, gone.generation_tokens_total) == ("error", "HTTP 500", None)


def test_a_server_that_comes_back_is_detected_afresh(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", vllm_page(10, 20), Reply(status=503), 'sglang:generation_tokens_total{model_name="s"} 3\n')
    collector = make(server.url, client)
    assert collector.poll(1.0).kind == "vllm"
    assert collector.poll(2.0).status == "stale"
    back = collector.poll(3.0)
    assert (back.status, back.kind, back.generation_tokens_total, back.model) == ("up", "sglang", 3, "s")


def test_bearer_token_is_sent_and_never_shown(
    server: LoopbackServer, client: PageClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = "sk-very-secret-4242"
    monkeypatch.setenv("TT_TEST_TOKEN", token)

    def guarded(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {token}":
            return Reply(status=401, body=f"expected {token}")
        return Reply(body=vllm_page(1, 2))

    server.route("/metrics", guarded)
    caplog.set_level(logging.DEBUG)
    collector = make(server.url, client, token_env="TT_TEST_TOKEN")
    good = collector.poll(1.0)
    assert good.status == "up"
    monkeypatch.setenv("TT_TEST_TOKEN", "sk-wrong-token")
    refused = collector.poll(100.0)
    assert refused.error == "HTTP 401: the bearer token was refused"
    for text in (repr(good), repr(refused), repr(collector), caplog.text):
        assert token not in text and "sk-wrong-token" not in text
    assert server.requests[0].headers["authorization"] == f"Bearer {token}"


def test_a_given_kind_skips_detection(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", vllm_page(1, 2))
    assert make(server.url, client, kind="vllm").poll(1.0).kind == "vllm"
    assert make(server.url, client, kind="sglang").poll(1.0).error == "no known metrics on page"


# --- probing --------------------------------------------------------------------------------


def test_a_full_url_is_used_as_given(server: LoopbackServer, client: PageClient) -> None:
    server.route("/custom/metrics", vllm_page(1, 2))
    sample = make(server.url + "/custom/metrics", client).poll(1.0)
    assert sample.status == "up"
    assert [seen.path for seen in server.requests] == ["/custom/metrics"]


def test_a_base_url_is_probed_once_and_remembered(server: LoopbackServer, client: PageClient) -> None:
    server.route("/v1/metrics", 'num_requests_running{model_name="n"} 2\ngpu_cache_usage_perc{model_name="n"} 0.5\n')
    collector = make(server.url, client)
    assert collector.poll(1.0).kind == "nim"
    assert [seen.path for seen in server.requests] == ["/metrics", "/v1/metrics"]
    collector.poll(2.0)
    assert [seen.path for seen in server.requests][2:] == ["/v1/metrics"]


def test_trtllm_serve_prefers_prometheus_over_its_json(server: LoopbackServer, client: PageClient) -> None:
    iterations = [
        {
            "iter": 1,
            "iterLatencyMS": 9,
            "numActiveRequests": 3,
            "numQueuedRequests": 1,
            "kvCacheStats": {"usedNumBlocks": 25, "maxNumBlocks": 100},
        }
    ]
    server.route("/metrics", Reply(body=json.dumps(iterations), content_type="application/json"))
    json_only = make(server.url, client).poll(1.0)
    assert (json_only.kind, json_only.kind_detail) == ("trtllm", "JSON iteration stats")
    assert (json_only.running, json_only.waiting, json_only.kv_cache_fraction) == (3, 1, 0.25)
    assert json_only.generation_tokens_total is None
    server.route("/prometheus/metrics", 'trtllm_generation_tokens_total{model_name="t"} 42\n')
    both = make(server.url, client).poll(1.0)
    assert (both.kind, both.generation_tokens_total) == ("trtllm", 42)


# --- llama.cpp ------------------------------------------------------------------------------


def test_llamacpp_counters_plus_slots_progress(
    server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    busy_slots = fixture_page("llamacpp/slots-busy-4slots-gemma3-270m-cpu.json")
    idle_slots = json.dumps([{**slot, "is_processing": False} for slot in json.loads(busy_slots)])
    server.route(
        "/metrics",
        fixture_page("llamacpp/metrics-busy-4slots-gemma3-270m-cpu.txt"),
        fixture_page("llamacpp/metrics-idle-after-load-gemma3-270m-cpu.txt"),
    )
    server.route("/slots", busy_slots, idle_slots)
    props = {"model_alias": "", "model_path": "/models/gemma-3-270m-Q4_K_M.gguf", "build_info": "b1"}
    server.route("/props", json.dumps(props))
    collector = make(server.url, client)
    busy = collector.poll(1.0)
    assert (busy.kind, busy.model, busy.running) == ("llamacpp", "gemma-3-270m-Q4_K_M.gguf", 4)
    assert (busy.generation_tokens_total, busy.generation_tokens_in_flight) == (64, 316)
    idle = collector.poll(2.0)
    assert (idle.generation_tokens_total, idle.generation_tokens_in_flight, idle.running) == (864, 0, 0)
    # every tick reads /metrics before /slots; /props only once
    paths = [seen.path for seen in server.requests]
    assert paths == ["/metrics", "/props", "/slots", "/metrics", "/slots"]


def test_llamacpp_prompt_progress_only_counts_when_metrics_are_off(server: LoopbackServer, client: PageClient) -> None:
    slots = [
        {
            "id": i,
            "n_ctx": 512,
            "is_processing": busy,
            "n_prompt_tokens_processed": read,
            "next_token": [{"n_decoded": n}],
        }
        for i, (busy, read, n) in enumerate([(True, 300, 0), (True, 80, 12), (False, 50, 9)])
    ]
    server.route("/metrics", "llamacpp:prompt_tokens_total 380\nllamacpp:tokens_predicted_total 0\n", Reply(status=501))
    server.route("/slots", json.dumps(slots))
    with_metrics = make(server.url, client).poll(1.0)
    # the prompt counter may already hold the slots' prompts: adding them could count twice
    assert (with_metrics.prompt_tokens_in_flight, with_metrics.generation_tokens_in_flight) == (None, 12)
    without = make(server.url, client).poll(1.0)
    assert (without.prompt_tokens_in_flight, without.generation_tokens_in_flight) == (380, 12)


@pytest.mark.parametrize(
    ("props", "model"),
    [
        ({"model_alias": "/models/g.gguf", "model_path": "/models/g.gguf"}, "g.gguf"),  # the default alias
        ({"model_alias": "gemma-small", "model_path": "/models/g.gguf"}, "gemma-small"),
        ({"model_path": "C:\\models\\g.gguf"}, "g.gguf"),
    ],
)
def test_llamacpp_model_name_from_props(props: dict, model: str, server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", "llamacpp:prompt_tokens_total 1\n")
    server.route("/props", json.dumps(props))
    assert make(server.url, client).poll(1.0).model == model


def test_llamacpp_with_metrics_off_runs_on_slots(
    server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    server.route("/metrics", Reply(status=501, body="This server does not support metrics endpoint."))
    server.route("/slots", fixture_page("llamacpp/slots-busy-4slots-gemma3-270m-cpu.json"))
    sample = make(server.url + "/metrics", client).poll(1.0)
    assert (sample.status, sample.kind, sample.kind_detail) == ("up", "llamacpp", "metrics off: /slots")
    assert (sample.prompt_tokens_total, sample.generation_tokens_total) == (None, None)
    assert (sample.running, sample.generation_tokens_in_flight) == (4, 316)


def test_llamacpp_without_slots_still_reports_counters(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", "llamacpp:prompt_tokens_total 5\nllamacpp:tokens_predicted_total 6\n")
    server.route("/slots", Reply(status=501))
    sample = make(server.url, client).poll(1.0)
    assert (sample.status, sample.generation_tokens_total, sample.generation_tokens_in_flight) == ("up", 6, None)
    assert "/slots is off" in (sample.note or "")


def test_ollama(server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]) -> None:
    ps = fixture_page("ollama/api-ps-docs-mistral.json")
    server.route("/api/ps", Reply(body=ps, content_type="application/json"))
    sample = make(server.url, client).poll(1.0)
    assert (sample.status, sample.kind, sample.model) == ("up", "ollama", "mistral:latest")
    assert sample.note == "Ollama publishes no token counters; tokens/s needs a proxy in front of it"
    server.route("/api/ps", '{"models": []}')
    assert make(server.url, client).poll(1.0).kind_detail == "no model loaded"


# --- poll_all -------------------------------------------------------------------------------


def test_poll_all_returns_by_the_deadline_whatever_one_endpoint_does(client: PageClient) -> None:
    with LoopbackServer() as fast, LoopbackServer() as slow:
        fast.route("/metrics", vllm_page(1, 2))
        slow.route("/metrics", vllm_page(3, 4), Reply(body=vllm_page(5, 6), delay_s=3))
        collectors = [make(fast.url, client, timeout_s=5.0), make(slow.url, client, timeout_s=5.0)]
        first = poll_all(collectors, 1.0, deadline_s=1.0)
        assert [s.status for s in first] == ["up", "up"]
        started = time.monotonic()
        second = poll_all(collectors, 2.0, deadline_s=0.3)
        assert time.monotonic() - started < 0.6
        assert [s.status for s in second] == ["up", "stale"]
        late = second[1]
        assert (late.error, late.generation_tokens_total, late.t_mono) == ("timed out after 0.3 s", 4, 2.0)
        # the slow read is still going: the next tick does not start another one
        requests_before = len(slow.requests)
        third = poll_all(collectors, 3.0, deadline_s=0.1)
        assert third[1].status == "stale" and len(slow.requests) == requests_before


def test_poll_all_with_no_endpoints() -> None:
    assert poll_all([], 1.0, deadline_s=0.1) == ()


def test_latency_histograms_are_read_every_few_seconds_and_carried_between(
    server: LoopbackServer, client: PageClient
) -> None:
    def page(observations: int) -> str:
        return (
            vllm_page(10, 20)
            + "\n".join(
                [
                    f'vllm:time_to_first_token_seconds_bucket{{engine="0",model_name="m",le="0.5"}} {observations}',
                    f'vllm:time_to_first_token_seconds_bucket{{engine="0",model_name="m",le="+Inf"}} {observations}',
                    f'vllm:time_to_first_token_seconds_sum{{engine="0",model_name="m"}} {observations * 0.2}',
                    f'vllm:time_to_first_token_seconds_count{{engine="0",model_name="m"}} {observations}',
                ]
            )
            + "\n"
        )

    server.route("/metrics", page(1), page(2), page(3))
    collector = make(server.url, client)
    first = collector.poll(0.0)
    assert first.ttft is not None and first.ttft.count == 1
    carried = collector.poll(1.0)  # page says 2, but histograms wait for their cadence
    assert carried.ttft == first.ttft and carried.generation_tokens_total == 20
    fresh = collector.poll(5.0)
    assert fresh.ttft.count == 3
