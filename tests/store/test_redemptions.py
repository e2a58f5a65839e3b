"""The group-committed code and refresh redemptions (store/redemptions.py through
``db.tokens.redeem_code`` / ``rotate_refresh``), on the backend the run selects: they write
only the outcome of a request that succeeds, exactly once however many present the same
code or token together, and leave everything else unwritten for the grant's full path."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from sqlalchemy import select

from fluxer_oauth.core import credentials
from fluxer_oauth.store.records import Redemption
from fluxer_oauth.store.tables import ACCESS, REFRESH, authorization_codes, grants, tokens, users
from tests.backends import POSTGRES
from tests.store.test_conformance import APP, BOTLESS, PERSON, _set, _stored, db, key, seeded  # noqa: F401

GRANT, FAMILY, ISSUE = 500, 600, 700
REDIRECT = "https://client.example/cb"
VERIFIER = "v" * 50


def _code(name: str, now: float, **values) -> dict:
    row = dict(code_hash=key(name), family_id=FAMILY, application_id=APP, user_id=PERSON, grant_id=GRANT,
               redirect_uri=REDIRECT, redirect_uri_explicit=True, scopes="identify guilds", code_challenge=None,
               guild_id=None, created_at=now, expires_at=now + 60, consumed_at=None)
    row.update(values)
    return row


def _pair_token(name: str, kind: int, now: float, **values) -> dict:
    row = dict(token_hash=key(name), kind=kind, application_id=APP, user_id=PERSON, grant_id=GRANT,
               family_id=FAMILY, issue_id=ISSUE, scopes="identify", created_at=now, expires_at=now + 3600,
               revoked_at=None, rotated=False)
    row.update(values)
    return row


@pytest.fixture
async def granted(db, seeded):
    """A grant of the person to the application, codes of every shape, and a live
    access/refresh pair of the grant (plus one with a staff scope)."""
    now = time.time()
    async with db.write() as conn:
        await conn.execute(grants.insert().values(id=GRANT, user_id=PERSON, application_id=APP,
                                                  scopes="identify guilds", created_at=now - 600))
        await conn.execute(authorization_codes.insert(), [
            _code("plain", now),
            _code("implicit", now, redirect_uri_explicit=False),
            _code("pkce", now, code_challenge=credentials.s256_challenge(VERIFIER)),
            _code("openid", now, scopes="identify openid"),
            _code("admin", now, scopes="identify admin"),
            _code("bot", now, scopes="bot", guild_id=42),
            _code("expired", now, expires_at=now - 1),
            _code("spent", now, consumed_at=now - 5),
        ])
        await conn.execute(tokens.insert(), [
            _pair_token("pair access", ACCESS, now),
            _pair_token("pair refresh", REFRESH, now, expires_at=now + 86400),
            _pair_token("staff refresh", REFRESH, now, scopes="identify admin", issue_id=ISSUE + 1),
        ])
    return now


def _redemption(name: str, now: float, application_id: int = APP, **binding) -> Redemption:
    return Redemption(key(name), application_id, now, os.urandom(32), os.urandom(32), int.from_bytes(os.urandom(4), "big"),
                      now + 3600, now + 86400, **binding)


async def _code_row(db, name: str):
    async with db.read() as conn:
        return (await conn.execute(select(authorization_codes).where(
            authorization_codes.c.code_hash == key(name)))).first()


async def test_a_plain_code_is_redeemed_with_its_pair_and_the_grant_touched(db, granted):
    redemption = _redemption("plain", granted, redirect_uri=REDIRECT)
    assert await db.tokens.redeem_code(redemption) == "identify guilds"
    assert (await _code_row(db, "plain")).consumed_at == pytest.approx(granted)
    access, refresh = await _stored(db, redemption.access_hash), await _stored(db, redemption.refresh_hash)
    for row, kind, expires in ((access, ACCESS, granted + 3600), (refresh, REFRESH, granted + 86400)):
        assert (row.kind, row.user_id, row.application_id, row.grant_id, row.family_id, row.issue_id, row.scopes) == (
            kind, PERSON, APP, GRANT, FAMILY, redemption.issue_id, "identify guilds")
        assert row.expires_at == pytest.approx(expires) and row.revoked_at is None
    found = await db.tokens.find_access(redemption.access_hash, time.time())
    assert found.user.id == PERSON
    async with db.read() as conn:
        touched = (await conn.execute(select(grants.c.last_used_at).where(grants.c.id == GRANT))).scalar()
    assert touched == pytest.approx(granted)
    assert await db.tokens.redeem_code(_redemption("plain", granted, redirect_uri=REDIRECT)) is None


async def test_parallel_presentations_of_one_code_have_exactly_one_winner(db, granted):
    attempts = [_redemption("plain", granted, redirect_uri=REDIRECT) for _ in range(8)]
    answers = await asyncio.gather(*[db.tokens.redeem_code(attempt) for attempt in attempts])  # one batch
    assert answers.count("identify guilds") == 1 and answers.count(None) == 7
    stored = [await _stored(db, attempt.access_hash) for attempt in attempts]
    assert sum(row is not None for row in stored) == 1
    winner = attempts[answers.index("identify guilds")]
    assert stored[answers.index("identify guilds")].token_hash == winner.access_hash


@pytest.mark.parametrize("name, binding", [
    ("plain", dict()),  # the authorization request named its redirect_uri: the exchange must too
    ("plain", dict(redirect_uri="https://client.example/other")),
    ("pkce", dict(redirect_uri=REDIRECT)),  # no verifier
    ("pkce", dict(redirect_uri=REDIRECT, challenge=credentials.s256_challenge("w" * 50))),
    ("plain", dict(redirect_uri=REDIRECT, challenge=credentials.s256_challenge(VERIFIER))),  # no challenge stored
    ("implicit", dict(public_client=True)),  # a public client's code needs PKCE
    ("openid", dict(redirect_uri=REDIRECT)),  # needs an id_token
    ("admin", dict(redirect_uri=REDIRECT)),  # staff scope: trust and staff re-checked on the full path
    ("bot", dict(redirect_uri=REDIRECT)),  # a bot install answers with its guild
    ("expired", dict(redirect_uri=REDIRECT)),
    ("spent", dict(redirect_uri=REDIRECT)),
    ("unknown", dict(redirect_uri=REDIRECT)),
])
async def test_a_code_that_is_not_simply_redeemable_is_left_for_the_full_path(db, granted, name, binding):
    before = await _code_row(db, name)
    redemption = _redemption(name, granted, **binding)
    assert await db.tokens.redeem_code(redemption) is None
    after = await _code_row(db, name)
    assert (after.consumed_at if after else None) == (before.consumed_at if before else None)  # not spent here
    assert await _stored(db, redemption.access_hash) is None and await _stored(db, redemption.refresh_hash) is None


async def test_matching_bindings_redeem(db, granted):
    assert await db.tokens.redeem_code(_redemption("implicit", granted)) == "identify guilds"
    assert await db.tokens.redeem_code(_redemption(
        "pkce", granted, redirect_uri=REDIRECT, challenge=credentials.s256_challenge(VERIFIER),
        public_client=True)) == "identify guilds"


async def test_no_redemption_for_another_client_or_a_disabled_user(db, granted):
    assert await db.tokens.redeem_code(_redemption("plain", granted, BOTLESS, redirect_uri=REDIRECT)) is None
    assert await db.tokens.rotate_refresh(_redemption("pair refresh", granted, BOTLESS)) is None
    await _set(db, users, PERSON, disabled_at=time.time())
    assert await db.tokens.redeem_code(_redemption("plain", granted, redirect_uri=REDIRECT)) is None
    assert await db.tokens.rotate_refresh(_redemption("pair refresh", granted)) is None
    assert (await _code_row(db, "plain")).consumed_at is None
    assert (await _stored(db, key("pair refresh"))).revoked_at is None


async def test_a_rotation_spends_the_refresh_token_ends_its_access_token_and_issues_a_pair(db, granted):
    redemption = _redemption("pair refresh", granted + 1)
    assert await db.tokens.rotate_refresh(redemption) == "identify"
    old_refresh, old_access = await _stored(db, key("pair refresh")), await _stored(db, key("pair access"))
    assert bool(old_refresh.rotated) and old_refresh.revoked_at == pytest.approx(granted + 1)
    assert not old_access.rotated and old_access.revoked_at == pytest.approx(granted + 1)
    new_refresh = await _stored(db, redemption.refresh_hash)
    assert (new_refresh.kind, new_refresh.grant_id, new_refresh.family_id, new_refresh.issue_id) == (
        REFRESH, GRANT, FAMILY, redemption.issue_id)
    assert await db.tokens.find_live(redemption.refresh_hash, time.time()) is not None
    # Spent: presenting it again writes nothing here (the full path detects the reuse).
    assert await db.tokens.rotate_refresh(_redemption("pair refresh", granted + 2)) is None


async def test_parallel_rotations_of_one_refresh_token_have_exactly_one_winner(db, granted):
    attempts = [_redemption("pair refresh", granted) for _ in range(8)]
    answers = await asyncio.gather(*[db.tokens.rotate_refresh(attempt) for attempt in attempts])
    assert answers.count("identify") == 1 and answers.count(None) == 7
    assert sum([await _stored(db, attempt.refresh_hash) is not None for attempt in attempts]) == 1


async def test_a_refresh_token_with_a_staff_scope_is_left_for_the_full_path(db, granted):
    assert await db.tokens.rotate_refresh(_redemption("staff refresh", granted)) is None
    assert (await _stored(db, key("staff refresh"))).revoked_at is None


async def test_a_rotation_ends_the_old_tokens_for_lookups_at_once(db, granted):
    """On SQLite the lookups of this process are cached and the hot connection's own commits
    do not move data_version: the rotation must make the cache forget what it ended."""
    now = time.time()
    assert await db.tokens.find_access(key("pair access"), now) is not None
    assert await db.tokens.find_live(key("pair refresh"), now) is not None
    assert await db.tokens.rotate_refresh(_redemption("pair refresh", now)) == "identify"
    assert await db.tokens.find_access(key("pair access"), now) is None
    assert await db.tokens.find_live(key("pair access"), now) is None
    assert await db.tokens.find_live(key("pair refresh"), now) is None


async def test_one_failing_request_fails_alone_and_the_rest_of_its_batch_commits(db, granted):
    """A row that breaks a constraint (here an access key that already exists) fails its own
    request; the batch it came in with is written again without it."""
    good_code = _redemption("plain", granted, redirect_uri=REDIRECT)
    good_refresh = _redemption("pair refresh", granted)
    clashing = _redemption("implicit", granted)._replace(access_hash=key("access"))
    answers = await asyncio.gather(db.tokens.redeem_code(good_code), db.tokens.redeem_code(clashing),
                                   db.tokens.rotate_refresh(good_refresh), return_exceptions=True)
    assert answers[0] == "identify guilds" and answers[2] == "identify"
    assert isinstance(answers[1], Exception) and "StoreUnavailable" not in type(answers[1]).__name__
    assert await _stored(db, good_code.access_hash) is not None
    assert await _stored(db, good_refresh.refresh_hash) is not None
    assert (await _code_row(db, "implicit")).consumed_at is None  # its own write rolled back whole
    assert await _stored(db, clashing.refresh_hash) is None
    # And the store is still usable.
    assert await db.tokens.redeem_code(_redemption("implicit", granted)) == "identify guilds"


@pytest.mark.skipif(not POSTGRES, reason="the issuance locks are PostgreSQL's")
async def test_a_batch_over_several_applications_takes_their_locks_in_order(db, granted):
    """Redemptions for two applications in one batch hold both issuance locks shared, so an
    ending (which takes the exclusive lock) waits for the batch to commit."""
    import asyncpg

    blocker = await asyncpg.connect(db.hot._dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT pg_advisory_xact_lock($1)", APP)  # an ending under way
            waiting = asyncio.ensure_future(asyncio.gather(
                db.tokens.redeem_code(_redemption("plain", granted, redirect_uri=REDIRECT)),
                db.tokens.redeem_code(_redemption("unknown", granted, BOTLESS))))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # held back by the ending's lock
        assert await waiting == ["identify guilds", None]
    finally:
        await blocker.close()
