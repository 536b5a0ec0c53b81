"""`omni-llm serve | models | check` (CONTRACT §2)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from proxy.config import Config, ConfigError, load_config, resolve_config_path

DRAIN_SECONDS = 10


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"omni-llm: invalid config {resolve_config_path(path)}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cmd_check(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            print(f"  {problem}")
        return 1
    not_ready = [p for p in config.providers.values() if p.not_ready]
    print(f"{path}: OK — {len(config.providers)} providers, {len(config.models)} models, {len(config.strategies)} strategies")
    for provider in not_ready:
        print(f"  note: provider '{provider.name}' is not ready: {provider.not_ready}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    config = _load(args.config)
    rows = [("MODEL", "PROVIDER", "UPSTREAM MODEL", "STATUS")]
    for name, deployments in config.models.items():
        for d in deployments:
            reason = config.providers[d.provider].not_ready
            rows.append((name, d.provider, d.model, f"not ready: {reason}" if reason else "ready"))
    for name, members in config.strategies.items():
        rows.append((name, "(strategy)", " -> ".join(members), "ready" if any(
            not config.providers[d.provider].not_ready for m in members for d in config.models[m]) else "not ready: no member is ready"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    config = _load(str(path))
    if not config.server.api_keys and not is_loopback(args.host) and not args.allow_unauthenticated:
        print(
            f"omni-llm: refusing to listen on {args.host} with no API keys configured "
            "(set server.api_keys, e.g. OMNI_LLM_API_KEY, or pass --allow-unauthenticated)",
            file=sys.stderr,
        )
        return 1
    # Workers and the factory read the same file.
    os.environ["OMNI_LLM_CONFIG"] = str(Path(path).resolve())
    _configure_logging(args.log_level)
    uv_config = uvicorn.Config(
        "proxy.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,  # the gateway writes its own structured access log
        timeout_graceful_shutdown=DRAIN_SECONDS,
        server_header=False,
        proxy_headers=True,
        log_config=None,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}"
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = uv_config.bind_socket()
        print(f"Omni-LLM listening on {url} ({args.workers} workers)", flush=True)
        Multiprocess(uv_config, sockets=[sock]).run()
    else:
        # uvicorn drains, then re-raises the signal it caught with the previous handler: make that
        # handler a no-op so a drained SIGTERM exits with status 0 (CONTRACT §2).
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        _AnnouncingServer(uv_config, url).run()
    return 0


class _AnnouncingServer(uvicorn.Server):
    """Prints the URL once the socket is listening (CONTRACT §2)."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self._url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.config.workers <= 1:
            print(f"Omni-LLM listening on {self._url}", flush=True)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("omni", "omni.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level.upper())
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-llm", description="An OpenAI-compatible LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--config")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="listen on a non-loopback address even with no API keys configured")
    serve.set_defaults(func=cmd_serve)
    models = sub.add_parser("models", help="list configured models and whether they are ready")
    models.add_argument("--config")
    models.set_defaults(func=cmd_models)
    check = sub.add_parser("check", help="validate the config; exit 1 listing every problem")
    check.add_argument("--config")
    check.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
