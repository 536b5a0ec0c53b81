"""`omni-llm keys create | list | revoke` (CONTRACT §12), against the config's `state.database`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from proxy.config import Config, ConfigError, load_config, resolve_config_path, state_of
from proxy.errors import ProxyError


def add_keys_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke virtual keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key; prints it once, then its id")
    create.add_argument("--config")
    create.add_argument("--name", required=True)
    create.add_argument("--models", help="comma-separated model names (default: all)")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--budget-usd", type=float)
    create.add_argument("--budget-period", choices=["daily", "weekly", "monthly"])
    create.add_argument("--expires", help="ISO 8601 date or date-time (UTC), e.g. 2027-01-01")
    create.add_argument("--mcp-servers", help="comma-separated MCP server names (default: all)")
    create.add_argument("--collections", help="comma-separated RAG collections (default: all)")
    create.set_defaults(func=cmd_keys_create)
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--config")
    listing.set_defaults(func=cmd_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.add_argument("--config")
    revoke.set_defaults(func=cmd_keys_revoke)


def _config(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"omni-llm: invalid config {resolve_config_path(path)}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1) from None


async def _with_service(config: Config, work: Any) -> Any:
    from proxy.keys.service import KeyService

    service = KeyService(state_of(config))
    try:
        return await work(service)
    finally:
        await service.aclose()


def cmd_keys_create(args: argparse.Namespace) -> int:
    config = _config(args.config)
    fields = {name: getattr(args, attr) for name, attr in (
        ("name", "name"), ("models", "models"), ("rpm", "rpm"), ("tpm", "tpm"), ("budget_usd", "budget_usd"),
        ("budget_period", "budget_period"), ("expires", "expires"), ("mcp_servers", "mcp_servers"),
        ("collections", "collections")) if getattr(args, attr) is not None}
    known = set(config.models) | set(config.strategies)
    try:
        token, record = asyncio.run(_with_service(config, lambda s: s.create(fields, known)))
    except ProxyError as exc:
        print(f"omni-llm: {exc.message}", file=sys.stderr)
        return 2
    print(token)
    print(f"id: {record.id}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from proxy.keys.service import status_of

    config = _config(args.config)
    records = asyncio.run(_with_service(config, lambda s: s.list()))
    now = time.time()
    rows = [("ID", "NAME", "PREFIX", "STATUS", "MODELS", "RPM", "TPM", "BUDGET")]
    for r in records:
        budget = f"${r.budget_usd:g}/{r.budget_period or 'total'}" if r.budget_usd is not None else "-"
        rows.append((r.id, r.name, r.prefix + "…", status_of(r, now), ",".join(r.models) if r.models else "*",
                     "-" if r.rpm is None else str(r.rpm), "-" if r.tpm is None else str(r.tpm), budget))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    config = _config(args.config)
    done = asyncio.run(_with_service(config, lambda s: s.revoke(args.id)))
    if not done:
        print(f"omni-llm: no active key with id '{args.id}'", file=sys.stderr)
        return 1
    print(f"revoked {args.id}")
    return 0
