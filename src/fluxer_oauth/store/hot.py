"""The hot queries, on the raw driver: the bearer and bot lookups behind every API read,
the client lookup of every token request, and the insert of a client-credentials token.

This module is the engine behind the typed interface of store/interfaces.py (callers use
``db.tokens`` and ``db.clients``, never this module): one engine per backend, each with
what makes it fast there. SQLAlchemy's per-statement Python work is skipped: on SQLite a
lookup is an indexed read on the event-loop thread, on PostgreSQL one prepared-statement
round trip. A revocation is seen by every worker at once: on PostgreSQL every lookup reads
the database (the lookups of one loop turn in one statement); on SQLite found rows are
kept only while the database has not changed (see SqliteHot).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Callable, Sequence

import asyncpg

from fluxer_oauth.store import redemptions
from fluxer_oauth.store.errors import StoreUnavailable
from fluxer_oauth.store.records import (
    APPLICATION_FIELDS, USER_FIELDS, AccessToken, Application, BotLogin, LiveToken, NewToken, User,
)
from fluxer_oauth.store.tables import ACCESS

_USER_COLUMNS = ", ".join(f"u.{name}" for name in USER_FIELDS)

# In the statements, {0} is the key and {1} (the token lookups) "now"; they become ? or $n.
_ACCESS_TOKEN = (
    f"SELECT t.application_id, t.scopes, t.expires_at, t.created_at, {_USER_COLUMNS} "
    "FROM tokens t JOIN users u ON u.id = t.user_id JOIN applications a ON a.id = t.application_id "
    f"WHERE t.token_hash = {{0}} AND t.kind = {ACCESS} AND t.revoked_at IS NULL AND t.expires_at > {{1}} "
    "AND u.disabled_at IS NULL AND a.disabled_at IS NULL"
)
_LIVE_TOKEN = (
    f"SELECT {', '.join('t.' + name for name in LiveToken._fields)} "
    "FROM tokens t JOIN users u ON u.id = t.user_id JOIN applications a ON a.id = t.application_id "
    "WHERE t.token_hash = {0} AND t.revoked_at IS NULL AND t.expires_at > {1} "
    "AND u.disabled_at IS NULL AND a.disabled_at IS NULL"
)
# An application whose owner is disabled authenticates nowhere (client secret and bot token
# alike) until the owner is enabled again; what it had been granted ended with the disabling.
_OWNER_ENABLED = "JOIN users o ON o.id = a.owner_id AND o.disabled_at IS NULL"
_BOT = (
    f"SELECT a.bot_token_hash, {_USER_COLUMNS} "
    f"FROM applications a JOIN users u ON u.id = a.bot_id {_OWNER_ENABLED} "
    "WHERE a.id = {0} AND a.disabled_at IS NULL AND u.disabled_at IS NULL"
)
_APPLICATION = (f"SELECT {', '.join('a.' + name for name in APPLICATION_FIELDS)} FROM applications a "
                f"{_OWNER_ENABLED} WHERE a.id = {{0}}")
_TOKEN_COLUMNS = ("token_hash, kind, application_id, user_id, grant_id, family_id, issue_id, scopes, guild_id, "
                  "created_at, expires_at, revoked_at, rotated")
_INSERT_TOKEN = (
    f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
    "VALUES ({0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, NULL, {11})"
)


def _qmarks(sql: str) -> str:
    return sql.format(*["?"] * 12)


def _dollars(sql: str) -> str:
    return sql.format(*[f"${n}" for n in range(1, 13)])


def _lookup_batch_form(sql: str, array_type: str) -> str:
    """A lookup of one key ({0}) made once for each key of an array, each row led by its key.
    The one-key statement runs as it is for each key (OFFSET 0 keeps the planner from merging
    it into the outer query), so each is still found through its own index: merged, or as
    ``= ANY(array)``, the planner walked all of a client's tokens through another index."""
    return (f"SELECT k.key, x.* FROM unnest({{0}}::{array_type}[]) AS k(key) "
            f"CROSS JOIN LATERAL ({sql.replace('{0}', 'k.key')} OFFSET 0) AS x")


