"""``tokentop.collectors.http1``: the one-match read of the common head gives what the full read
gives, on real loopback sockets.

``read_head`` tries ``_COMMON_HEAD`` on the first bytes of an answer and falls back to the full
read (``_read_any_head``: the status line, the header block to its blank line, every framing
rule); the heads below are generated around the common one (header order and case, blanks, bare
LFs, duplicates, lengths, chunked, encodings, 1xx answers, bad lines) and each is read both ways
from its own connection, which must end alike: the same ``Head`` and body, or the same error.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tokentop.collectors.http1 import (
    _COMMON_HEAD,
    HEAD_LIMIT,
    MAX_FIELDS,
    Head,
    Http1Connection,
    PeerClosed,
    ProtocolError,
    TooBig,
    _content_length,
)

Outcome = tuple[object, ...]
BODY = b"hello"
STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 200",
    b"HTTP/1.1 200 ",
    b"HTTP/1.1 200 Fine\tthanks",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 302 Found",
    b"HTTP/1.1 500 Oops",
    b"http/1.1 200 OK",
    b"HTTP/1.1  200 OK",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 099 Odd",
    b"HTTP/2 200 OK",
    b"HTTP/1.1 200 O\x01K",
]
VALUES = {
    "Content-Length": [
        b"5",
        b" 5 ",
        b"\t5",
        b"05",
        b"5, 5",
        b"5,6",
        b"",
        b"five",
        b"-5",
        b"+5",
        b"1" * 19,
        b"1" * 18,
        b"3",
        b"0",
    ],
    "Content-Type": [b"text/plain; version=0.0.4", b"  text/plain \t", b"", b"caf\xe9", b"a\tb", b" "],
    "Process-Start-Time-Unix": [b"1700000000", b" 17 ", b""],
    "Connection": [b"keep-alive", b"close", b"Keep-Alive ", b"keep-alive, close", b"upgrade", b"", b"keep-alive,"],
    "Transfer-Encoding": [b"chunked", b"Chunked", b"gzip, chunked", b"gzip", b"chunked, chunked"],
    "Content-Encoding": [b"gzip", b"identity", b"", b"br"],
    "Server": [b"uvicorn", b"BaseHTTP/0.6 Python/3.11"],
    "Date": [b"Mon, 01 Jan 2024 00:00:00 GMT"],
    "Keep-Alive": [b"timeout=5, max=100"],
    "Content-Length-X": [b"9"],
    "X-Connection": [b"close"],
    "Content-Typo": [b"x"],
    "Transfer-Encodings": [b"gzip"],
}
BAD_LINES = [b" folded", b"\tfolded", b"No colon", b"Bad Name: x", b"Name : x", b"X-A: a\x01b", b"X-A: a\rb", b": x"]
INFORMATIONAL = [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]
CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"


def cased(rng: random.Random, name: str) -> bytes:
    written = rng.choice([name, name.lower(), name.upper(), "".join(rng.choice((c.lower(), c.upper())) for c in name)])
    return written.encode()


def value(rng: random.Random, name: str) -> bytes:
    """Most often the first (the common) value of the header."""
    return VALUES[name][0] if rng.random() < 0.6 else rng.choice(VALUES[name])


def generated_answer(rng: random.Random) -> bytes:
    """A head near the common one, changed in a few ways, then its blank line and a body."""
    names = ["Content-Length"] if rng.random() < 0.9 else []  # without: chunked, or read to the close
    names += [
        "Content-Type",
        *rng.sample(["Server", "Date", "Keep-Alive", "Process-Start-Time-Unix"], rng.randint(0, 4)),
    ]
    for _ in range(rng.choice([0, 0, 1, 2, 3])):  # another header, maybe a second of one
        names.insert(rng.randint(0, len(names)), rng.choice([*VALUES, *names]))
    lines = [cased(rng, name) + rng.choice([b":", b": ", b":\t", b":  "]) + value(rng, name) for name in names]
    rng.shuffle(lines)
    if rng.random() < 0.1:
        lines.insert(rng.randint(0, len(lines)), rng.choice(BAD_LINES))
    if rng.random() < 0.05:
        lines += padding(rng.choice([100, 101]) - len(lines))
    status = STATUS_LINES[0] if rng.random() < 0.5 else rng.choice(STATUS_LINES)
    ends = [b"\r\n" if rng.random() < 0.98 else b"\n" for _ in range(len(lines) + 2)]
    head = status + b"".join(end + line for end, line in zip(ends, lines)) + ends[-2] + ends[-1]
    informational = b"".join(rng.sample(INFORMATIONAL, rng.choice([0, 0, 0, 0, 1, 2])))
    body = CHUNKED_BODY if any(b"chunked" in line.lower() for line in lines) and rng.random() < 0.7 else BODY
    return informational + head + body + rng.choice([b"", b"", b"", b"HTTP/1.1 500 stray"])


def padding(count: int) -> list[bytes]:
    return [b"X-Pad: %d" % i for i in range(count)]


EDGES = [  # MAX_FIELDS lines and one more; MAX_LENGTH_DIGITS and one more
    b"\r\n".join([b"HTTP/1.1 200 OK", b"Content-Length: 5", *padding(MAX_FIELDS - 1 + more)]) + b"\r\n\r\n" + BODY
    for more in (0, 1)
] + [b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n" % (b"0" * digits + b"5") + BODY for digits in (17, 18)]


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def outcome(listener: socket.socket, answer: bytes, read_head: Callable[[Http1Connection, float], Head]) -> Outcome:
    """What reading ``answer`` (sent whole, then the server's side shut) ends in: the head and
    body read and whether the connection could be kept, or the error."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    connection = Http1Connection(client)
    try:
        server.sendall(answer)
        server.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        head = read_head(connection, deadline)
        if head.status != 200:
            return (head,)
        return (head, connection.read_body(head, deadline, 1 << 20), connection.ended_clean)
    except (ProtocolError, PeerClosed, TooBig, OSError) as exc:
        return (type(exc), str(exc), getattr(exc, "answered", None))
    finally:
        connection.close()
        server.close()


def test_generated_heads_read_alike_by_the_common_match_and_the_full_read(listener: socket.socket) -> None:
    rng = random.Random(13)
    answers = [generated_answer(rng) for _ in range(3000)] + EDGES
    common = 0
    for answer in answers:
        both_ways = outcome(listener, answer, Http1Connection.read_head)
        full_way = outcome(listener, answer, Http1Connection._read_any_head)
        assert both_ways == full_way, answer
        common += _COMMON_HEAD.match(answer, 0, HEAD_LIMIT + 4) is not None
    assert common > 300  # the common match read many of them
    assert len(answers) - common > 1500  # and the full read many others


REAL_HEADS = {
    "uvicorn (vLLM, SGLang)": (
        b"HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\nserver: uvicorn\r\ncontent-length: 5\r\n"
        b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n\r\n",
        Head(200, 5, keep_alive=True, content_type="text/plain; version=0.0.4; charset=utf-8"),
    ),
    "http.server": (
        b"HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
        b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 5\r\n\r\n",
        Head(200, 5, keep_alive=True, content_type="text/plain; version=0.0.4; charset=utf-8"),
    ),
    "cpp-httplib (llama.cpp)": (
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: \r\nConnection: Keep-Alive\r\nContent-Length: 5\r\n"
        b"Content-Type: text/plain; version=0.0.4\r\nKeep-Alive: timeout=5, max=5\r\n"
        b"Process-Start-Time-Unix: 1700000000\r\nServer: llama.cpp\r\n\r\n",
        Head(200, 5, keep_alive=True, content_type="text/plain; version=0.0.4", start_time="1700000000"),
    ),
    "hyper (TGI)": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: 5\r\n"
        b"date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
        Head(200, 5, keep_alive=True, content_type="text/plain; version=0.0.4"),
    ),
}


