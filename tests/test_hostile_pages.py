"""Servers that attack the monitor: every page here comes from a real loopback server and is
read by the real collector. Whatever a page holds, the sample that leaves the collector is
printable, bounded, finite and plausible, and the reader never raises or grows without bound."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

import pytest
from loopback import LoopbackServer, Reply

from tokentop.collectors import EndpointCollector
from tokentop.collectors.exposition import MAX_SAMPLE_LINES
from tokentop.collectors.fetch import PageClient
from tokentop.config import Config, EndpointConfig
from tokentop.model import EndpointSample
from tokentop.text import MAX_TEXT
from tokentop.tui.processes import describe_processes

HOSTILE_MODEL = "m\x1b]52;c;cHduZWQ=\x07\x1b]0;PWNTITLE\x07"
SCREEN_CLEARING_MODEL = "m\\n\x1b[2J\x9b2J"  # an escaped newline in the label, ESC[2J and CSI 2J
MAX_COUNT = 2.0**53


def vllm_line(figure: str, value: object, model: str = "m", engine: int = 0) -> str:
    return f'vllm:{figure}{{engine="{engine}",model_name="{model}"}} {value}\n'


def vllm_page(
    prompt: object = 10, generation: object = 20, running: object = 1, kv: object = 0.25, model: str = "m"
) -> str:
    return "".join(
        vllm_line(figure, value, model)
        for figure, value in (
            ("prompt_tokens_total", prompt),
            ("generation_tokens_total", generation),
            ("num_requests_running", running),
            ("num_requests_waiting", 0),
            ("kv_cache_usage_perc", kv),
        )
    )


def make(url: str, client: PageClient, *, timeout_s: float = 2.0, **endpoint: str) -> EndpointCollector:
    return EndpointCollector(EndpointConfig(url, **endpoint), client, timeout_s=timeout_s, max_page_bytes=8 << 20)


def assert_safe(sample: EndpointSample) -> None:
    """Every string printable and bounded; every number finite."""
    for item in dataclasses.fields(sample):
        value = getattr(sample, item.name)
        if isinstance(value, str):
            assert value.isprintable() and len(value) <= MAX_TEXT, (item.name, value)
        if isinstance(value, float):
            assert math.isfinite(value), (item.name, value)


# --- 1: terminal escape injection -------------------------------------------------------------


def test_escape_sequences_in_labels_never_reach_the_sample(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", vllm_page(model=HOSTILE_MODEL), vllm_page(model=SCREEN_CLEARING_MODEL))
    collector = make(server.url, client)
    osc = collector.poll(1.0)
    assert osc.status == "up" and osc.model is not None and "PWNTITLE" in osc.model  # still readable
    clearing = collector.poll(2.0)
    assert clearing.model is not None and clearing.model.startswith("m ")  # the newline folded
    for sample in (osc, clearing):
        assert_safe(sample)


def test_many_long_model_names_are_cut_to_one_bounded_line(server: LoopbackServer, client: PageClient) -> None:
    page = "".join(vllm_line("num_requests_running", 1, model=f"{i}" + "x" * 5000, engine=i) for i in range(5))
    server.route("/metrics", page)
    sample = make(server.url, client).poll(1.0)
    assert sample.model is not None and len(sample.model) <= MAX_TEXT
    assert_safe(sample)


def test_ollama_props_and_info_names_are_made_safe(server: LoopbackServer, client: PageClient) -> None:
    models = [{"name": HOSTILE_MODEL, "size": 1, "size_vram": 1}, {"model": "b\nc\x1b[2J" * 100}]
    server.route("/api/ps", Reply(body=json.dumps({"models": models}), content_type="application/json"))
    ollama = make(server.url, client).poll(1.0)
    assert ollama.kind == "ollama" and "PWNTITLE" in (ollama.model or "")
    server.reset()
    server.route("/metrics", "llamacpp:prompt_tokens_total 1\n")
    server.route("/props", json.dumps({"model_alias": HOSTILE_MODEL, "model_path": "/m.gguf"}))
    llamacpp = make(server.url, client).poll(1.0)
    assert llamacpp.kind == "llamacpp" and "PWNTITLE" in (llamacpp.model or "")
    server.reset()
    server.route("/metrics", "tgi_queue_size 1\n")
    server.route("/info", json.dumps({"model_id": HOSTILE_MODEL}))
    tgi = make(server.url, client).poll(1.0)
    assert tgi.kind == "tgi" and "PWNTITLE" in (tgi.model or "")
    for sample in (ollama, llamacpp, tgi):
        assert_safe(sample)


def test_process_names_are_made_safe() -> None:
    rename = "open('/proc/self/comm', 'w').write('e\\x1b]0;PWN\\x07'); import time; time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", rename])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not describe_processes([child.pid])[child.pid].name.startswith("e"):
            time.sleep(0.05)
        info = describe_processes([child.pid])[child.pid]
        assert info.name.startswith("e") and "PWN" in info.name and info.name.isprintable()
        assert info.command.isprintable()
    finally:
        child.kill()
        child.wait()


async def test_the_live_view_draws_no_escape_byte(server: LoopbackServer) -> None:
    from test_tui import FakeClock, screen_text

    from tokentop.nvml.fake import FakeNvml
    from tokentop.nvml.reader import NvmlReader
    from tokentop.sampler import Sampler
    from tokentop.tui.app import TokentopApp

    server.route("/metrics", vllm_page(model=HOSTILE_MODEL + SCREEN_CLEARING_MODEL))
    clock = FakeClock()
    config = Config(endpoints=(EndpointConfig(server.url, name="hostile"),), discover=False, http_timeout_s=2.0)
    sampler = Sampler(config, NvmlReader(lib=FakeNvml.no_driver()), clock=clock, wall_clock=clock.wall)
    try:
        app = TokentopApp(config, sampler=sampler, host_name="box", start_sampler=False, handle_signals=False)
        async with app.run_test(size=(200, 40)) as pilot:
            for _ in range(3):
                clock.t += 1
                sampler.tick()
            await pilot.pause()
            screenshot = app.export_screenshot()
            for control in ("\x1b", "\x07", "\x9b"):
                assert control not in screenshot
            row = next(line for line in screen_text(app).splitlines() if "hostile" in line)
            assert "]52;c;cHduZWQ=" in row  # the model is on screen, harmless
    finally:
        sampler.stop()


# --- 2: memory and time bounded whatever the page ---------------------------------------------


def test_unique_huge_labels_do_not_pile_up_in_memory(server: LoopbackServer, client: PageClient) -> None:
    scrape = itertools.count()

    def fresh_labels(_: object) -> Reply:
        n = next(scrape)
        lines = (vllm_line("num_requests_running", 1, model=f"{n}-{i}-" + "x" * 120_000, engine=i) for i in range(20))
        return Reply(body="".join(lines))

    server.route("/metrics", fresh_labels)
    collector = make(server.url + "/metrics", client)
    assert collector.poll(0.0).status == "up"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for tick in range(1, 9):  # 2.4 MB of new label text each tick
            assert collector.poll(float(tick)).running == 20
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4 << 20, f"{grown / 2**20:.1f} MiB kept after 8 pages of unique labels"


def test_a_page_of_too_many_series_is_refused_within_the_tick(server: LoopbackServer, client: PageClient) -> None:
    page = "".join(vllm_line("num_requests_running", 1, engine=i) for i in range(110_000))
    server.route("/metrics", vllm_page() + page)
    collector = make(server.url + "/metrics", client, timeout_s=1.0)
    started = time.monotonic()
    sample = collector.poll(1.0)
    assert time.monotonic() - started < 1.0
    assert sample.status == "error" and f"{MAX_SAMPLE_LINES:,}" in (sample.error or "")
    assert sample.running is None


# --- 3: non-finite and absurd figures -----------------------------------------------------------


def test_an_absurd_token_counter_rejects_the_tick_and_says_which(server: LoopbackServer, client: PageClient) -> None:
    server.route("/metrics", vllm_page(generation=500), vllm_page(generation=1e308), vllm_page(generation=1.7e308))
    collector = make(server.url + "/metrics", client)
    good = collector.poll(1.0)
    assert good.generation_tokens_total == 500
    for t in (2.0, 3.0):
        bad = collector.poll(t)
        assert bad.status == "stale" and bad.generation_tokens_total == 500  # the last good counters
        assert bad.error is not None and "vllm:generation_tokens_total" in bad.error and "e+308" in bad.error
    assert collector.poll(30.0).status == "error"  # not "no counter": never counted as zero or restarted


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-1", str(2**60)])
def test_a_bad_token_counter_on_a_fresh_endpoint_is_an_error(
    value: str, server: LoopbackServer, client: PageClient
) -> None:
    server.route("/metrics", vllm_page(prompt=value))
    sample = make(server.url + "/metrics", client).poll(1.0)
    assert sample.status == "error" and sample.prompt_tokens_total is None
    assert "vllm:prompt_tokens_total" in (sample.error or "")


def test_absurd_gauges_and_histograms_become_unknown_with_a_note(server: LoopbackServer, client: PageClient) -> None:
    histogram = (
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="1",model_name="m"} 1e300\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 1e300\n'
        'vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 4\n'
        'vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 1e300\n'
    )
    others = (
        'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} +Inf\n'
        "process_start_time_seconds -7\n"
    )
    server.route("/metrics", vllm_page(running=-3, kv=1.5) + histogram + others, vllm_page() + histogram)
    sample = make(server.url + "/metrics", client).poll(1.0)
    assert sample.status == "up" and (sample.prompt_tokens_total, sample.generation_tokens_total) == (10, 20)
    assert sample.running is None and sample.kv_cache_fraction is None and sample.ttft is None
    assert sample.requests_finished_total is None and sample.process_start_time_s is None
    note = sample.note or ""  # one bounded line: the first ones named, the rest cut
    assert note.startswith("not plausible") and "num_requests_running" in note and "= -3" in note
    assert "kv_cache_usage_perc" in note and "= 1.5" in note
    assert_safe(sample)
    only_histogram = make(server.url + "/metrics", client).poll(1.0)  # fresh: histograms are read at once
    assert only_histogram.ttft is None and "time_to_first_token_seconds_bucket" in (only_histogram.note or "")
    assert only_histogram.running == 1


def test_process_start_time_is_published(
    server: LoopbackServer, client: PageClient, fixture_page: Callable[[str], str]
) -> None:
    start = "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.7e9\n"
    server.route("/metrics", vllm_page() + start)
    assert make(server.url, client).poll(1.0).process_start_time_s == 1.7e9
    server.route("/metrics", fixture_page("vllm/v0-0.5-opt125m-datadog.txt"))
    assert make(server.url, client).poll(1.0).process_start_time_s == pytest.approx(1.7181405583e9)
    server.route("/metrics", vllm_page())
    assert make(server.url, client).poll(1.0).process_start_time_s is None
    llamacpp = "llamacpp:prompt_tokens_total 1\n"
    for header, published in (("1718140558", 1718140558.0), ("-1e400", None), ("soon", None)):
        server.route("/metrics", Reply(body=llamacpp, headers={"Process-Start-Time-Unix": header}))
        assert make(server.url + "/metrics", client).poll(1.0).process_start_time_s == published


# --- 10: pages that used to raise inside the readers ------------------------------------------


def test_deeply_nested_json_is_a_one_line_error(
    server: LoopbackServer, client: PageClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.route("/metrics", "[" * 200_000)
    sample = make(server.url + "/metrics", client).poll(1.0)
    assert sample.status == "error" and sample.error is not None and "internal" not in sample.error
    assert "\n" not in sample.error
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_huge_integers_in_slots_and_ollama_do_not_raise(server: LoopbackServer, client: PageClient) -> None:
    huge = "1" * 400
    slots = f'[{{"id": 0, "n_ctx": 512, "is_processing": true, "next_token": [{{"n_decoded": {huge}}}]}}]'
    server.route("/metrics", "llamacpp:prompt_tokens_total 1\nllamacpp:tokens_predicted_total 2\n")
    server.route("/slots", slots)
    with_metrics = make(server.url, client).poll(1.0)
    assert with_metrics.status == "up" and with_metrics.generation_tokens_total == 2
    assert with_metrics.generation_tokens_in_flight is None and "n_decoded" in (with_metrics.note or "")
    server.route("/metrics", Reply(status=501))
    slots_only = make(server.url, client).poll(1.0)
    assert slots_only.status == "error" and "n_decoded" in (slots_only.error or "")
    server.reset()
    models = f'{{"models": [{{"name": "a", "size": {huge}, "size_vram": {huge}}}]}}'
    server.route("/api/ps", Reply(body=models, content_type="application/json"))
    ollama = make(server.url, client).poll(1.0)
    assert ollama.status == "up" and ollama.model == "a"
    for sample in (with_metrics, slots_only, ollama):
        assert_safe(sample)


def test_an_internal_error_warns_once_and_keeps_the_traceback_at_debug(
    server: LoopbackServer, client: PageClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("reader bug \x1b]0;PWN\x07")

    monkeypatch.setattr("tokentop.collectors.endpoint.read_figures", broken)
    caplog.set_level(logging.DEBUG, logger="tokentop")
    server.route("/metrics", vllm_page())
    collector = make(server.url + "/metrics", client)
    samples = [collector.poll(float(t)) for t in range(3)]
    assert all(s.status == "error" and s.error == samples[0].error for s in samples)
    assert "\n" not in (samples[0].error or "")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert warnings[0].getMessage().isprintable()
    assert [r.levelno for r in caplog.records if r.exc_info] == [logging.DEBUG] * 3


# --- 12: bearer token settings said plainly ----------------------------------------------------


@pytest.mark.parametrize(("value", "said"), [(None, "TT_HOSTILE_TOKEN is not set"), ("", "TT_HOSTILE_TOKEN is empty")])
def test_a_missing_token_is_said_at_the_first_read(
    value: str | None, said: str, server: LoopbackServer, client: PageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("TT_HOSTILE_TOKEN", raising=False)
    else:
        monkeypatch.setenv("TT_HOSTILE_TOKEN", value)
    server.route("/metrics", Reply(status=401))
    sample = make(server.url, client, token_env="TT_HOSTILE_TOKEN").poll(1.0)
    assert sample.status == "error" and sample.error == f"token_env {said}"
    assert not server.requests  # nothing was sent without the token the user asked for
