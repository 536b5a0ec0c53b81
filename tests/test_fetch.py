"""translators/fetch.py: what the gateway fetches on a client's behalf (images; RAG `https://` sources)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.errors import InvalidRequest
from tests.fakes.server import serve_app
from translators.fetch import ALLOW_PRIVATE_ENV, FetchBudget, FetchURL, fetch_public_url, parse_fetch_url


@pytest.mark.parametrize(("url", "expected"), [
    ("https://images.example.com/a.png", FetchURL("https", "images.example.com", 443, "/a.png")),
    ("http://example.com:8080/x?y=1", FetchURL("http", "example.com", 8080, "/x?y=1")),
    ("https://example.com", FetchURL("https", "example.com", 443, "/")),
    ("https://[2001:db8::1]:8443/i", FetchURL("https", "2001:db8::1", 8443, "/i")),
    ("https://EXAMPLE.com./p", FetchURL("https", "example.com.", 443, "/p")),
])
def test_parse_fetch_url(url: str, expected: FetchURL) -> None:
    assert parse_fetch_url(url) == expected


@pytest.mark.parametrize(("url", "why"), [
    ("https://user:pw@169.254.169.254/latest", "credentials"),
    ("https://good.example.com@127.0.0.1/", "credentials"),
    ("https://evil.example\\@good.example.com/", "backslashes"),
    ("https://127.0.0.1\\.good.example.com/", "backslashes"),
    ("https://127%2e0%2e0%2e1/", "host name"),
    ("https://good.example.com%2f@evil/", "credentials"),
    ("https://exa mple.com/", "spaces"),
    ("https://example.com/a\r\nHost: evil", "control characters"),
    ("https://under_score.example.com/", "host name"),
    ("ftp://example.com/a.png", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("https:///nohost", "host name"),
    ("https://example.com:99999/", "Port out of range"),
    ("https://[::1/", "Invalid IPv6"),
])
def test_parse_fetch_url_refuses_what_parsers_disagree_on(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_fetch_url(url, param="rag.sources[0]")
    assert why in info.value.message and info.value.param == "rag.sources[0]"


@pytest.fixture(scope="module")
def image_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def image(request: Request) -> Response:
        seen.append({"host": request.headers.get("host"), "path": request.url.path})
        size = int(request.query_params.get("size", "100"))
        return Response(b"\x89PNG" + b"x" * (size - 4), media_type="image/png")

    async def redirect(request: Request) -> Response:
        return Response(status_code=302, headers={"location": "http://169.254.169.254/"})

    app = Starlette(routes=[Route("/img.png", image), Route("/redirect", redirect)])
    with serve_app(app) as url:
        yield url, seen


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> list[str]:
    """Resolve names through `answers` only (no system DNS), counting the look-ups."""
    looked_up: list[str] = []
    real = asyncio.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in answers:
            looked_up.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        if isinstance(host, str) and host.endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "unknown test host")
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return looked_up


async def test_connects_to_the_checked_address_with_the_name_in_host(
        image_server: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    base, seen = image_server
    port = base.rsplit(":", 1)[1]
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    looked_up = _fake_dns(monkeypatch, {"images.test": "127.0.0.1"})
    body, content_type = await fetch_public_url(f"http://images.test:{port}/img.png?size=64", 1000, 10)
    assert len(body) == 64 and content_type == "image/png"
    # One resolution (ours): had the HTTP client resolved the name again, "images.test" would not exist.
    assert looked_up == ["images.test"]
    assert seen[-1] == {"host": f"images.test:{port}", "path": "/img.png"}


async def test_a_name_that_resolves_to_a_private_address_is_refused(
        image_server: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    base, seen = image_server
    port = base.rsplit(":", 1)[1]
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    before = len(seen)
    for host, address in (("rebind.test", "127.0.0.1"), ("meta.test", "169.254.169.254"), ("lan.test", "10.0.0.7")):
        _fake_dns(monkeypatch, {host: address})
        with pytest.raises(InvalidRequest, match="not a public address"):
            await fetch_public_url(f"http://{host}:{port}/img.png", 1000, 10)
    with pytest.raises(InvalidRequest, match="not a public address"):
        await fetch_public_url(f"http://127.0.0.1:{port}/img.png", 1000, 10)
    assert len(seen) == before  # nothing reached the server


@pytest.mark.parametrize(("path", "max_bytes", "budget", "error"), [
    ("/img.png?size=5000", 1000, None, "larger than 1000 bytes"),
    ("/img.png?size=900", 1000, 500, "exceeds 500 bytes in total"),
    ("/redirect", 1000, None, "HTTP 302"),  # redirects are not followed
    ("/missing.png", 1000, None, "HTTP 404"),
])
async def test_limits(image_server: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
                      path: str, max_bytes: int, budget: int | None, error: str) -> None:
    base, _ = image_server
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    with pytest.raises(InvalidRequest, match=error):
        await fetch_public_url(base + path, max_bytes, 10, budget=FetchBudget(budget) if budget else None)


async def test_one_budget_across_a_requests_images(image_server: tuple[str, list[dict[str, Any]]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from translators import common

    base, _ = image_server
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    monkeypatch.setattr(common, "IMAGE_MAX_TOTAL_BYTES", 2500)
    ok = await common.load_images([f"{base}/img.png?size=1000", f"{base}/img.png?size=1000&n=2"])
    assert [len(body) for _, body in ok.values()] == [1000, 1000]
    with pytest.raises(InvalidRequest, match="exceeds 2500 bytes in total"):
        await common.load_images([f"{base}/img.png?size=1000&n={i}" for i in range(3)])
