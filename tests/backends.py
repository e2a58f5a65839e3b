"""Which storage the suite runs on: FLUXER_TEST_BACKEND=sqlite (default) or postgres.

On PostgreSQL every test gets a database of its own, migrated and empty, and a Redis key
prefix of its own (dropped afterwards). The databases come from a template migrated once per
run; a database a test is done with is emptied (DELETE of every row, in one transaction) and
handed to the next test, which is ~20 times cheaper than CREATE DATABASE ... TEMPLATE and
DROP DATABASE (each DROP forces a checkpoint). One whose schema or version differs from the
template's afterwards, or that held many rows, is dropped instead."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import threading
from pathlib import Path

import asyncpg
import redis

from fluxer_oauth.store.database import Database
from fluxer_oauth.store.migrate import migrate

BACKEND = os.environ.get("FLUXER_TEST_BACKEND", "sqlite")
POSTGRES_URL = os.environ.get("FLUXER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FLUXER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES = BACKEND == "postgres"


def _pg_url(database: str) -> str:
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + database


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# What must be as the template left it for a database to be reused: every relation with its
# columns, constraints, indexes, triggers, functions, types, sequences' values, the schema
# version and the database's settings. Rows are not in it: they are deleted.
_FINGERPRINT = r"""
SELECT md5(coalesce(string_agg(item, E'\n' ORDER BY item), '')) FROM (
  SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' ' || coalesce((
      SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
                        || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ', ' ORDER BY a.attnum)
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  UNION ALL SELECT 'con ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
  UNION ALL SELECT 'idx ' || pg_get_indexdef(indexrelid) FROM pg_index
    WHERE indrelid >= 16384  -- user tables
  UNION ALL SELECT 'trg ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT 'fn ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL SELECT 'type ' || t.typnamespace::regnamespace::text || '.' || t.typname FROM pg_type t
    WHERE t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
      AND t.typnamespace::regnamespace::text NOT LIKE 'pg_toast%'
  UNION ALL SELECT 'enum ' || enumtypid::regtype::text || ' ' || enumlabel FROM pg_enum
  UNION ALL SELECT 'ns ' || nspname FROM pg_namespace
  UNION ALL SELECT 'ext ' || extname || ' ' || extversion FROM pg_extension
  UNION ALL SELECT 'seq ' || schemaname || '.' || sequencename || ' ' || coalesce(last_value::text, '-')
    FROM pg_sequences
  UNION ALL SELECT 'set ' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL SELECT 'version ' || version_num FROM alembic_version
) AS items
"""

# Above this many rows deleted the database is dropped instead: its dead rows would make the
# next test's scans slower than a fresh copy.
_REUSE_MAX_ROWS = 5000


async def _fingerprint(url: str) -> str | None:
    """The template's fingerprint; None (no reuse) if its migrations left rows to keep."""
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
            "AND NOT (schemaname = 'public' AND tablename = 'alembic_version')")
        for table in tables:
            if await connection.fetchval(f"SELECT EXISTS (SELECT FROM {table['name']})"):
                return None
        return await connection.fetchval(_FINGERPRINT)
    finally:
        await connection.close()


async def _empty(name: str, fingerprint: str) -> bool:
    """Empties database ``name`` for reuse; False if it cannot be reused as it is."""
    admin = await asyncpg.connect(POSTGRES_URL)
    try:  # sessions a test left behind (a killed server's, a pool not closed), as WITH (FORCE) would
        await admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await admin.close()
    connection = await asyncpg.connect(_pg_url(name))
    try:
        if await connection.fetchval("SELECT count(*) FROM pg_prepared_xacts WHERE database = $1", name):
            return False
        async with connection.transaction():
            if await connection.fetchval(_FINGERPRINT) != fingerprint:
                return False
            tables = await connection.fetch(
                "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
                "AND NOT (schemaname = 'public' AND tablename = 'alembic_version')")
            await connection.execute("SET LOCAL session_replication_role = replica")  # no FK checks: any order
            deleted = 0
            for table in tables:
                status = await connection.execute(f"DELETE FROM {table['name']}")
                deleted += int(status.split()[-1])
            if deleted > _REUSE_MAX_ROWS:
                return False
        return True
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    db = Database(url)
    await migrate(db)
    await db.close()


class Backend:
    """Creates migrated databases for tests, quickly."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.template: str | None = None
        self.fingerprint: str | None = None
        self.free: list[str] = []  # emptied PostgreSQL databases, ready for the next test
        self.lock = threading.Lock()

    def start(self) -> None:
        if POSTGRES:
            self.template = f"fluxer_tpl_{secrets.token_hex(4)}"
            asyncio.run(_admin(f"CREATE DATABASE {self.template}"))
            asyncio.run(_migrate(_pg_url(self.template).replace("postgresql://", "postgresql+asyncpg://")))
            self.fingerprint = asyncio.run(_fingerprint(_pg_url(self.template)))
        else:
            self.template = str(self.workdir / "template.db")
            asyncio.run(_migrate(f"sqlite:///{self.template}"))

    def stop(self) -> None:
        if POSTGRES and self.template:
            for name in self.free:
                asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            self.free.clear()
            asyncio.run(_admin(f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)"))

    def new_database(self, directory: Path) -> str:
        """A fresh migrated database; returns its FLUXER_DATABASE_URL."""
        if POSTGRES:
            with self.lock:
                if self.free:
                    return _pg_url(self.free.pop())
            name = f"fluxer_t_{secrets.token_hex(6)}"
            asyncio.run(_admin(f"CREATE DATABASE {name} TEMPLATE {self.template}"))
            return _pg_url(name)
        path = directory / f"fluxer-{secrets.token_hex(3)}.db"
        shutil.copy(self.template, path)
        return f"sqlite:///{path}"

    def drop_database(self, url: str) -> None:
        """Done with: emptied for the next test, or dropped if it cannot be reused."""
        if POSTGRES:
            name = url.rsplit("/", 1)[1]
            try:
                reusable = self.fingerprint is not None and asyncio.run(_empty(name, self.fingerprint))
            except (OSError, asyncpg.PostgresError):
                reusable = False
            if reusable:
                with self.lock:
                    self.free.append(name)
            else:
                asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def new_redis_prefix() -> str:
    return f"fluxer-test-{secrets.token_hex(4)}"


def drop_redis_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def backend_settings() -> dict:
    """Settings the backend adds: Redis comes with PostgreSQL, as in production."""
    return {"redis_url": REDIS_URL} if POSTGRES else {}
