"""The Prometheus API client (``tokentop.fleet.prometheus_api``) against a real loopback HTTP
server that answers as scripted: every failure is one ``PromError`` line, never a traceback, and
the bearer token is sent but never said."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tokentop.config import PrometheusConfig
from tokentop.fleet import prometheus_api
from tokentop.fleet.prometheus_api import PromClient, PromError

EMPTY = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
Script = Callable[[BaseHTTPRequestHandler], None]


class ScriptedPrometheus:
    """Answers every ``POST`` with ``script`` (the handler does the writing); keeps the
    ``Authorization`` headers it saw."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.authorizations: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.authorizations.append(self.headers.get("Authorization"))
                owner.script(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(body: bytes, status: int = 200) -> Script:
    def write(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return write


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedPrometheus]]:
    opened: list[ScriptedPrometheus] = []

    def start(script: Script) -> ScriptedPrometheus:
        opened.append(ScriptedPrometheus(script))
        return opened[-1]

    yield start
    for server in opened:
        server.close()


def client(url: str, **settings: object) -> PromClient:
    return PromClient(PrometheusConfig(url=url, **settings))  # type: ignore[arg-type]


def test_the_bearer_token_is_sent_and_never_said(
    serve: Callable[[Script], ScriptedPrometheus], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(answer(b'{"status":"error","errorType":"unauthorized","error":"bad token"}', 401))
    monkeypatch.setenv("TT_PROM_TOKEN", "s3cret-value")
    prom = client(server.url, token_env="TT_PROM_TOKEN")
    with pytest.raises(PromError) as failed:
        prom.instant("up")
    assert server.authorizations == ["Bearer s3cret-value"]
    assert "unauthorized" in str(failed.value) and "s3cret" not in str(failed.value) + repr(prom)


def test_an_unset_token_variable_is_named_and_nothing_is_asked(
    serve: Callable[[Script], ScriptedPrometheus], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(answer(EMPTY))
    monkeypatch.delenv("TT_PROM_TOKEN", raising=False)
    prom = client(server.url, token_env="TT_PROM_TOKEN")
    with pytest.raises(PromError, match=r"environment variable TT_PROM_TOKEN .* is not set"):
        prom.instant("up")
    assert server.authorizations == [] and prom.queries == 0


def test_an_answer_that_trickles_past_the_timeout_is_cut(serve: Callable[[Script], ScriptedPrometheus]) -> None:
    """Each piece comes well within the read timeout; the whole does not come within the timeout."""

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        for _ in range(40):
            handler.wfile.write(b" " * 64)
            handler.wfile.flush()
            time.sleep(0.05)
        handler.wfile.write(EMPTY)

    prom = client(serve(trickle).url, timeout_s=0.5)
    with pytest.raises(PromError, match=r"did not answer within 0\.5 s"):
        prom.instant("up")


def test_an_answer_over_the_cap_is_refused(
    serve: Callable[[Script], ScriptedPrometheus], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus_api, "MAX_ANSWER_BYTES", 1000)
    prom = client(serve(answer(b" " * 5000 + EMPTY)).url)
    with pytest.raises(PromError, match="answered more than"):
        prom.instant("up")


@pytest.mark.parametrize(
    ("url", "said"),
    [("http://a..b:9090", "unreachable: UnicodeError"), ("http://127.0.0.1:1", "unreachable: ConnectError")],
)
def test_a_url_that_cannot_be_reached_is_one_line(url: str, said: str) -> None:
    with pytest.raises(PromError, match=said) as failed:
        client(url).instant("up")
    assert "\n" not in str(failed.value)


def test_after_a_failure_prometheus_is_not_asked_again_until_the_backoff_ends(
    serve: Callable[[Script], ScriptedPrometheus],
) -> None:
    server = serve(answer(b"oops", 503))
    now = [100.0]
    prom = PromClient(PrometheusConfig(url=server.url), clock=lambda: now[0])
    with pytest.raises(PromError, match="HTTP 503"):
        prom.instant("up")
    with pytest.raises(PromError, match="retrying in 1 s"):
        prom.instant("up")
    assert len(server.authorizations) == 1
    now[0] += 1.5
    server.script = answer(EMPTY)
    assert prom.instant("up").samples == () and len(server.authorizations) == 2
