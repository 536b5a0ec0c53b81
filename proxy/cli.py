"""`omni-llm serve | models | check | keys` (the README's "Command line"; CONTRACT §12 for keys)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from proxy.config import Config, ConfigError, load_config, resolve_config_path
from proxy.edge import PROTOCOL, raise_fd_limit
from proxy.rag.store import missing_extra


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
    store = config.rag.store
    hint = missing_extra(store) if store.get("type") != "sqlite" else None  # sqlite: the RAG extra, on first use
    if hint is not None:
        print(f"{path}: 1 problem(s)")
        print(f"  rag.store.type: store type '{store['type']}' needs its client library: {hint}")
        return 1
    not_ready = [p for p in config.providers.values() if p.not_ready]
    print(f"{path}: OK — {len(config.providers)} providers, {len(config.models)} models, {len(config.strategies)} strategies")
    for provider in not_ready:
        print(f"  note: provider '{provider.name}' is not ready: {provider.not_ready}")
    return 0


WIDTH = 100  # `omni-llm models` fits a 100-column terminal


def cmd_models(args: argparse.Namespace) -> int:
    config = _load(args.config)
    rows = [("MODEL", "PROVIDER", "UPSTREAM MODEL", "STATUS")]
    for name, deployments in config.models.items():
        for d in deployments:
            reason = config.providers[d.provider].not_ready
            rows.append((name, d.provider, d.model, f"not ready: {reason}" if reason else "ready"))
    print(_table(rows))
    strategies = [(name, _strategy_status(config, members), ", ".join(members))
                  for name, members in config.strategies.items()]
    if strategies:
        print()
        print(_table([("STRATEGY", "STATUS", "MODELS, IN ORDER"), *strategies], last_min=40))
    return 0


def _strategy_status(config: Config, members: tuple[str, ...]) -> str:
    ready = any(not config.providers[d.provider].not_ready for m in members for d in config.models[m])
    return "ready" if ready else "not ready: no member is ready"


def _table(rows: list[tuple[str, ...]], last_min: int = 12) -> str:
    """Rows in WIDTH columns. Fixed columns shrink (widest first) and wrap inside their width when the
    table would be wider; the last cell wraps under its column when that leaves it `last_min`
    characters, else a `not ready: reason` keeps `not ready:` on the row and the reason goes below."""
    import textwrap

    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    while sum(widths) + 2 * len(widths) > WIDTH - last_min and max(widths) > 12:
        widths[widths.index(max(widths))] -= 1
    room = WIDTH - sum(widths) - 2 * len(widths)
    lines: list[str] = []
    for row in rows:
        cells = [textwrap.wrap(cell, width, break_on_hyphens=False) or [""] for cell, width in zip(row, widths)]
        last, below = row[-1], []
        if len(last) > room and last.startswith("not ready: ") and room < 40:
            last, below = "not ready:", textwrap.wrap(last[len("not ready: "):], WIDTH - 4, break_on_hyphens=False)
        cells.append(textwrap.wrap(last, room, break_on_hyphens=False) or [""])
        for k in range(max(len(c) for c in cells)):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, [*widths, 0])]
            lines.append("  ".join(parts).rstrip())
        lines += ["    " + line for line in below]
    return "\n".join(lines)


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
    raise_fd_limit()  # connections are capped below it (proxy/edge.py)
    uv_config = uvicorn.Config(
        "proxy.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,  # the gateway writes its own structured access log
        timeout_graceful_shutdown=config.server.drain_timeout_s,
        server_header=False,
        proxy_headers=True,
        log_config=None,
        http=PROTOCOL,  # httptools plus header timeout and connection cap
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}"
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = uv_config.bind_socket()
        announce = threading.Thread(target=_announce_when_answering, daemon=True,
                                    args=(args.host, args.port, f"Omni-LLM listening on {url} ({args.workers} workers)"))
        announce.start()
        Multiprocess(uv_config, sockets=[sock]).run()
    else:
        # uvicorn drains, then re-raises the signal it caught with the previous handler: make that
        # handler a no-op so a drained SIGTERM exits with status 0 (as the README promises).
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        _AnnouncingServer(uv_config, url).run()
    return 0


def _announce_when_answering(host: str, port: int, message: str, timeout_s: float = 120.0) -> None:
    """Print `message` once a worker answers /health on the shared socket (the parent only binds it)."""
    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host.strip("[]"))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((probe, port), timeout=1) as conn:
                conn.sendall(b"GET /health HTTP/1.1\r\nhost: omni-llm\r\nconnection: close\r\n\r\n")
                if conn.recv(64).startswith(b"HTTP/1.1 200"):
                    print(message, flush=True)
                    return
        except OSError:
            pass
        time.sleep(0.05)  # a readiness poll of our own workers, not a wait in a test


class _AnnouncingServer(uvicorn.Server):
    """Prints the URL once the socket is listening."""

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Version(argparse.Action):
    """`omni-llm --version`: the installed distribution's version (looked up only when asked)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("omni-llm")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        print(f"omni-llm {found}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-llm", description="An OpenAI-compatible LLM gateway.")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--config")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=_positive_int, default=1, help="worker processes (>= 1)")
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
    from proxy.keys.cli import add_keys_parser

    add_keys_parser(sub)
    from proxy.rag.cli import add_rag_parser  # light: its commands import what they need when run

    add_rag_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
