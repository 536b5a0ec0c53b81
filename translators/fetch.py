"""Fetching a URL a client named, on the gateway's own behalf (image URLs for Gemini and Bedrock; RAG sources).

A client-chosen URL fetched from inside the network is an SSRF risk, so:

- one parser decides what is fetched (`parse_fetch_url`), and it refuses what URL
  parsers disagree on: userinfo (`https://good@evil/`), backslashes, percent-encoding
  or any character outside `[A-Za-z0-9.-]` in a host name, spaces and control
  characters anywhere, schemes other than http and https;
- the host name is resolved once and every address it has must be public
  (`ipaddress.is_global`; tests on 127.0.0.1 set `OMNI_LLM_ALLOW_PRIVATE_IMAGE_URLS=1`);
  the connection then goes to that checked address — the name only travels in the
  Host header and as TLS SNI / certificate name — so a DNS answer that changes
  between check and connect (rebinding) is never used;
- no redirects, no environment proxies, a byte cap (`FetchBudget` shares one cap
  across every fetch of a request) and one timeout over resolution and transfer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy.errors import InvalidRequest

ALLOW_PRIVATE_ENV = "OMNI_LLM_ALLOW_PRIVATE_IMAGE_URLS"
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class FetchURL:
    scheme: str
    host: str  # a host name, or an IP address without brackets
    port: int
    target: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class FetchBudget:
    """The bytes one request may still fetch, shared by all its fetches."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.remaining = max_bytes

    def take(self, count: int, url: str, param: str) -> None:
        self.remaining -= count
        if self.remaining < 0:
            raise InvalidRequest(f"fetched content exceeds {self.max_bytes} bytes in total (at {url})", param=param)


def parse_fetch_url(url: str, param: str = "messages") -> FetchURL:
    """The URL as the fetcher will use it, or 400 for anything ambiguous."""

    def refuse(why: str) -> InvalidRequest:
        return InvalidRequest(f"cannot fetch {url[:200]!r}: {why}", param=param)

    if _UNSAFE.search(url):
        raise refuse("spaces, control characters and backslashes are not allowed in URLs")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise refuse("only http and https URLs can be fetched")
    if "@" in parts.netloc:
        raise refuse("URLs with credentials (user@host) are not fetched")
    host = parts.hostname or ""
    if "[" in parts.netloc:
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise refuse("invalid IPv6 address") from None
    elif not _HOST_NAME.match(host):
        raise refuse("the host name has characters a host name cannot have (percent-encoding, '_', ...)")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return FetchURL(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target)


async def resolve_checked(host: str, port: int, param: str = "messages") -> str:
    """One address of `host` to connect to; every address it resolves to must be public."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidRequest(f"cannot resolve host {host!r}", param=param) from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise InvalidRequest(f"cannot resolve host {host!r}", param=param)
    if not os.environ.get(ALLOW_PRIVATE_ENV):
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                raise InvalidRequest(f"host {host!r} is not a public address", param=param)
    return addresses[0]


async def fetch_public_url(url: str, max_bytes: int, timeout: float, *, param: str = "messages",
                           budget: FetchBudget | None = None) -> tuple[bytes, str]:
    """(body, content type) of a GET to a public http(s) URL, at most `max_bytes`, within `timeout` s."""
    target = parse_fetch_url(url, param)
    import httpx2  # installed with the openai SDK, a core dependency; only loaded when something is fetched

    try:
        async with asyncio.timeout(timeout):
            address = await resolve_checked(target.host, target.port, param)
            literal = f"[{address}]" if ":" in address else address
            pinned = f"{target.scheme}://{literal}:{target.port}{target.target}"
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            async with httpx2.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout) as client:
                async with client.stream("GET", pinned, headers={"host": target.host_header},
                                         extensions=extensions) as response:
                    if response.status_code != 200:
                        raise InvalidRequest(f"could not fetch {url} (HTTP {response.status_code})", param=param)
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise InvalidRequest(f"{url} is larger than {max_bytes} bytes", param=param)
                    parts: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise InvalidRequest(f"{url} is larger than {max_bytes} bytes", param=param)
                        if budget is not None:
                            budget.take(len(chunk), url, param)
                        parts.append(chunk)
                    content_type = response.headers.get("content-type", "").split(";")[0].strip()
                    return b"".join(parts), content_type
    except TimeoutError:
        raise InvalidRequest(f"could not fetch {url} within {timeout:g} s", param=param) from None
    except httpx2.HTTPError as exc:
        raise InvalidRequest(f"could not fetch {url} ({type(exc).__name__})", param=param) from None
