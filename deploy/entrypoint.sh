#!/bin/sh
# Container entrypoint (the Dockerfile's ENTRYPOINT; deploy/README.md "Bind and auth").
#
#   serve [ARGS]   (the default CMD) `omni-llm serve` on $AWS_LWA_PORT, else $PORT, else 8080:
#                  the Lambda Web Adapter streams it through a RESPONSE_STREAM Function URL,
#                  and outside Lambda it is a plain HTTP server (`docker run -p 8000:8080`).
#   MODULE.handler the Lambda Runtime Interface Client with that handler, e.g.
#                  `proxy.lambda_handler.handler` (Mangum, buffered: API Gateway, ALB).
#   anything else  run as given (`omni-llm models`, `omni-llm check`, `sh`).
#
# Bind: $OMNI_LLM_HOST, default 0.0.0.0 so a published port reaches the server. `omni-llm serve`
# still refuses a non-loopback bind when no gateway key is configured, so an image started without
# OMNI_LLM_API_KEY exits instead of serving an open gateway. Two explicit ways out:
# OMNI_LLM_HOST=127.0.0.1 (enough for the adapter, which calls 127.0.0.1; use it when IAM guards
# the Function URL) or OMNI_LLM_ALLOW_UNAUTHENTICATED=1 (passes --allow-unauthenticated).
set -eu

case "${1:-serve}" in
serve)
    [ "$#" -gt 0 ] && shift
    set -- --host "${OMNI_LLM_HOST:-0.0.0.0}" --port "${AWS_LWA_PORT:-${PORT:-8080}}" "$@"
    if [ "${OMNI_LLM_ALLOW_UNAUTHENTICATED:-}" = "1" ]; then
        set -- "$@" --allow-unauthenticated
    fi
    exec omni-llm serve "$@"
    ;;
*.handler)
    exec python -m awslambdaric "$1"
    ;;
*)
    exec "$@"
    ;;
esac
