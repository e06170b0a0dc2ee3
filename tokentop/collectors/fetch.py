"""GET one stats page within a deadline and a size limit: our own HTTP/1.1 reader
(``tokentop.collectors.http1``) for plain http, httpx for https.

Why two clients: httpx costs about 0.6 ms of CPU a request more than a bare socket on the same
keep-alive request, and four endpoints' worth of that was the whole tick's budget (issue 13);
``http.client`` still spent 0.1 ms of it parsing its headers through the ``email`` package.
Inference servers' stats are nearly always plain http on loopback or inside a cluster, so each
collector gets a keep-alive connection of its own, read by one thread at a time (``poll_all``
never starts a second read of an endpoint whose first is still going), its request's bytes made
once per URL. A request can go out ahead of its read (``send_ahead``), so that ``poll_all``
has every server answering while it reads the first answer. https endpoints keep httpx, for
its certificate handling, with one client for all of them; httpx is imported only when one is
read.

Both ways give the same ``Answer`` or raise ``FetchFailed`` with the same few words, so the
collector cannot tell them apart: nothing is followed (a redirect is its status), the body is
asked for as ``identity`` and cut at ``max_bytes`` and at the deadline, and a keep-alive
connection the server closed while idle is read afresh (found closed before the request, or
retried once at once). Over plain http every wait for the server lasts only the time left, so a
server dripping its status line, headers or chunk sizes is cut at the deadline too; over https
httpx bounds each of those reads by the time left at the start of the request, not the whole of
them.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from tokentop import __version__
from tokentop.collectors.http1 import Http1Connection, PeerClosed, ProtocolError, TooBig
from tokentop.model import stored_by_slots

if TYPE_CHECKING:
    import httpx

CHUNK_BYTES = 1 << 16
SEND_AHEAD_S = 0.05  # how long a request sent ahead may take to go out (one write nearly always)
USER_AGENT = f"tokentop/{__version__}"
CLOSED_EARLY = "connection closed before the answer was complete"
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = "=&%:@!$'()*+,;/?~"
_FIXED_HEADERS = f"Accept-Encoding: identity\r\nUser-Agent: {USER_AGENT}\r\n".encode("ascii")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


@stored_by_slots
@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes = b""
    content_type: str = ""
    start_time: str = ""  # llama.cpp's Process-Start-Time-Unix header


class FetchFailed(Exception):
    """No answer to use; ``reason`` is a few words for the user, never the page or the URL."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchTimedOut(FetchFailed):
    """The deadline passed; the collector says its own timeout."""

    def __init__(self) -> None:
        super().__init__("timed out")


