"""Which storage the suite runs on: FLUXER_TEST_BACKEND=sqlite (default) or postgres.

On PostgreSQL every test gets its own database, created from a template migrated once
per run (CREATE DATABASE ... TEMPLATE takes ~30 ms), and a Redis key prefix of its own;
both are dropped afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
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


async def _migrate(url: str) -> None:
    db = Database(url)
    await migrate(db)
    await db.close()


class Backend:
    """Creates migrated databases for tests, quickly."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.template: str | None = None

    def start(self) -> None:
        if POSTGRES:
            self.template = f"fluxer_tpl_{secrets.token_hex(4)}"
            asyncio.run(_admin(f"CREATE DATABASE {self.template}"))
            asyncio.run(_migrate(_pg_url(self.template).replace("postgresql://", "postgresql+asyncpg://")))
        else:
            self.template = str(self.workdir / "template.db")
            asyncio.run(_migrate(f"sqlite:///{self.template}"))

    def stop(self) -> None:
        if POSTGRES and self.template:
            asyncio.run(_admin(f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)"))

    def new_database(self, directory: Path) -> str:
        """A fresh migrated database; returns its FLUXER_DATABASE_URL."""
        if POSTGRES:
            name = f"fluxer_t_{secrets.token_hex(6)}"
            asyncio.run(_admin(f"CREATE DATABASE {name} TEMPLATE {self.template}"))
            return _pg_url(name)
        path = directory / f"fluxer-{secrets.token_hex(3)}.db"
        shutil.copy(self.template, path)
        return f"sqlite:///{path}"

    def drop_database(self, url: str) -> None:
        if POSTGRES:
            asyncio.run(_admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)"))


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
