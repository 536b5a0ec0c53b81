"""The lean upstream HTTP client (translators/http.py) against a scripted raw-socket server on 127.0.0.1.

Each test scripts the server's side byte for byte (keep-alive, chunked bodies,
a connection closed while idle or mid-body, silence), and checks what the
client returns and whether it reuses, drops or re-opens connections.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httptools
import httpx
import orjson
import pytest

from proxy.config import Deployment, ProviderConfig
from proxy.errors import RateLimited
from tests.fakes import openai as fake_openai
from tests.fakes.raw_http import Peer, ok, serve_in_thread
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import run_proxy, sse_events
from translators.http import Client, UpstreamConnectError, UpstreamConnectionLost, env_proxy_for
from translators.openai import OpenAIProvider

Script = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def response(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's body, or None when the client closed the connection."""
    done: list[bytes] = []
    parts: list[bytes] = []

    class Handler:
        def on_body(self, body: bytes) -> None:
            parts.append(body)

        def on_message_complete(self) -> None:
            done.append(b"".join(parts))

    parser = httptools.HttpRequestParser(Handler())
    while not done:
        data = await reader.read(65536)
        if not data:
            return None
        parser.feed_data(data)
    return done[0]


class Server:
    """Counts connections; `script(n, reader, writer)` answers one request, returns False to close."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await read_request(reader) is not None:
                self.requests += 1
                if not await self.script(self.requests, reader, writer):
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def answer(body: bytes, *extra: str, keep_open: bool = True) -> Script:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(body, *extra))
        await writer.drain()
        return keep_open
    return script


async def body_of(client: Client) -> bytes:
    return await (await client.send("/chat", b"{}")).aread()


async def test_keep_alive_reuses_one_connection() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(b"answer %d" % n))
        return True

    server = Server(script)
    async with server as url:
        client = Client(url, {"authorization": "Bearer k", "x-extra": "1"})
        assert [await body_of(client) for _ in range(3)] == [b"answer 1", b"answer 2", b"answer 3"]
        await client.aclose()
    assert server.connections == 1


async def test_connection_close_and_concurrency_open_new_connections() -> None:
    server = Server(answer(b"ok", "connection: close", keep_open=False))
    async with server as url:
        client = Client(url, {})
        assert [await body_of(client) for _ in range(2)] == [b"ok", b"ok"]
    assert server.connections == 2

    server = Server(answer(b"ok"))
    async with server as url:
        client = Client(url, {})
        assert await asyncio.gather(*(body_of(client) for _ in range(5))) == [b"ok"] * 5
        assert await body_of(client) == b"ok"
    assert server.connections == 5, "five at once need five connections; the sixth reuses one"


async def test_idle_connection_closed_by_the_upstream_is_replaced() -> None:
    # The server answers, then closes without saying so (an idle timeout on its side).
    server = Server(answer(b"ok", keep_open=False))
    async with server as url:
        client = Client(url, {})
        assert await body_of(client) == b"ok"
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        assert await body_of(client) == b"ok"
    assert server.connections == 2

    # The upstream read the second request, then closed without a byte of answer. It may
    # have acted on it: a POST is not sent twice (the router decides about retries).
    async def racing(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            return False
        writer.write(response(b"answer %d" % n))
        return True

    server = Server(racing)
    async with server as url:
        client = Client(url, {})
        assert await body_of(client) == b"answer 1"
        with pytest.raises(UpstreamConnectionLost):
            await body_of(client)
        assert await body_of(client) == b"answer 3"
    assert server.connections == 2 and server.requests == 3


async def test_chunked_stream_arrives_piece_by_piece() -> None:
    release = asyncio.Event()

    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n")
        writer.write(b"6\r\nfirst \r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        return True

    async with Server(script) as url:
        client = Client(url, {})
        stream = await client.send("/chat", b"{}")
        assert stream.status == 200 and stream.header("Content-Type") == "text/event-stream"
        pieces = stream.aiter_bytes()
        assert await anext(pieces) == b"first "
        release.set()
        assert [p async for p in pieces] == [b"second"]


async def test_body_delimited_by_close_is_read_to_the_end() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\": 1}")
        return False

    async with Server(script) as url:
        assert await body_of(Client(url, {})) == b'{"a": 1}'


async def test_large_body_survives_pausing_for_a_slow_reader() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, well over the high-water mark

    async with Server(answer(body)) as url:
        client = Client(url, {})
        stream = await client.send("/chat", b"{}")
        digest, size = hashlib.sha256(), 0
        async for piece in stream.aiter_bytes():
            await asyncio.sleep(0.001)
            digest.update(piece)
            size += len(piece)
        assert (size, digest.digest()) == (len(body), hashlib.sha256(body).digest())
        assert await body_of(client) == body, "the connection is reusable after a paused read"


async def test_failures_are_typed() -> None:
    closed = Client("http://127.0.0.1:9/v1", {})  # nothing listens on the discard port here
    with pytest.raises(UpstreamConnectError):
        await closed.send("/chat", b"{}")

    async def cut(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        return False

    async with Server(cut) as url:
        stream = await Client(url, {}).send("/chat", b"{}")
        with pytest.raises(UpstreamConnectionLost):
            await stream.aread()

    async def silent(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with Server(silent) as url:
        with pytest.raises(TimeoutError):
            await Client(url, {}, timeout=0.1).send("/chat", b"{}")

    async def garbage(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        return True

    async with Server(garbage) as url:
        with pytest.raises(UpstreamConnectionLost):
            await Client(url, {}).send("/chat", b"{}")


async def test_a_response_abandoned_midway_drops_its_connection() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        try:
            await reader.read(1)  # returns at EOF: the client hung up
        finally:
            dropped.set()
        return False

    dropped = asyncio.Event()
    server = Server(script)
    async with server as url:
        client = Client(url, {})
        stream = await client.send("/chat", b"{}")
        pieces = stream.aiter_bytes()
        assert await anext(pieces) == b"hello"
        await pieces.aclose()
        await asyncio.wait_for(dropped.wait(), 5)


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only that certificate) for `localhost`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    return server, client


async def test_https_verifies_the_certificate_and_host(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(response(b"secret answer"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    client = Client(f"https://localhost:{port}/v1", {}, ssl_context=client_tls)
    assert [await body_of(client), await body_of(client)] == [b"secret answer"] * 2
    assert names == ["localhost"], "one TLS handshake, with SNI, for two requests"
    with pytest.raises(UpstreamConnectError):  # the system trust store does not know this certificate
        await body_of(Client(f"https://localhost:{port}/v1", {}))
    server.close()


async def test_request_bytes_on_the_wire() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(2))
        writer.write(response(b"{}"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(f"http://user@127.0.0.1:{port}/base/v1/", {"Authorization": "Bearer k", "Host": "ignored",
                                                             "Content-Length": "1"})
    await body_of(client)
    server.close()
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /base/v1/chat HTTP/1.1"
    assert sorted(lines[1:]) == sorted([f"host: 127.0.0.1:{port}".encode(), b"Authorization: Bearer k",
                                        b"accept-encoding: gzip, deflate", b"content-length: 2"]) and body == b'{}'


async def test_sender_maps_statuses_and_uses_the_sdk_behind_an_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def limited(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        body = b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'
        writer.write(response(body, "retry-after: 7").replace(b"200 OK", b"429 Too Many Requests"))
        return True

    async with Server(limited) as url:
        provider = OpenAIProvider(ProviderConfig(name="up", type="openai", settings={"api_key": "k", "base_url": url}))
        with pytest.raises(RateLimited) as info:
            await provider.chat({"messages": []}, Deployment(name="m", provider="up", model="m"))
        assert info.value.message == "slow down" and info.value.retry_after == 7
        await provider.aclose()

    # HTTP_PROXY set: the SDK (httpx2) does the sending, through the proxy. The fake upstream
    # stands in for the proxy: absolute-form requests reach its routes; the real host never resolves.
    recorder = Recorder()
    with serve_app(fake_openai.make_app(recorder)) as fake:
        monkeypatch.setenv("HTTP_PROXY", fake)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        base = "http://upstream.invalid/v1"
        assert env_proxy_for(base) == fake
        provider = OpenAIProvider(ProviderConfig(name="up", type="openai", settings={"api_key": "k", "base_url": base}))
        assert provider._sender.via_sdk
        result = await provider.chat({"messages": [{"role": "user", "content": "via proxy"}]},
                                     Deployment(name="m", provider="up", model="gpt-4o"))
        assert result["choices"][0]["message"]["content"] == "echo: via proxy"
        chunks = [c async for batch in provider.stream({"messages": [{"role": "user", "content": "a b"}]},
                                                       Deployment(name="m", provider="up", model="gpt-4o"))
                  for c in batch]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: a b"
        await provider.aclose()
    assert recorder.requests and recorder.last().headers["authorization"] == "Bearer k"



# -- through the gateway -------------------------------------------------------------------

def chat_completion(content: str) -> bytes:
    return orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "up",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def sse_chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    event = b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
                                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def gateway_config(url: str, request_timeout_s: float = 30) -> str:
    return (f"server:\n  request_timeout_s: {request_timeout_s}\nproviders:\n  up: {{type: openai, api_key: k, base_url: \"{url}\", "
            "max_retries: 0}\nmodels:\n  m: {provider: up, model: up}\n")


def test_through_the_gateway_an_early_hints_upstream_never_swaps_answers() -> None:
    """Issue 13's failure, end to end: 103 before every 200, answers echo the question; five sequential and
    eight concurrent requests each get their own answer."""
    async def handler(peer: Peer) -> None:
        while (body := await peer.request()) is not None:
            question = orjson.loads(body)["messages"][0]["content"]
            await peer.send(b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n")
            await peer.send(ok(chat_completion("answer to " + question), "content-type: application/json"))

    with serve_in_thread(handler) as (url, server), run_proxy(gateway_config(url)) as proxy:
        def ask(question: str) -> str:
            reply = httpx.post(proxy.v1 + "/chat/completions", timeout=10,
                               json={"model": "m", "messages": [{"role": "user", "content": question}]})
            assert reply.status_code == 200, reply.text
            return reply.json()["choices"][0]["message"]["content"]  # type: ignore[no-any-return]

        assert [ask(f"q{i}") for i in range(5)] == [f"answer to q{i}" for i in range(5)]
        with ThreadPoolExecutor(8) as pool:
            questions = [f"racer {i}" for i in range(8)]
            assert list(pool.map(ask, questions)) == [f"answer to {q}" for q in questions]


def test_through_the_gateway_streams_reuse_their_connection_and_end_at_the_request_timeout() -> None:
    async def handler(peer: Peer) -> None:
        while (body := await peer.request()) is not None:
            question = orjson.loads(body)["messages"][0]["content"]
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            await peer.send(sse_chunk("answer to "), sse_chunk(question))
            if question == "forever":  # a token every 0.1 s, never an end: the 5 s request timeout ends it
                while True:
                    await asyncio.sleep(0.1)
                    await peer.send(sse_chunk("."))
            await peer.send(sse_chunk(None, "stop"), b"e\r\ndata: [DONE]\n\n\r\n")
            await peer.send(b"0\r\n\r\n")  # the body's end in a read of its own

    # The first request imports the SDK, which takes a while on a busy machine: 5 s is the stream deadline.
    with serve_in_thread(handler) as (url, server), run_proxy(gateway_config(url, 5)) as proxy:
        def stream(question: str) -> list[bytes]:
            with httpx.stream("POST", proxy.v1 + "/chat/completions", timeout=10,
                              json={"model": "m", "stream": True,
                                    "messages": [{"role": "user", "content": question}]}) as reply:
                assert reply.status_code == 200
                return sse_events(reply)

        for i in range(3):
            events = stream(f"s{i}")
            assert events[-1] == b"[DONE]"
            text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
            assert text == f"answer to s{i}"
        assert server.connections == 1, "[DONE] and the chunked end apart still leave the connection reusable"
        events = stream("forever")
        assert events[-1] != b"[DONE]"
        error = orjson.loads(events[-1])["error"]
        assert error["type"] == "timeout_error" and "within 5 s" in error["message"], error
        assert sum(1 for e in events if b'"error"' in e) == 1


def test_https_proxies_from_the_environment_send_through_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy_for("https://api.example.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert env_proxy_for("https://api.example.com/v1") == "http://proxy.internal:3128"
    assert env_proxy_for("http://api.example.com/v1") is None, "HTTPS_PROXY is for https upstreams"
    monkeypatch.setenv("NO_PROXY", "example.com")
    assert env_proxy_for("https://api.example.com/v1") is None
    monkeypatch.delenv("NO_PROXY")
    provider = OpenAIProvider(ProviderConfig(name="up", type="openai",
                                             settings={"api_key": "k", "base_url": "https://api.example.com/v1"}))
    assert provider._sender.via_sdk, "an HTTPS proxy applies: the SDK's httpx stack (which speaks CONNECT) sends"


async def test_the_default_tls_context_trusts_ssl_cert_file(tmp_path: Path) -> None:
    """A fresh process each: the context is built once, from OpenSSL's default paths, which SSL_CERT_FILE overrides."""
    server_tls, _ = self_signed(tmp_path)
    code = (
        "import asyncio, sys\n"
        "from translators.http import Client, UpstreamConnectError\n"
        "async def main():\n"
        "    try:\n"
        "        r = await Client(sys.argv[1], {}).send('/chat', b'{}')\n"
        "        print((await r.aread()).decode())\n"
        "    except UpstreamConnectError:\n"
        "        print('refused')\n"
        "asyncio.run(main())\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await read_request(reader) is not None:
                writer.write(response(b"trusted"))
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()

    base = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}

    async def run(port: int, env: dict[str, str]) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, f"https://localhost:{port}/v1", stdout=asyncio.subprocess.PIPE,
            env={**base, **env}, cwd=Path(__file__).parent.parent)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        return out.decode().strip()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await run(port, {}) == "refused", "verification is on: the system store does not know this certificate"
        assert await run(port, {"SSL_CERT_FILE": str(tmp_path / "cert.pem")}) == "trusted"
    finally:
        server.close()