class PageClient:
    """What the collectors of one sampler share: the httpx client of https endpoints, made
    the first time one is read (loading certificates costs about 3 MB), and the list of their
    connections, all closed by ``close``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._https: httpx.Client | None = None
        self._connections: set[PageConnection] = set()
        self._closed = False

    def connection(self) -> PageConnection:
        """A connection for one collector."""
        connection = PageConnection(self)
        with self._lock:
            self._connections.add(connection)
        return connection

    def forget(self, connection: PageConnection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def https_client(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise FetchFailed("stopped")
            if self._https is None:
                import httpx

                self._https = httpx.Client(follow_redirects=False, trust_env=False)
            return self._https

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, set()
            if self._https is not None:
                self._https.close()
        for connection in connections:
            connection.close()


class PageConnection:
    """One collector's way to its server: a keep-alive connection for plain http (to one
    host and port at a time: a collector's URLs are siblings), the shared client for https."""

    def __init__(self, client: PageClient) -> None:
        self._client = client
        self._plain: Http1Connection | None = None
        self._plain_to: tuple[str, int] | None = None
        # url -> host, port, the request's bytes, and the headers given that are in them
        self._requests: dict[str, tuple[str, int, bytes, dict[str, str]]] = {}
        self._sent: bytes | None = None  # a request sent ahead (``send_ahead``), its answer not read yet
        self._closed = False  # closed by another thread (the sampler's stop): a read under way ends

    @property
    def is_open(self) -> bool:
        """A plain-http connection is open: the next read needs no connect (nor a name lookup)."""
        return self._plain is not None

    def send_ahead(self, url: str, headers: Mapping[str, str]) -> None:
        """Send the GET of ``url`` now, over the open connection, for the next ``get`` of it to
        read the answer: several servers then answer at once, and most answers are in by the
        time they are read (no wait for them). Nothing is sent without an open connection to the
        URL's server that is idle, nor for a URL (https) or headers that ``get`` reads another
        way or refuses. A request that cannot go out closes the connection (``get`` connects
        afresh, and says why if it must), and so does an earlier one sent ahead whose answer was
        never read. Never raises."""
        plain = self._plain
        if plain is None:
            return
        if self._sent is not None:
            self._close_plain()  # an answer on its way that nothing read: never this read's
            return
        try:
            host, port, request, _ = self._request(url, headers)
        except FetchFailed:
            return  # the read says why
        if self._plain_to != (host, port) or not plain.idle:
            return
        try:
            plain.send(request, time.monotonic() + SEND_AHEAD_S)
        except (OSError, ValueError):  # ValueError: the socket closed under it by ``close``
            self._close_plain()
            return
        self._sent = request

    def drop_unread(self) -> None:
        """Close the connection if a request sent ahead is still unread (its read failed before
        asking for it): its answer must never be taken for a later request's."""
        if self._sent is not None:
            self._close_plain()

    def get(self, url: str, headers: Mapping[str, str], deadline: float, max_bytes: int) -> Answer:
        """The answer to a GET of ``url`` (sent ahead or now); raises ``FetchFailed``.
        ``deadline``: monotonic seconds by which the whole body must be in. A request sent ahead
        that is not this one has its connection closed, its answer unread."""
        sent, self._sent = self._sent, None
        ahead = False
        try:
            if deadline - time.monotonic() <= 0:
                raise FetchTimedOut()
            if url.startswith("https://"):
                return _get_https(self._client.https_client(), url, headers, deadline, max_bytes)
            host, port, request, _ = self._request(url, headers)
            ahead = sent is not None and sent == request
        finally:
            if sent is not None and not ahead:
                self._close_plain()
        try:
            return self._get_plain(host, port, request, deadline, max_bytes, ahead)
        except (OSError, ProtocolError, TooBig) as exc:
            self._close_plain()  # whatever was half-read must not be read as the next answer
            if self._stopped():
                raise FetchFailed("stopped") from None  # the connection was closed under the read
            raise _plain_failure(exc, max_bytes) from None
        except BaseException:
            self._close_plain()
            raise

    def close(self) -> None:
        self._closed = True
        self._close_plain()
        self._client.forget(self)

    def _stopped(self) -> bool:
        return self._closed or self._client.closed

    def _request(self, url: str, headers: Mapping[str, str]) -> tuple[str, int, bytes, dict[str, str]]:
        """Host, port and the request's bytes, made again only when the URL or headers are new."""
        found = self._requests.get(url)
        if found is None or found[3] != headers:
            host, port, head = _request_head(url)
            if len(self._requests) >= 16:  # a collector asks for a handful of URLs
                self._requests.clear()
            found = self._requests[url] = (host, port, head + _header_lines(headers) + b"\r\n", dict(headers))
        return found

    def _get_plain(self, host: str, port: int, request: bytes, deadline: float, max_bytes: int, sent: bool) -> Answer:
        """``sent``: the request went out ahead, over the open connection."""
        for attempt in (1, 2):
            ahead = self._plain if sent and attempt == 1 else None  # what the request went out on
            connection, reused = (ahead, True) if ahead is not None else self._connect(host, port, deadline)
            try:
                if ahead is None:
                    connection.send(request, deadline)
                head = connection.read_head(deadline)
            except (PeerClosed, ConnectionResetError, BrokenPipeError) as exc:
                self._close_plain()
                if reused and attempt == 1 and not (isinstance(exc, PeerClosed) and exc.answered):
                    continue  # the server closed the idle connection: once more, afresh
                raise  # CLOSED_EARLY, or "stopped" where the close was ours
            if head.status != 200:
                self._close_plain()  # the body is not wanted: a fresh connection next time
                return Answer(head.status)
            body = connection.read_body(head, deadline, max_bytes)
            if not (head.keep_alive and connection.ended_clean):
                self._close_plain()
            if head.encoding:
                body = _decoded(body, head.encoding, max_bytes)
            return Answer(200, body, head.content_type, head.start_time)
        raise AssertionError("unreachable")  # pragma: no cover  # the loop returns or raises

    def _connect(self, host: str, port: int, deadline: float) -> tuple[Http1Connection, bool]:
        """The open connection to ``host:port`` if nothing came on it while idle, or a new one
        (connected here, so that a refused or unreachable server is told from one that closed
        on us)."""
        plain = self._plain
        if plain is not None and self._plain_to == (host, port) and plain.idle:
            return plain, True
        self._close_plain()
        if self._stopped():
            raise FetchFailed("stopped")
        try:
            # the name lookup in it has no timeout of its own: checked after
            sock = socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 1e-3))
        except OSError as exc:
            raise _failure(exc, connecting=True) from None
        try:
            connection = Http1Connection(sock)
        except BaseException:  # its options not set on a socket already reset: not left open
            sock.close()
            raise
        if self._stopped() or time.monotonic() > deadline:
            connection.close()
            raise FetchFailed("stopped") if self._stopped() else FetchTimedOut()
        self._plain, self._plain_to = connection, (host, port)
        return connection, False

    def _close_plain(self) -> None:
        self._sent = None  # what was sent ahead goes with its connection
        plain, self._plain = self._plain, None
        if plain is not None:
            plain.close()


