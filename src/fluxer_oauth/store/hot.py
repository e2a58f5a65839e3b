"""The hot queries, on the raw driver: the bearer and bot lookups behind every API read,
the client lookup of every token request, and the insert of a client-credentials token.

Through SQLAlchemy each costs 40-60 µs of Python before the database is touched; on the
driver, 5-15 µs on SQLite and one prepared-statement round trip on PostgreSQL. A
revocation is seen by every worker at once: on PostgreSQL every lookup reads the database
(the lookups of one loop turn in one statement); on SQLite found rows are kept only while
the database has not changed (see SqliteHot).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import asyncpg

from fluxer_oauth.store.tables import ACCESS

USER_FIELDS = (
    "id", "username", "discriminator", "global_name", "email", "verified", "avatar", "banner", "accent_color",
    "locale", "flags", "bot", "system", "mfa_enabled", "staff", "disabled_at", "created_at",
)
_USER_COLUMNS = ", ".join(f"u.{name}" for name in USER_FIELDS)

# Rows come back as plain tuples: the listed leading columns, then the user's USER_FIELDS.
ACCESS_TOKEN_FIELDS = ("application_id", "scopes", "expires_at", "created_at")
_ACCESS_TOKEN = (
    f"SELECT t.application_id, t.scopes, t.expires_at, t.created_at, {_USER_COLUMNS} "
    "FROM tokens t JOIN users u ON u.id = t.user_id JOIN applications a ON a.id = t.application_id "
    f"WHERE t.token_hash = {{0}} AND t.kind = {ACCESS} AND t.revoked_at IS NULL AND t.expires_at > {{1}} "
    "AND u.disabled_at IS NULL AND a.disabled_at IS NULL"
)
LIVE_TOKEN_FIELDS = ("application_id", "user_id", "scopes", "kind", "expires_at", "created_at")
_LIVE_TOKEN = (
    f"SELECT {', '.join('t.' + name for name in LIVE_TOKEN_FIELDS)} "
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
APPLICATION_FIELDS = (
    "id", "owner_id", "name", "description", "icon", "secret_hash", "redirect_uris", "bot_id", "bot_token_hash",
    "bot_public", "bot_require_code_grant", "trusted", "disabled_at", "verify_key", "created_at", "updated_at",
)
_APPLICATION = (f"SELECT {', '.join('a.' + name for name in APPLICATION_FIELDS)} FROM applications a "
                f"{_OWNER_ENABLED} WHERE a.id = {{0}}")
# Lookups whose rows come back as Row (shared from the SQLite cache: read, never modify).
NAMED = {"application": APPLICATION_FIELDS}
_INSERT_TOKEN = (
    "INSERT INTO tokens (token_hash, kind, application_id, user_id, grant_id, family_id, issue_id, scopes, "
    "guild_id, created_at, expires_at, revoked_at, rotated) "
    "VALUES ({0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, NULL, {11})"
)

# Batch forms of the inserts on PostgreSQL: (statement over arrays, one element per row,
# which unnest zips back into rows; whether it returns the keys of the rows it wrote).
_TOKEN_COLUMNS = ("token_hash, kind, application_id, user_id, grant_id, family_id, issue_id, scopes, guild_id, "
                  "created_at, expires_at, revoked_at, rotated")
_POSTGRES_BATCHES = {
    "insert_token": (
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
        "SELECT h, k, a, u, g, f, i, s, gu, c, e, NULL, r FROM unnest($1::bytea[], $2::smallint[], $3::bigint[], "
        "$4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::float8[], "
        "$11::float8[], $12::boolean[]) AS t(h, k, a, u, g, f, i, s, gu, c, e, r)",
        False,
    ),
    # A client-credentials token, written only when the application still has this secret
    # hash, is enabled, has an enabled owner and has a bot (whose user the token is for): the
    # check and the write are one statement, so no lookup has to come first, and a secret reset or a disabling
    # committed before it is never missed. Args: token hash, application id, secret hash,
    # issue id, scopes, created_at, expires_at.
    "issue_client_token": (
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
        f"SELECT t.h, {ACCESS}, a.id, a.bot_id, NULL, t.i, t.i, t.s, NULL, t.c, t.e, NULL, false "
        "FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[], $5::text[], $6::float8[], "
        "$7::float8[]) AS t(h, a, sh, i, s, c, e) "
        "JOIN applications a ON a.id = t.a AND a.secret_hash = t.sh AND a.disabled_at IS NULL "
        f"AND a.bot_id IS NOT NULL {_OWNER_ENABLED} "
        # Read locked: a reset or a disabling under way is waited for and its outcome re-read
        # (a plain read would see the row as it was, and the ending's revocation, made
        # before this insert committed, would miss the token).
        "FOR SHARE OF a, o "
        "RETURNING token_hash",
        True,
    ),
}


# SQLite's form of "issue_client_token": the same check and write for a VALUES list of rows
# (whose columns SQLite names column1..column7, in the order of the arguments).
_SQLITE_CHECKED_INSERTS = {
    "issue_client_token": (
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
        f"SELECT v.column1, {ACCESS}, a.id, a.bot_id, NULL, v.column4, v.column4, v.column5, NULL, v.column6, "
        "v.column7, NULL, 0 FROM (VALUES {rows}) AS v "
        "JOIN applications a ON a.id = v.column2 AND a.secret_hash = v.column3 AND a.disabled_at IS NULL "
        f"AND a.bot_id IS NOT NULL {_OWNER_ENABLED} "
        "RETURNING token_hash",
        "(?, ?, ?, ?, ?, ?, ?)",
    ),
}


def _lookup_batch_form(sql: str, array_type: str) -> str:
    """A lookup of one key ({0}) made once for each key of an array, each row led by its key.
    The one-key statement runs as it is for each key (OFFSET 0 keeps the planner from merging
    it into the outer query), so each is still found through its own index: merged, or as
    ``= ANY(array)``, the planner walked all of a client's tokens through another (60 ms)."""
    return (f"SELECT k.key, x.* FROM unnest({{0}}::{array_type}[]) AS k(key) "
            f"CROSS JOIN LATERAL ({sql.replace('{0}', 'k.key')} OFFSET 0) AS x")


