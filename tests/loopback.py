"""A tiny threaded HTTP server on 127.0.0.1 that serves scripted replies per path.

    with LoopbackServer() as server:
        server.route("/metrics", "vllm:prompt_tokens_total 5\\n")         # 200, text
        server.route("/slots", Reply(status=501))                         # any status
        server.route("/metrics", Reply(body=page, delay_s=2))             # slow
        server.route("/metrics", "a 1\\n", "a 2\\n")                        # one per request, last repeats
        server.route("/metrics", lambda seen: Reply(body=f"a {len(server.requests)}\\n"))
        httpx.get(server.url + "/metrics")
        server.requests[-1].headers["authorization"]
        server.reset()                                                    # no routes, no requests

Routes can be changed between requests. Unknown paths answer 404. Replies can wait before
answering, close the connection without a word, announce more bytes than they send, or stream
a body (from a function returning an iterable, e.g. 50 MB made on the fly) close-delimited.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    body: bytes | str = b""
    status: int = 200
    content_type: str = PROMETHEUS_TEXT
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait this long before answering (cut short when the server closes)."""
    drop: bool = False
    """Close the connection without answering."""
    declared_length: int | None = None
    """Content-Length to announce instead of the body's: more than is sent makes a cut answer."""
    stream: Callable[[], Iterable[bytes]] | None = None
    """Body made on the fly, sent without Content-Length; the connection closes at its end."""

    def body_bytes(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    query: str
    headers: dict[str, str]  # lower-case names


ReplySpec = Reply | str | bytes | Callable[[Seen], Reply]


class LoopbackServer:
    def __init__(self) -> None:
        self._routes: dict[str, list[ReplySpec]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[Seen] = []
        self._http = _Server(("127.0.0.1", 0), _Handler)
        self._http.owner = self
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, path: str, *replies: ReplySpec) -> None:
        """Serve ``replies`` at ``path``, one per request; the last one repeats."""
        if not replies:
            raise ValueError("route() needs at least one reply")
        with self._lock:
            self._routes[path] = list(replies)

    def reset(self) -> None:
        """Forget every route and every request seen."""
        with self._lock:
            self._routes.clear()
            self.requests.clear()

    def close(self) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _next_reply(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            script = self._routes.get(seen.path)
            if script is None:
                return Reply(body="not found\n", status=404)
            spec = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(spec, Reply):
            return spec
        if isinstance(spec, (str, bytes)):
            return Reply(body=spec)
        return spec(seen)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LoopbackServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-answer is part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        seen = Seen(parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()})
        reply = owner._next_reply(seen)
        if reply.delay_s and owner._stopping.wait(reply.delay_s):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            return
        try:
            self._answer(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _answer(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.stream is not None:
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for chunk in reply.stream():
                if self.server.owner._stopping.is_set():
                    return
                self.wfile.write(chunk)
            return
        body = reply.body_bytes()
        length = reply.declared_length if reply.declared_length is not None else len(body)
        self.send_header("Content-Length", str(length))
        if reply.declared_length is not None and reply.declared_length != len(body):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass
