"""The server's edge under hostile or careless clients (issue 14): disconnects, slow clients, header
injection, metric cardinality, aborted streams, the end of the SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest

from proxy.metrics import Metrics
from proxy.middleware import safe_headers
from tests.fakes import anthropic as fake_anthropic
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, run_proxy


def wait_until(condition, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class HangingUpstream:
    """An HTTP server on 127.0.0.1 that reads each request and never answers.

    Counts the requests it received and the connections the client closed, so a
    test sees whether the gateway gave up on the upstream and tried again.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.closed = 0
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            self.requests += 1
            while await reader.read(1024):  # until the gateway closes the connection
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.closed += 1
        writer.close()

    def __enter__(self) -> HangingUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def raw_request(url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> socket.socket:
    """Send one POST on a fresh socket and return it unread (the caller decides when to hang up)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n{extra}"
                 f"content-length: {len(body)}\r\n\r\n".encode("latin-1") + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# -- a client that leaves before the first byte ------------------------------------------------------

@pytest.fixture(scope="module")
def hanging() -> Iterator[HangingUpstream]:
    with HangingUpstream() as upstream:
        yield upstream


def _hang_config(port: int, extra_server: str = "") -> str:
    return f"""
server: {{request_timeout_s: 60{extra_server}}}
providers:
  hang: {{type: openai, api_key: sk-test-hang, base_url: "http://127.0.0.1:{port}/v1", max_retries: 2, timeout_s: 2}}
  hang2: {{type: openai, api_key: sk-test-hang, base_url: "http://127.0.0.1:{port}/v1", max_retries: 0}}
  demo: {{type: mock, chunk_delay_ms: 30}}
  fake: {{type: mock}}
models:
  stuck: {{provider: hang, model: stuck}}
  stuck2: {{provider: hang2, model: stuck}}
  demo: {{provider: demo}}
"""


@pytest.fixture(scope="module")
def proxy(hanging: HangingUpstream) -> Iterator[RunningProxy]:
    with run_proxy(_hang_config(hanging.port)) as running:
        yield running


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream-before-first-chunk"])
def test_client_gone_before_first_byte_cancels_upstream_and_further_attempts(
        proxy: RunningProxy, hanging: HangingUpstream, stream: bool) -> None:
    before_requests, before_closed = hanging.requests, hanging.closed
    request_id = f"gone-early-{stream}"
    body = orjson.dumps({"model": "stuck", "fallbacks": ["stuck2"], "stream": stream,
                         "messages": [{"role": "user", "content": "hi"}]})
    client = raw_request(proxy.url, "/v1/chat/completions", body, {"x-request-id": request_id})
    wait_until(lambda: hanging.requests == before_requests + 1, what="the upstream call")
    client.close()
    entry = proxy.access_entry(request_id)  # written once the handler is done: no attempt can follow
    assert entry["status"] == 499 and entry["client_disconnected"] is True
    wait_until(lambda: hanging.closed == before_closed + 1, what="the upstream connection to close")
    # Without cancellation the attempt would time out after 2 s and be retried, then fall back:
    assert hanging.requests == before_requests + 1
    assert 'status="499"' in httpx.get(proxy.url + "/metrics").text


def test_stream_aborted_after_first_chunks_is_logged_499_with_relayed_chunks(proxy: RunningProxy) -> None:
    words = " ".join(f"w{i}" for i in range(300))
    body = orjson.dumps({"model": "demo", "stream": True, "messages": [{"role": "user", "content": words}]})
    client = raw_request(proxy.url, "/v1/chat/completions", body, {"x-request-id": "abort-mid"})
    seen = b""
    while seen.count(b"data: ") < 4:
        seen += client.recv(65536)
    client.close()
    entry = proxy.access_entry("abort-mid")
    assert entry["status"] == 499 and entry["client_disconnected"] is True
    assert 4 <= entry["relayed_chunks"] < 300 and entry["completion_tokens"] == entry["relayed_chunks"]
    assert entry["model"] == "demo" and entry["tokens_estimated"] is True
    assert "Traceback" not in proxy.logs()


# -- header injection ------------------------------------------------------------------------------

@pytest.mark.parametrize(("patch", "param"), [
    ({"model": "fake/x\r\nX: 1"}, "model"),
    ({"model": "fake/x\nX-Evil: 1"}, "model"),
    ({"model": "fake/a\x00b"}, "model"),
    ({"model": "demo", "fallbacks": ["fake/ok", "fake/b\rc"]}, "fallbacks[1]"),
    ({"model": "nope\r\n"}, "model"),
])
def test_control_characters_in_model_names_are_400(proxy: RunningProxy, patch: dict[str, object], param: str) -> None:
    for stream in (False, True):
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream, **patch}
        response = httpx.post(proxy.v1 + "/chat/completions", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("headers", "expected"), [
    ([(b"x-omni-dropped-params", b"seed,x\r\nX-Evil: 1")], [(b"x-omni-dropped-params", b"seed,x%0D%0AX-Evil: 1")]),
    ([(b"x-omni-upstream-model", b"a\x00b\x7f")], [(b"x-omni-upstream-model", b"a%00b%7F")]),
    ([(b"x-a", b"plain"), (b"x-b", b"tab\there")], [(b"x-a", b"plain"), (b"x-b", b"tab%09here")]),
    ([(b"x-a", b"plain")], [(b"x-a", b"plain")]),
])
def test_safe_headers(headers: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]) -> None:
    assert safe_headers(headers) == expected


def test_echoed_param_names_cannot_inject_headers() -> None:
    recorder = Recorder()
    with serve_app(fake_anthropic.make_app(recorder)) as upstream, run_proxy(f"""
providers:
  claude: {{type: anthropic, api_key: sk-ant-test, base_url: "{upstream}", max_retries: 0}}
models:
  claude: {{provider: claude, model: claude-haiku-4-5}}
""") as running:
        body = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "seed": 1,
                             "evil\r\nX-Evil: 1": True})
        sock = raw_request(running.url, "/v1/chat/completions", body, {"x-request-id": "inject", "connection": "close"})
        raw = read_all(sock)
        sock.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        lines = head.split(b"\r\n")
        assert not any(line.lower().startswith(b"x-evil") for line in lines)
        dropped = next(line for line in lines if line.startswith(b"x-omni-dropped-params:"))
        assert b"evil%0D%0AX-Evil: 1" in dropped
        assert orjson.loads(payload)["object"] == "chat.completion"
        assert running.access_entry("inject")["status"] == 200


# -- metrics cardinality ---------------------------------------------------------------------------

def test_metric_labels_stay_bounded_for_5000_unknown_names() -> None:
    metrics = Metrics(models=["demo"], providers=["demo", "openai"], deployments=[("demo", "mock-1")])
    from proxy.routing import Health
    from proxy.config import RouterConfig, Deployment

    health = Health(RouterConfig(cooldown_failures=1))
    for i in range(5000):
        metrics.observe("chat", f"openai/model-{i}", "openai", 200, 0.01)
        metrics.observe("chat", f"unknown-{i}", "", 404, 0.01)
        metrics.account(f"openai/model-{i}", "openai", {"prompt_tokens": 1, "completion_tokens": 1}, 0.001)
        health.record_failure(Deployment(name=f"openai/m{i}", provider="openai", model=f"m{i}"))
    metrics.observe("chat", "demo", "demo", 200, 0.01)
    text = metrics.render(health).decode()
    assert "model-" not in text and "unknown-" not in text and 'upstream_model="m1"' not in text
    assert 'omni_requests_total{model="other",provider="openai",route="chat",status="200"} 5000.0' in text
    assert 'model="demo"' in text
    assert len(text) < 20_000


def test_metrics_over_http_label_only_configured_names(proxy: RunningProxy) -> None:
    with httpx.Client() as client:
        for i in range(100):
            client.post(proxy.v1 + "/chat/completions", json={"model": f"no-such-model-{i}", "messages": [
                {"role": "user", "content": "x"}]})
            client.post(proxy.v1 + "/chat/completions", json={"model": f"fake/adhoc-{i}", "messages": [
                {"role": "user", "content": "x"}]})
        text = client.get(proxy.url + "/metrics").text
    assert "no-such-model" not in text and "adhoc-" not in text
    assert 'model="other",provider="fake"' in text and 'model="other",provider="",route="chat",status="404"' in text


# -- slow clients ----------------------------------------------------------------------------------

SLOW_CONFIG = """
server: {header_timeout_s: 1, body_timeout_s: 1, max_connections: 200}
providers: {demo: {type: mock}}
models: {demo: {provider: demo}}
"""


@pytest.fixture(scope="module")
def strict_proxy() -> Iterator[RunningProxy]:
    with run_proxy(SLOW_CONFIG) as running:
        yield running


@pytest.mark.parametrize(("sent", "status"), [
    (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-", b"408"),  # headers trickle, then stop
    (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"model\":", b"408"),  # body stalls
    (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"mod\r\n", b"408"),
    (b"", b""),  # connects and says nothing: closed without an answer
])
def test_stalled_requests_get_408_and_the_connection_is_closed(strict_proxy: RunningProxy, sent: bytes,
                                                               status: bytes) -> None:
    host, port = strict_proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(sent)
        raw = read_all(sock)  # the server answers, then closes (the socket timeout bounds the wait)
    assert raw[9:12] == status
    if status:
        assert orjson.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"


def test_a_thousand_trickling_connections_do_not_starve_health(strict_proxy: RunningProxy) -> None:
    host, port = strict_proxy.url.removeprefix("http://").split(":")
    socks = []
    try:
        for _ in range(1000):
            sock = socket.create_connection((host, int(port)), timeout=15)
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
            socks.append(sock)
        for _ in range(3):
            response = httpx.get(strict_proxy.url + "/health", timeout=10)
            assert response.status_code == 200 and response.json() == {"status": "ok"}
        response = httpx.post(strict_proxy.v1 + "/chat/completions", timeout=10,
                              json={"model": "demo", "messages": [{"role": "user", "content": "still here"}]})
        assert response.json()["choices"][0]["message"]["content"] == "You said: still here"
    finally:
        for sock in socks:
            sock.close()


# -- SIGTERM: the drain period ends with work in flight ---------------------------------------------

def test_drain_end_sends_server_shutting_down(hanging: HangingUpstream) -> None:
    with run_proxy(_hang_config(hanging.port, ", drain_timeout_s: 1")) as running:
        words = " ".join(f"w{i}" for i in range(400))  # 400 x 30 ms: far longer than the drain
        stream = raw_request(running.url, "/v1/chat/completions", orjson.dumps(
            {"model": "demo", "stream": True, "messages": [{"role": "user", "content": words}]}))
        seen = b""
        while b"data: " not in seen:
            seen += stream.recv(65536)
        before = hanging.requests
        waiting = raw_request(running.url, "/v1/chat/completions", orjson.dumps(
            {"model": "stuck", "messages": [{"role": "user", "content": "hi"}]}))
        wait_until(lambda: hanging.requests == before + 1, what="the upstream call")
        running.process.send_signal(signal.SIGTERM)
        seen += read_all(stream)
        answer = read_all(waiting)
        assert running.process.wait(timeout=20) == 0
        logs = running.logs()
    events = [e for e in seen.partition(b"\r\n\r\n")[2].split(b"\n\n") if b"data: " in e]
    last = orjson.loads(events[-1][events[-1].index(b"data: ") + 6:])
    assert last["error"]["code"] == "server_shutting_down" and b"[DONE]" not in seen
    assert answer.startswith(b"HTTP/1.1 503")
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "server_shutting_down"
    assert "Traceback" not in logs and "CancelledError" not in logs


@pytest.mark.parametrize(("soft", "configured", "effective"), [
    (1024, 2048, 960),  # AWS Lambda's limit: keep 64 descriptors for upstream connections and files
    (1_048_576, 2048, 2048),
    (100, 2048, 36),
])
def test_max_connections_stays_below_the_fd_limit(monkeypatch: pytest.MonkeyPatch, soft: int, configured: int,
                                                  effective: int) -> None:
    import resource

    from proxy.config import ServerConfig
    from proxy.edge import EDGE_STATE_KEY, edge_settings

    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, 1_048_576))
    assert edge_settings(ServerConfig(max_connections=configured))[EDGE_STATE_KEY] == (10.0, effective)


def test_the_image_documents_its_file_descriptor_limit() -> None:
    from pathlib import Path

    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    assert "RLIMIT_NOFILE" in dockerfile and "--ulimit nofile=" in dockerfile and "max_connections" in dockerfile


def test_a_provider_the_sdk_cannot_build_is_503_not_500() -> None:
    """A setting `check` cannot judge (here a region boto3 refuses) fails the request cleanly."""
    pytest.importorskip("boto3")
    from starlette.testclient import TestClient

    from proxy.app import create_app
    from proxy.config import parse_config

    config = parse_config("""
providers:
  aws: {type: bedrock, region: "not a region", aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret-key-1234}
models:
  claude: {provider: aws, model: anthropic.claude-3-haiku}
""", {})
    response = TestClient(create_app(config)).post("/v1/chat/completions", json={
        "model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "provider_unavailable" and "could not be set up" in error["message"]
    assert "secret-key-1234" not in response.text


@pytest.mark.parametrize(("packets", "whole"), [
    ([b"POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"], True),
    ([b"POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel"], False),  # a stalled body keeps its timer
    ([b"POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", b"hello"], True),
])
async def test_the_protocol_marks_a_body_that_arrived_whole(packets: list[bytes], whole: bool) -> None:
    """Its middleware then reads it with no stall timer (the hot path's one-packet request)."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from proxy.config import ServerConfig
    from proxy.edge import BODY_COMPLETE
    from proxy.edge_protocol import GuardedHttpToolsProtocol
    from proxy.middleware import GatewayMiddleware

    seen: list[dict[str, object]] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(scope)

    class Transport(asyncio.Transport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    config = Config(app=app, lifespan="off")
    config.load()
    protocol = GuardedHttpToolsProtocol(config, ServerState(), {})
    protocol.connection_made(Transport())
    for packet in packets:
        protocol.data_received(packet)
    scope = protocol.scope
    assert bool(scope.get(BODY_COMPLETE)) is whole
    protocol.connection_lost(None)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"hello", "more_body": False}

    middleware = GatewayMiddleware(app, ServerConfig())
    guarded = middleware._guarded(scope, receive, dict(scope["headers"]))  # type: ignore[arg-type]
    assert (guarded is receive) is whole
