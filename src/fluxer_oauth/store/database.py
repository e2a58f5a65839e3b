"""The database handle: engine creation for SQLite and PostgreSQL, and transactions.

``read()`` opens a plain transaction; ``write()`` opens one that takes the write lock up
front (``BEGIN IMMEDIATE`` on SQLite), so a transaction that reads and then writes never
fails half-way on a lock upgrade. PostgreSQL relies on row locks of conditional UPDATEs.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from fluxer_oauth.core.errors import ApiError

_WRITE = "fluxer_write"


class DatabaseUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(503, "SERVICE_UNAVAILABLE", "the database is unreachable; try again shortly")


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, pool_size=8, max_overflow=0, pool_pre_ping=False)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def on_begin(connection):
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo)
        self.dialect = self.engine.dialect.name

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as connection:
                async with connection.begin():
                    yield connection
        except (OperationalError, DBAPIError, OSError) as exc:
            _reraise(exc)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as connection:
                connection = await connection.execution_options(**{_WRITE: True})
                async with connection.begin():
                    yield connection
        except (OperationalError, DBAPIError, OSError) as exc:
            _reraise(exc)

    async def ping(self) -> bool:
        try:
            async with self.read() as connection:
                await connection.exec_driver_sql("SELECT 1")
            return True
        except ApiError:
            return False

    async def close(self) -> None:
        await self.engine.dispose()


def _reraise(exc: Exception) -> None:
    """Connection-level failures become 503; errors in a statement stay what they are."""
    if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(exc, OperationalError):
        raise exc
    raise DatabaseUnavailable() from exc
