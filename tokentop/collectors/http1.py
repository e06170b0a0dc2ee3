"""One HTTP/1.1 GET at a time over a raw socket: the request written whole, the answer read with
no parser in between (``http.client`` reads its status line and headers through the ``email``
package and a buffered file, about 0.1 ms of CPU a request; issue 13).

Strict where a lenient reader could be fooled into taking one answer for another: a status line
``HTTP/1.0`` or ``HTTP/1.1``, no folded header lines, no bare CR, a header block
and its trailers of bounded size, one Content-Length or chunked framing (never both), and an
answer with bytes after its end closes its connection. Every wait for the server is bounded by
the deadline: the socket is non-blocking and each wait is a ``poll`` for the time left. A bare
LF ends a line as CRLF does (RFC 9112 section 2.2 allows it; ``http.client`` and h11 did, and a
hand-made exporter may write one).

Most servers send the same kind of head (``HTTP/1.1 200``, a Content-Length, a few other
headers); one match of ``_COMMON_HEAD`` reads it, and any other head is read the full way, to
the same ``Head`` (tests/test_http1.py compares the two on many heads).

Raises ``TimeoutError`` (the deadline passed), ``ProtocolError`` (not an answer to read),
``TooBig`` (past the size limit), ``PeerClosed`` (the server closed before the answer's end) or
any other ``OSError`` of the socket.
"""

from __future__ import annotations

import math
import re
import select
import socket
import time
from contextlib import suppress
from typing import NamedTuple

HEAD_LIMIT = 64 << 10  # the status line and header block (with any 1xx answers before it)
MAX_FIELDS = 100  # header lines; trailer lines too
CHUNK_LINE_LIMIT = 4096  # a chunk's size line, extensions included
RECV_BYTES = 1 << 16
MAX_LENGTH_DIGITS = 18  # significant digits of a Content-Length; more is no page (TooBig)
_TEXT = rb"[^\x00-\x08\x0a-\x1f\x7f]*"  # a reason or a header's value: no control but HTAB
_NAME = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# the status line, then lines of name and value (line ends made CRLF), nothing folded
_HEAD = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: %s)?(?:\r\n%s:%s)*" % (_TEXT, _NAME, _TEXT))
_START_TIME = b"process-start-time-unix"  # llama.cpp's
# The common head, to its blank line: HTTP/1.1 200, CRLF line ends, names in any case, one
# Content-Length (group 1), at most one Content-Type (2) and Process-Start-Time-Unix (3) (``(?(n)(?!))``
# refuses a second), Connection only keep-alive, no Transfer- or Content-Encoding, other lines as
# ``_HEAD`` reads them. Each line can be read one way only: a head it does not match costs one pass.
_COMMON_LINE = b"|".join(
    (
        rb"content-length:(?(1)(?!))[ \t]*([0-9]{1,%d})[ \t]*" % MAX_LENGTH_DIGITS,
        rb"content-type:(?(2)(?!))(%s)" % _TEXT,
        rb"%s:(?(3)(?!))(%s)" % (_START_TIME, _TEXT),
        rb"connection:[ \t]*keep-alive[ \t]*",
        rb"(?!(?:content-(?:length|type|encoding)|transfer-encoding|connection|%s):)%s:%s"
        % (_START_TIME, _NAME, _TEXT),
    )
)
_COMMON_HEAD = re.compile(
    rb"HTTP/1\.1 200(?: %s)?(?:\r\n(?i:%s)){0,%d}(?(1)|(?!))\r\n\r\n" % (_TEXT, _COMMON_LINE, MAX_FIELDS)
)
_WANTED = re.compile(
    rb"\r\n(content-length|transfer-encoding|content-encoding|connection|content-type|%s):([^\r]*)" % _START_TIME,
    re.IGNORECASE,
)
_HEX = b"0123456789abcdefABCDEF"
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of a header block
_LINE_END = re.compile(rb"\r?\n")


