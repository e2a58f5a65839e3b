"""The hot store's own housekeeping. SQLite: the WAL is copied back into the database file
by a thread, not by the commits of the event loop; under a stream of token inserts the WAL
stays small, every inserted row is there afterwards, and closing the store stops the
thread. PostgreSQL: a connection given back to the pool inside a transaction (a cancelled
request) comes out of it clean, without asyncpg's reset round trip after every query, and
transactions beyond the general pool wait for one of its connections rather than open more,
and outlive the database dropping every connection."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest
from sqlalchemy import select

from fluxer_oauth.store.records import ClientToken, NewToken
from fluxer_oauth.store.tables import ACCESS, REFRESH, tokens
from tests.backends import POSTGRES
from tests.ops.test_janitor import _hash, _seed

sqlite_only = pytest.mark.skipif(POSTGRES, reason="the WAL checkpointer belongs to the SQLite store")
postgres_only = pytest.mark.skipif(not POSTGRES, reason="the connection pool belongs to the PostgreSQL store")


@postgres_only
async def test_a_connection_returned_inside_a_transaction_comes_back_clean(rt):
    pool = await rt.db.hot._acquire_pool()
    async with pool.acquire() as connection:
        await connection.execute("BEGIN")
        await connection.execute("CREATE TEMP TABLE left_behind (n int)")
        assert connection.is_in_transaction()
    for _ in range(pool.get_size() + 1):  # whichever connection comes next, none is mid-transaction
        async with pool.acquire() as connection:
            assert not connection.is_in_transaction()
            # the temporary table went with the rolled-back transaction
            assert await connection.fetchval("SELECT to_regclass('pg_temp.left_behind')") is None
    assert await rt.db.clients.application(1) is None  # and the hot queries still work


@sqlite_only
async def test_wal_stays_small_under_inserts_and_nothing_is_lost(rt, tmp_path):
    await _seed(rt, expired_tokens=0, live_tokens=1)  # user 1 and application 2
    hot = rt.db.hot
    path = hot._path
    now = time.time()
    inserted = 0
    largest_wal = 0
    for batch in range(150):
        rows = [os.urandom(32) for _ in range(100)]
        await asyncio.gather(*[
            rt.db.tokens.insert(NewToken(token_hash, ACCESS, 2, 1, None, 10**6 + inserted + n, 10**6 + inserted + n,
                                         "identify", None, now, now + 3600))
            for n, token_hash in enumerate(rows)
        ])
        inserted += len(rows)
        if batch % 10 == 9:
            await asyncio.sleep(0.06)  # a checkpoint round may pass, as it would between requests
        if os.path.exists(path + "-wal"):
            largest_wal = max(largest_wal, os.path.getsize(path + "-wal"))
    assert hot._connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # the loop never checkpoints
    # 15,000 random keys dirty ~60 MB of pages; without checkpoints the WAL would hold all of it.
    assert largest_wal < 24 * 1024 * 1024, f"WAL grew to {largest_wal / 1e6:.1f} MB"
    print(f"\nlargest WAL during 15,000 inserts: {largest_wal / 1e6:.1f} MB")
    checkpointer = hot._checkpointer
    await rt.db.close()
    assert not checkpointer._thread.is_alive()
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM tokens").fetchone()[0] == inserted + 1


async def test_the_checking_insert_writes_only_for_an_enabled_application_with_this_secret_and_a_bot(client, rt):
    from fluxer_oauth.core import credentials
    from tests.conftest import create_app, register

    owner = await register(client)
    with_bot = await create_app(client, owner, name="with bot")
    botless = await create_app(client, owner, name="botless", bot=False)
    now = time.time()

    async def issue(app_id: str, secret: str) -> bool:
        token_hash = os.urandom(32)
        written = await rt.db.tokens.issue_client_token(ClientToken(
            token_hash, int(app_id), credentials.client_secret_hash(rt.secret, secret), 7, "identify", now, now + 60))
        async with rt.db.read() as conn:
            from sqlalchemy import select

            from fluxer_oauth.store.tables import tokens
            row = (await conn.execute(select(tokens.c.user_id, tokens.c.grant_id)
                                      .where(tokens.c.token_hash == token_hash))).first()
        assert written == (row is not None)  # the answer is what was written
        if row is not None:
            assert row.user_id == int(with_bot.id) and row.grant_id is None  # for the bot, with no grant
        return written

    results = await asyncio.gather(issue(with_bot.id, with_bot.secret), issue(with_bot.id, "wrong"),
                                   issue(botless.id, botless.secret), issue("1" * 19, with_bot.secret))
    assert results == [True, False, False, False]  # in one batch, each row its own answer
    await rt.db.hot.close()
    async with rt.db.write() as conn:
        from sqlalchemy import update

        from fluxer_oauth.store.tables import applications
        await conn.execute(update(applications).where(applications.c.id == int(with_bot.id)).values(disabled_at=now))
    assert await issue(with_bot.id, with_bot.secret) is False
    async with rt.db.write() as conn:  # enabled again, but its owner disabled: still nothing written
        from fluxer_oauth.store.tables import users
        await conn.execute(update(applications).where(applications.c.id == int(with_bot.id)).values(disabled_at=None))
        await conn.execute(update(users).where(users.c.id == int(owner.id)).values(disabled_at=now))
    assert await issue(with_bot.id, with_bot.secret) is False


@postgres_only
async def test_requests_arriving_before_the_pool_exists_share_one(rt):
    from fluxer_oauth.store.hot import PostgresHot
    from fluxer_oauth.store.interfaces import ClientStore

    dsn = rt.db.hot._dsn

    async def backends() -> int:
        import asyncpg

        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await connection.close()

    before = await backends()
    hot = PostgresHot(dsn)
    try:
        assert await asyncio.gather(*[ClientStore(hot).application(n) for n in range(40)]) == [None] * 40
        assert await backends() - before <= 10  # one pool of at most ten, not one pool per early request
    finally:
        await hot.close()


@sqlite_only
async def test_a_cached_token_is_refused_as_soon_as_this_process_revokes_it(rt):
    await _seed(rt, expired_tokens=0, live_tokens=1)
    found, now = rt.db.tokens.find_access, time.time()
    assert await found(_hash(0, "t"), now) is not None  # now in the cache
    # A revocation written by this process commits inside the current loop turn; the very
    # next lookup, in the same turn, must not answer from the cache.
    async with rt.db.write() as conn:
        await conn.execute(tokens.update().values(revoked_at=now))
    assert await found(_hash(0, "t"), now) is None


@sqlite_only
async def test_another_connections_commit_is_seen_from_the_next_loop_turn_and_checked_once_a_turn(rt):
    await _seed(rt, expired_tokens=0, live_tokens=2)
    hot, found, now = rt.db.hot, rt.db.tokens.find_access, time.time()
    checks = []
    await rt.db.clients.bot(0)  # opens the hot connection
    hot._connection.set_trace_callback(lambda sql: checks.append(sql) if "data_version" in sql else None)
    await asyncio.sleep(0)
    for _ in range(20):
        assert await found(_hash(0, "t"), now) is not None
    assert len(checks) == 1  # one look at data_version for the whole turn
    # Another process (here another connection) revokes; a request that reaches us after
    # its commit is served in a later loop turn, and sees it.
    with sqlite3.connect(hot._path) as other:
        other.execute("UPDATE tokens SET revoked_at = ?", (now,))
    await asyncio.sleep(0)
    assert await found(_hash(0, "t"), now) is None
    assert await found(_hash(1, "t"), now) is None
    assert len(checks) == 2


async def test_inserts_of_one_loop_turn_commit_together_and_a_bad_row_fails_alone(rt):
    """Group commit: 150 inserts made in one turn go into one transaction (on SQLite, as
    statements of 64 rows); one bad row sinks that transaction, and the batch is written
    again row by row, so only the bad row's request fails."""
    await _seed(rt, expired_tokens=0, live_tokens=1)  # user 1, application 2, the token _hash(0, "t")
    now = time.time()

    def insert(token_hash, n):
        return rt.db.tokens.insert(NewToken(token_hash, ACCESS, 2, 1, None, 10**6 + n, 10**6 + n,
                                            "identify", None, now, now + 3600))

    hashes = [os.urandom(32) for _ in range(150)]
    outcomes = await asyncio.gather(*[insert(h, n) for n, h in enumerate(hashes[:149])], insert(_hash(0, "t"), 149),
                                    return_exceptions=True)
    assert outcomes[:149] == [None] * 149 and isinstance(outcomes[149], Exception)  # the duplicate alone failed
    assert all(await asyncio.gather(*[_stored(rt, h) for h in hashes[:149]]))

    fresh = [os.urandom(32) for _ in range(150)]
    outcomes = await asyncio.gather(*[insert(h, n) for n, h in enumerate(fresh)])
    assert outcomes == [None] * 150
    assert all(await asyncio.gather(*[_stored(rt, h) for h in fresh]))


