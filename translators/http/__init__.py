"""The gateway's own HTTP/1.1 client for JSON upstreams (see `client` for the rules it keeps)."""

from translators.http.client import Body, Client, PoolTimeout, Response, default_tls
from translators.http.connection import ResponseTooLarge, UpstreamConnectError, UpstreamConnectionLost
from translators.http.sender import BodyStream, SDKSender, env_proxy_for, map_http_error, stainless_headers

__all__ = [
    "Body", "BodyStream", "Client", "PoolTimeout", "Response", "ResponseTooLarge", "SDKSender",
    "UpstreamConnectError", "UpstreamConnectionLost", "default_tls", "env_proxy_for", "map_http_error",
    "stainless_headers",
]
