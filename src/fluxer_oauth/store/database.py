"""The database handle: transactions on SQLite or PostgreSQL behind one interface.

Query functions are ``async`` and take a connection with an awaitable ``execute``:

- **PostgreSQL** runs on SQLAlchemy's asyncio engine with asyncpg.
- **SQLite** runs on the standard library driver *on the event-loop thread*: an indexed
  lookup costs far less than handing each statement to a worker thread and back. A
  transaction never yields to the loop (nothing inside it awaits real I/O), so in-process
  transactions cannot interleave; across processes SQLite's own lock and busy timeout
  serialize writers.

``read()`` runs without an explicit transaction (autocommit: one statement, one round
trip). ``write()`` opens one that takes the write lock up front (``BEGIN IMMEDIATE`` on
SQLite), so a read-then-write transaction never fails half-way on a lock upgrade;
PostgreSQL relies on row locks of conditional UPDATEs.

The hot paths do not go through SQLAlchemy: ``tokens`` and ``clients`` are the typed
interface of store/interfaces.py, on the backend's engine of store/hot.py.

When the database cannot be reached, ``StoreUnavailable`` (store/errors.py) is raised;
an error in a statement stays the driver's.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import QueuePool

from fluxer_oauth.store.errors import StoreUnavailable
from fluxer_oauth.store.hot import PostgresHot, SqliteHot
from fluxer_oauth.store.keys import SigningKeyStore
from fluxer_oauth.store.interfaces import ClientStore, TokenStore

_WRITE = "fluxer_write"


class _SyncConnection:
    """A synchronous SQLAlchemy connection behind the awaitable interface of the queries."""

    __slots__ = ("_connection", "dialect")

    def __init__(self, connection) -> None:
        self._connection = connection
        self.dialect = connection.dialect

    async def execute(self, statement, parameters=None):
        return self._connection.execute(statement, parameters)

    async def exec_driver_sql(self, sql: str, parameters=None):
        return self._connection.exec_driver_sql(sql, parameters)


def _sqlite_engine(url: str, synchronous: str):
    engine = create_sync_engine(
        url,
        poolclass=QueuePool, pool_size=4, max_overflow=4,
        connect_args={"check_same_thread": False, "timeout": 10},
    )

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL", pool_size: int = 20,
                 key_cache_seconds: float = 60.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.sync_engine = _sqlite_engine(url, sqlite_synchronous)
            self._async_engine = None
            self.hot = SqliteHot(self.sync_engine.url.database or ":memory:", sqlite_synchronous)
        else:
            self._async_engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True)
            self.sync_engine = self._async_engine.sync_engine
            self.hot = PostgresHot(self.sync_engine.url.set(drivername="postgresql").render_as_string(False))
        self.dialect = self.sync_engine.dialect.name
        # self.hot is the engine (tests look inside it); callers use these two.
        self.tokens = TokenStore(self.hot)
        self.clients = ClientStore(self.hot)
        self.keys = SigningKeyStore(self, key_cache_seconds)

    @asynccontextmanager
    async def read(self) -> AsyncIterator:
        try:
            if self.is_sqlite:
                with self.sync_engine.connect() as connection:
                    yield _SyncConnection(connection)
                    connection.rollback()  # end the implicit read snapshot
            else:
                async with self._async_engine.connect() as connection:
                    connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    yield connection
        except (OperationalError, DBAPIError, OSError) as exc:
            _reraise(exc)

    @asynccontextmanager
    async def write(self) -> AsyncIterator:
        try:
            if self.is_sqlite:
                try:
                    with self.sync_engine.connect() as connection:
                        connection = connection.execution_options(**{_WRITE: True})
                        with connection.begin():
                            yield _SyncConnection(connection)
                finally:
                    # This commit happened inside the current loop turn: the hot store's
                    # cache must look at data_version again before its next lookup.
                    self.hot.forget_version_check()
            else:
                async with self._async_engine.begin() as connection:
                    yield connection
        except (OperationalError, DBAPIError, OSError) as exc:
            _reraise(exc)

    def run_sync(self, work):
        """Run ``work(sync_connection)`` in one transaction (migrations); returns a coroutine."""
        if self.is_sqlite:
            async def run():
                with self.sync_engine.begin() as connection:
                    return work(connection)
            return run()

        async def run_async():
            async with self._async_engine.begin() as connection:
                return await connection.run_sync(work)
        return run_async()

    async def ping(self) -> bool:
        try:
            async with self.read() as connection:
                await connection.exec_driver_sql("SELECT 1")
            return True
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        await self.hot.close()
        if self._async_engine is not None:
            await self._async_engine.dispose()
        else:
            self.sync_engine.dispose()


TOO_MANY_CONNECTIONS = "53300"  # PostgreSQL's SQLSTATE: max_connections, or the role's limit


def _reraise(exc: Exception) -> None:
    """Connection-level failures become ``StoreUnavailable``; errors in a statement stay what
    they are. A server that takes no more connections is unavailable too, for now."""
    out_of_connections = getattr(getattr(exc, "orig", None), "sqlstate", None) == TOO_MANY_CONNECTIONS
    if (isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(exc, OperationalError)
            and not out_of_connections):
        raise exc
    raise StoreUnavailable() from exc
