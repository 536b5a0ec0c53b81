"""The one error hierarchy of the gateway, rendered in the OpenAI error shape.

Every failure a client can see is a `ProxyError`: translators map their SDK's
exceptions onto these classes (each with a class-to-class table), the router
decides from `retryable` whether to try again, and the app renders
`{"error": {"message", "type", "param", "code"}}` with the class's status.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    status = 500
    type = "internal_error"
    code: str | None = None
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(0, round(self.retry_after)))}


class InvalidRequest(ProxyError):
    """400, or an upstream 4xx passed through with its own status and message."""

    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class CollectionNotFound(NotFound):
    """RAG: an unknown collection, vector store or file (CONTRACT §10)."""

    code = "collection_not_found"


class RequestTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(ProxyError):
    """408: the client stopped sending its request body (slowloris)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"connection": "close"}  # the rest of the body may still come: the connection is unusable


class RateLimited(ProxyError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class BudgetExceeded(RateLimited):
    """429: a virtual key's budget is spent (Retry-After: until its period rolls over)."""

    code = "budget_exceeded"
    retryable = False


class PermissionDenied(ProxyError):
    """403: the key is valid but may not use this model, MCP server, collection or route."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class UpstreamError(ProxyError):
    """502: the upstream failed (5xx, bad response, refused connection) or refused our credentials."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class StructuredOutputInvalid(UpstreamError):
    """502: no model of the chain produced an answer that validates against `structured_output`'s schema."""

    code = "structured_output_invalid"


class McpServerUnavailable(UpstreamError):
    """502: a configured MCP server could not be reached (before the first byte of the answer)."""

    code = "mcp_server_unavailable"
    retryable = False


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout_error"
    code = "timeout"
    retryable = True


class ServiceUnavailable(ProxyError):
    status = 503
    type = "service_unavailable"


class ProviderNotConfigured(ServiceUnavailable):
    code = "provider_not_configured"


class ProviderUnavailable(ServiceUnavailable):
    code = "provider_unavailable"


class ServerShuttingDown(ServiceUnavailable):
    """503 (or an in-band stream error): the drain period after SIGTERM ended before the request did."""

    code = "server_shutting_down"


def upstream_status_error(status: int, message: str, *, retry_after: float | None = None) -> ProxyError:
    """The gateway's error for an upstream HTTP status (the README's error table)."""
    if status == 429:
        return RateLimited(message, retry_after=retry_after)
    if status in (401, 403):
        return UpstreamError(f"upstream rejected the gateway's credentials: {message}", retryable=False)
    if status in (408, 504):
        return UpstreamTimeout(message)
    if status >= 500:
        return UpstreamError(message)
    if status == 404:
        return InvalidRequest(message, status=404, code="model_not_found")
    if 400 <= status < 500:
        return InvalidRequest(message, status=status)
    return UpstreamError(f"unexpected upstream status {status}: {message}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are rare upstream)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# Anthropic's error `type` for a status (https://docs.anthropic.com/en/api/errors), for the Messages ingress.
ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                         403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                         429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}
ANTHROPIC_PATHS = ("/v1/messages", "/messages")  # the paths whose errors take Anthropic's shape


def anthropic_error_body(error: ProxyError, message: str | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}`: how Anthropic clients expect any failure."""
    kind = ANTHROPIC_ERROR_TYPES.get(error.status)
    if kind is None:
        kind = "api_error" if error.status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": error.message if message is None else message}}


SEED_PATHS = ("/invoke", "/v1/invoke")  # the seed API: its own error shape (CONTRACT §14)


def error_body_for(path: str, error: ProxyError, request_id: str = "") -> dict[str, Any]:
    """The error body in the shape of the API `path` belongs to (Anthropic's for /v1/messages, the seed's
    for /invoke, else OpenAI's)."""
    if path.startswith(ANTHROPIC_PATHS):
        return anthropic_error_body(error)
    if path in SEED_PATHS:
        from proxy.ingress.invoke import seed_error_body

        return seed_error_body(error, request_id)
    return error.to_dict()
