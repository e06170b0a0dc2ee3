"""GET one stats page within a deadline and a size limit: ``http.client`` for plain http,
httpx for https.

Why two clients: httpx costs about 0.3 ms of CPU a request more than the standard library's
``http.client`` on the same keep-alive request (benchmarks/bench_http.py: 0.60 against
0.22 ms for a 128 KiB page), and four endpoints' worth of that was the whole tick's budget
(issue 13). Inference servers' stats are nearly always plain http on loopback or inside a
cluster, so each collector gets a keep-alive ``http.client`` connection of its own, read by
one thread at a time (``poll_all`` never starts a second read of an endpoint whose first is
still going). https endpoints keep httpx, for its certificate handling, with one client for
all of them; httpx is imported only when one is read.

Both ways give the same ``Answer`` or raise ``FetchFailed`` with the same few words, so the
collector cannot tell them apart: nothing is followed (a redirect is its status), the body is
asked for as ``identity`` and cut at ``max_bytes`` and at the deadline, and a keep-alive
connection the server closed while idle is retried once at once. Over plain http every socket
read waits only for the time left, so a server dripping its status line, headers or chunk sizes
is cut at the deadline too; over https httpx bounds each of those reads by the time left at the
start of the request, not the whole of them.
"""

from __future__ import annotations

import http.client
import math
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from tokentop import __version__

if TYPE_CHECKING:
    import httpx
    from _typeshed import WriteableBuffer

CHUNK_BYTES = 1 << 16
USER_AGENT = f"tokentop/{__version__}"
CLOSED_EARLY = "connection closed before the answer was complete"
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = "=&%:@!$'()*+,;/?~"
# A keep-alive connection the server closed while it sat idle fails like this on first use.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
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
        self._plain: http.client.HTTPConnection | None = None
        self._plain_to: tuple[str, int] | None = None
        self._targets: dict[str, tuple[str, int, str]] = {}  # url -> host, port, path and query
        self._closed = False  # closed by another thread (the sampler's stop): a read under way ends

    @property
    def is_open(self) -> bool:
        """A plain-http connection is open: the next read needs no connect (nor a name lookup)."""
        plain = self._plain
        return plain is not None and plain.sock is not None

    def get(self, url: str, headers: Mapping[str, str], deadline: float, max_bytes: int) -> Answer:
        """The answer to a GET of ``url``; raises ``FetchFailed``. ``deadline``: monotonic
        seconds by which the whole body must be in."""
        if deadline - time.monotonic() <= 0:
            raise FetchTimedOut()
        if url.startswith("https://"):
            return _get_https(self._client.https_client(), url, headers, deadline, max_bytes)
        host, port, target = self._target(url)
        try:
            return self._get_plain(host, port, target, headers, deadline, max_bytes)
        except BaseException as exc:
            self._close_plain()  # whatever was half-read must not be read as the next answer
            if self._stopped() and not isinstance(exc, FetchFailed):
                raise FetchFailed("stopped") from None  # the connection was closed under the read
            raise

    def close(self) -> None:
        self._closed = True
        self._close_plain()
        self._client.forget(self)

    def _stopped(self) -> bool:
        return self._closed or self._client.closed

    def _target(self, url: str) -> tuple[str, int, str]:
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise FetchFailed("not an http URL")
            try:
                port = parts.port or 80
            except ValueError:
                raise FetchFailed("not an http URL") from None
            # as httpx did: spaces and other letters percent-encoded, what is already encoded kept
            target = quote(parts.path or "/", safe=_PATH_SAFE)
            if parts.query:
                target += "?" + quote(parts.query, safe=_QUERY_SAFE)
            if len(self._targets) >= 16:  # a collector asks for a handful of URLs
                self._targets.clear()
            found = self._targets[url] = (parts.hostname, port, target)
        return found

    def _get_plain(
        self, host: str, port: int, target: str, headers: Mapping[str, str], deadline: float, max_bytes: int
    ) -> Answer:
        for attempt in (1, 2):
            connection, reused = self._connect(host, port, deadline)
            try:
                _set_deadline(connection, deadline)
                connection.putrequest("GET", target, skip_accept_encoding=True)
                connection.putheader("Accept-Encoding", "identity")
                connection.putheader("User-Agent", USER_AGENT)
                for name, value in headers.items():
                    connection.putheader(name, value)
                connection.endheaders()
                response = connection.getresponse()
            except _STALE_CONNECTION:
                self._close_plain()
                if reused and attempt == 1:
                    continue  # the server closed the idle connection: once more, afresh
                raise FetchFailed(CLOSED_EARLY) from None
            except OSError as exc:
                raise _failure(exc, connecting=not reused) from None
            except http.client.HTTPException as exc:
                raise _request_failed(exc) from None
            except UnicodeError:  # a host name http.client cannot write
                raise FetchFailed("not an http URL") from None
            return _read_plain(connection, response, deadline, max_bytes)
        raise AssertionError("unreachable")  # pragma: no cover  # the loop returns or raises

    def _connect(self, host: str, port: int, deadline: float) -> tuple[http.client.HTTPConnection, bool]:
        """The open connection to ``host:port``, or a new one (connected here, so that a
        refused or unreachable server is told from one that closed on us)."""
        if self._plain is not None and self._plain_to == (host, port) and self._plain.sock is not None:
            return self._plain, True
        self._close_plain()
        if self._stopped():
            raise FetchFailed("stopped")
        connection = _Connection(host, port, timeout=max(deadline - time.monotonic(), 1e-3))
        try:
            connection.connect()  # the name lookup in it has no timeout of its own: checked after
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            connection.close()
            raise _failure(exc, connecting=True) from None
        if self._stopped() or time.monotonic() > deadline:
            connection.close()
            raise FetchFailed("stopped") if self._stopped() else FetchTimedOut()
        self._plain, self._plain_to = connection, (host, port)
        return connection, False

    def _close_plain(self) -> None:
        if self._plain is not None:
            self._plain.close()
            self._plain = None


