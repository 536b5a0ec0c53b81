"""`omni-llm rag ingest | list | search | delete` (CONTRACT §10), in-process: no server needed.

Embeddings go through a `Gateway` built from the same config as `serve`, so
the same models, retries and fallbacks apply. Exit status: 0 success (files
skipped are listed on stderr), 1 nothing could be ingested or the collection
does not exist, 2 bad usage. This module is imported by `proxy.cli` to define
the sub-commands; what they need is imported when one runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.rag.engine import RagEngine


def add_rag_parser(sub: Any) -> None:
    rag = sub.add_parser("rag", help="ingest, list, search and delete RAG collections")
    commands = rag.add_subparsers(dest="rag_command", required=True)
    ingest = commands.add_parser("ingest", help="add files, folders, s3:// prefixes or URLs to a collection")
    ingest.add_argument("collection")
    ingest.add_argument("sources", nargs="*", help="default: the collection's sources under rag.collections")
    ingest.add_argument("--strategy", choices=["fixed_size", "character", "recursive", "token", "semantic"])
    ingest.add_argument("--chunk-size", type=int)
    ingest.add_argument("--chunk-overlap", type=int)
    ingest.add_argument("--embedding-model", help="for a new collection (default: rag.embedding_model)")
    listing = commands.add_parser("list", help="collections with their documents and chunks")
    search = commands.add_parser("search", help="search a collection")
    search.add_argument("collection")
    search.add_argument("query")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--search", choices=["hybrid", "dense", "keyword"], default="hybrid")
    delete = commands.add_parser("delete", help="delete a collection")
    delete.add_argument("collection")
    for command in (ingest, listing, search, delete):
        command.add_argument("--config")
    rag.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from proxy.config import ConfigError, load_config, resolve_config_path
    from proxy.errors import ProxyError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"omni-llm: invalid config {resolve_config_path(args.config)}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    command: Callable[[RagEngine, argparse.Namespace], Awaitable[int]] = {
        "ingest": _ingest, "list": _list, "search": _search, "delete": _delete}[args.rag_command]

    async def main() -> int:
        from proxy.app import Gateway
        from proxy.rag.engine import engine_for

        gateway = Gateway(config)
        try:
            return await command(engine_for(gateway), args)
        finally:
            await gateway.pool.aclose()
            if gateway.rag is not None:
                await gateway.rag.aclose()

    try:
        return asyncio.run(main())
    except ProxyError as exc:
        print(f"omni-llm rag: {exc.message}", file=sys.stderr)
        return 2 if exc.status == 400 and exc.param in ("chunking",) else 1


async def _ingest(engine: RagEngine, args: argparse.Namespace) -> int:
    from proxy.errors import ProxyError

    chunking = {k: v for k, v in (("strategy", args.strategy), ("chunk_size", args.chunk_size),
                                  ("chunk_overlap", args.chunk_overlap)) if v is not None}
    sources = list(args.sources)
    if not sources:
        declared = engine.settings.collections.get(args.collection)
        if declared is None:
            print(f"omni-llm rag: no sources given and collection '{args.collection}' is not declared under "
                  "rag.collections", file=sys.stderr)
            return 2
        sources = list(declared["sources"])
    try:
        from proxy.rag.chunking import ChunkSettings

        ChunkSettings.from_mapping({**engine.settings.chunking, **chunking})
    except ValueError as exc:
        print(f"omni-llm rag: {exc}", file=sys.stderr)
        return 2
    existed = await asyncio.to_thread(engine.store.get_collection, args.collection) is not None
    collection = await engine.get_or_create(args.collection, embedding_model=args.embedding_model, chunking=chunking)
    bar = ProgressBar() if sys.stderr.isatty() else None
    try:
        report = await engine.ingest(collection, sources, chunking=chunking, progress=bar)
    except ProxyError as exc:  # a failing embedding model, a bad source: nothing was written
        if not existed:
            await engine.delete(collection.id)
        print(f"omni-llm rag: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    for skipped in report.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    print(f"{report.collection.name}: {len(report.added)} file(s) ingested ({report.chunks} chunks), "
          f"{len(report.unchanged)} unchanged, {len(report.skipped)} skipped; "
          f"{report.collection.documents} files, {report.collection.chunks} chunks in all")
    if not report.added and not report.unchanged:
        if not existed:  # do not leave an empty collection behind a failed first ingest
            await engine.delete(report.collection.id)
        print(f"omni-llm rag: nothing could be ingested into '{args.collection}'", file=sys.stderr)
        return 1
    return 0


async def _list(engine: RagEngine, args: argparse.Namespace) -> int:
    collections = await asyncio.to_thread(engine.store.list_collections)
    rows = [("COLLECTION", "ID", "FILES", "CHUNKS", "EMBEDDING MODEL")]
    rows += [(c.name, c.id, str(c.documents), str(c.chunks), c.embedding_model) for c in collections]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
    return 0


async def _search(engine: RagEngine, args: argparse.Namespace) -> int:
    if args.top_k < 1:
        print("omni-llm rag: --top-k must be at least 1", file=sys.stderr)
        return 2
    collection = await engine.get(args.collection)
    hits = await engine.search([collection], args.query, top_k=args.top_k, mode=args.search)
    for n, hit in enumerate(hits, start=1):
        where = hit.source + (f" p.{hit.page}" if hit.page is not None else "") + (
            f" § {hit.section}" if hit.section else "")
        print(f"[{n}] {hit.score:.4f}  {where}  (chunk {hit.chunk_id})")
        print("    " + " ".join(hit.content.split())[:300])
    if not hits:
        print("no results", file=sys.stderr)
    return 0


async def _delete(engine: RagEngine, args: argparse.Namespace) -> int:
    collection = await engine.delete(args.collection)
    print(f"deleted collection '{collection.name}' ({collection.documents} files, {collection.chunks} chunks)")
    return 0


class ProgressBar:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // max(total, 1)
        sys.stderr.write(f"\rembedding [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} chunks")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
