"""AWS Lambda entry for API Gateway (REST v1, HTTP API v2), ALB and buffered Function URLs.

`handler` is a Mangum adapter of the same Starlette app `omni-llm serve` runs.
Mangum is buffered only: it collects every body chunk and returns one Lambda
response (6 MB cap), so a `stream: true` request gets its whole SSE body at once
(https://github.com/Kludex/mangum/issues/299). Streaming on Lambda goes through
the container image instead: the Lambda Web Adapter in `response_stream` mode in
front of `omni-llm serve`, reached through a Function URL with
`InvokeMode: RESPONSE_STREAM` (deploy/README.md).

Cold start: Lambda imports this module once per instance. The config is read
then, from $OMNI_LLM_CONFIG (the image sets it) with `${VAR}` expanded from the
environment; vendor SDKs are imported by the registry on the first request that
routes to them. Lifespan is off: there is no startup work, and Lambda freezes
and ends the process without a shutdown event, so provider clients are dropped
with it. Mangum runs every invocation on one event loop, so the SDK clients the
provider pool caches stay usable across invocations.

An API Gateway or ALB endpoint is public, so, like `omni-llm serve` on a
non-loopback address, the handler refuses to start with no gateway keys
(server.api_keys, e.g. OMNI_LLM_API_KEY) unless OMNI_LLM_ALLOW_UNAUTHENTICATED=1
says the endpoint is protected some other way (IAM, an authorizer).
"""

from __future__ import annotations

import os

from mangum import Mangum

from proxy.app import create_app
from proxy.config import Config, load_config

ALLOW_UNAUTHENTICATED = "OMNI_LLM_ALLOW_UNAUTHENTICATED"


def make_handler(config: Config | None = None) -> Mangum:
    config = config or load_config()
    if not config.server.api_keys and os.environ.get(ALLOW_UNAUTHENTICATED) != "1":
        raise RuntimeError(
            "omni-llm: refusing to serve a Lambda endpoint with no API keys configured "
            f"(set server.api_keys, e.g. OMNI_LLM_API_KEY, or {ALLOW_UNAUTHENTICATED}=1 when IAM or an "
            "authorizer guards the endpoint)"
        )
    return Mangum(create_app(config), lifespan="off")


handler = make_handler()
