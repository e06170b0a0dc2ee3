"""poll_all reads quick endpoints inline, one after another, and the rest on threads; a quick
endpoint that stalls is handed to a thread and holds neither the tick nor the endpoints after it."""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import parse_qs

import pytest
from loopback import LoopbackServer, Reply, Seen
from test_collectors import make, vllm_page

from tokentop.collectors import EndpointCollector, endpoint, poll, poll_all
from tokentop.collectors.fetch import PageClient
from tokentop.collectors.poll import INLINE_LIMIT_S


def threads_reading(collector: EndpointCollector) -> list[threading.Thread]:
    """The thread of each later read of ``collector`` (recorded as it starts)."""
    read_on: list[threading.Thread] = []
    original = collector.poll_within

    def recording(t_mono: float, give_up_after_s: float):  # type: ignore[no-untyped-def]
        read_on.append(threading.current_thread())
        return original(t_mono, give_up_after_s)

    collector.poll_within = recording  # type: ignore[method-assign]
    return read_on


def test_quick_endpoints_are_read_on_the_callers_thread(client: PageClient) -> None:
    with LoopbackServer() as a, LoopbackServer() as b:
        for server in (a, b):
            server.route("/metrics", vllm_page(1, 2))
        collectors = [make(a.url + "/metrics", client), make(b.url + "/metrics", client)]
        poll_all(collectors, 1.0, deadline_s=2.0)  # first reads: not known to be quick yet
        assert all(c.quick for c in collectors)
        caller = threading.current_thread()
        seen_on = threads_reading(collectors[1])
        second = poll_all(collectors, 2.0, deadline_s=2.0)
        assert [s.status for s in second] == ["up", "up"]
        assert seen_on == [caller]


