# syntax=docker/dockerfile:1
# Omni-LLM: one image for AWS Lambda (streaming, via the Lambda Web Adapter) and for a plain server.
#
#   docker build -t omni-llm .                                   # all vendor SDKs + RAG (parsers, local embeddings)
#   docker build --build-arg EXTRAS=anthropic,bedrock -t omni-llm .   # only these ("" = OpenAI only)
#   docker buildx build --platform linux/arm64 -t omni-llm .     # Lambda arm64 (the template default)
#   docker run -p 8000:8080 -e OMNI_LLM_API_KEY=sk-local omni-llm
#
# deploy/README.md has the ECR push and deploy commands. Nothing secret is in the image: keys come
# from the environment at start-up (the deploy templates resolve them from Secrets Manager).

ARG PYTHON_IMAGE=public.ecr.aws/docker/library/python:3.11-slim-bookworm
ARG LWA_VERSION=0.9.1

FROM public.ecr.aws/awsguru/aws-lambda-adapter:${LWA_VERSION} AS lambda-adapter

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=all
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/omni-llm
COPY pyproject.toml README.md models.yaml ./
COPY proxy ./proxy
COPY translators ./translators
# awslambdaric runs proxy.lambda_handler.handler (the Mangum entry); wheels exist for both arches.
RUN if [ -n "$EXTRAS" ]; then spec=".[$EXTRAS]"; else spec="."; fi \
 && /opt/omni-llm/bin/pip install "$spec" \
 && /opt/omni-llm/bin/pip install --only-binary=awslambdaric "awslambdaric>=3,<5"

FROM ${PYTHON_IMAGE}
COPY --from=lambda-adapter /lambda-adapter /opt/extensions/lambda-adapter
COPY --from=build /opt/omni-llm /opt/omni-llm
COPY models.yaml /etc/omni-llm/models.yaml
COPY deploy/entrypoint.sh /usr/local/bin/omni-llm-entrypoint
RUN groupadd --system --gid 10001 omni \
 && useradd --system --uid 10001 --gid omni --no-create-home --home-dir /tmp --shell /usr/sbin/nologin omni \
 && chmod 0755 /usr/local/bin/omni-llm-entrypoint
# HOME=/tmp: on Lambda only /tmp is writable, should an SDK want a cache directory. OMNI_LLM_DATA holds the
# RAG store (rag.db); mount a volume there to keep it. The `rag` extra (in `all`) carries everything RAG needs
# offline: the WordLlama weights and the cl100k/o200k encodings ship inside their wheels.
ENV PATH=/opt/omni-llm/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMNI_LLM_CONFIG=/etc/omni-llm/models.yaml \
    OMNI_LLM_DATA=/tmp/omni-llm \
    PORT=8080 \
    AWS_LWA_PORT=8080 \
    AWS_LWA_READINESS_CHECK_PATH=/health \
    AWS_LWA_INVOKE_MODE=response_stream
# S3-triggered ingestion (docs/rag.md): the adapter POSTs non-HTTP events (an S3 bucket notification) to
# AWS_LWA_PASS_THROUGH_PATH, which `serve` answers; 207 is the answer when a record failed, and only that route
# gives it, so AWS_LWA_ERROR_STATUS_CODES=207 fails exactly those invocations (Lambda then retries the event).
ENV AWS_LWA_PASS_THROUGH_PATH=/events \
    AWS_LWA_ERROR_STATUS_CODES=207
# File descriptors: the image sets no limit (a Dockerfile cannot); `serve` raises its soft
# RLIMIT_NOFILE to the hard limit the runtime gives and keeps server.max_connections (2048) below it
# minus 64. Lambda: 1,024 descriptors -> at most 960 connections. Elsewhere choose with
# `docker run --ulimit nofile=65536:65536`. See docs/hardening.md.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/omni-llm-entrypoint"]
CMD ["serve"]
