"""The Bedrock provider: the only code that touches boto3's `bedrock-runtime` client
(and, for rerank models, a `bedrock-agent-runtime` client built on the first rerank).

boto3 is synchronous, so every call (and every `next()` on a ConverseStream
event stream) runs on this provider's own thread pool, sized like the
client's connection pool: a slow stream never blocks the event loop, and
Bedrock traffic cannot starve the loop's default executor. botocore's own
retries are off (`total_max_attempts=1`; its default "standard" mode would make
3 attempts and ignore the router); the router retries instead.

Credentials: static keys from the config, else a named `profile`, else the
default boto3 chain (env vars, ~/.aws, SSO, web identity, ECS/EC2/Lambda roles).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import boto3
from botocore import exceptions as boto_errors
from botocore.config import Config

from proxy.config import Deployment, ProviderConfig
from proxy.errors import ProviderNotConfigured, ProxyError, UpstreamError
from translators.base import CHAT, EMBEDDINGS, JSON, JSON_SCHEMA, RERANK, STREAM, TOOLS, VISION
from translators.bedrock.embeddings import from_bedrock_embeddings, to_bedrock_embedding_bodies
from translators.bedrock.errors import map_bedrock_error
from translators.bedrock.request import image_urls, to_bedrock_request
from translators.bedrock.rerank import from_bedrock_rerank_response, to_bedrock_rerank_request
from translators.bedrock.response import BedrockStreamState, from_bedrock_event, from_bedrock_response
from translators.common import load_images

T = TypeVar("T")
POOL_SIZE = 64  # concurrent Bedrock calls (HTTP connections and worker threads) per provider
DEFAULT_READ_TIMEOUT_S = 600.0  # botocore's 60 s default cuts long non-stream generations
_END = object()


def bedrock_session(config: ProviderConfig) -> boto3.Session:
    region = config.get("region")
    if config.get("aws_access_key_id"):
        return boto3.Session(
            aws_access_key_id=config.get("aws_access_key_id"),
            aws_secret_access_key=config.get("aws_secret_access_key"),
            aws_session_token=config.get("aws_session_token"),
            region_name=region,
        )
    try:
        return boto3.Session(profile_name=config.get("profile"), region_name=region)
    except boto_errors.ProfileNotFound as exc:
        raise ProviderNotConfigured(f"provider '{config.name}': {exc}") from None


def bedrock_client_config(config: ProviderConfig) -> Config:
    timeout = config.timeout_s
    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(timeout, 10.0) if timeout else 10.0,
        read_timeout=timeout or DEFAULT_READ_TIMEOUT_S,
        max_pool_connections=POOL_SIZE,
        tcp_keepalive=True,
    )


class BedrockProvider:
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT, STREAM, EMBEDDINGS, TOOLS, VISION, JSON_SCHEMA, RERANK})
    supported_params: ClassVar[frozenset[str] | None] = frozenset({
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "tools", "tool_choice",
        "response_format", "reasoning_effort", "dimensions", "encoding_format", "input_type",
    })

    def __init__(self, config: ProviderConfig) -> None:
        self._config = config
        self._session = bedrock_session(config)
        self._client = self._new_client("bedrock-runtime")
        self._agent_client: Any = None  # bedrock-agent-runtime, for Rerank: built on first use
        self._executor = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="bedrock")

    def _new_client(self, service: str) -> Any:
        config = self._config
        client = self._session.client(service, endpoint_url=config.get("base_url"),
                                      config=bedrock_client_config(config))
        extra_headers = dict(config.headers)
        if extra_headers:
            # before-sign: the headers are part of the SigV4 signature like any other.
            def add_headers(request: Any, **_: Any) -> None:
                for name, value in extra_headers.items():
                    request.headers[name] = value

            client.meta.events.register(f"before-sign.{service}", add_headers)
        return client

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _params(self, request: JSON, deployment: Deployment) -> JSON:
        images = await load_images(image_urls(request["messages"]))
        return to_bedrock_request(request, deployment.model, deployment.options, images)

    async def chat(self, request: JSON, deployment: Deployment) -> JSON:
        params = await self._params(request, deployment)
        response = await self._call(lambda: self._client.converse(**params))
        return from_bedrock_response(response)

    async def stream(self, request: JSON, deployment: Deployment) -> AsyncIterator[JSON]:
        params = await self._params(request, deployment)
        response = await self._call(lambda: self._client.converse_stream(**params))
        events = response["stream"]
        iterator = iter(events)
        state = BedrockStreamState()
        try:
            while True:
                event = await self._call(next, iterator, _END)
                if event is _END:
                    break
                chunk = from_bedrock_event(event, state)
                if chunk is not None:
                    yield chunk
            if not state.finished:
                raise UpstreamError("Bedrock stream ended without messageStop")
        finally:
            events.close()  # releases the HTTP connection, also when the client went away

    async def embed(self, request: JSON, deployment: Deployment) -> JSON:
        bodies = to_bedrock_embedding_bodies(request, deployment.model)
        answers = await asyncio.gather(*(self._call(self._invoke, deployment.model, body) for body in bodies))
        return from_bedrock_embeddings(list(answers))

    def _invoke(self, model_id: str, body: JSON) -> tuple[JSON, dict[str, str]]:
        response = self._client.invoke_model(
            modelId=model_id, body=json.dumps(body), contentType="application/json", accept="application/json"
        )
        try:
            answer = json.loads(response["body"].read())
        except ValueError:
            raise UpstreamError("Bedrock sent a malformed embedding response") from None
        return answer, response["ResponseMetadata"].get("HTTPHeaders", {})

    async def rerank(self, request: JSON, deployment: Deployment) -> JSON:
        if self._agent_client is None:
            self._agent_client = self._new_client("bedrock-agent-runtime")
        params = to_bedrock_rerank_request(request, deployment.model, self._client.meta.region_name)
        return from_bedrock_rerank_response(await self._call(self._rerank_pages, params))

    def _rerank_pages(self, params: JSON) -> list[JSON]:
        pages = [self._agent_client.rerank(**params)]
        while pages[-1].get("nextToken") and len(pages) < 100:  # more results than one answer holds
            pages.append(self._agent_client.rerank(**params, nextToken=pages[-1]["nextToken"]))
        return pages

    def map_error(self, exc: BaseException) -> ProxyError | None:
        return map_bedrock_error(exc)

    async def aclose(self) -> None:
        self._client.close()
        if self._agent_client is not None:
            self._agent_client.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