class Lookup:
    """One kind of lookup by key: its statement in each backend's form and how a found row
    becomes a record. ``expiry``: the record's index of the expiry re-checked against "now"
    on a hit of the SQLite cache (None: the lookup takes no "now")."""

    __slots__ = ("name", "sqlite", "postgres", "postgres_batch", "expiry", "make")

    def __init__(self, name: str, sql: str, key_type: str, expiry: int | None, make: Callable[[Sequence], tuple]):
        self.name = name
        self.sqlite = _qmarks(sql)
        self.postgres = _dollars(sql)
        self.postgres_batch = _dollars(_lookup_batch_form(sql, key_type))
        self.expiry = expiry
        self.make = make

    def __repr__(self) -> str:
        return f"Lookup({self.name})"


def _access_token(values: Sequence) -> AccessToken:
    return AccessToken(values[0], values[1], values[2], values[3], User._make(values[4:]))


def _bot_login(values: Sequence) -> BotLogin:
    return BotLogin(values[0], User._make(values[1:]))


ACCESS_TOKEN = Lookup("access_token", _ACCESS_TOKEN, "bytea", 2, _access_token)
LIVE_TOKEN = Lookup("live_token", _LIVE_TOKEN, "bytea", 4, LiveToken._make)
BOT = Lookup("bot", _BOT, "bigint", None, _bot_login)
APPLICATION = Lookup("application", _APPLICATION, "bigint", None, Application._make)

# The group-committed inserts, by name; each row is a tuple of the statement's arguments
# (records.NewToken for INSERT_TOKEN, records.ClientToken for ISSUE_CLIENT_TOKEN).
INSERT_TOKEN = "insert_token"
# Written only when the application still has this secret hash, is enabled, has an enabled
# owner and has a bot (whose user the token is for); the answer for each row is whether it
# was written.
ISSUE_CLIENT_TOKEN = "issue_client_token"

# Batch forms of the inserts on PostgreSQL: (statement over arrays, one element per row,
# which unnest zips back into rows; whether it returns the keys of the rows it wrote).
_POSTGRES_BATCHES = {
    INSERT_TOKEN: (
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
        "SELECT h, k, a, u, g, f, i, s, gu, c, e, NULL, r FROM unnest($1::bytea[], $2::smallint[], $3::bigint[], "
        "$4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::float8[], "
        "$11::float8[], $12::boolean[]) AS t(h, k, a, u, g, f, i, s, gu, c, e, r)",
        False,
    ),
    # The check and the write are one statement, so no lookup has to come first, and a
    # secret reset or a disabling committed before it is never missed.
    ISSUE_CLIENT_TOKEN: (
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
        f"SELECT t.h, {ACCESS}, a.id, a.bot_id, NULL, t.i, t.i, t.s, NULL, t.c, t.e, NULL, false "
        "FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[], $5::text[], $6::float8[], "
        "$7::float8[]) AS t(h, a, sh, i, s, c, e) "
        "JOIN applications a ON a.id = t.a AND a.secret_hash = t.sh AND a.disabled_at IS NULL AND NOT a.public_client "
        f"AND a.bot_id IS NOT NULL {_OWNER_ENABLED} "
        # Read locked: a reset or a disabling under way is waited for and its outcome re-read
        # (a plain read would see the row as it was, and the ending's revocation, made
        # before this insert committed, would miss the token).
        "FOR SHARE OF a, o "
        "RETURNING token_hash",
        True,
    ),
}


# SQLite's form of ISSUE_CLIENT_TOKEN: the same check and write for a VALUES list of rows
# (whose columns SQLite names column1..column7, in the order of the arguments).
_SQLITE_CHECKED_INSERTS = {
    ISSUE_CLIENT_TOKEN: (
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
        f"SELECT v.column1, {ACCESS}, a.id, a.bot_id, NULL, v.column4, v.column4, v.column5, NULL, v.column6, "
        "v.column7, NULL, 0 FROM (VALUES {rows}) AS v "
        "JOIN applications a ON a.id = v.column2 AND a.secret_hash = v.column3 AND a.disabled_at IS NULL AND NOT a.public_client "
        f"AND a.bot_id IS NOT NULL {_OWNER_ENABLED} "
        "RETURNING token_hash",
        "(?, ?, ?, ?, ?, ?, ?)",
    ),
}
_SQLITE_PLAIN_INSERTS = {INSERT_TOKEN: _qmarks(_INSERT_TOKEN)}


