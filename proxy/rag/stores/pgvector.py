"""The PostgreSQL store: pgvector for dense search, PostgreSQL full-text search for keywords.

`rag.store: {type: pgvector, dsn: "postgresql://user:pass@host/db"}`. The catalog is three tables
(`omni_rag_collections`, `omni_rag_documents`, `omni_rag_files`, uploads as `bytea`); each collection
with chunks has its own chunk table `omni_rag_chunks_<id>`, created in the transaction of its first
ingest, when the embedding dimension is known:
- `embedding vector(N)` with an HNSW index (`vector_cosine_ops`): an HNSW index needs a fixed
  dimension, and a table per collection gives each collection its own graph (no other collection's
  rows to skip past, as one shared graph with a collection filter would), its own planner statistics,
  and a delete that is a DROP TABLE (no mass DELETE, no bloat, no vacuum debt). The index is built
  in one pass (several times faster than row-by-row inserts) when the collection reaches
  `HNSW_AFTER` floats (10k chunks of 256 dimensions); below that, dense search is an exact scan of
  a few milliseconds. Later writes add to the graph row by row;
- `tsv tsvector GENERATED ... STORED` (the `english` configuration: stems, drops stop words) with a
  GIN index; keyword search ORs the query's words (`search.keyword_terms`) and ranks with
  `ts_rank_cd(tsv, q, 1|32)`: cover density over 1 + log(length), squashed to r/(r+1) by flag 32;
- `source` indexed (replacement and `source` filters), `attributes jsonb` (what filters see).

Replacement is one transaction (delete the document's chunks, COPY the new ones, upsert its row),
so a reader on any instance sees the old chunks or the new ones. Writers of one collection take its
catalog row FOR UPDATE, so instances sharing a database serialise their writes to it and never race
to create its table; schema creation holds an advisory lock. Reads take no locks: a query that meets
a table dropped under it (its collection deleted meanwhile) runs once more, without that collection.

HNSW returns at most `hnsw.ef_search` rows and applies a WHERE clause after the graph walk (pgvector
0.6, the version tested, has no iterative scan), so a filtered dense query whose approximate pass
comes back short of k is answered exactly (a scan of that collection's matching rows) instead.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from proxy.errors import ProviderUnavailable
from proxy.rag.search import Filter, keyword_terms
from proxy.rag.sqlite_store import COMMON_WORD_FLOOR, COMMON_WORD_SHARE
from proxy.rag.store import Collection, Hit, Ingested, StoredDocument, StoredFile
from proxy.rag.stores.pg_filters import to_postgres_where

POOL_SIZE = 4  # connections per store; the engine's worker threads queue for them
CONNECT_TIMEOUT = 10  # seconds: to connect, and to wait for a pooled connection (then 503)
# A collection gets its HNSW index when chunks x dimensions reach this (10k chunks of 256 dimensions):
# below it an exact scan takes a few milliseconds, is exact, and ingest skips the per-row graph insert.
HNSW_AFTER = 2_560_000
ANALYZE_AFTER = 1000  # chunks written at once that refresh the collection's statistics (if 20% of it)
EF_SEARCH = 100  # HNSW candidate list per query (pgvector's default is 40): recall over a few more visits
_SCHEMA_LOCK = 0x0_6D6E_6972_6167  # advisory lock key while creating the schema ("omni rag")
_ID = re.compile(r"^vs_[0-9a-f]{24}$")

_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS omni_rag_collections (
    id text PRIMARY KEY, name text UNIQUE NOT NULL, embedding_model text NOT NULL, dimensions integer,
    chunking jsonb NOT NULL, metadata jsonb NOT NULL, created_at bigint NOT NULL);
CREATE TABLE IF NOT EXISTS omni_rag_documents (
    collection_id text NOT NULL REFERENCES omni_rag_collections (id) ON DELETE CASCADE, source text NOT NULL,
    file_id text, content_hash text NOT NULL, bytes bigint NOT NULL, chunks integer NOT NULL,
    attributes jsonb NOT NULL, created_at bigint NOT NULL, PRIMARY KEY (collection_id, source));
CREATE TABLE IF NOT EXISTS omni_rag_files (
    id text PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY, filename text NOT NULL, purpose text NOT NULL,
    bytes bigint NOT NULL, created_at bigint NOT NULL, content bytea NOT NULL);
"""

