"""boto3 / botocore exceptions -> gateway errors, by table.

Service errors are `botocore.exceptions.ClientError` with `response["Error"]["Code"]`
taken from the `x-amzn-ErrorType` header (`ThrottlingException`); exception
frames inside an event stream raise `EventStreamError` (a ClientError subclass)
with the lowerCamel event name (`throttlingException`) and no HTTP status, so
codes are compared case-insensitively. Throttling responses may carry
`x-amz-retry-after` in milliseconds (what botocore's own retries honour).
https://docs.aws.amazon.com/bedrock/latest/APIReference/CommonErrors.html
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import urllib3
from botocore import eventstream
from botocore import exceptions as boto_errors

from proxy.errors import (
    InvalidRequest,
    ProviderNotConfigured,
    ProxyError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    parse_retry_after,
    upstream_status_error,
)

log = logging.getLogger("omni.translators")


def _credentials(message: str, retry_after: float | None) -> ProxyError:
    return UpstreamError(f"Bedrock rejected the gateway's AWS credentials: {message}", retryable=False)


def _throttled(message: str, retry_after: float | None) -> ProxyError:
    return RateLimited(message, retry_after=retry_after)


def _bad_request(message: str, retry_after: float | None) -> ProxyError:
    return InvalidRequest(message)


def _not_found(message: str, retry_after: float | None) -> ProxyError:
    return InvalidRequest(message, status=404, code="model_not_found")


def _timeout(message: str, retry_after: float | None) -> ProxyError:
    return UpstreamTimeout(message)


def _failed(message: str, retry_after: float | None) -> ProxyError:
    return UpstreamError(message)


# Lower-cased ClientError code -> gateway error.
CLIENT_ERRORS: dict[str, Callable[[str, float | None], ProxyError]] = {
    "validationexception": _bad_request,
    "accessdeniedexception": _credentials,
    "unrecognizedclientexception": _credentials,
    "invalidsignatureexception": _credentials,
    "expiredtokenexception": _credentials,
    "throttlingexception": _throttled,
    "servicequotaexceededexception": _throttled,
    "resourcenotfoundexception": _not_found,
    "modeltimeoutexception": _timeout,
    "serviceunavailableexception": _failed,
    "internalserverexception": _failed,
    "modelstreamerrorexception": _failed,
    "modelnotreadyexception": _failed,
    "modelerrorexception": _failed,
    "dependencyfailedexception": _failed,  # bedrock-agent-runtime (Rerank): 424, a service it relies on failed
    "badgatewayexception": _failed,  # bedrock-agent-runtime: 502
}


def bedrock_retry_after(headers: dict[str, str]) -> float | None:
    """Seconds to wait: `x-amz-retry-after` (milliseconds), else a standard `retry-after`."""
    millis = headers.get("x-amz-retry-after")
    if millis:
        try:
            return max(0.0, int(millis) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def from_bedrock_client_error(exc: boto_errors.ClientError) -> ProxyError:
    error = exc.response.get("Error") or {}
    metadata = exc.response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or code or "Bedrock request failed")
    retry_after = bedrock_retry_after(metadata.get("HTTPHeaders") or {})
    factory = CLIENT_ERRORS.get(code.lower())
    if factory is not None:
        return factory(message, retry_after)
    status = metadata.get("HTTPStatusCode")
    log.warning("bedrock: unknown error code %r (HTTP %s)", code, status)
    if isinstance(status, int) and status >= 400:
        return upstream_status_error(status, message, retry_after=retry_after)
    return UpstreamError(f"Bedrock failed: {code}: {message}")


def map_bedrock_error(exc: BaseException) -> ProxyError | None:
    """Most specific class first; None for anything that is not boto3's."""
    if isinstance(exc, boto_errors.ClientError):  # EventStreamError included
        return from_bedrock_client_error(exc)
    if isinstance(exc, boto_errors.ReadTimeoutError | boto_errors.ConnectTimeoutError):
        return UpstreamTimeout("Bedrock timed out")
    if isinstance(exc, boto_errors.EndpointConnectionError):
        return UpstreamError("could not connect to Bedrock")
    if isinstance(exc, boto_errors.HTTPClientError):  # connection closed or reset mid-response
        return UpstreamError(f"Bedrock connection failed ({type(exc).__name__})")
    if isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
        return ProviderNotConfigured(f"no usable AWS credentials for Bedrock: {exc}")
    if isinstance(exc, eventstream.ParserError | boto_errors.ChecksumError):
        return UpstreamError("Bedrock sent a corrupt event stream")
    if isinstance(exc, urllib3.exceptions.HTTPError):  # the connection broke while reading a stream
        return UpstreamError(f"Bedrock connection lost ({type(exc).__name__})")
    if isinstance(exc, boto_errors.BotoCoreError):
        return UpstreamError(f"Bedrock call failed ({type(exc).__name__})")
    return None
