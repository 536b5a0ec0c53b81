"""anthropic SDK exceptions -> the gateway's errors, by a class table (never by message text)."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import httpx2
import orjson

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, parse_retry_after, upstream_status_error
from translators.anthropic.response import from_anthropic_error_event


def anthropic_error_message(body: object) -> str | None:
    """`error.message` of an error body (`{"type": "error", "error": {"type": ..., "message": ...}}`)."""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def _message(exc: anthropic.APIStatusError) -> str:
    """Anthropic's own message (`error.message` of the body), not the SDK's "Error code: ..." wrapper."""
    return exc.api_message or exc.message


def _status(exc: BaseException) -> ProxyError:
    assert isinstance(exc, anthropic.APIStatusError)
    if exc.status_code < 400:
        # An `event: error` inside a 200 stream: the SDK raises with the HTTP status (200); the body tells.
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error")
        return from_anthropic_error_event(error if isinstance(error, dict) else {"message": _message(exc)})
    retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
    return upstream_status_error(exc.status_code, _message(exc), retry_after=retry_after)


# Most specific first. Status errors (400 passes through with Anthropic's message, 401/403 -> 502,
# 429 -> 429 + Retry-After, 529 OverloadedError and other 5xx -> 502, 408/504 -> 504) go through
# the README's error status table, in `upstream_status_error`.
ERROR_TABLE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[BaseException], ProxyError]], ...] = (
    (anthropic.APITimeoutError, lambda exc: UpstreamTimeout("upstream timed out")),
    (anthropic.APIConnectionError, lambda exc: UpstreamError("could not connect to the upstream")),
    (anthropic.APIStatusError, _status),
    (httpx2.TimeoutException, lambda exc: UpstreamTimeout("upstream timed out")),
    (httpx2.TransportError, lambda exc: UpstreamError(f"upstream connection lost ({type(exc).__name__})")),
    (orjson.JSONDecodeError, lambda exc: UpstreamError("upstream sent a malformed response")),
    (anthropic.APIResponseValidationError, lambda exc: UpstreamError("upstream sent a malformed response")),
)


def map_anthropic_error(exc: BaseException) -> ProxyError | None:
    for classes, to_proxy_error in ERROR_TABLE:
        if isinstance(exc, classes):
            return to_proxy_error(exc)
    return None
