"""The typed store interface (``db.tokens``, ``db.clients``; store/interfaces.py) behaves
the same on both backends. The suite runs on the backend the run selects
(FLUXER_TEST_BACKEND=sqlite, the default, or postgres), each test on a fresh migrated
database of its own; nothing is mocked. What only one backend has (the SQLite row cache,
PostgreSQL's batching of one loop turn's lookups) is tested on that backend."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time

import pytest
from sqlalchemy import select, update

from fluxer_oauth.platform.accounts import user_json
from fluxer_oauth.store import users as user_store
from fluxer_oauth.store.database import Database
from fluxer_oauth.store.errors import AlreadyExists, StoreUnavailable
from fluxer_oauth.store.expiry import EXPIRING_TABLES, delete_expired
from fluxer_oauth.store.records import AccessToken, Application, BotLogin, ClientToken, LiveToken, NewToken, User
from fluxer_oauth.store.tables import ACCESS, REFRESH, applications, tokens, users
from tests.backends import POSTGRES
from tests.conftest import make_settings

sqlite_only = pytest.mark.skipif(POSTGRES, reason="the row cache belongs to the SQLite store")
postgres_only = pytest.mark.skipif(not POSTGRES, reason="lookup batching belongs to the PostgreSQL store")

OWNER, PERSON, APP, BOTLESS = 1, 3, 2, 4  # the bot's user id is its application's id
SECRET, BOTLESS_SECRET = b"s" * 32, b"b" * 32
BOT_TOKEN_HASH = hashlib.sha256(b"the bot token").digest()


def key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


@pytest.fixture
async def db(database_url):
    database = Database(make_settings(database_url).sqlalchemy_url)
    yield database
    await database.close()


@pytest.fixture
async def seeded(db):
    """An owner, a person, an application with a bot, a botless one, and tokens of the
    person for the application: live access and refresh, expired, revoked."""
    now = time.time()
    async with db.write() as conn:
        for user_id, name, bot in ((OWNER, "owner", False), (PERSON, "person", False), (APP, "bot", True)):
            await user_store.insert_user(conn, id=user_id, username=name, username_key=name, discriminator="0001",
                                         email=f"{name}@example.com", email_key=f"{name}@example.com", bot=bot,
                                         created_at=now)
        await conn.execute(applications.insert(), [
            dict(id=APP, owner_id=OWNER, name="app", secret_hash=SECRET, bot_id=APP, bot_token_hash=BOT_TOKEN_HASH,
                 redirect_uris='["https://client.example/cb"]', verify_key="k", created_at=now, updated_at=now),
            dict(id=BOTLESS, owner_id=OWNER, name="botless", secret_hash=BOTLESS_SECRET, bot_id=None,
                 bot_token_hash=None, redirect_uris="[]", verify_key="k", created_at=now, updated_at=now),
        ])
        await conn.execute(tokens.insert(), [
            _token("access", ACCESS, expires_at=now + 3600, created_at=now - 5, scopes="identify email"),
            _token("refresh", REFRESH, expires_at=now + 86400, created_at=now - 5),
            _token("expired", ACCESS, expires_at=now - 1, created_at=now - 3601),
            dict(_token("revoked", ACCESS, expires_at=now + 3600, created_at=now), revoked_at=now),
        ])
    return now


def _token(name: str, kind: int, *, expires_at: float, created_at: float, scopes: str = "identify") -> dict:
    return dict(token_hash=key(name), kind=kind, application_id=APP, user_id=PERSON, family_id=1, issue_id=1,
                scopes=scopes, created_at=created_at, expires_at=expires_at, revoked_at=None, rotated=False)


async def _set(db, table, row_id: int, **values) -> None:
    async with db.write() as conn:
        await conn.execute(update(table).where(table.c.id == row_id).values(**values))


async def _stored(db, token_hash: bytes):
    async with db.read() as conn:
        return (await conn.execute(select(tokens).where(tokens.c.token_hash == token_hash))).first()


# --- tokens: lookups --------------------------------------------------------------------------

async def test_an_access_token_is_found_with_its_user(db, seeded):
    found = await db.tokens.find_access(key("access"), time.time())
    assert isinstance(found, AccessToken) and isinstance(found.user, User)
    assert (found.application_id, found.scopes, found.created_at) == (APP, "identify email", pytest.approx(seeded - 5))
    assert found.expires_at == pytest.approx(seeded + 3600)
    user = found.user
    assert (user.id, user.username, user.email, bool(user.bot), user.disabled_at) == (
        PERSON, "person", "person@example.com", False, None)
    assert hash(user) == hash(tuple(user))  # hashable: an encoded user may be cached under it
    body = user_json(user, with_email=True)
    assert body["id"] == str(PERSON) and body["email"] == "person@example.com" and body["verified"] is False


@pytest.mark.parametrize("name", ["unknown", "expired", "revoked", "refresh"])
async def test_an_access_token_is_not_found_unknown_expired_revoked_or_of_another_kind(db, seeded, name):
    assert await db.tokens.find_access(key(name), time.time()) is None


async def test_a_token_expiring_between_two_lookups_is_found_then_not(db, seeded):
    assert await db.tokens.find_access(key("access"), seeded + 3599) is not None
    assert await db.tokens.find_access(key("access"), seeded + 3601) is None  # also from the SQLite cache


async def test_live_tokens_of_both_kinds_are_found(db, seeded):
    access = await db.tokens.find_live(key("access"), time.time())
    refresh = await db.tokens.find_live(key("refresh"), time.time())
    assert isinstance(access, LiveToken) and isinstance(refresh, LiveToken)
    assert (access.application_id, access.user_id, access.kind, access.scopes) == (APP, PERSON, ACCESS,
                                                                                  "identify email")
    assert (refresh.kind, refresh.expires_at) == (REFRESH, pytest.approx(seeded + 86400))
    for name in ("unknown", "expired", "revoked"):
        assert await db.tokens.find_live(key(name), time.time()) is None


@pytest.mark.parametrize("disabled", ["user", "application"])
async def test_no_token_is_found_once_its_user_or_application_is_disabled(db, seeded, disabled):
    now = time.time()
    assert await db.tokens.find_access(key("access"), now) is not None  # cached on SQLite
    await _set(db, users if disabled == "user" else applications, PERSON if disabled == "user" else APP,
               disabled_at=now)
    assert await db.tokens.find_access(key("access"), now) is None
    assert await db.tokens.find_live(key("refresh"), now) is None


# --- clients ----------------------------------------------------------------------------------

async def test_an_application_is_found_by_id(db, seeded):
    app = await db.clients.application(APP)
    assert isinstance(app, Application)
    assert (app.id, app.owner_id, app.name, app.secret_hash, app.bot_id, app.disabled_at) == (
        APP, OWNER, "app", SECRET, APP, None)
    assert app.redirect_uris == '["https://client.example/cb"]'
    assert (await db.clients.application(BOTLESS)).bot_id is None
    assert await db.clients.application(99) is None


async def test_a_disabled_application_is_still_found_but_not_one_with_a_disabled_owner(db, seeded):
    now = time.time()
    await _set(db, applications, APP, disabled_at=now)
    assert (await db.clients.application(APP)).disabled_at == pytest.approx(now)  # the caller says why it refuses
    await _set(db, users, OWNER, disabled_at=now)
    assert await db.clients.application(APP) is None
    assert await db.clients.application(BOTLESS) is None


async def test_a_bot_login_is_found_with_its_user(db, seeded):
    login = await db.clients.bot(APP)
    assert isinstance(login, BotLogin)
    assert login.token_hash == BOT_TOKEN_HASH
    assert (login.user.id, login.user.username, bool(login.user.bot)) == (APP, "bot", True)
    assert await db.clients.bot(BOTLESS) is None  # no bot
    assert await db.clients.bot(99) is None


@pytest.mark.parametrize("disabled", ["application", "owner", "bot user"])
async def test_no_bot_login_once_its_application_owner_or_user_is_disabled(db, seeded, disabled):
    assert await db.clients.bot(APP) is not None
    table, row_id = {"application": (applications, APP), "owner": (users, OWNER), "bot user": (users, APP)}[disabled]
    await _set(db, table, row_id, disabled_at=time.time())
    assert await db.clients.bot(APP) is None


# --- tokens: writes ---------------------------------------------------------------------------

def _new(n: int, now: float, token_hash: bytes | None = None) -> NewToken:
    return NewToken(token_hash or os.urandom(32), ACCESS, APP, PERSON, None, 10**6 + n, 10**6 + n, "identify", None,
                    now, now + 3600)


async def test_inserts_made_together_are_committed_together_and_then_found(db, seeded):
    now = time.time()
    batch = [_new(n, now) for n in range(100)]
    assert await asyncio.gather(*[db.tokens.insert(token) for token in batch]) == [None] * 100
    found = await asyncio.gather(*[db.tokens.find_access(token.token_hash, now) for token in batch])
    assert all(row is not None and row.user.id == PERSON for row in found)
    stored = await _stored(db, batch[0].token_hash)
    assert (stored.kind, stored.revoked_at, bool(stored.rotated), stored.grant_id) == (ACCESS, None, False, None)


async def test_a_duplicate_in_a_batch_fails_alone(db, seeded):
    now = time.time()
    batch = [_new(n, now) for n in range(10)] + [_new(10, now, key("access"))]
    outcomes = await asyncio.gather(*[db.tokens.insert(token) for token in batch], return_exceptions=True)
    assert outcomes[:10] == [None] * 10 and isinstance(outcomes[10], Exception)
    assert all([await _stored(db, token.token_hash) for token in batch[:10]])


def _client_token(application_id: int, secret_hash: bytes, now: float) -> ClientToken:
    return ClientToken(os.urandom(32), application_id, secret_hash, 77, "identify", now, now + 60)


async def test_a_client_token_is_written_only_for_a_client_that_checks_out(db, seeded):
    now = time.time()
    good = _client_token(APP, SECRET, now)
    wrong_secret = _client_token(APP, BOTLESS_SECRET, now)
    botless = _client_token(BOTLESS, BOTLESS_SECRET, now)
    unknown = _client_token(99, SECRET, now)
    written = await asyncio.gather(*[db.tokens.issue_client_token(token)
                                     for token in (good, wrong_secret, botless, unknown)])
    assert written == [True, False, False, False]  # one batch, each row its own answer
    row = await _stored(db, good.token_hash)
    assert (row.user_id, row.application_id, row.grant_id, row.family_id, row.issue_id, row.scopes) == (
        APP, APP, None, 77, 77, "identify")  # for the bot, without a grant: its own family
    found = await db.tokens.find_access(good.token_hash, now)
    assert found.user.id == APP and bool(found.user.bot)
    for refused in (wrong_secret, botless, unknown):
        assert await _stored(db, refused.token_hash) is None


@pytest.mark.parametrize("disabled", ["application", "owner"])
async def test_no_client_token_for_a_disabled_application_or_owner(db, seeded, disabled):
    now = time.time()
    await _set(db, applications if disabled == "application" else users, APP if disabled == "application" else OWNER,
               disabled_at=now)
    token = _client_token(APP, SECRET, now)
    assert await db.tokens.issue_client_token(token) is False
    assert await _stored(db, token.token_hash) is None


async def test_plain_and_checked_inserts_in_one_batch(db, seeded):
    now = time.time()
    plain, checked = _new(1, now), _client_token(APP, SECRET, now)
    assert await asyncio.gather(db.tokens.insert(plain), db.tokens.issue_client_token(checked)) == [None, True]
    assert await _stored(db, plain.token_hash) is not None and await _stored(db, checked.token_hash) is not None


def test_only_postgres_checks_clients_on_insert(db):
    assert db.tokens.checks_clients_on_insert is POSTGRES


# --- SQLite: the row cache --------------------------------------------------------------------

@sqlite_only
async def test_sqlite_shares_one_immutable_record_between_lookups(db, seeded):
    now = time.time()
    first = await db.tokens.find_access(key("access"), now)
    assert await db.tokens.find_access(key("access"), now) is first
    assert await db.clients.application(APP) is await db.clients.application(APP)
    with pytest.raises(AttributeError):
        first.scopes = "admin"  # NamedTuples: no request can change what another is served


@sqlite_only
async def test_sqlite_cache_is_dropped_by_a_write_of_this_process_in_the_same_turn(db, seeded):
    now = time.time()
    assert (await db.clients.application(APP)).secret_hash == SECRET
    assert await db.clients.bot(APP) is not None
    async with db.write() as conn:
        await conn.execute(update(applications).where(applications.c.id == APP)
                           .values(secret_hash=BOTLESS_SECRET, bot_token_hash=None))
        await conn.execute(update(tokens).where(tokens.c.token_hash == key("access")).values(revoked_at=now))
    # No loop turn in between: the commit itself made the cache look again.
    assert (await db.clients.application(APP)).secret_hash == BOTLESS_SECRET
    assert (await db.clients.bot(APP)).token_hash is None
    assert await db.tokens.find_access(key("access"), now) is None


@sqlite_only
async def test_sqlite_cache_is_dropped_by_another_connections_write_from_the_next_turn(db, seeded):
    now = time.time()
    assert await db.tokens.find_live(key("refresh"), now) is not None
    with sqlite3.connect(db.hot._path) as other:  # another process, as far as the cache knows
        other.execute("UPDATE tokens SET revoked_at = ?", (now,))
    await asyncio.sleep(0)
    assert await db.tokens.find_live(key("refresh"), now) is None


@sqlite_only
async def test_sqlite_inserts_through_the_interface_are_found_at_once(db, seeded):
    now = time.time()
    token = _new(1, now)
    assert await db.tokens.find_access(token.token_hash, now) is None  # a miss is not cached
    await db.tokens.insert(token)
    assert await db.tokens.find_access(token.token_hash, now) is not None


# --- PostgreSQL: one statement per kind for the lookups of one loop turn ----------------------

@postgres_only
async def test_postgres_sends_the_lookups_of_one_turn_together_each_answered_as_alone(db, seeded):
    now = time.time()
    names = ["access", "expired", "refresh", "revoked", "unknown", "access"]
    alone_access = [await db.tokens.find_access(key(name), now) for name in names]
    alone_live = [await db.tokens.find_live(key(name), now) for name in names]
    alone_apps = [await db.clients.application(app_id) for app_id in (APP, BOTLESS, 99)]
    alone_bots = [await db.clients.bot(app_id) for app_id in (APP, BOTLESS)]

    hot = db.hot
    pool = await hot._acquire_pool()
    statements = []

    class CountingPool:  # the real pool, noting each statement sent through it
        def fetch(self, sql, *args):
            statements.append(sql)
            return pool.fetch(sql, *args)

        def fetchrow(self, sql, *args):
            statements.append(sql)
            return pool.fetchrow(sql, *args)

    hot._pool = CountingPool()
    try:
        together = await asyncio.gather(
            *[db.tokens.find_access(key(name), now) for name in names],
            *[db.tokens.find_live(key(name), now) for name in names],
            *[db.clients.application(app_id) for app_id in (APP, BOTLESS, 99)],
            *[db.clients.bot(app_id) for app_id in (APP, BOTLESS)])
    finally:
        hot._pool = pool
    assert together == alone_access + alone_live + alone_apps + alone_bots
    assert [row is not None for row in alone_access] == [True, False, False, False, False, True]
    assert [row is not None for row in alone_live] == [True, False, True, False, False, True]
    assert len(statements) == 4  # one per kind, however many lookups of it
    assert isinstance(together[12], Application) and isinstance(together[15], BotLogin)


@postgres_only
async def test_postgres_lookups_and_writes_report_an_unreachable_database():
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(
            database.tokens.find_access(os.urandom(32), time.time()), database.clients.application(1),
            database.tokens.insert(_new(1, time.time())), return_exceptions=True), 10)
        assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes), outcomes
        with pytest.raises(StoreUnavailable):
            async with database.read() as conn:
                await conn.exec_driver_sql("SELECT 1")
        assert await database.ping() is False
    finally:
        await database.close()


# --- the store's own errors and housekeeping --------------------------------------------------

async def test_a_taken_username_is_already_exists_not_a_driver_error(db, seeded):
    with pytest.raises(AlreadyExists):
        async with db.write() as conn:
            await user_store.insert_user(conn, id=50, username="Person", username_key="person", discriminator="0002",
                                         created_at=time.time())
    async with db.read() as conn:
        assert await user_store.get_user(conn, 50) is None


async def test_expired_rows_are_deleted_in_batches(db, seeded):
    async with db.write() as conn:
        assert await delete_expired(conn, "tokens", before=time.time(), limit=10) == 1  # "expired" only
        assert await delete_expired(conn, "tokens", before=time.time(), limit=10) == 0
    assert set(EXPIRING_TABLES) == {"authorization_codes", "tokens", "sessions", "device_codes", "mail_links",
                                    "signing_keys"}
    assert await db.tokens.find_access(key("access"), time.time()) is not None