async def _stored(rt, token_hash: bytes) -> bool:
    async with rt.db.read() as conn:
        return (await conn.execute(select(tokens.c.token_hash).where(tokens.c.token_hash == token_hash))).first() \
            is not None


@postgres_only
async def test_the_hot_statements_are_planned_once_and_find_each_token_by_its_own_index(rt):
    """The hot pool plans each statement once per connection (a generic plan; planning at
    each execution stalled for up to 600 ms after bulk inserts), so that one plan must be
    right: each token through the primary key, also in a batch and right after a bulk load
    of 100k tokens of one client (given ``= ANY(keys)``, or the lateral lookup merged into
    the outer query, the planner walked all of them through the (user, application) index)."""
    from fluxer_oauth.store.hot import ACCESS_TOKEN, LIVE_TOKEN

    await _seed(rt, expired_tokens=0, live_tokens=2)
    pool = await rt.db.hot._acquire_pool()
    async with pool.acquire() as connection:
        assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        await connection.execute(
            f"INSERT INTO tokens (token_hash, kind, application_id, user_id, family_id, issue_id, scopes, created_at, "
            f"expires_at, rotated) SELECT sha256(n::text::bytea), {ACCESS}, 2, 1, n + 10, n + 10, 'identify', "
            f"{time.time()}, {time.time() + 3600}, false FROM generate_series(1, 100000) AS n")
        for name, sql, types, args in [
            (kind.name, kind.postgres, "bytea, float8", r"'\x00', 0") for kind in (ACCESS_TOKEN, LIVE_TOKEN)
        ] + [
            (f"{kind.name} batch", kind.postgres_batch, "bytea[], float8", r"ARRAY['\x00'::bytea], 0")
            for kind in (ACCESS_TOKEN, LIVE_TOKEN)
        ]:
            await connection.execute(f"PREPARE probe ({types}) AS {sql}")
            try:
                plan = "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN EXECUTE probe ({args})"))
            finally:
                await connection.execute("DEALLOCATE probe")
            assert "$1" in plan or "k.key" in plan, plan  # the generic plan, not one for these values
            assert "Index Scan using pk_tokens on tokens" in plan, (name, plan)