_CHUNKS = """
CREATE TABLE {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, source text NOT NULL, chunk_index integer NOT NULL,
    content text NOT NULL, page integer, section text, file_id text, attributes jsonb NOT NULL,
    embedding vector({dims}) NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED);
CREATE INDEX {by_source} ON {table} (source);
CREATE INDEX {by_words} ON {table} USING gin (tsv);
"""

_COLLECTION = ("SELECT c.id, c.name, c.embedding_model, c.chunking, c.created_at, c.metadata, c.dimensions, "
               "count(d.source), coalesce(sum(d.chunks), 0), coalesce(sum(d.bytes), 0) "
               "FROM omni_rag_collections c LEFT JOIN omni_rag_documents d ON d.collection_id = c.id ")
_COPY_TYPES = ["text", "integer", "text", "integer", "text", "text", "jsonb", "vector"]

T = TypeVar("T")


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Connection-level failures become a 503 naming the store (the engine passes it to the client)."""
    @functools.wraps(method)
    def call(self: PgvectorStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise ProviderUnavailable(f"the pgvector RAG store ({self.where}) is unavailable: "
                                      f"{_oneline(exc)}") from exc
    return call


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def chunk_table(collection_id: str) -> sql.Identifier:
    if not _ID.match(collection_id):
        raise ValueError(f"not a collection id: {collection_id!r}")
    return sql.Identifier(f"omni_rag_chunks_{collection_id[3:]}")


class PgvectorStore:
    def __init__(self, dsn: str) -> None:
        try:
            info = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:  # its message quotes the string, which may hold a password
            raise ProviderUnavailable("the pgvector RAG store's `dsn` is not a PostgreSQL connection string "
                                      "(postgresql://user:password@host:port/database)") from None
        self.where = f"{info.get('host') or 'local socket'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
        try:
            with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
        except psycopg.OperationalError as exc:
            raise ProviderUnavailable(f"the pgvector RAG store ({self.where}) is unreachable: "
                                      f"{_oneline(exc)}") from exc
        except psycopg.errors.FeatureNotSupported as exc:
            raise ProviderUnavailable(f"the pgvector RAG store ({self.where}) needs the `vector` extension "
                                      f"on the server: {_oneline(exc)}") from exc
        except psycopg.Error as exc:
            raise ProviderUnavailable(f"the pgvector RAG store ({self.where}) could not create its tables: "
                                      f"{_oneline(exc)}") from exc
        self._pool = ConnectionPool(dsn, min_size=1, max_size=POOL_SIZE, open=True, configure=_configure,
                                    kwargs={"connect_timeout": CONNECT_TIMEOUT}, timeout=CONNECT_TIMEOUT)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    # -- collections ----------------------------------------------------------------
    @_guarded
    def create_collection(self, name: str, embedding_model: str, chunking: Mapping[str, Any],
                          metadata: Mapping[str, Any] | None = None) -> Collection:
        collection_id = "vs_" + uuid.uuid4().hex[:24]
        try:
            with self._transaction() as conn:
                conn.execute("INSERT INTO omni_rag_collections (id, name, embedding_model, chunking, metadata, "
                             "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                             (collection_id, name, embedding_model, Jsonb(dict(chunking)),
                              Jsonb(dict(metadata or {})), int(time.time())))
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"a collection named {name!r} exists") from None
        found = self.get_collection(collection_id)
        assert found is not None
        return found

    @_guarded
    def get_collection(self, name_or_id: str) -> Collection | None:
        with self._transaction() as conn:
            row = conn.execute(_COLLECTION + "WHERE c.id = %s OR c.name = %s GROUP BY c.id "
                               "ORDER BY c.id = %s DESC LIMIT 1", (name_or_id, name_or_id, name_or_id)).fetchone()
        return _collection(row) if row else None

    @_guarded
    def list_collections(self) -> list[Collection]:
        with self._transaction() as conn:
            rows = conn.execute(_COLLECTION + "GROUP BY c.id ORDER BY c.created_at, c.name").fetchall()
        return [_collection(row) for row in rows]

    @_guarded
    def delete_collection(self, collection_id: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute("DELETE FROM omni_rag_collections WHERE id = %s RETURNING dimensions",
                               (collection_id,)).fetchone()
            if row is not None and row[0] is not None:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(chunk_table(collection_id)))
        return row is not None

    # -- documents ------------------------------------------------------------------
    @_guarded
    def document_hashes(self, collection_id: str) -> dict[str, str]:
        with self._transaction() as conn:
            rows = conn.execute("SELECT source, content_hash FROM omni_rag_documents WHERE collection_id = %s",
                                (collection_id,)).fetchall()
        return dict(rows)  # type: ignore[arg-type]

    @_guarded
    def write_documents(self, collection_id: str, items: Sequence[Ingested]) -> None:
        if not items:
            return
        dims = {int(item.vectors.shape[1]) for item in items if len(item.chunks)}
        with self._transaction() as conn:
            row = conn.execute("SELECT dimensions FROM omni_rag_collections WHERE id = %s FOR UPDATE",
                               (collection_id,)).fetchone()
            if row is None:
                raise KeyError(collection_id)
            if len(dims) > 1 or (row[0] is not None and dims and dims != {row[0]}):
                raise ValueError(f"embedding dimensions {sorted(dims)} do not match the collection's {row[0]}")
            table = chunk_table(collection_id)
            if row[0] is None and dims:
                self._create_chunks(conn, collection_id, next(iter(dims)))
            has_table = row[0] is not None or bool(dims)
            now = int(time.time())
            for item in items:
                doc = item.document
                if has_table:
                    conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(table), (doc.source,))
                if len(item.chunks):
                    _copy_chunks(conn, table, item)
                conn.execute(
                    "INSERT INTO omni_rag_documents (collection_id, source, file_id, content_hash, bytes, chunks, "
                    "attributes, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (collection_id, source) DO UPDATE SET file_id = excluded.file_id, "
                    "content_hash = excluded.content_hash, bytes = excluded.bytes, chunks = excluded.chunks, "
                    "attributes = excluded.attributes, created_at = excluded.created_at",
                    (collection_id, doc.source, item.file_id, doc.content_hash, doc.size, len(item.chunks),
                     Jsonb(dict(doc.attributes)), now))
            if has_table:
                self._index_when_large(conn, collection_id)
        added = sum(len(item.chunks) for item in items)
        if added >= ANALYZE_AFTER:
            self._analyze(collection_id, added)

    def _index_when_large(self, conn: psycopg.Connection[Any], collection_id: str) -> None:
        """The collection's HNSW index, built in one pass once an exact scan would cost more than a walk."""
        table = chunk_table(collection_id)
        index = table.as_string(None).strip('"') + "_hnsw"
        row = conn.execute(
            "SELECT to_regclass(%s) IS NULL, (SELECT coalesce(sum(chunks), 0) FROM omni_rag_documents "
            "WHERE collection_id = %s) * (SELECT dimensions FROM omni_rag_collections WHERE id = %s)",
            (index, collection_id, collection_id)).fetchone()
        if row is not None and row[0] and row[1] >= HNSW_AFTER:
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)")
                         .format(sql.Identifier(index), table))

    def _analyze(self, collection_id: str, added: int) -> None:
        """Fresh planner statistics after a large write (keyword search reads its common words from them):
        autovacuum would get there within a minute or so; a new collection should not wait for it."""
        with self._transaction() as conn:
            table = chunk_table(collection_id)
            row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                               (table.as_string(None),)).fetchone()
            if row is not None and (row[0] < 0 or added >= 0.2 * row[0]):
                conn.execute(sql.SQL("ANALYZE {}").format(table))

    def _create_chunks(self, conn: psycopg.Connection[Any], collection_id: str, dims: int) -> None:
        table = chunk_table(collection_id)
        name = table.as_string(None).strip('"')
        conn.execute(sql.SQL(_CHUNKS).format(  # type: ignore[arg-type]
            table=table, dims=sql.Literal(dims), by_source=sql.Identifier(name + "_source"),
            by_words=sql.Identifier(name + "_tsv")))
        conn.execute("UPDATE omni_rag_collections SET dimensions = %s WHERE id = %s", (dims, collection_id))

    @_guarded
    def list_documents(self, collection_id: str) -> list[StoredDocument]:
        with self._transaction() as conn:
            rows = conn.execute("SELECT collection_id, source, file_id, content_hash, bytes, chunks, created_at, "
                                "attributes FROM omni_rag_documents WHERE collection_id = %s "
                                "ORDER BY created_at, source", (collection_id,)).fetchall()
        return [StoredDocument(*row[:7], attributes=row[7]) for row in rows]

    @_guarded
    def delete_document(self, collection_id: str, source: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute("SELECT dimensions FROM omni_rag_collections WHERE id = %s FOR UPDATE",
                               (collection_id,)).fetchone()
            if row is None:
                return False
            if row[0] is not None:
                conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(chunk_table(collection_id)),
                             (source,))
            deleted = conn.execute("DELETE FROM omni_rag_documents WHERE collection_id = %s AND source = %s",
                                   (collection_id, source)).rowcount
        return bool(deleted)

    # -- search ---------------------------------------------------------------------
    @_guarded
    def dense(self, collection_ids: Sequence[str], vector: np.ndarray, k: int,
              where: Filter | None = None) -> list[tuple[str, float]]:
        query = np.ascontiguousarray(vector, dtype=np.float32)
        condition = to_postgres_where(where) if where is not None else sql.SQL("true")

        def ranked(conn: psycopg.Connection[Any], ids: list[str], exact: bool) -> list[tuple[str, float]]:
            rows = conn.execute(dense_query(ids, condition, exact), {"q": query, "k": k}).fetchall()
            return [(row[0], 1.0 - float(row[1])) for row in rows]

        def search(conn: psycopg.Connection[Any], ids: list[str]) -> list[tuple[str, float]]:
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(1000, max(EF_SEARCH, k))),))
            found = ranked(conn, ids, exact=False)
            if where is not None:
                short = [cid for cid in ids if sum(1 for c, _ in found if c.startswith(cid + ".")) < k]
                if short:  # the approximate pass lost rows to the filter: answer those collections exactly
                    found = [p for p in found if p[0].split(".")[0] not in short] + ranked(conn, short, exact=True)
            return sorted(found, key=lambda pair: -pair[1])[:k]

        return self._search(collection_ids, int(query.shape[0]), search)

    @_guarded
    def keyword(self, collection_ids: Sequence[str], query: str, k: int,
                where: Filter | None = None) -> list[tuple[str, float]]:
        words = keyword_terms(query)
        if not words:
            return []
        condition = to_postgres_where(where) if where is not None else sql.SQL("true")

        def search(conn: psycopg.Connection[Any], ids: list[str]) -> list[tuple[str, float]]:
            terms = _tsqueries(conn, ids, words)
            parts = [sql.SQL("(SELECT {cid} || '.' || id AS id, ts_rank_cd(tsv, q, 33) AS s "
                             "FROM {table}, to_tsquery('english', {terms}) q WHERE tsv @@ q AND {where} "
                             "ORDER BY s DESC, id LIMIT %(k)s)").format(
                cid=sql.Literal(cid), table=chunk_table(cid), terms=sql.Literal(terms[cid]), where=condition)
                for cid in ids if terms.get(cid)]
            if not parts:
                return []
            query_sql = sql.SQL("SELECT * FROM ({}) ranked ORDER BY s DESC, id LIMIT %(k)s").format(
                sql.SQL(" UNION ALL ").join(parts))
            rows = conn.execute(query_sql, {"k": k}).fetchall()
            return [(row[0], max(float(row[1]), 1e-9)) for row in rows]

        return self._search(collection_ids, None, search)

    def _search(self, collection_ids: Sequence[str], dims: int | None,
                search: Callable[[psycopg.Connection[Any], list[str]], list[tuple[str, float]]]
                ) -> list[tuple[str, float]]:
        for attempt in (1, 2):
            with self._transaction() as conn:
                rows = conn.execute("SELECT id FROM omni_rag_collections WHERE id = ANY(%s) AND dimensions "
                                    "IS NOT NULL AND (%s::integer IS NULL OR dimensions = %s)",
                                    (list(collection_ids), dims, dims)).fetchall()
                ids = sorted(row[0] for row in rows)
                if not ids:
                    return []
                try:
                    with conn.transaction():
                        return search(conn, ids)
                except psycopg.errors.UndefinedTable:
                    if attempt == 2:
                        raise
        return []

    @_guarded
    def hits(self, chunk_ids: Sequence[str]) -> dict[str, Hit]:
        wanted: dict[str, list[int]] = {}
        for chunk_id in chunk_ids:
            cid, _, number = chunk_id.partition(".")
            if _ID.match(cid) and number.isdigit():
                wanted.setdefault(cid, []).append(int(number))
        if not wanted:
            return {}

        def fetch(conn: psycopg.Connection[Any], ids: list[str]) -> list[tuple[str, float]]:
            parts = [sql.SQL("(SELECT {cid}, k.name, c.id, c.content, c.source, c.chunk_index, c.page, c.section, "
                             "c.file_id, c.attributes FROM {table} c, omni_rag_collections k "
                             "WHERE k.id = {cid} AND c.id = ANY({rows}))").format(
                cid=sql.Literal(cid), table=chunk_table(cid), rows=sql.Literal(wanted[cid])) for cid in ids]
            for r in conn.execute(sql.SQL(" UNION ALL ").join(parts)).fetchall():
                key = f"{r[0]}.{r[2]}"
                found[key] = Hit(key, r[1], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
            return []

        found: dict[str, Hit] = {}
        self._search(list(wanted), None, fetch)
        return found

    # -- uploads ----------------------------------------------------------------------
    @_guarded
    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile("file-" + uuid.uuid4().hex[:24], filename, purpose, len(content), int(time.time()))
        with self._transaction() as conn:
            conn.execute("INSERT INTO omni_rag_files (id, filename, purpose, bytes, created_at, content) "
                         "VALUES (%s, %s, %s, %s, %s, %s)",
                         (stored.id, filename, purpose, stored.bytes, stored.created_at, content))
        return stored

    @_guarded
    def get_file(self, file_id: str) -> StoredFile | None:
        with self._transaction() as conn:
            row = conn.execute("SELECT id, filename, purpose, bytes, created_at FROM omni_rag_files WHERE id = %s",
                               (file_id,)).fetchone()
        return StoredFile(*row) if row else None

    @_guarded
    def file_content(self, file_id: str) -> bytes | None:
        with self._transaction() as conn:
            row = conn.execute("SELECT content FROM omni_rag_files WHERE id = %s", (file_id,)).fetchone()
        return bytes(row[0]) if row else None

    @_guarded
    def list_files(self) -> list[StoredFile]:
        with self._transaction() as conn:
            rows = conn.execute("SELECT id, filename, purpose, bytes, created_at FROM omni_rag_files "
                                "ORDER BY created_at, seq").fetchall()
        return [StoredFile(*row) for row in rows]

    @_guarded
    def delete_file(self, file_id: str) -> bool:
        with self._transaction() as conn:
            return bool(conn.execute("DELETE FROM omni_rag_files WHERE id = %s", (file_id,)).rowcount)


def dense_query(collection_ids: Sequence[str], condition: sql.Composable, exact: bool) -> sql.Composed:
    """Each collection's k nearest rows (chunk id, cosine distance) for the parameters `q` and `k`.

    `ORDER BY embedding <=> q LIMIT k` is the shape pgvector serves from the HNSW index; the exact
    form orders by `(embedding <=> q) + 0`, which keeps the planner off the index.
    """
    order = sql.SQL("(embedding <=> %(q)s) + 0" if exact else "embedding <=> %(q)s")
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT {cid} || '.' || id, embedding <=> %(q)s AS d FROM {table} WHERE {where} "
                "ORDER BY {order} LIMIT %(k)s)").format(
            cid=sql.Literal(cid), table=chunk_table(cid), where=condition, order=order)
        for cid in collection_ids)