# The lookups PostgreSQL answers for many requests at once: statement over an array of keys.
_POSTGRES_LOOKUPS = {
    "access_token": _lookup_batch_form(_ACCESS_TOKEN, "bytea"),
    "live_token": _lookup_batch_form(_LIVE_TOKEN, "bytea"),
    "bot": _lookup_batch_form(_BOT, "bigint"),
    "application": _lookup_batch_form(_APPLICATION, "bigint"),
}


# What asyncpg raises when PostgreSQL cannot be reached or the connection died.
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


class Row(dict):
    """A result row readable as ``row.column``, like SQLAlchemy's rows."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _qmarks(sql: str) -> str:
    return sql.format(*["?"] * 12)


def _dollars(sql: str) -> str:
    return sql.format(*[f"${n}" for n in range(1, 13)])


class _GroupCommit:
    """Inserts of new rows, committed before ``execute`` returns. Inserts that arrive within
    ``WINDOW_SECONDS`` of each other share one transaction (group commit): the commit, not the
    insert, is the expensive part (a WAL append on SQLite, an fsync on PostgreSQL), so under
    load each request pays a fraction of one.

    Only inserts of new rows come here. On SQLite a write through the hot connection does
    not move its own data_version, so revocations and other changes must use Database.write().
    """

    # How long the first insert of a batch waits for company: long enough for the requests
    # already on their way to join, short against a request's own latency. (uvloop rounds
    # timers to whole milliseconds, so 0.3 ms means "after the loop next polls for input".)
    WINDOW_SECONDS = 0.0003

    def __init__(self) -> None:
        self._pending: dict[str, list] = {}
        self._flush_scheduled = False

    # Whether the "issue_client_token" statement exists: an insert that checks the client's
    # secret itself, so the client-credentials grant needs no lookup before it.
    checks_clients_on_insert = False

    async def execute(self, name: str, *args):
        """Returns what the statement says of this row (True/False for the checking inserts,
        None for plain ones) once it is committed."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.setdefault(name, []).append((args, done))
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
        for name, batch in pending.items():
            row_results = results.get(name)
            for index, (_, done) in enumerate(batch):
                if done.done():
                    continue
                if outcome is None:
                    done.set_result(row_results[index] if row_results is not None else None)
                else:
                    done.set_exception(outcome)

    async def _write_batch(self, pending: dict[str, list[tuple]]) -> dict[str, list | None]:
        raise NotImplementedError