def test_every_inline_request_is_out_before_any_answer_is_read(
    client: PageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first server answers only once the second has its request: read one after the
    other, request then answer, the first read would time out (its sample "stale")."""
    monkeypatch.setattr(poll, "INLINE_LIMIT_S", 10.0)  # the first read is not handed to a thread
    monkeypatch.setattr(endpoint, "QUICK_READ_S", 10.0)  # however slow this machine, read inline
    second_asked = threading.Event()

    def once_the_second_is_asked(seen: Seen) -> Reply:
        return Reply(body=vllm_page(1, 1 if second_asked.wait(3.0) else 0))

    def asked(seen: Seen) -> Reply:
        second_asked.set()
        return Reply(body=vllm_page(1, 2))

    with LoopbackServer() as first, LoopbackServer() as second:
        # the server found, then its filter by name tried (a request not sent ahead), then the read
        first.route("/metrics", vllm_page(1, 2), vllm_page(1, 2), once_the_second_is_asked)
        second.route("/metrics", vllm_page(1, 2), vllm_page(1, 2), asked)
        collectors = [make(u + "/metrics", client, timeout_s=2.0) for u in (first.url, second.url)]
        for t in (1.0, 2.0):
            poll_all(collectors, t, deadline_s=5.0)
        assert all(c.quick and c.connected for c in collectors)
        second_asked.clear()
        read_on = threads_reading(collectors[0])
        samples = poll_all(collectors, 3.0, deadline_s=5.0)
        assert read_on == [threading.current_thread()]  # inline
        assert [s.status for s in samples] == ["up", "up"]
        assert [s.generation_tokens_total for s in samples] == [1, 2]
        assert len(first.requests) == len(second.requests) == 3


def test_requests_sent_ahead_ask_for_what_each_read_reads(client: PageClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server answering ``?name[]=``: the latency histograms' turn (every ``LATENCY_EVERY_S``)
    is the tick's, so the request sent ahead is the one its read asks for, and none is lost."""
    monkeypatch.setattr(endpoint, "QUICK_READ_S", 10.0)
    page = vllm_page(1, 2) + "".join(f'python_gc_objects_collected_total{{generation="{i}"}} {i}\n' for i in range(60))

    def only_the_names_asked(seen: Seen) -> Reply:
        names = set(parse_qs(seen.query).get("name[]", [])) or None
        lines = page.splitlines(keepends=True)
        return Reply(body="".join(line for line in lines if names is None or re.split(r"[{ ]", line)[0] in names))

    with LoopbackServer() as server:
        server.route("/metrics", only_the_names_asked)
        collector = make(server.url + "/metrics", client)
        ticks = [float(t) for t in range(1, 13)]
        samples = [poll_all([collector], t, deadline_s=2.0)[0] for t in ticks]
    assert [s.generation_tokens_total for s in samples] == [2.0] * len(ticks)
    queries = [seen.query for seen in server.requests]
    assert len(queries) == len(ticks)  # one request a tick: none sent ahead for nothing
    with_histograms = [t for t, query in zip(ticks, queries, strict=True) if "time_to_first_token" in query]
    assert with_histograms == [2.0, 6.0, 11.0]  # the trial (every name), then every 5 s


def test_a_read_that_fails_before_its_request_sent_ahead_leaves_no_answer_behind(
    client: PageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its token gone between the request sent ahead and the read: the read fails, and the next
    one (not sent ahead) reads its own answer, not the one left on the connection."""
    monkeypatch.setenv("TOKEN_T", "t")
    with LoopbackServer() as server:
        server.route("/metrics", lambda seen: Reply(body=vllm_page(1, len(server.requests))))
        collector = make(server.url + "/metrics", client, token_env="TOKEN_T")
        for t in (1.0, 2.0):  # found, then the filter by name tried (this server ignores it)
            assert collector.poll(t).status == "up"
        collector.send_ahead(3.0)
        waited_until = time.monotonic() + 5.0
        while len(server.requests) < 3 and time.monotonic() < waited_until:  # it is out
            time.sleep(0.01)
        monkeypatch.delenv("TOKEN_T")
        assert collector.poll(3.0).error == "token_env TOKEN_T is not set"
        monkeypatch.setenv("TOKEN_T", "t")
        assert collector.poll(4.0).generation_tokens_total == 4  # the fourth request's answer


def test_a_quick_endpoint_that_stalls_does_not_hold_the_next_one(client: PageClient) -> None:
    with LoopbackServer() as stalls, LoopbackServer() as after:
        stalls.route("/metrics", vllm_page(1, 2), Reply(body=vllm_page(3, 4), delay_s=1.0))
        after.route("/metrics", vllm_page(5, 6), vllm_page(7, 8))
        collectors = [make(stalls.url + "/metrics", client, timeout_s=5.0), make(after.url + "/metrics", client)]
        assert [s.status for s in poll_all(collectors, 1.0, deadline_s=2.0)] == ["up", "up"]
        started = time.monotonic()
        second = poll_all(collectors, 2.0, deadline_s=3.0)
        took = time.monotonic() - started
        # the stalled one is handed over after INLINE_LIMIT_S and answers at about 1 s; the
        # other is read meanwhile, not timed out behind it
        assert [s.status for s in second] == ["up", "up"]
        assert second[1].generation_tokens_total == 8
        assert second[0].generation_tokens_total == 4 and took >= 1.0 - 0.05
        assert not collectors[0].quick and collectors[1].quick
        # the stalled endpoint was asked twice: inline, then on a thread
        assert len(stalls.requests) == 3 and INLINE_LIMIT_S < 1.0


def test_an_endpoint_that_fails_is_not_read_inline(client: PageClient) -> None:
    with LoopbackServer() as server:
        server.route("/metrics", Reply(status=500))
        collector = make(server.url + "/metrics", client)
        poll_all([collector], 1.0, deadline_s=1.0)
        assert not collector.quick


def test_an_endpoint_with_no_open_connection_is_read_on_a_thread(client: PageClient) -> None:
    """A connect (and its name lookup, which no timeout bounds) never runs on the sampler's thread."""
    with LoopbackServer() as server:
        server.route("/metrics", vllm_page(1, 2))
        collector = make(server.url + "/metrics", client)
        poll_all([collector], 1.0, deadline_s=2.0)
        assert collector.quick and collector.connected
        collector._connection._close_plain()  # as when the server closed the idle connection
        assert not collector.connected
        server.route("/metrics", vllm_page(3, 4))
        read_on = threads_reading(collector)
        assert poll_all([collector], 2.0, deadline_s=2.0)[0].generation_tokens_total == 4
        assert len(read_on) == 1 and read_on[0] is not threading.current_thread()


def test_a_url_with_a_space_or_a_letter_beyond_ascii_is_sent_encoded(client: PageClient) -> None:
    with LoopbackServer() as server:
        server.route("/%C3%A9/metrics", vllm_page(5, 6))  # the path as sent
        sample = make(server.url + "/é/metrics?model=a b", client).poll(1.0)
        assert sample.status == "up" and sample.generation_tokens_total == 6
        assert server.requests[-1].query == "model=a%20b"