class _DeadlineSocket(socket.socket):
    """A socket whose every read waits only until ``deadline`` (monotonic seconds): a server
    dripping bytes into a header line, a chunk size or endless trailers cannot hold a read
    past it, nor can one that goes silent in an answer that closes its connection
    (http.client hands that socket to the response, out of ``_set_deadline``'s reach)."""

    deadline = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("past the deadline")
        self.settimeout(remaining)
        return super().recv_into(buffer, nbytes, flags)


class _Connection(http.client.HTTPConnection):
    auto_open = 0  # never reconnect behind our back: a closed connection is a failed read

    def connect(self) -> None:
        super().connect()
        plain = self.sock
        self.sock = _DeadlineSocket(plain.family, plain.type, plain.proto, plain.detach())


def _read_plain(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float, max_bytes: int
) -> Answer:
    try:
        if response.status != 200:
            connection.close()  # the body is not wanted: a fresh connection next time
            return Answer(response.status)
        length = response.getheader("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise _too_big(max_bytes)
        encoding = response.getheader("Content-Encoding", "identity").strip().lower()
        body = _read_chunks(lambda: response.read1(CHUNK_BYTES), deadline, max_bytes)
        if response.length:  # the server closed before the length it announced
            raise FetchFailed(CLOSED_EARLY)
        response.close()  # read to its end: the connection is ready for the next request
        body = _decoded(body, encoding, max_bytes)
        return Answer(
            200, body, response.getheader("Content-Type", ""), response.getheader("Process-Start-Time-Unix", "")
        )
    except OSError as exc:
        raise _failure(exc, connecting=False) from None
    except http.client.IncompleteRead:
        raise FetchFailed(CLOSED_EARLY) from None
    except http.client.HTTPException as exc:
        raise _request_failed(exc) from None


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


def _set_deadline(connection: http.client.HTTPConnection, deadline: float) -> None:
    """Every later read and write of the connection's socket waits until ``deadline`` at most."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchTimedOut()
    connection.timeout = remaining
    if connection.sock is not None:
        connection.sock.settimeout(remaining)
        if isinstance(connection.sock, _DeadlineSocket):
            connection.sock.deadline = deadline


def _failure(exc: OSError, *, connecting: bool) -> FetchFailed:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return FetchTimedOut()
    if isinstance(exc, socket.gaierror):
        return FetchFailed("host not found")
    if isinstance(exc, ConnectionRefusedError):
        return FetchFailed("connection refused")
    if isinstance(exc, _STALE_CONNECTION) or not connecting:
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
