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

S3 event notifications (issue 19, docs/rag.md "S3-triggered ingestion") reach the
same handler when a bucket notification targets the function: they are told
apart by their `Records` (`eventSource: aws:s3`) before Mangum sees them, and
bring the declared collections covering each object up to date. S3 invokes
asynchronously, so a failed record makes the handler raise once every record has
run: Lambda then retries the event (twice by default), which is safe because
ingestion is idempotent.

An API Gateway or ALB endpoint is public, so, like `omni-llm serve` on a
non-loopback address, the handler refuses to start with no gateway keys
(server.api_keys, e.g. OMNI_LLM_API_KEY) unless OMNI_LLM_ALLOW_UNAUTHENTICATED=1
says the endpoint is protected some other way (IAM, an authorizer).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mangum import Mangum
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.config import Config, load_config

ALLOW_UNAUTHENTICATED = "OMNI_LLM_ALLOW_UNAUTHENTICATED"


class LambdaHandler:
    """Mangum for HTTP events; S3 event notifications go to proxy.rag.s3events instead."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.http = Mangum(app, lifespan="off")

    def __call__(self, event: Any, context: Any) -> Any:
        if isinstance(event, dict) and "Records" in event:  # HTTP events have no `Records`
            from proxy.rag.s3events import is_s3_event

            if is_s3_event(event):
                return self.s3_event(event)
        return self.http(event, context)

    def s3_event(self, event: dict[str, Any]) -> dict[str, Any]:
        from proxy.rag.s3events import S3EventFailed, failures, handle_event

        # Mangum's loop (it runs every invocation on the thread's one loop): cached SDK clients stay usable.
        loop = asyncio.get_event_loop()
        summary = loop.run_until_complete(handle_event(self.app.state.gateway, event))
        failed = failures(summary)
        if failed:  # after every record ran: a function error is what makes Lambda retry an async event
            raise S3EventFailed(f"{len(failed)} of {len(summary['records'])} S3 record(s) failed: "
                                + "; ".join(failed), summary)
        return summary


def make_handler(config: Config | None = None) -> LambdaHandler:
    config = config or load_config()
    if not config.server.api_keys and os.environ.get(ALLOW_UNAUTHENTICATED) != "1":
        raise RuntimeError(
            "omni-llm: refusing to serve a Lambda endpoint with no API keys configured "
            f"(set server.api_keys, e.g. OMNI_LLM_API_KEY, or {ALLOW_UNAUTHENTICATED}=1 when IAM or an "
            "authorizer guards the endpoint)"
        )
    return LambdaHandler(create_app(config))


handler = make_handler()