# What asyncpg raises when PostgreSQL cannot be reached, takes no more connections (its
# max_connections, or the role's limit), or the connection died.
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                      asyncpg.TooManyConnectionsError)


class _GroupCommit:
    """Writes committed before ``write`` returns. Writes that arrive within ``WINDOW_SECONDS``
    of each other share one transaction (group commit): the commit, not the statement, is
    the expensive part (a WAL append on SQLite, an fsync on PostgreSQL), so under load each
    request pays a fraction of one. When the shared transaction fails for a reason of one
    request's own (a duplicate key, a deadlock between batches), each request is written
    again alone, so that only the failing one fails.

    What comes here: inserts of new rows, and the redemptions of store/redemptions.py (a
    code redeemed or a refresh token rotated, with the new pair). On SQLite a write through
    the hot connection does not move its own data_version: the redemptions tell the cache
    which tokens they ended; anything else that changes rows must use Database.write().
    """

    # How long the first insert of a batch waits for company: long enough for the requests
    # already on their way to join, short against a request's own latency. (uvloop rounds
    # timers to whole milliseconds, so 0.3 ms means "after the loop next polls for input".)
    WINDOW_SECONDS = 0.0003

    # Whether ISSUE_CLIENT_TOKEN is worth using without a lookup first: where a lookup is a
    # round trip (PostgreSQL), the client-credentials grant lets the insert check the client.
    checks_clients_on_insert = False

    def __init__(self) -> None:
        self._pending: dict[str, list] = {}
        self._flush_scheduled = False

    async def write(self, statement: str, row: tuple):
        """What the statement says of this row (whether it was written, for the checking
        insert; None for the plain one), once it is committed."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.setdefault(statement, []).append((row, done))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_later(self.WINDOW_SECONDS, self._start_flush, loop)
        return await done

    def _start_flush(self, loop) -> None:
        loop.create_task(self._flush())

    def _take_pending(self) -> dict[str, list]:
        pending, self._pending, self._flush_scheduled = self._pending, {}, False
        return pending

    async def _flush(self) -> None:
        pending = self._take_pending()
        results: dict[str, list | None] = {}
        try:
            results = await self._write_batch(_rows_by_statement(pending))
        except Exception as exc:  # every waiter learns what happened to its row
            outcome = exc
        else:
            outcome = None
        self._settle(pending, results, outcome)

    @staticmethod
    def _settle(pending: dict[str, list], results: dict[str, list | None], outcome: Exception | None) -> None:
        """Answers every waiter: ``outcome`` when the whole batch failed, else its row's
        result (an exception there: that row alone failed)."""
        for name, batch in pending.items():
            row_results = results.get(name)
            for index, (_, done) in enumerate(batch):
                if done.done():
                    continue
                if outcome is not None:
                    done.set_exception(outcome)
                    continue
                result = row_results[index] if row_results is not None else None
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)

    async def _write_batch(self, pending: dict[str, list[tuple]]) -> dict[str, list | None]:
        raise NotImplementedError


def _rows_by_statement(pending: dict[str, list]) -> dict[str, list[tuple]]:
    return {name: [row for row, _ in batch] for name, batch in pending.items()}


def _sqlite_unavailable(exc: Exception) -> bool:
    """Whether a failed SQLite write says the database is out of reach (locked, I/O), not
    that one request's rows were refused (a constraint)."""
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError)