def _tsqueries(conn: psycopg.Connection[Any], collection_ids: list[str], words: list[str]) -> dict[str, str]:
    """Each collection's tsquery: the query's words OR-ed, less those most of its chunks contain.

    As in the SQLite store: a word in more than a few percent of the chunks adds almost nothing to
    the ranking but makes PostgreSQL rank every chunk it is in. Which words those are comes free from
    the planner's statistics (ANALYZE keeps the most common lexemes of a tsvector column with their
    frequencies); a word not listed is rarer than every listed one. The rarest word stays when all are
    common; a collection not analysed yet keeps every word. \\w+ words hold no tsquery operator.
    """
    stems = conn.execute("SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(%s::text[]) "
                         "WITH ORDINALITY AS u (w, n) ORDER BY n", (words,)).fetchall()
    names = {f"omni_rag_chunks_{cid[3:]}": cid for cid in collection_ids}
    stats = conn.execute(
        "SELECT c.relname, c.reltuples, s.most_common_elems::text::text[], s.most_common_elem_freqs "
        "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = c.relname "
        "AND s.attname = 'tsv' WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)",
        (list(names),)).fetchall()
    queries = {}
    for name, rows, elements, frequencies in stats:
        share = dict(zip(elements or [], frequencies or []))
        chunks = max(float(rows), 0.0)
        limit = max(COMMON_WORD_FLOOR, COMMON_WORD_SHARE * chunks)
        counted = sorted((max(share.get(lexeme, 0.0) for lexeme in lexemes) * chunks, n, word)
                         for n, (word, lexemes) in enumerate(stems) if lexemes)
        chosen = [word for df, _, word in counted if df <= limit] or [word for _, _, word in counted[:1]]
        if chosen:
            queries[names[name]] = " | ".join(chosen)
    return queries


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Each pooled connection: numpy arrays to and from `vector` (binary), autocommit off."""
    from pgvector.psycopg import register_vector

    register_vector(conn)
    conn.commit()


def _copy_chunks(conn: psycopg.Connection[Any], table: sql.Identifier, item: Ingested) -> None:
    vectors = np.ascontiguousarray(item.vectors, dtype=np.float32)
    statement = sql.SQL("COPY {} (source, chunk_index, content, page, section, file_id, attributes, embedding) "
                        "FROM STDIN WITH (FORMAT BINARY)").format(table)
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(_COPY_TYPES)
        for i, chunk in enumerate(item.chunks):
            copy.write_row((item.document.source, chunk.chunk_index, _text(chunk.content), chunk.page,
                            _text(chunk.section), item.file_id, Jsonb(dict(chunk.metadata)), vectors[i]))


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters (a binary file parsed as text may have some)."""
    return value.replace("\x00", "") if value is not None and "\x00" in value else value


def _collection(row: tuple[Any, ...]) -> Collection:
    return Collection(id=row[0], name=row[1], embedding_model=row[2], chunking=row[3], created_at=row[4],
                      metadata=row[5], dimensions=row[6], documents=row[7], chunks=int(row[8]),
                      usage_bytes=int(row[9]))