def _rows_by_statement(pending: dict[str, list]) -> dict[str, list[tuple]]:
    return {name: [args for args, _ in batch] for name, batch in pending.items()}


class SqliteHot(_GroupCommit):
    """On one dedicated autocommit connection, used only from the event-loop thread.

    Found rows of the lookups are kept in memory while nothing else writes to the database:
    ``PRAGMA data_version`` changes whenever another connection (of this process or any
    other) commits, and then the whole cache is dropped. A revocation, a reset secret or a
    disabled user is such a commit, so a cached row is never staler than the database.

    The check (a read of the WAL index, 2-8 µs) is made once per turn of the event loop,
    by the first lookup of the turn: every request served later in that turn was already
    on its way when it was made, so none can have been sent after a commit the check missed.
    Work that becomes ready after the check (a new request, an awaited commit) is queued
    behind the callback that forgets it, and checks again; a commit of this process's own
    (Database.write(), which runs in the loop's thread) forgets it at once."""

    # Cached statements, with the index of the expiry column that is re-checked on a hit
    # (their second argument is "now", so it is not part of the key).
    CACHED = {"access_token": 2, "live_token": 4, "bot": None, "application": None}
    MAX_CACHED = 50_000

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        super().__init__()
        self._path = path
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._sql = {name: _qmarks(sql) for name, sql in _STATEMENTS.items()}
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

    async def fetchrow(self, name: str, *args):
        try:
            connection = self._conn()
            if name not in self.CACHED:
                return connection.execute(self._sql[name], args).fetchone()
            if not self._version_checked:
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version != self._version:
                    self._cache.clear()
                    self._version = version
                self._version_checked = True
                asyncio.get_running_loop().call_soon(self.forget_version_check)
            key = (name, args[0])
            row = self._cache.get(key)
            if row is not None:
                expiry = self.CACHED[name]
                if expiry is None or row[expiry] > args[1]:
                    return row
            row = connection.execute(self._sql[name], args).fetchone()
            if row is not None:
                if name in NAMED:
                    row = row_of(NAMED[name], row)  # named once, not on every hit
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[key] = row
            return row
        except sqlite3.Error as exc:
            raise _unavailable() from exc

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
    # executions of a one-row statement (~15 % of the write).
    ROWS_PER_STATEMENT = 64

    def _write_rows(self, pending: dict[str, list[tuple]]) -> dict[str, list | None]:
        """Writes the batch; for the checking inserts, whether each row was written."""
        connection = self._conn()
        if self._checkpointer is None and self._path != ":memory:":
            # This connection writes most; it leaves checkpoints to a thread of their own.
            connection.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _Checkpointer(self._path, self._synchronous)
        statements = [
            (name, self._multi_row_sql(name, len(chunk)), [value for row in chunk for value in row])
            for name, rows in pending.items()
            for chunk in (rows[i:i + self.ROWS_PER_STATEMENT] for i in range(0, len(rows), self.ROWS_PER_STATEMENT))
        ]
        written: dict[str, set] = {name: set() for name in pending if name in _SQLITE_CHECKED_INSERTS}
        try:
            if len(statements) == 1:  # one statement is its own transaction
                self._run(connection, written, *statements[0])
            else:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    for statement in statements:
                        self._run(connection, written, *statement)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise _unavailable() from exc
        return {name: [row[0] in keys for row in pending[name]] for name, keys in written.items()}

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
                head, _, values = self._sql[name].partition(" VALUES ")
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
    that made about a third of the cost of a batch of inserts (the copy and its fsync). A
    passive checkpoint waits for no reader or writer, and the driver lets go of the GIL
    while SQLite works, so here it runs beside the event loop instead of inside it."""

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
    # SQLite: with 32 connections on two workers, 1 ms gave 7.4-8.2k tokens/s where the
    # 0.3 ms of SQLite gave 5.2-6.2k (and a p99 of 20 instead of 45 ms).
    WINDOW_SECONDS = 0.001

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self._dsn = dsn
        self._pool = None
        self._creating: asyncio.Future | None = None
        self._sql = {name: _dollars(sql) for name, sql in _STATEMENTS.items()}
        self._lookup_sql = {name: _dollars(sql) for name, sql in _POSTGRES_LOOKUPS.items()}
        self._lookups: dict[str, list] = {}

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

    async def fetchrow(self, name: str, *args):
        """The row, or None. The lookups asked for in one turn of the event loop go to the
        database together, one statement for each kind, after the turn: one round trip and
        one wakeup of a backend where there were as many as requests (under load, half the
        machine's time went to the backends and the switches between them). Each is still
        sent after the request that asked for it arrived, so nothing committed before that
        (a revocation) is missed."""
        if name not in _POSTGRES_LOOKUPS:
            return await self._fetch_one(name, args)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._lookups:
            loop.call_soon(self._send_lookups, loop)
        self._lookups.setdefault(name, []).append((args, done))
        return await done

    async def _fetch_one(self, name: str, args: tuple):
        try:
            pool = await self._acquire_pool()
            row = await pool.fetchrow(self._sql[name], *args)
        except _CONNECTION_ERRORS as exc:
            raise _unavailable() from exc
        return row_of(NAMED[name], row) if name in NAMED and row is not None else row

    def _send_lookups(self, loop) -> None:
        lookups, self._lookups = self._lookups, {}
        for name, waiting in lookups.items():
            loop.create_task(self._look_up(name, waiting))

    async def _look_up(self, name: str, waiting: list[tuple[tuple, asyncio.Future]]) -> None:
        try:
            if len(waiting) == 1:
                rows = [await self._fetch_one(name, waiting[0][0])]
            else:
                rows = await self._fetch_many(name, [args for args, _ in waiting])
        except Exception as exc:  # every waiter learns what happened to its lookup
            for _, done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        for (_, done), row in zip(waiting, rows):
            if not done.done():
                done.set_result(row)

    async def _fetch_many(self, name: str, many_args: list[tuple]) -> list:
        keys = list({args[0] for args in many_args})
        # The token lookups' second argument is "now": the latest of the batch is the
        # strictest (a token that expired before any of the requests counts as expired).
        rest = [max(args[1] for args in many_args)] if len(many_args[0]) > 1 else []
        try:
            pool = await self._acquire_pool()
            records = await pool.fetch(self._lookup_sql[name], keys, *rest)
        except _CONNECTION_ERRORS as exc:
            raise _unavailable() from exc
        fields = NAMED.get(name)
        found = {record[0]: (row_of(fields, record, 1) if fields else record[1:]) for record in records}
        return [found.get(args[0]) for args in many_args]

    async def _write_batch(self, pending: dict[str, list[tuple]]) -> dict[str, list | None]:
        try:
            pool = await self._acquire_pool()
            async with pool.acquire() as connection:
                if len(pending) == 1:  # one statement: its own transaction, one round trip
                    ((name, rows),) = pending.items()
                    return {name: await self._write_rows(connection, name, rows)}
                async with connection.transaction():
                    return {name: await self._write_rows(connection, name, rows) for name, rows in pending.items()}
        except _CONNECTION_ERRORS as exc:
            raise _unavailable() from exc

    async def _write_rows(self, connection, name: str, rows: list[tuple]) -> list | None:
        # One statement over arrays: one round trip for the batch, where the rows one by
        # one would be as many (and BEGIN and COMMIT two more).
        sql, returns_key = _POSTGRES_BATCHES[name]
        columns = [list(column) for column in zip(*rows)]
        if not returns_key:
            await connection.execute(sql, *columns)
            return None
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
# stream of inserts took 35-600 ms now and then (logged as slow "bind" steps: the planner
# reading the newest entries of an index to bound a range), which were the stalls of
# introspection at p99; planned once, p99 311 -> 31 ms and +24 % requests/s (A/B).
HOT_SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


async def _keep_session(connection) -> None:
    """What the pool does to a connection given back, after asyncpg has rolled back any
    transaction left open (a cancelled request): nothing more. asyncpg's default (RESET ALL,
    UNLISTEN, CLOSE ALL, advisory unlock) is a round trip after every query, a fifth of a
    worker's time under load, and these connections change no session state."""


_STATEMENTS = {
    "access_token": _ACCESS_TOKEN,
    "live_token": _LIVE_TOKEN,
    "bot": _BOT,
    "application": _APPLICATION,
    "insert_token": _INSERT_TOKEN,
}


def _unavailable():
    from fluxer_oauth.store.database import DatabaseUnavailable

    return DatabaseUnavailable()


def row_of(fields: tuple[str, ...], values, offset: int = 0) -> Row:
    """Name the values of a positional row, from ``offset`` on."""
    return Row(zip(fields, values[offset:] if offset else values))
