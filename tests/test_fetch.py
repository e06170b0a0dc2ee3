"""``tokentop.collectors.fetch`` against real sockets on loopback.

Most servers here are ``ScriptedServer``: raw TCP, one thread per accepted connection running a
script that reads requests and writes whatever bytes the test needs (answers HTTP/1.0, closes
an idle keep-alive connection, drips bytes, sends garbage), while the server counts the
connections it accepted, the requests it read and the connections the client closed.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tokentop import __version__
from tokentop.collectors import fetch
from tokentop.collectors.fetch import CLOSED_EARLY, Answer, FetchFailed, FetchTimedOut, PageClient, PageConnection

PAGE = b"".join(b'vllm:generation_tokens_total{model_name="m",engine="%d"} %d\n' % (i, i * 7) for i in range(200))
MiB = 1 << 20
DRIP_S = 0.05  # a dripping server's pause between two bytes
MARGIN_S = 1.0  # how far past its deadline a cut read may return (machines are noisy)
SLOW_TIMEOUT_S = 2.0  # the deadline of a read from a slow server
GIVE_UP_S = SLOW_TIMEOUT_S + MARGIN_S + 0.5  # a slow server stops then, in case the read was not cut

Script = Callable[["Peer"], None]


@dataclass(frozen=True)
class Request:
    line: str  # "GET /metrics HTTP/1.1"
    headers: dict[str, str]  # lower-case names


class ScriptedServer:
    """A raw TCP server on loopback: each accepted connection goes to ``script`` as a ``Peer``,
    on a thread of its own, and is closed when the script returns."""

    def __init__(self, script: Script, host: str = "127.0.0.1") -> None:
        self._script = script
        self._listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.02)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        self.stopping = threading.Event()
        self.changed = threading.Condition()
        self.accepted = 0
        self.finished = 0  # connections whose script returned (and which the server closed)
        self.hangups = 0  # connections the client closed while the script waited for a request
        self.requests: list[Request] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="scripted-accept", daemon=True)
        self._acceptor.start()

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, timeout_s)

    def close(self) -> None:
        self.stopping.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for sock in self._sockets:  # wakes the scripts waiting in recv
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            with self.changed:
                self.accepted += 1
                self._sockets.append(sock)
                self.changed.notify_all()
            thread = threading.Thread(target=self._serve, args=(Peer(self, sock, self.accepted),), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, peer: Peer) -> None:
        try:
            self._script(peer)
        except OSError:
            pass  # the client hung up mid-answer: part of the tests
        finally:
            peer.sock.close()
            with self.changed:
                self.finished += 1
                self.changed.notify_all()


class Peer:
    """One accepted connection, as its script sees it."""

    def __init__(self, server: ScriptedServer, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index  # 1 for the server's first connection
        self._buffer = b""

    def request(self) -> Request | None:
        """The next request's line and headers; None when the client closed first."""
        while b"\r\n\r\n" not in self._buffer:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                with self.server.changed:
                    self.server.hangups += not self.server.stopping.is_set()
                    self.server.changed.notify_all()
                return None
            self._buffer += data
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        line, *fields = head.decode("latin-1").split("\r\n")
        request = Request(
            line, {name.strip().lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
        )
        with self.server.changed:
            self.server.requests.append(request)
            self.server.changed.notify_all()
        return request

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drip(self, data: bytes, for_s: float) -> None:
        """Send ``data`` a byte every DRIP_S, for at most ``for_s`` seconds."""
        end = time.monotonic() + for_s
        for byte in data:
            if time.monotonic() > end or self.server.stopping.wait(DRIP_S):
                return
            self.send(bytes((byte,)))

    def hold(self, for_s: float = 30.0) -> None:
        """Keep the connection open, silent, until the client closes it or the server stops."""
        self.sock.settimeout(for_s)
        try:
            while self.sock.recv(1 << 16):
                pass
        except TimeoutError:
            pass


def answer(
    body: bytes = PAGE,
    *,
    status: str = "200 OK",
    version: str = "HTTP/1.1",
    headers: Sequence[str] = (),
    length: bool = True,
) -> bytes:
    lines = [f"{version} {status}", *headers] + ([f"Content-Length: {len(body)}"] if length else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


CHUNKED_HEAD = answer(b"", headers=["Transfer-Encoding: chunked"], length=False)


def keep_alive(*replies: bytes) -> Script:
    """Answer every request on a connection, with the next of ``replies`` (shared by all
    connections; the last one repeats), until the client closes."""
    queue = list(replies)

    def script(peer: Peer) -> None:
        while peer.request() is not None:
            peer.send(queue.pop(0) if len(queue) > 1 else queue[0])

    return script


def once(reply: bytes) -> Script:
    """Answer one request, then close the connection."""

    def script(peer: Peer) -> None:
        if peer.request() is not None:
            peer.send(reply)

    return script


def get(
    connection: PageConnection, url: str, *, timeout_s: float = 5.0, max_bytes: int = MiB, **headers: str
) -> Answer:
    return connection.get(url, headers, time.monotonic() + timeout_s, max_bytes)


def failure(connection: PageConnection, url: str, *, timeout_s: float = 5.0, max_bytes: int = MiB) -> FetchFailed:
    """The FetchFailed that reading ``url`` raises (an exception of any other type fails the test)."""
    with pytest.raises(FetchFailed) as caught:
        get(connection, url, timeout_s=timeout_s, max_bytes=max_bytes)
    return caught.value


def unavailable(thing: str, reason: str) -> None:
    """Skip, saying why, or fail where TOKENTOP_REQUIRE_<THING>=1."""
    if os.environ.get(f"TOKENTOP_REQUIRE_{thing}") == "1":
        pytest.fail(f"{reason} (TOKENTOP_REQUIRE_{thing}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script, host: str = "127.0.0.1") -> ScriptedServer:
        servers.append(ScriptedServer(script, host))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def connection(client: PageClient) -> PageConnection:
    return client.connection()


# 1. keep-alive


def test_twenty_reads_share_one_connection(serve: Callable[..., ScriptedServer], connection: PageConnection) -> None:
    server = serve(keep_alive(answer()))
    for _ in range(20):
        assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert len(server.requests) == 20
    assert server.accepted == 1


# 2. a connection the server closed


def test_an_idle_connection_the_server_closed_is_read_again_on_a_new_one(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(once(answer()))
    assert get(connection, server.url + "/metrics").body == PAGE
    assert server.wait_until(lambda: server.finished == 1)
    assert get(connection, server.url + "/metrics").body == PAGE  # no error: retried at once
    assert server.accepted == 2


def test_a_server_that_closes_every_connection_at_once_is_tried_once_a_read(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(lambda peer: None)
    for reads in (1, 2, 3):
        assert failure(connection, server.url + "/metrics").reason == CLOSED_EARLY
        assert server.accepted == reads


def test_a_stale_connection_is_retried_once_not_more(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    def first_answers_then_closes_the_rest_close_at_once(peer: Peer) -> None:
        if peer.index == 1:
            once(answer())(peer)

    server = serve(first_answers_then_closes_the_rest_close_at_once)
    assert get(connection, server.url + "/metrics").status == 200
    assert server.wait_until(lambda: server.finished == 1)
    assert failure(connection, server.url + "/metrics").reason == CLOSED_EARLY
    assert server.accepted == 2  # the stale one, then one retry
    assert failure(connection, server.url + "/metrics").reason == CLOSED_EARLY
    assert server.accepted == 3


def drops_its_first_connection_on_the_second_request(peer: Peer) -> None:
    """The first connection answers once, then reads the next request and closes unanswered (it
    looked idle to the client); every later one answers each request."""
    if peer.index == 1:
        once(answer())(peer)
        peer.request()
    else:
        keep_alive(answer())(peer)


def test_a_kept_connection_the_server_drops_on_the_next_request_is_retried_on_a_new_one(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(drops_its_first_connection_on_the_second_request)
    for _ in range(2):
        assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert len(server.requests) == 3
    assert server.accepted == 2


# 3. answers that end their connection

CLOSING_ANSWERS = {
    "HTTP/1.1 Connection: close": answer(headers=["Connection: close"]),
    "HTTP/1.0 with a length": answer(version="HTTP/1.0"),
    "HTTP/1.0 ended by the close": answer(version="HTTP/1.0", length=False),
    "HTTP/1.1 ended by the close": answer(length=False),
    "HTTP/1.1 Connection: keep-alive, close": answer(headers=["Connection: keep-alive, Close"]),
}


@pytest.mark.parametrize("reply", CLOSING_ANSWERS.values(), ids=CLOSING_ANSWERS.keys())
def test_answers_that_close_their_connection_are_read_each_on_a_new_one(
    serve: Callable[..., ScriptedServer], connection: PageConnection, reply: bytes
) -> None:
    server = serve(once(reply))
    for _ in range(5):
        assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert server.accepted == 5


# 4. chunked bodies


def test_a_chunked_body_is_read_whole_and_the_connection_kept(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    pieces = [PAGE[:1], PAGE[1:1000], PAGE[1000:]]
    server = serve(keep_alive(CHUNKED_HEAD + chunked(*pieces)))
    for _ in range(3):
        assert get(connection, server.url + "/metrics").body == PAGE
    assert server.accepted == 1


def test_chunk_extensions_hex_of_either_case_and_trailers_are_read(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    body = b"".join(
        [b"A;name=value\r\n", PAGE[:10], b"\r\n", b"000f ; x\r\n", PAGE[10:25], b"\r\n"]
        + [b"%X\r\n%s\r\n" % (len(PAGE) - 25, PAGE[25:]), b"0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n"]
    )
    server = serve(keep_alive(CHUNKED_HEAD + body))
    for _ in range(2):
        assert get(connection, server.url + "/metrics").body == PAGE
    assert server.accepted == 1  # the trailers were read to their end


def test_bare_lf_line_ends_are_read_as_crlf(serve: Callable[..., ScriptedServer], connection: PageConnection) -> None:
    """RFC 9112 lets a reader take a bare LF for CRLF, as http.client and h11 did."""
    length_framed = b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 3\n\nabc"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\n\r\n3\nabc\n2;x\r\nde\r\n0\nX-T: 1\n\n"
    server = serve(keep_alive(length_framed, chunked, length_framed))
    bodies = [get(connection, server.url + "/metrics") for _ in range(3)]
    assert [(answer.body, answer.content_type) for answer in bodies] == [
        (b"abc", "text/plain"),
        (b"abcde", ""),
        (b"abc", "text/plain"),
    ]
    assert server.accepted == 1  # each answer was read to its end: the connection carried the next


BAD_CHUNKS = {
    "a size that is no hex": (CHUNKED_HEAD + b"zz\r\nabc\r\n0\r\n\r\n", "request failed (bad chunk size)"),
    "a size with 0x": (CHUNKED_HEAD + b"0x3\r\nabc\r\n0\r\n\r\n", "request failed (bad chunk size)"),
    "a negative size": (CHUNKED_HEAD + b"-3\r\nabc\r\n0\r\n\r\n", "request failed (bad chunk size)"),
    "no size": (CHUNKED_HEAD + b"\r\nabc\r\n0\r\n\r\n", "request failed (bad chunk size)"),
    "more data than the size": (CHUNKED_HEAD + b"3\r\nabcd\r\n0\r\n\r\n", "request failed (bad chunk end)"),
    "a size line over 4 KiB": (CHUNKED_HEAD + b"3;" + b"x" * 5000 + b"\r\n", "request failed (chunk line too long)"),
    "over 100 trailer lines": (
        CHUNKED_HEAD + b"0\r\n" + b"X-T: z\r\n" * 101 + b"\r\n",
        "request failed (over 100 trailer lines)",
    ),
}


@pytest.mark.parametrize(("reply", "reason"), BAD_CHUNKS.values(), ids=BAD_CHUNKS.keys())
def test_a_bad_chunk_is_an_error(
    serve: Callable[..., ScriptedServer], connection: PageConnection, reply: bytes, reason: str
) -> None:
    def answers_then_holds(peer: Peer) -> None:  # no close to end the read: the error must
        peer.request()
        peer.send(reply)
        peer.hold()

    server = serve(answers_then_holds)
    assert failure(connection, server.url + "/metrics", timeout_s=30).reason == reason


CUT_CHUNKED = {
    "after a whole chunk": CHUNKED_HEAD + b"5\r\nabcde\r\n",
    "inside a chunk": CHUNKED_HEAD + b"a\r\nabc",
    "after a chunk's size": CHUNKED_HEAD + b"a\r\n",
}


@pytest.mark.parametrize("reply", CUT_CHUNKED.values(), ids=CUT_CHUNKED.keys())
def test_a_chunked_body_cut_short_is_an_error(
    serve: Callable[..., ScriptedServer], connection: PageConnection, reply: bytes
) -> None:
    server = serve(once(reply))
    assert failure(connection, server.url + "/metrics").reason == CLOSED_EARLY


def test_a_chunked_body_over_the_limit_is_not_read_to_its_end(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    def chunks_for_ever(peer: Peer) -> None:
        peer.request()
        peer.send(CHUNKED_HEAD)
        while not peer.server.stopping.is_set():
            peer.send(b"%x\r\n%s\r\n" % (1 << 16, b"x" * (1 << 16)))

    server = serve(chunks_for_ever)
    reason = failure(connection, server.url + "/metrics", timeout_s=30, max_bytes=256 << 10).reason
    assert reason == "page over 256 KiB, not read"  # a read to the end would time out instead


# 5. the deadline


def _drip_body(peer: Peer) -> None:
    peer.request()
    peer.send(answer(b"", headers=["Content-Length: 100000"], length=False))
    peer.drip(b"x" * 100000, for_s=GIVE_UP_S)


def _drip_a_header(peer: Peer) -> None:
    peer.request()
    peer.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    peer.drip(b"y" * 60000, for_s=GIVE_UP_S)


def _drip_a_chunk_size(peer: Peer) -> None:
    peer.request()
    peer.send(CHUNKED_HEAD + b"5\r\nabcde\r\n")
    peer.drip(b"0" * 60000, for_s=GIVE_UP_S)


def _drip_trailer_lines(peer: Peer) -> None:
    peer.request()
    peer.send(CHUNKED_HEAD + b"5\r\nabcde\r\n0\r\n")
    peer.drip(b"X-T: z\r\n" * 30, for_s=GIVE_UP_S)  # 30 lines: under the trailer limit


def _drip_then_stall_a_closing_answer(peer: Peer) -> None:
    """Bytes until just before the deadline, then silence."""
    peer.request()
    peer.send(answer(b"", headers=["Connection: close"], length=False))
    peer.drip(b"x" * 100000, for_s=SLOW_TIMEOUT_S - 0.2)
    peer.hold(GIVE_UP_S - SLOW_TIMEOUT_S)


SLOW_SERVERS = [
    pytest.param(_drip_body, id="dripping the body"),
    pytest.param(_drip_a_header, id="dripping a header line"),
    pytest.param(_drip_a_chunk_size, id="dripping a chunk size line"),
    pytest.param(_drip_trailer_lines, id="dripping trailer lines"),
    pytest.param(_drip_then_stall_a_closing_answer, id="going silent in a body ended by the close"),
    pytest.param(lambda peer: peer.hold(), id="never answering"),
]


@pytest.mark.parametrize("script", SLOW_SERVERS)
def test_a_slow_server_is_cut_at_the_deadline(
    serve: Callable[..., ScriptedServer], connection: PageConnection, script: Script
) -> None:
    server = serve(script)
    started = time.monotonic()
    with pytest.raises(FetchTimedOut):
        get(connection, server.url + "/metrics", timeout_s=SLOW_TIMEOUT_S)
    assert time.monotonic() - started < SLOW_TIMEOUT_S + MARGIN_S


def test_a_deadline_already_past_sends_nothing(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(keep_alive(answer()))
    with pytest.raises(FetchTimedOut):
        connection.get(server.url + "/metrics", {}, time.monotonic() - 1, MiB)
    assert server.accepted == 0


# 6. size limits and encodings


def test_a_length_over_the_limit_is_refused_before_the_body(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    def announces_ten_mib_sends_none(peer: Peer) -> None:
        peer.request()
        peer.send(answer(b"", headers=[f"Content-Length: {10 * MiB}"], length=False))
        peer.hold()

    server = serve(announces_ten_mib_sends_none)
    assert failure(connection, server.url + "/metrics", timeout_s=30).reason == "page over 1 MiB, not read"


def test_a_compressed_page_that_inflates_past_the_limit_is_refused(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    bomb = gzip.compress(b"\0" * (64 * MiB))  # about 64 KiB on the wire
    server = serve(keep_alive(answer(bomb, headers=["Content-Encoding: gzip"])))
    assert failure(connection, server.url + "/metrics").reason == "page over 1 MiB, not read"


def test_an_unknown_encoding_is_not_read(serve: Callable[..., ScriptedServer], connection: PageConnection) -> None:
    server = serve(keep_alive(answer(b"\x1b\x00\xf8", headers=["Content-Encoding: br"])))
    assert failure(connection, server.url + "/metrics").reason == "page sent as br, not read"


ENCODED = {"gzip": gzip.compress(PAGE), "x-gzip": gzip.compress(PAGE), "deflate": zlib.compress(PAGE), "identity": PAGE}


@pytest.mark.parametrize(("encoding", "body"), ENCODED.items(), ids=ENCODED.keys())
def test_an_encoded_page_within_the_limit_is_decoded(
    serve: Callable[..., ScriptedServer], connection: PageConnection, encoding: str, body: bytes
) -> None:
    server = serve(keep_alive(answer(body, headers=[f"Content-Encoding: {encoding}"])))
    assert get(connection, server.url + "/metrics").body == PAGE


def test_bad_gzip_data_is_an_error(serve: Callable[..., ScriptedServer], connection: PageConnection) -> None:
    server = serve(keep_alive(answer(b"not gzip at all", headers=["Content-Encoding: gzip"])))
    assert failure(connection, server.url + "/metrics").reason == "request failed (bad gzip data)"


def test_a_gzip_stream_cut_short_is_an_error_not_part_of_a_page(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    cut = gzip.compress(PAGE)[:-100]  # the server's Content-Length is this cut body's
    server = serve(keep_alive(answer(cut, headers=["Content-Encoding: gzip"])))
    assert failure(connection, server.url + "/metrics").reason == "request failed (bad gzip data)"


# 7. statuses other than 200


def test_a_redirect_is_its_status_and_the_connection_goes_on(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    redirect = answer(b"", status="302 Found", headers=["Location: /elsewhere"])
    server = serve(keep_alive(redirect, answer()))
    assert get(connection, server.url + "/metrics") == Answer(302)
    assert [request.line for request in server.requests] == ["GET /metrics HTTP/1.1"]  # not followed
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)


def test_a_server_error_then_a_page_on_the_same_connection(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(keep_alive(answer(b"engine dead\n", status="500 Internal Server Error"), answer()))
    assert get(connection, server.url + "/metrics") == Answer(500)
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)


# 8. not HTTP at all

GARBAGE = {
    "words": (b"garbage\r\n\r\n", "request failed (bad status line)"),
    "a status that is no number": (b"HTTP/1.1 abc OK\r\n\r\n", "request failed (bad status line)"),
    "binary bytes then the close": (b"\x00\xff\x16\x03" * 8, "request failed (bad status line)"),
    "a status line over 64 KiB": (
        b"HTTP/1.1 200 " + b"O" * 70000 + b"\r\n\r\n",
        "request failed (headers over 64 KiB)",
    ),
    "over 100 headers": (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "request failed (over 100 headers)"),
    "headers then the close": (answer(b"", headers=["Content-Length: 100"], length=False), CLOSED_EARLY),
    "nothing then the close": (b"", CLOSED_EARLY),
}


@pytest.mark.parametrize(("reply", "reason"), GARBAGE.values(), ids=GARBAGE.keys())
def test_a_server_that_does_not_speak_http_gets_a_short_reason(
    serve: Callable[..., ScriptedServer], connection: PageConnection, reply: bytes, reason: str
) -> None:
    server = serve(once(reply))
    assert failure(connection, server.url + "/metrics").reason == reason


def held(reply: bytes) -> Script:
    """Answer one request with ``reply``, then keep the connection open: a read that waited
    for more would run to its deadline, so the error has to come from the bytes alone."""

    def script(peer: Peer) -> None:
        peer.request()
        peer.send(reply)
        peer.hold()

    return script


BAD_HEADS = {
    "HTTP/0.9: a page with no status line": (PAGE, "request failed (bad status line)"),
    "a two-digit status": (b"HTTP/1.1 20 OK\r\n\r\n", "request failed (bad status line)"),
    "a four-digit status": (b"HTTP/1.1 2000 OK\r\n\r\n", "request failed (bad status line)"),
    "a status under 100": (b"HTTP/1.1 099 Odd\r\n\r\n", "request failed (bad status line)"),
    "two spaces before the status": (b"HTTP/1.1  200 OK\r\n\r\n", "request failed (bad status line)"),
    "HTTP/2 written as HTTP/1": (b"HTTP/2 200 OK\r\n\r\n", "request failed (bad status line)"),
    "HTTP/1.2": (b"HTTP/1.2 200 OK\r\n\r\n", "request failed (bad status line)"),
    "a lower-case protocol": (b"http/1.1 200 OK\r\n\r\n", "request failed (bad status line)"),
    "a bare CR in a value": (
        b"HTTP/1.1 200 OK\r\nX-A: b\rc\r\nContent-Length: 0\r\n\r\n",
        "request failed (bad header line)",
    ),
    "a folded header line": (
        b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
        "request failed (folded header line)",
    ),
    "a space before the colon": (
        b"HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc",
        "request failed (bad header line)",
    ),
    "a line with no colon": (b"HTTP/1.1 200 OK\r\nContent-Length 3\r\n\r\nabc", "request failed (bad header line)"),
    "a header line over 64 KiB": (
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * (65 << 10) + b"\r\n\r\n",
        "request failed (headers over 64 KiB)",
    ),
    "a flood of 100 Continue": (b"HTTP/1.1 100 Continue\r\n\r\n" * 3000, "request failed (headers over 64 KiB)"),
}


@pytest.mark.parametrize(("reply", "reason"), BAD_HEADS.values(), ids=BAD_HEADS.keys())
def test_a_bad_status_line_or_header_is_an_error_at_once(
    serve: Callable[..., ScriptedServer], connection: PageConnection, reply: bytes, reason: str
) -> None:
    server = serve(held(reply))
    assert failure(connection, server.url + "/metrics", timeout_s=30).reason == reason


BAD_FRAMING = {
    "two lengths that differ": (["Content-Length: 3", "Content-Length: 4"], "request failed (bad Content-Length)"),
    "a list of lengths that differ": (["Content-Length: 3, 4"], "request failed (bad Content-Length)"),
    "a negative length": (["Content-Length: -3"], "request failed (bad Content-Length)"),
    "a signed length": (["Content-Length: +3"], "request failed (bad Content-Length)"),
    "a length that is no number": (["Content-Length: three"], "request failed (bad Content-Length)"),
    "an empty length": (["Content-Length:"], "request failed (bad Content-Length)"),
    "a length and chunked": (
        ["Content-Length: 3", "Transfer-Encoding: chunked"],
        "request failed (both Content-Length and chunked)",
    ),
    "a transfer coding not chunked": (["Transfer-Encoding: gzip"], "request failed (Transfer-Encoding not chunked)"),
    "gzip then chunked": (["Transfer-Encoding: gzip, chunked"], "request failed (Transfer-Encoding not chunked)"),
}


@pytest.mark.parametrize(("headers", "reason"), BAD_FRAMING.values(), ids=BAD_FRAMING.keys())
def test_a_body_framed_two_ways_or_none_is_an_error(
    serve: Callable[..., ScriptedServer], connection: PageConnection, headers: list[str], reason: str
) -> None:
    server = serve(held(answer(b"abc", headers=headers, length=False)))
    assert failure(connection, server.url + "/metrics", timeout_s=30).reason == reason


SAME_LENGTH = {
    "twice alike": ["Content-Length: 3", "content-length: 3"],
    "a list alike": ["Content-Length: 3, 3"],
    "leading zeros": ["Content-Length: 003"],
}


@pytest.mark.parametrize("headers", SAME_LENGTH.values(), ids=SAME_LENGTH.keys())
def test_a_length_said_twice_alike_is_one_length(
    serve: Callable[..., ScriptedServer], connection: PageConnection, headers: list[str]
) -> None:
    server = serve(keep_alive(answer(b"abc", headers=headers, length=False)))
    for _ in range(2):
        assert get(connection, server.url + "/metrics").body == b"abc"
    assert server.accepted == 1


def test_chunked_in_any_case_and_a_status_with_no_reason_are_read(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    head = b"HTTP/1.1 200\r\nTransfer-Encoding: Chunked\r\nx-odd-but-fine:\tvalue \xe9\r\n\r\n"
    server = serve(keep_alive(head + chunked(PAGE)))
    assert get(connection, server.url + "/metrics").body == PAGE


INFORMATIONAL = {
    "100 Continue": b"HTTP/1.1 100 Continue\r\n\r\n",
    "103 Early Hints with headers": b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    "both": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
}


@pytest.mark.parametrize("before", INFORMATIONAL.values(), ids=INFORMATIONAL.keys())
def test_informational_answers_before_the_answer_are_passed_over(
    serve: Callable[..., ScriptedServer], connection: PageConnection, before: bytes
) -> None:
    server = serve(keep_alive(before + answer()))
    for _ in range(2):
        assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert server.accepted == 1


def test_switching_protocols_is_a_status_and_ends_the_connection(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    server = serve(keep_alive(switch, answer()))
    assert get(connection, server.url + "/metrics") == Answer(101)
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert server.accepted == 2


# 8b. bytes after the answer


def test_bytes_after_a_body_are_not_read_as_the_next_answer(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    stray = answer(b"not asked for\n", status="500 Internal Server Error")
    server = serve(keep_alive(answer() + stray))  # one send: the stray answer comes with the page
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert server.wait_until(lambda: server.hangups == 1)  # closed once the page was read
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)  # not the 500
    assert server.accepted == 2  # the first connection was closed


def test_bytes_that_come_while_the_connection_is_idle_are_not_read_as_the_next_answer(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    stray = answer(b"not asked for\n", status="500 Internal Server Error")

    def page_then_a_stray_answer(peer: Peer) -> None:
        while peer.request() is not None:
            peer.send(answer())
            if peer.index == 1:
                time.sleep(0.1)
                peer.send(stray)
                with peer.server.changed:
                    peer.server.changed.notify_all()

    server = serve(page_then_a_stray_answer)
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    time.sleep(0.5)  # the stray answer is in
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)  # not the 500
    assert server.accepted == 2
    assert len(server.requests) == 2  # read afresh at once: no request went to the spoilt connection


def test_a_body_that_comes_in_pieces_is_put_together(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    big = os.urandom(300 << 10)  # past the first read's 64 KiB
    reply = answer(big)

    def in_pieces(peer: Peer) -> None:
        while peer.request() is not None:
            for start in range(0, len(reply), 50_000):
                peer.send(reply[start : start + 50_000])
                time.sleep(0.01)

    server = serve(in_pieces)
    for _ in range(2):
        assert get(connection, server.url + "/metrics").body == big
    assert server.accepted == 1


# 8c. a request sent ahead (poll_all sends every endpoint's before reading any)


def echoes_request_line() -> Script:
    """Answer every request with its own request line and the server's port, until the client
    closes."""

    def script(peer: Peer) -> None:
        while (request := peer.request()) is not None:
            peer.send(answer(b"%s %d" % (request.line.encode(), peer.server.port)))

    return script


def test_a_request_sent_ahead_is_answered_to_the_get_of_its_url(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(echoes_request_line())
    url, said = server.url + "/metrics", b"GET /metrics HTTP/1.1 %d" % server.port
    assert get(connection, url).body == said
    connection.send_ahead(url, {"Authorization": "Bearer t"})
    assert server.wait_until(lambda: len(server.requests) == 2)  # out before any get
    assert get(connection, url, Authorization="Bearer t").body == said
    assert server.requests[1].headers["authorization"] == "Bearer t"
    assert len(server.requests) == 2 and server.accepted == 1
    assert get(connection, url).body == said  # the connection goes on
    assert server.accepted == 1


def test_the_get_of_another_request_than_the_one_sent_ahead_never_reads_its_answer(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(echoes_request_line())
    get(connection, server.url + "/a")
    for other in ({"url": server.url + "/b"}, {"url": server.url + "/a", "headers": {"X-Other": "1"}}):
        connection.send_ahead(other["url"], other.get("headers", {}))
        assert get(connection, server.url + "/a").body == b"GET /a HTTP/1.1 %d" % server.port  # not /b's
    assert server.accepted == 3  # each connection with an answer on its way was closed


def test_nothing_is_sent_ahead_without_an_open_idle_plain_connection_to_its_server(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server, other = serve(echoes_request_line()), serve(echoes_request_line())
    connection.send_ahead(server.url + "/metrics", {})  # no connection yet
    assert server.accepted == 0
    get(connection, server.url + "/metrics")
    connection.send_ahead("https" + server.url[4:] + "/metrics", {})
    connection.send_ahead("http://[::1/metrics", {})  # not a URL: nothing sent, nothing raised
    connection.send_ahead(server.url + "/metrics", {"Bad": "line\nbreak"})  # a header get refuses
    connection.send_ahead(other.url + "/metrics", {})  # another server than the one connected
    assert get(connection, other.url + "/metrics").body == b"GET /metrics HTTP/1.1 %d" % other.port
    assert get(connection, server.url + "/metrics").body == b"GET /metrics HTTP/1.1 %d" % server.port
    assert len(server.requests) == 2 and server.accepted == 2 and other.accepted == 1


def test_a_request_sent_ahead_and_never_read_is_dropped_with_its_connection(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    """A read that failed before asking for it (``drop_unread``), or a tick that sent it and
    read nothing: its answer is never taken for a later request's."""
    server = serve(echoes_request_line())
    url = server.url + "/metrics?n=1"
    get(connection, url)
    connection.send_ahead(url, {})
    connection.drop_unread()
    assert not connection.is_open
    get(connection, url)
    connection.send_ahead(url, {})
    connection.send_ahead(url, {})  # the first never read: the connection goes, nothing sent
    assert not connection.is_open
    assert get(connection, url).body == b"GET /metrics?n=1 HTTP/1.1 %d" % server.port
    assert server.accepted == 3


def test_nothing_is_sent_ahead_over_a_connection_with_bytes_that_came_while_idle(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    stray_sent = threading.Event()

    def page_then_a_stray_answer(peer: Peer) -> None:
        while peer.request() is not None:
            peer.send(answer())
            if peer.index == 1:
                peer.send(answer(b"not asked for\n", status="500 Internal Server Error"))
                stray_sent.set()

    server = serve(page_then_a_stray_answer)
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert stray_sent.wait(5.0)  # over loopback, in once sent
    time.sleep(0.05)
    connection.send_ahead(server.url + "/metrics", {})
    assert len(server.requests) == 1
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)  # not the 500
    assert server.accepted == 2


def test_a_request_sent_ahead_that_the_server_drops_is_sent_again_on_a_new_connection(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(drops_its_first_connection_on_the_second_request)
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    connection.send_ahead(server.url + "/metrics", {})
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert len(server.requests) == 3 and server.accepted == 2


def test_a_get_past_its_deadline_after_a_request_sent_ahead_leaves_no_answer_behind(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    def counts_the_second_late(peer: Peer) -> None:
        while peer.request() is not None:
            if len(peer.server.requests) == 2:
                time.sleep(0.3)  # not in yet when the connection is next looked at
            peer.send(answer(b"%d" % len(peer.server.requests)))

    server = serve(counts_the_second_late)
    url = server.url + "/metrics"
    get(connection, url)
    connection.send_ahead(url, {})
    with pytest.raises(FetchTimedOut):
        connection.get(url, {}, time.monotonic() - 1, MiB)
    assert get(connection, url).body == b"3"  # its own answer, not the second request's
    assert server.accepted == 2


# 9. no server


def test_a_closed_port_is_connection_refused(connection: PageConnection) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert failure(connection, f"http://127.0.0.1:{port}/metrics").reason == "connection refused"


def test_a_name_that_cannot_resolve_is_host_not_found(connection: PageConnection) -> None:
    try:
        socket.getaddrinfo("nohost.invalid", 1)
    except socket.gaierror:
        pass
    else:
        unavailable("RESOLVER", "this resolver answers for the reserved .invalid domain")
    assert failure(connection, "http://nohost.invalid:1/metrics").reason == "host not found"


# 10. IPv6


def test_ipv6_loopback(serve: Callable[..., ScriptedServer], connection: PageConnection) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        unavailable("IPV6", f"cannot bind ::1 here ({exc.strerror})")
    server = serve(keep_alive(answer()), host="::1")
    assert server.url.startswith("http://[::1]:")
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE)
    assert server.requests[0].headers["host"] == f"[::1]:{server.port}"


# 11. what is sent


def test_the_request_headers(serve: Callable[..., ScriptedServer], connection: PageConnection) -> None:
    server = serve(keep_alive(answer()))
    get(connection, server.url + "/v1/metrics?model=m", Authorization="Bearer s3cret")
    (request,) = server.requests
    assert request.line == "GET /v1/metrics?model=m HTTP/1.1"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["user-agent"] == f"tokentop/{__version__}"
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"


def test_the_answer_keeps_its_content_type_and_start_time(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(
        keep_alive(answer(headers=["Content-Type: text/plain; version=0.0.4", "Process-Start-Time-Unix: 1700000000"]))
    )
    assert get(connection, server.url + "/metrics") == Answer(200, PAGE, "text/plain; version=0.0.4", "1700000000")


def test_a_header_value_with_a_line_break_is_refused_before_any_request(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(keep_alive(answer()))
    with pytest.raises(FetchFailed) as caught:
        get(connection, server.url + "/metrics", Authorization="Bearer x\r\nX-Injected: 1")
    assert caught.value.reason == "request failed (bad Authorization header)"
    assert server.accepted == 0
    assert get(connection, server.url + "/metrics", Authorization="Bearer x").body == PAGE


def test_the_request_goes_out_as_written_each_time(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(keep_alive(answer()))
    for token in ("a", "a", "b"):
        get(connection, server.url + "/v1/metrics?name[]=x y", Authorization=f"Bearer {token}")
    assert [request.headers["authorization"] for request in server.requests] == ["Bearer a", "Bearer a", "Bearer b"]
    assert {request.line for request in server.requests} == {"GET /v1/metrics?name%5B%5D=x%20y HTTP/1.1"}


# 12. closing


def test_closing_the_client_closes_every_connection_it_made(
    serve: Callable[..., ScriptedServer], client: PageClient
) -> None:
    server = serve(keep_alive(answer()))
    for connection in [client.connection() for _ in range(3)]:
        get(connection, server.url + "/metrics")
    assert server.accepted == 3
    assert server.hangups == 0
    client.close()
    assert server.wait_until(lambda: server.hangups == 3), f"{server.hangups} of 3 connections closed"


def test_a_connection_closed_by_its_collector_is_closed_and_forgotten(
    serve: Callable[..., ScriptedServer], client: PageClient
) -> None:
    server = serve(keep_alive(answer()))
    connection = client.connection()
    get(connection, server.url + "/metrics")
    connection.close()
    assert server.wait_until(lambda: server.hangups == 1)


def test_a_socket_whose_connection_cannot_be_set_up_is_closed(
    serve: Callable[..., ScriptedServer], connection: PageConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting a socket's options fails on one the server reset already: the socket is closed."""
    server = serve(keep_alive(answer()))
    given: list[socket.socket] = []

    def reset(sock: socket.socket) -> None:
        given.append(sock)
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(fetch, "Http1Connection", reset)
    assert failure(connection, server.url + "/metrics").reason
    assert len(given) == 1 and given[0].fileno() == -1
    assert server.wait_until(lambda: server.hangups == 1)


def test_no_read_after_the_client_closed(serve: Callable[..., ScriptedServer], client: PageClient) -> None:
    server = serve(keep_alive(answer()))
    connection = client.connection()
    client.close()
    try:
        assert failure(connection, server.url + "/metrics").reason == "stopped"
        assert server.accepted == 0
    finally:
        connection.close()  # what the read opened, if it did


def test_a_read_under_way_ends_as_stopped_when_its_connection_is_closed(
    serve: Callable[..., ScriptedServer], connection: PageConnection
) -> None:
    server = serve(lambda peer: peer.hold())
    closer = threading.Timer(0.3, connection.close)
    closer.start()
    started = time.monotonic()
    try:
        assert failure(connection, server.url + "/metrics", timeout_s=30).reason == "stopped"
    finally:
        closer.cancel()
    assert time.monotonic() - started < 15  # woken by the close, not run to its deadline


# 13. https


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server-side TLS context with a fresh self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        unavailable("OPENSSL", "no openssl here to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if made.returncode != 0:
        unavailable("OPENSSL", f"openssl req failed: {made.stderr.strip()[-200:]}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def tls(context: ssl.SSLContext) -> Script:
    def script(peer: Peer) -> None:
        try:
            with context.wrap_socket(peer.sock, server_side=True) as wrapped:
                wrapped.recv(1)
        except ssl.SSLError:
            pass  # the client refused the certificate

    return script


def test_a_self_signed_certificate_fails_the_tls_handshake(
    serve: Callable[..., ScriptedServer], connection: PageConnection, self_signed: ssl.SSLContext
) -> None:
    server = serve(tls(self_signed))
    https_url = server.url.replace("http://", "https://") + "/metrics"
    assert failure(connection, https_url).reason == "TLS handshake failed"


HTTPX_IMPORTED_WHEN = """
import sys, time
import tokentop.sampler
from tokentop.collectors.fetch import FetchFailed, PageClient

plain_url, https_url = sys.argv[1:]
connection = PageClient().connection()
print("after import", "httpx" in sys.modules)
assert connection.get(plain_url, {}, time.monotonic() + 5, 1 << 20).status == 200
print("after http", "httpx" in sys.modules)
try:
    connection.get(https_url, {}, time.monotonic() + 5, 1 << 20)
except FetchFailed as failure:
    print("https:", failure.reason)
print("after https", "httpx" in sys.modules)
"""


def test_httpx_is_imported_only_for_an_https_page(
    serve: Callable[..., ScriptedServer], self_signed: ssl.SSLContext
) -> None:
    plain, secure = serve(keep_alive(answer())), serve(tls(self_signed))
    https_url = secure.url.replace("http://", "https://") + "/metrics"
    run = subprocess.run(
        [sys.executable, "-c", HTTPX_IMPORTED_WHEN, plain.url + "/metrics", https_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "after import False",
        "after http False",
        "https: TLS handshake failed",
        "after https True",
    ]