class SqliteHot(_GroupCommit):
    """On one dedicated autocommit connection, used only from the event-loop thread.

    Found rows of the lookups are kept in memory while nothing else writes to the database:
    ``PRAGMA data_version`` changes whenever another connection (of this process or any
    other) commits, and then the whole cache is dropped. A revocation, a reset secret or a
    disabled user is such a commit, so a cached row is never staler than the database.
    Cached records are shared between requests: immutable NamedTuples.

    The check (a read of the WAL index, a few µs) is made once per turn of the event loop,
    by the first lookup of the turn: every request served later in that turn was already
    on its way when it was made, so none can have been sent after a commit the check missed.
    Work that becomes ready after the check (a new request, an awaited commit) is queued
    behind the callback that forgets it, and checks again; a commit of this process's own
    (Database.write(), which runs in the loop's thread) forgets it at once."""

    MAX_CACHED = 50_000

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        super().__init__()
        self._path = path
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._multi_sql: dict[tuple[str, int], str] = {}
        self._cache: dict[tuple, tuple] = {}
        self._version = None
        self._version_checked = False

    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=10)
            connection.execute("PRAGMA busy_timeout=10000")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            self._connection = connection
        return self._connection

    async def lookup(self, kind: Lookup, args: tuple):
        """The record ``kind`` finds for ``args`` (the key, then "now" for the token
        lookups), or None; from the cache while the database has not changed."""
        try:
            connection = self._conn()
            if not self._version_checked:
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version != self._version:
                    self._cache.clear()
                    self._version = version
                self._version_checked = True
                asyncio.get_running_loop().call_soon(self.forget_version_check)
            key = (kind.name, args[0])
            row = self._cache.get(key)
            if row is not None:
                expiry = kind.expiry
                if expiry is None or row[expiry] > args[1]:
                    return row
            row = connection.execute(kind.sqlite, args).fetchone()
            if row is not None:
                row = kind.make(row)  # made once, shared by every hit
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[key] = row
            return row
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc

    def forget_version_check(self) -> None:
        self._version_checked = False

    def _start_flush(self, loop) -> None:
        # The SQLite write does not wait on anything: done right in the timer's callback,
        # without a task per batch.
        pending = self._take_pending()
        try:
            results = self._write_rows(_rows_by_statement(pending))
        except Exception as exc:  # every waiter learns what happened to its row
            self._settle(pending, {}, exc)
        else:
            self._settle(pending, results, None)

    # Rows per INSERT statement: one statement of many rows costs less than as many
    # executions of a one-row statement.
    ROWS_PER_STATEMENT = 64

    def _write_rows(self, pending: dict[str, list[tuple]]) -> dict[str, list]:
        """Writes the batch: each statement's answers, one per row (an exception where that
        row alone failed)."""
        connection = self._conn()
        if self._checkpointer is None and self._path != ":memory:":
            # This connection writes most; it leaves checkpoints to a thread of their own.
            connection.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _Checkpointer(self._path, self._synchronous)
        ended: list[bytes] = []
        try:
            try:
                return self._write_together(connection, pending, ended)
            except Exception as exc:
                if _sqlite_unavailable(exc):
                    raise StoreUnavailable() from exc
                if sum(map(len, pending.values())) == 1:
                    raise
            return {name: [self._write_alone(connection, name, row, ended) for row in rows]
                    for name, rows in pending.items()}
        finally:
            self._forget(ended)

    def _write_alone(self, connection: sqlite3.Connection, name: str, row: tuple, ended: list[bytes]):
        """One row in a transaction of its own: its answer, or the exception it raised."""
        try:
            return self._write_together(connection, {name: [row]}, ended)[name][0]
        except Exception as exc:
            return StoreUnavailable() if _sqlite_unavailable(exc) else exc

    def _write_together(self, connection: sqlite3.Connection, pending: dict[str, list[tuple]],
                        ended: list[bytes]) -> dict[str, list]:
        """The whole batch in one transaction; raises, with nothing written, if any of it fails."""
        statements = [statement for name, rows in pending.items() if name not in redemptions.OPERATIONS
                      for statement in self._inserts(name, rows)]
        written: dict[str, set] = {name: set() for name in pending if name in _SQLITE_CHECKED_INSERTS}
        results: dict[str, list] = {}
        if len(statements) == 1 and len(pending) == 1:  # one statement is its own transaction
            self._run(connection, written, *statements[0])
        else:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    self._run(connection, written, *statement)
                issued: list[NewToken] = []
                touched: dict[int, float] = {}
                for name, rows in pending.items():
                    if name in redemptions.OPERATIONS:
                        results[name] = [redemptions.run_sqlite(connection, name, row, ended, issued, touched)
                                         for row in rows]
                for statement in self._inserts(INSERT_TOKEN, issued):
                    self._run(connection, written, *statement)
                redemptions.touch_grants_sqlite(connection, touched)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        for name, rows in pending.items():
            if name in written:
                results[name] = [row[0] in written[name] for row in rows]
            elif name not in results:
                results[name] = [None] * len(rows)
        return results

    def _inserts(self, name: str, rows: list[tuple]) -> list[tuple[str, str, list]]:
        """The multi-row statements that insert ``rows``: (name, SQL, values) each."""
        size = self.ROWS_PER_STATEMENT
        return [(name, self._multi_row_sql(name, len(chunk)), [value for row in chunk for value in row])
                for chunk in (rows[i:i + size] for i in range(0, len(rows), size))]

    def _forget(self, token_keys: list[bytes]) -> None:
        """Drops the cached lookups of tokens this connection ended (its own commits do not
        move data_version)."""
        cache = self._cache
        for key in token_keys:
            cache.pop((ACCESS_TOKEN.name, key), None)
            cache.pop((LIVE_TOKEN.name, key), None)

    @staticmethod
    def _run(connection: sqlite3.Connection, written: dict[str, set], name: str, sql: str, values: list) -> None:
        cursor = connection.execute(sql, values)
        if name in written:
            written[name].update(row[0] for row in cursor.fetchall())

    def _multi_row_sql(self, name: str, count: int) -> str:
        sql = self._multi_sql.get((name, count))
        if sql is None:
            if name in _SQLITE_CHECKED_INSERTS:
                template, values = _SQLITE_CHECKED_INSERTS[name]
                sql = template.replace("{rows}", ", ".join([values] * count))
            else:
                head, _, values = _SQLITE_PLAIN_INSERTS[name].partition(" VALUES ")
                sql = head + " VALUES " + ", ".join([values] * count)
            self._multi_sql[name, count] = sql
        return sql

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class _Checkpointer:
    """Copies the WAL back into the database file from a thread of its own.

    SQLite checkpoints in whichever commit crosses 1000 WAL pages; on the event-loop thread
    that put the copy and its fsync inside a batch of inserts. A passive checkpoint waits
    for no reader or writer, and the driver lets go of the GIL while SQLite works, so here
    it runs beside the event loop instead of inside it."""

    INTERVAL_SECONDS = 0.05

    def __init__(self, path: str, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fluxer-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            while not self._stopping.wait(self.INTERVAL_SECONDS):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    pass  # busy or briefly unavailable: the next round tries again
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)