class ProtocolError(Exception):
    """Not an HTTP/1.1 answer to read; ``reason`` is a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooBig(Exception):
    """The body is over the size limit."""


class PeerClosed(ConnectionError):
    """The server closed the connection before the answer was complete; ``answered``: some of
    the answer had come (a keep-alive connection closed while idle sends nothing)."""

    def __init__(self, *, answered: bool) -> None:
        super().__init__("connection closed")
        self.answered = answered


class Head(NamedTuple):
    """What of an answer's status line and headers is used (a NamedTuple: one is made for every
    GET, in a third of the time of a frozen dataclass)."""

    status: int
    length: int | None = None  # Content-Length
    chunked: bool = False
    keep_alive: bool = False  # the connection may carry the next request
    encoding: str = ""  # Content-Encoding, lower case
    content_type: str = ""
    start_time: str = ""


class Http1Connection:
    """A connected socket, made non-blocking, and the bytes received but not yet read."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write: out at once
        sock.setblocking(False)
        self.sock = sock
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        self._data = b""  # received, not part of an answer read yet

    @property
    def idle(self) -> bool:
        """Nothing has come since the last answer: neither the server's close nor stray bytes."""
        return not self._data and not self._readable.poll(0)

    def close(self) -> None:
        """Closes the socket; a read waiting on it in another thread wakes at once."""
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def send(self, request: bytes, deadline: float) -> None:
        try:
            sent = self.sock.send(request)  # nearly always the whole request at once
        except BlockingIOError:
            sent = 0
        if sent == len(request):
            return
        view = memoryview(request)[sent:]
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                writable = select.poll()
                writable.register(self.sock, select.POLLOUT)
                _wait(writable, deadline)

    def read_head(self, deadline: float) -> Head:
        """The answer's head, past any 1xx answers (``100 Continue``, ``103 Early Hints``)."""
        data = self._data
        if not data:
            data = self._recv(deadline)
            if not data:
                raise PeerClosed(answered=False)
        common = _COMMON_HEAD.match(data, 0, HEAD_LIMIT + 4)
        if common is None:
            self._data = data
            return self._read_any_head(deadline)
        self._data = data[common.end() :]
        length, type_value, time_value = common.groups()
        content_type = type_value.strip(b" \t").decode("latin-1") if type_value else ""
        start_time = time_value.strip(b" \t").decode("latin-1") if time_value else ""
        return Head(200, int(length), False, True, "", content_type, start_time)

    def _read_any_head(self, deadline: float) -> Head:
        room = HEAD_LIMIT
        while True:
            block = self._head_block(deadline, room)
            head = _parse_head(block)
            if not 100 <= head.status < 200 or head.status == 101:  # 101: a protocol we did not ask for
                return head
            room -= len(block) + 4

    def read_body(self, head: Head, deadline: float, max_bytes: int) -> bytes:
        if head.chunked:
            return self._read_chunked(deadline, max_bytes)
        if head.length is None:
            return self._read_to_close(deadline, max_bytes)
        if head.length > max_bytes:
            raise TooBig()
        return self._read_length(head.length, deadline)

    @property
    def ended_clean(self) -> bool:
        """No byte came in with the answer just read past its end (one that did cannot be the
        next answer); a byte that comes later is seen by ``idle`` before the connection is
        used again."""
        return not self._data

    def _head_block(self, deadline: float, room: int) -> bytes:
        """The bytes up to the first blank line, without it; at most ``room`` of them."""
        data, old = self._data, 0  # old: how much of data was looked at before
        while True:
            if not b"HTTP/".startswith(data[:5]):  # not a status line (HTTP/0.9 or no HTTP at all)
                raise ProtocolError("bad status line")
            blank = _BLANK_LINE.search(data, max(old - 3, 0))
            if blank is not None and blank.start() <= room:
                self._data = data[blank.end() :]
                return data[: blank.start()]
            if blank is not None or len(data) > room:
                raise ProtocolError(f"headers over {HEAD_LIMIT >> 10} KiB")
            received = self._recv(deadline)
            if not received:
                raise PeerClosed(answered=bool(data))
            old, data = len(data), data + received

    def _read_length(self, length: int, deadline: float) -> bytes:
        data = self._data
        if not data and 0 < length <= RECV_BYTES:  # the body written apart from its head: asked for whole
            data = self._recv(deadline, length)  # no more: a byte after the body stays unread
            if not data:
                raise PeerClosed(answered=True)
        if len(data) >= length:
            self._data = data[length:]
            return data[:length]
        self._data = b""
        body = bytearray(length)
        body[: len(data)] = data
        view, got = memoryview(body), len(data)
        while got < length:
            received = self._recv_into(view[got:], deadline)
            if not received:
                raise PeerClosed(answered=True)
            got += received
        view.release()
        return bytes(body)

    def _read_to_close(self, deadline: float, max_bytes: int) -> bytes:
        body = bytearray(self._data)
        self._data = b""
        while len(body) <= max_bytes:
            received = self._recv(deadline)
            if not received:
                return bytes(body)
            body += received
        raise TooBig()

    def _read_chunked(self, deadline: float, max_bytes: int) -> bytes:
        body = bytearray()
        while True:
            size_text = self._line(deadline, CHUNK_LINE_LIMIT).partition(b";")[0].strip(b" \t")
            if not size_text or size_text.strip(_HEX):
                raise ProtocolError("bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > max_bytes:
                raise TooBig()
            body += self._take(size, deadline)
            end = self._take(1, deadline)
            if (self._take(1, deadline) if end == b"\r" else end) != b"\n":
                raise ProtocolError("bad chunk end")
        for _ in range(MAX_FIELDS + 1):  # trailer lines, not used, up to the blank line
            if not self._line(deadline, CHUNK_LINE_LIMIT):
                return bytes(body)
        raise ProtocolError(f"over {MAX_FIELDS} trailer lines")

    def _line(self, deadline: float, limit: int) -> bytes:
        """The next line, without its CRLF (or bare LF); at most ``limit`` bytes."""
        data, searched = self._data, 0
        while True:
            end = data.find(b"\n", searched)
            if 0 <= end <= limit:
                self._data = data[end + 1 :]
                return data[:end].removesuffix(b"\r")
            if end > limit or len(data) > limit:
                raise ProtocolError("chunk line too long")
            searched = len(data)
            received = self._recv(deadline)
            if not received:
                raise PeerClosed(answered=True)
            data += received

    def _take(self, size: int, deadline: float) -> bytes:
        data = self._data
        if len(data) < size:
            gathered = bytearray(data)
            while len(gathered) < size:
                received = self._recv(deadline)
                if not received:
                    raise PeerClosed(answered=True)
                gathered += received
            data = bytes(gathered)
        self._data = data[size:]
        return data[:size]

    def _recv(self, deadline: float, size: int = RECV_BYTES) -> bytes:
        while True:
            _wait(self._readable, deadline)  # first: a recv that finds nothing costs more than a poll
            with suppress(BlockingIOError):
                return self.sock.recv(size)

    def _recv_into(self, view: memoryview, deadline: float) -> int:
        while True:
            _wait(self._readable, deadline)
            with suppress(BlockingIOError):
                return self.sock.recv_into(view)


def _wait(poller: select.poll, deadline: float) -> None:
    """Until the socket is ready, or ``TimeoutError`` at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
        raise TimeoutError("past the deadline")


def _parse_head(block: bytes) -> Head:
    if block.count(b"\n") > MAX_FIELDS:
        raise ProtocolError(f"over {MAX_FIELDS} headers")
    if block.count(b"\n") != block.count(b"\r\n"):  # bare LFs
        block = _LINE_END.sub(b"\r\n", block)
    head = _HEAD.fullmatch(block)
    if head is None:
        raise ProtocolError(_head_fault(block))
    status = int(head[2])
    if status != 200:
        return Head(status)
    fields: dict[bytes, list[bytes]] = {}
    for name, value in _WANTED.findall(block):
        fields.setdefault(name.lower(), []).append(value.strip(b" \t"))
    return _framed(status, head[1] == b"1", fields)


def _head_fault(block: bytes) -> str:
    """Why ``block`` is not a status line and header lines."""
    status_line, *lines = block.split(b"\r\n")
    if _HEAD.fullmatch(status_line) is None:
        return "bad status line"
    if any(line[:1] in (b" ", b"\t") for line in lines):
        return "folded header line"
    return "bad header line"


def _framed(status: int, http11: bool, fields: dict[bytes, list[bytes]]) -> Head:
    """The head of a 200 answer: how its body ends, and the headers the page keeps."""
    lengths = fields.get(b"content-length")
    transfer = fields.get(b"transfer-encoding")
    length = None
    if transfer is not None:
        if b",".join(transfer).strip(b" \t").lower() != b"chunked":
            raise ProtocolError("Transfer-Encoding not chunked")
        if lengths is not None:
            raise ProtocolError("both Content-Length and chunked")
    elif lengths is not None:
        length = _content_length(lengths)
    connection = fields.get(b"connection")
    closes = connection is not None and b"close" in _tokens(connection)
    return Head(
        status,
        length,
        chunked=transfer is not None,
        keep_alive=http11 and not closes and (length is not None or transfer is not None),
        encoding=_text(fields, b"content-encoding").lower(),
        content_type=_text(fields, b"content-type"),
        start_time=_text(fields, _START_TIME),
    )


def _content_length(values: list[bytes]) -> int:
    """The one length that ``values`` give (repeated alike, as some proxies do, is one)."""
    texts = _tokens(values) if len(values) > 1 or b"," in values[0] else {values[0]}
    (text,) = texts if len(texts) == 1 else (b"",)
    if not text.isdigit():
        raise ProtocolError("bad Content-Length")
    significant = text.lstrip(b"0")
    if len(significant) > MAX_LENGTH_DIGITS:  # past any page (int() refuses over 4,300 digits)
        raise TooBig()
    return int(significant or b"0")


def _tokens(values: list[bytes]) -> set[bytes]:
    return {token.strip(b" \t") for value in values for token in value.lower().split(b",")}


def _text(fields: dict[bytes, list[bytes]], name: bytes) -> str:
    values = fields.get(name)
    return b", ".join(values).decode("latin-1") if values else ""