def _plain_failure(exc: OSError | ProtocolError | TooBig, max_bytes: int) -> FetchFailed:
    if isinstance(exc, TooBig):
        return _too_big(max_bytes)
    if isinstance(exc, ProtocolError):
        return FetchFailed(f"request failed ({exc.reason})")
    return _failure(exc, connecting=False)


def _request_head(url: str) -> tuple[str, int, bytes]:
    """Host, port and the request's bytes up to the headers given with each read."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracket not closed, say
        raise FetchFailed("not an http URL") from None
    if parts.scheme != "http" or not parts.hostname:
        raise FetchFailed("not an http URL")
    try:
        port = parts.port or 80
        host = _host_bytes(parts.hostname)
    except ValueError:  # a port out of range, or a name IDNA cannot write (a UnicodeError)
        raise FetchFailed("not an http URL") from None
    # as httpx did: spaces and other letters percent-encoded, what is already encoded kept
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    if b":" in host:
        host = b"[" + host + b"]"
    if port != 80:
        host += b":%d" % port
    return parts.hostname, port, b"GET %s HTTP/1.1\r\nHost: %s\r\n%s" % (target.encode("ascii"), host, _FIXED_HEADERS)


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """``headers`` as request lines; ``FetchFailed`` for a name or value that cannot be sent."""
    lines = b""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _NOT_IN_VALUE.search(value):
            raise FetchFailed(f"request failed (bad {name[:20]} header)")
        lines += f"{name}: {value}\r\n".encode("latin-1")
    return lines


def _host_bytes(name: str) -> bytes:
    """``name`` as the Host header writes it; raises ``UnicodeError`` where IDNA cannot."""
    try:
        return name.encode("ascii")
    except UnicodeError:
        return name.encode("idna")


def _read_chunks(read: Callable[[], bytes], deadline: float, max_bytes: int) -> bytes:
    """The body, chunk by chunk: cut at ``max_bytes`` and at the deadline (a server sending a
    byte a second never trips a socket timeout)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = read()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise _too_big(max_bytes)
        if time.monotonic() > deadline:
            raise FetchTimedOut()
        chunks.append(chunk)


def _decoded(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Asked for ``identity``; a server that compressed all the same is decoded, within the limit."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise FetchFailed(f"page sent as {encoding[:20]}, not read")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    try:
        inflater = zlib.decompressobj(wbits)
        text = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise FetchFailed(f"request failed (bad {encoding} data)") from None
    if len(text) > max_bytes:
        raise _too_big(max_bytes)
    if not inflater.eof:  # the stream stopped short: part of a page is no page
        raise FetchFailed(f"request failed (bad {encoding} data)")
    return text


def _failure(exc: OSError, *, connecting: bool) -> FetchFailed:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return FetchTimedOut()
    if isinstance(exc, socket.gaierror):
        return FetchFailed("host not found")
    if isinstance(exc, ConnectionRefusedError):
        return FetchFailed("connection refused")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or not connecting:
        return FetchFailed(CLOSED_EARLY)
    return FetchFailed("cannot connect")


def _get_https(client: httpx.Client, url: str, headers: Mapping[str, str], deadline: float, max_bytes: int) -> Answer:
    import httpx

    remaining = deadline - time.monotonic()
    request_headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **headers}
    timeout = httpx.Timeout(remaining)
    try:
        with client.stream("GET", url, headers=request_headers, timeout=timeout) as response:
            if response.status_code != 200:
                return Answer(response.status_code)
            said = response.headers
            length = said.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise _too_big(max_bytes)
            # iter_bytes decodes what a server encoded although asked for identity
            chunks = response.iter_bytes(CHUNK_BYTES)
            body = _read_chunks(lambda: next(chunks, b""), deadline, max_bytes)
            return Answer(200, body, said.get("content-type", ""), said.get("process-start-time-unix", ""))
    except httpx.TimeoutException:
        raise FetchTimedOut() from None
    except httpx.ConnectError as exc:
        raise FetchFailed(_connect_reason(exc)) from None
    except (httpx.RemoteProtocolError, httpx.ReadError):
        raise FetchFailed(CLOSED_EARLY) from None
    except httpx.HTTPError as exc:  # the class name only: messages may quote the request
        raise _request_failed(exc) from None


def _connect_reason(exc: Exception) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text or "resolution" in text:
        return "host not found"
    if "ssl" in text or "certificate" in text:
        return "TLS handshake failed"
    return "cannot connect"


def _request_failed(exc: Exception) -> FetchFailed:
    return FetchFailed(f"request failed ({type(exc).__name__})")  # its message may quote the request


def _too_big(max_bytes: int) -> FetchFailed:
    return FetchFailed(f"page over {_size_text(max_bytes)}, not read")


def _size_text(n_bytes: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:g} {unit}"
    return f"{n_bytes} bytes"