@pytest.mark.parametrize(("head", "expected"), REAL_HEADS.values(), ids=REAL_HEADS.keys())
def test_the_heads_of_real_servers_are_read_by_the_common_match(
    listener: socket.socket, head: bytes, expected: Head
) -> None:
    assert _COMMON_HEAD.match(head + BODY) is not None
    assert outcome(listener, head + BODY, Http1Connection.read_head) == (expected, BODY, True)


@pytest.mark.parametrize("size", [100 << 10, 3 << 20])
def test_a_long_body_in_pieces_is_read_whole_and_nothing_after_it(listener: socket.socket, size: int) -> None:
    """Past 64 KiB the body goes straight into one buffer; bytes after it are not taken as its."""
    body = bytes(range(256)) * (size // 256)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body + b"HTTP/1.1 500 stray"
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    connection = Http1Connection(client)
    sender = threading.Thread(target=lambda: [server.sendall(piece) for piece in pieces(answer, 50_000)])
    sender.start()
    try:
        head = connection.read_head(time.monotonic() + 10)
        assert connection.read_body(head, time.monotonic() + 10, 4 << 20) == body
        sender.join()
        assert not connection.idle  # the stray bytes wait on the socket: the connection is not reused
    finally:
        connection.close()
        sender.join()
        server.close()


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def test_an_empty_body_is_read_and_the_connection_kept(listener: socket.socket) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert outcome(listener, answer, Http1Connection.read_head) == (Head(200, 0, keep_alive=True), b"", True)


def test_a_body_written_apart_from_its_head_is_read_and_nothing_after_it(listener: socket.socket) -> None:
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    connection = Http1Connection(client)
    rest = threading.Timer(0.05, server.sendall, (b"56789HTTP/1.1 500 stray",))
    try:
        server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        head = connection.read_head(time.monotonic() + 10)
        server.sendall(b"01234")
        rest.start()
        assert connection.read_body(head, time.monotonic() + 10, 1 << 20) == b"0123456789"
        assert connection.ended_clean
        rest.join()
        assert not connection.idle  # the stray bytes wait on the socket: the connection is not reused
    finally:
        rest.cancel()
        connection.close()
        server.close()


def test_a_content_length_is_read_by_its_significant_digits() -> None:
    """Zeros before it are no size; past 18 significant digits it is over any page (TooBig), never
    an error of ``int()`` (which refuses over 4,300 digits)."""
    assert _content_length([b"0" * 30 + b"5"]) == 5
    assert _content_length([b"0" * 5000]) == 0
    for digits in (19, 5000):
        with pytest.raises(TooBig):
            _content_length([b"1" * digits])
    with pytest.raises(ProtocolError):
        _content_length([b"5x"])