@postgres_only
async def test_the_redemption_statements_find_their_code_or_token_by_its_own_key(rt):
    """The batch statements of the code and refresh grants, planned generically, find each
    code and refresh token through its primary key, also when the user has 100k tokens of
    the application and the statistics know it (with the user's check as EXISTS, the planner
    joined the user first and walked all of their tokens through (user, application): a
    rotation cost more with every token issued, 4-13 ms of PostgreSQL a request)."""
    from fluxer_oauth.store import redemptions
    from fluxer_oauth.store.records import Redemption

    await _seed(rt, expired_tokens=0, live_tokens=2)
    pool = await rt.db.hot._acquire_pool()
    async with pool.acquire() as connection:
        await connection.execute(
            f"INSERT INTO tokens (token_hash, kind, application_id, user_id, grant_id, family_id, issue_id, scopes, "
            f"created_at, expires_at, rotated) SELECT sha256(n::text::bytea), {REFRESH}, 2, 1, 7, n + 10, n + 10, "
            f"'identify', {time.time()}, {time.time() + 3600}, false FROM generate_series(1, 100000) AS n")
        await connection.execute("ANALYZE tokens; ANALYZE users; ANALYZE authorization_codes")
        rows = [Redemption(os.urandom(32), 2, time.time(), os.urandom(32), os.urandom(32), 1, 0.0, 0.0)] * 3
        for name, index in ((redemptions.ROTATE_REFRESH, "pk_tokens on tokens"),
                            (redemptions.REDEEM_CODE, "pk_authorization_codes on authorization_codes")):
            async with connection.transaction():
                plan = "\n".join(row[0] for row in await connection.fetch(
                    "EXPLAIN " + redemptions.POSTGRES_BATCHES[name], *redemptions.postgres_arguments(rows)))
                spent = next(part for part in plan.split("\n  CTE ") if part.startswith("spent"))
                assert f"Index Scan using {index}" in spent and "ix_tokens_user_application" not in spent, (name, plan)


@postgres_only
async def test_every_lookup_of_a_batch_learns_that_the_database_is_down():
    from fluxer_oauth.store.errors import StoreUnavailable
    from fluxer_oauth.store.hot import PostgresHot
    from fluxer_oauth.store.interfaces import ClientStore, TokenStore

    hot = PostgresHot("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(
            *[TokenStore(hot).find_access(os.urandom(32), time.time()) for _ in range(5)],
            ClientStore(hot).bot(7), return_exceptions=True), 10)
        assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes), outcomes
    finally:
        await hot.close()


@postgres_only
async def test_transactions_beyond_the_pool_wait_for_a_connection_instead_of_opening_more(rt):
    from sqlalchemy import text

    from fluxer_oauth.store.database import Database

    db = Database(rt.settings.sqlalchemy_url, pool_size=3)
    backends = []

    async def transaction():
        async with db.write() as connection:
            backends.append((await connection.execute(text("SELECT pg_backend_pid()"))).scalar())
            await asyncio.sleep(0.02)  # held, so the others queue up behind the pool

    try:
        await asyncio.wait_for(asyncio.gather(*[transaction() for _ in range(12)]), 10)
        assert len(backends) == 12  # every one ran
        assert len(set(backends)) == 3  # on the pool's three connections, none opened beyond it
    finally:
        await db.close()


@postgres_only
async def test_transactions_survive_the_database_dropping_every_connection(rt):
    """After a restart of PostgreSQL (here: every connection of the database terminated) the
    pool's pre-ping finds each dead connection before it is used, so the next transactions
    go through on new ones instead of failing."""
    import asyncpg
    from sqlalchemy import text

    from fluxer_oauth.store.database import Database

    db = Database(rt.settings.sqlalchemy_url, pool_size=2)

    async def backend_pid() -> int:
        async with db.write() as connection:
            return (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()

    try:
        before = set(await asyncio.gather(backend_pid(), backend_pid()))
        admin = await asyncpg.connect(rt.settings.database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            for pid in before:
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        after = set(await asyncio.gather(backend_pid(), backend_pid()))
        assert after and not after & before  # new connections, and no request failed
    finally:
        await db.close()