class PostgresHot(_GroupCommit):
    """On an asyncpg pool of its own, created in the serving event loop on first use."""

    checks_clients_on_insert = True
    # A commit here is a round trip and an fsync, so a batch is worth a longer wait than on
    # SQLite (bench/RESULTS.md has both measured).
    WINDOW_SECONDS = 0.001

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._pool = None
        self._creating: asyncio.Future | None = None
        self._lookups: dict[Lookup, list] = {}

    async def _acquire_pool(self):
        if self._pool is None:
            # The requests that arrive before the pool exists all wait for the same one
            # (each making its own had left pools, and their connections, behind).
            if self._creating is None:
                self._creating = asyncio.ensure_future(asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=10, reset=_keep_session, server_settings=HOT_SESSION_SETTINGS))
            creating = self._creating
            try:
                pool = await asyncio.shield(creating)
            except BaseException:
                if creating.done() and self._creating is creating:
                    self._creating = None  # it failed (database down): the next request tries again
                raise
            if self._pool is None:
                self._pool = pool
        return self._pool

    async def lookup(self, kind: Lookup, args: tuple):
        """The record, or None. The lookups asked for in one turn of the event loop go to the
        database together, one statement for each kind, after the turn: one round trip and
        one wakeup of a backend where there were as many as requests. Each is still sent
        after the request that asked for it arrived, so nothing committed before that (a
        revocation) is missed."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._lookups:
            loop.call_soon(self._send_lookups, loop)
        self._lookups.setdefault(kind, []).append((args, done))
        return await done

    async def _fetch_one(self, kind: Lookup, args: tuple):
        try:
            pool = await self._acquire_pool()
            row = await pool.fetchrow(kind.postgres, *args)
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable() from exc
        return kind.make(row) if row is not None else None

    def _send_lookups(self, loop) -> None:
        lookups, self._lookups = self._lookups, {}
        for kind, waiting in lookups.items():
            loop.create_task(self._look_up(kind, waiting))

    async def _look_up(self, kind: Lookup, waiting: list[tuple[tuple, asyncio.Future]]) -> None:
        try:
            if len(waiting) == 1:
                rows = [await self._fetch_one(kind, waiting[0][0])]
            else:
                rows = await self._fetch_many(kind, [args for args, _ in waiting])
        except Exception as exc:  # every waiter learns what happened to its lookup
            for _, done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        for (_, done), row in zip(waiting, rows):
            if not done.done():
                done.set_result(row)

    async def _fetch_many(self, kind: Lookup, many_args: list[tuple]) -> list:
        keys = list({args[0] for args in many_args})
        # The token lookups' second argument is "now": the latest of the batch is the
        # strictest (a token that expired before any of the requests counts as expired).
        rest = [max(args[1] for args in many_args)] if len(many_args[0]) > 1 else []
        try:
            pool = await self._acquire_pool()
            records = await pool.fetch(kind.postgres_batch, keys, *rest)
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable() from exc
        make = kind.make
        found = {record[0]: make(record[1:]) for record in records}
        return [found.get(args[0]) for args in many_args]

    async def _write_batch(self, pending: dict[str, list[tuple]]) -> dict[str, list]:
        try:
            pool = await self._acquire_pool()
            async with pool.acquire() as connection:
                if len(pending) > 1 and not any(name in redemptions.POSTGRES_BATCHES for name in pending):
                    try:
                        async with connection.transaction():
                            return {name: await self._write_rows(connection, name, rows)
                                    for name, rows in pending.items()}
                    except _CONNECTION_ERRORS:
                        raise
                    except Exception:
                        pass  # rolled back: each statement again on its own, below
                # A redemption takes its applications' issuance locks when it runs: after
                # another statement's locks in one transaction, against the order the endings
                # take theirs in (they would deadlock). So each statement commits on its own.
                return {name: await self._write_statement(connection, name, rows) for name, rows in pending.items()}
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable() from exc

    async def _write_statement(self, connection, name: str, rows: list[tuple]) -> list:
        """One statement's rows in one round trip; if that fails for a reason of a row's own,
        each row again alone: the answers, an exception in place of a row that failed."""
        try:
            return await self._write_rows(connection, name, rows)
        except _CONNECTION_ERRORS:
            raise
        except Exception as exc:
            if len(rows) == 1:
                return [exc]
        answers = []
        for row in rows:
            try:
                answers.append((await self._write_rows(connection, name, [row]))[0])
            except _CONNECTION_ERRORS:
                raise
            except Exception as exc:
                answers.append(exc)
        return answers

    async def _write_rows(self, connection, name: str, rows: list[tuple]) -> list:
        # One statement over arrays: one round trip for the batch, where the rows one by
        # one would be as many (and BEGIN and COMMIT two more).
        if name in redemptions.POSTGRES_BATCHES:
            spent = dict(await connection.fetch(redemptions.POSTGRES_BATCHES[name],
                                                *redemptions.postgres_arguments(rows)))
            return [spent.get(index) for index in range(len(rows))]
        sql, returns_key = _POSTGRES_BATCHES[name]
        columns = [list(column) for column in zip(*rows)]
        if not returns_key:
            await connection.execute(sql, *columns)
            return [None] * len(rows)
        written = {record[0] for record in await connection.fetch(sql, *columns)}
        return [row[0] in written for row in rows]

    async def close(self) -> None:
        self._creating = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# Every statement here finds rows by key, and its best plan does not depend on the values:
# each is planned once per connection, not at each execution. With PostgreSQL's default
# (re-planning while a custom plan looks cheaper), planning a token lookup right after a
# stream of inserts could take hundreds of milliseconds (slow "bind" steps: the planner
# reading the newest entries of an index to bound a range), stalls that showed at p99.
HOT_SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


async def _keep_session(connection) -> None:
    """What the pool does to a connection given back, after asyncpg has rolled back any
    transaction left open (a cancelled request): nothing more. asyncpg's default (RESET ALL,
    UNLISTEN, CLOSE ALL, advisory unlock) is a round trip after every query, and these
    connections change no session state."""
