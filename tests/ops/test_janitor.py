"""The janitor deletes expired rows in batches and leaves live ones alone."""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import func, select

from fluxer_oauth.core import credentials
from fluxer_oauth.ops.janitor import sweep
from fluxer_oauth.platform import mail_links as links
from fluxer_oauth.store import account_security as security_store
from fluxer_oauth.store import users as user_store
from fluxer_oauth.store.tables import (
    ACCESS, EMAIL_VERIFICATION, PASSWORD_RESET, applications, authorization_codes, device_codes, mail_links,
    sessions, tokens,
)
from tests.conftest import register


def _hash(n: int, salt: str) -> bytes:
    return hashlib.sha256(f"{salt}{n}".encode()).digest()


async def _seed(rt, expired_tokens: int, live_tokens: int) -> None:
    now = time.time()
    async with rt.db.write() as conn:
        await user_store.insert_user(conn, id=1, username="u", username_key="u", discriminator="0001", created_at=now)
        await conn.execute(applications.insert().values(
            id=2, owner_id=1, name="a", secret_hash=b"x" * 32, verify_key="k", created_at=now, updated_at=now))
        rows = [
            dict(token_hash=_hash(n, "t"), kind=ACCESS, application_id=2, user_id=1, family_id=n, issue_id=n,
                 scopes="identify", created_at=now - 9e5, expires_at=(now - 10) if n < expired_tokens else now + 3600,
                 rotated=False)
            for n in range(expired_tokens + live_tokens)
        ]
        await conn.execute(tokens.insert(), rows)
        await conn.execute(authorization_codes.insert(), [
            dict(code_hash=_hash(n, "c"), family_id=n, application_id=2, user_id=1, grant_id=1, scopes="identify",
                 created_at=now - 700, expires_at=now - 100 if n % 2 else now + 500) for n in range(100)])
        await conn.execute(sessions.insert(), [
            dict(token_hash=_hash(n, "s"), user_id=1, created_at=now, expires_at=now - 1 if n < 30 else now + 99)
            for n in range(50)])
        # Device codes of every state: 12 expired (pending, approved, denied, redeemed), 8 live.
        await conn.execute(device_codes.insert(), [
            dict(device_code_hash=_hash(n, "d"), user_code=f"CODE{n:04d}", application_id=2, scopes="identify",
                 created_at=now - 900, expires_at=now - 300 if n < 12 else now + 300, interval=5,
                 approved_at=now - 800 if n % 4 == 1 else None, denied_at=now - 800 if n % 4 == 2 else None,
                 consumed_at=now - 700 if n % 4 == 3 else None)
            for n in range(20)])


async def _count(rt, table) -> int:
    async with rt.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_janitor_deletes_only_expired_rows(rt):
    await _seed(rt, expired_tokens=2500, live_tokens=40)
    report = await sweep(rt, batch_size=1000)
    assert report.deleted == {"authorization_codes": 50, "tokens": 2500, "sessions": 30, "device_codes": 12,
                              "mail_links": 0, "signing_keys": 0}
    assert await _count(rt, tokens) == 40
    assert await _count(rt, authorization_codes) == 50
    assert await _count(rt, sessions) == 20
    assert await _count(rt, device_codes) == 8
    # tokens took three batches of at most 1000; each other table one
    assert len([s for s in report.batch_seconds]) == 1 + 3 + 1 + 1 + 1 + 1
    assert (await sweep(rt)).total == 0


async def test_janitor_removes_100k_expired_rows_in_short_batches(rt):
    await _seed(rt, expired_tokens=100_000, live_tokens=10)
    report = await sweep(rt, batch_size=2000)
    assert report.deleted["tokens"] == 100_000 and await _count(rt, tokens) == 10
    token_batches = report.batch_seconds[1:-1]
    print(f"\njanitor: 100k expired tokens in {len(token_batches)} batches of 2000; "
          f"per batch median {sorted(token_batches)[len(token_batches) // 2] * 1000:.1f} ms, "
          f"slowest {max(token_batches) * 1000:.1f} ms, total {sum(token_batches):.2f} s")


async def test_janitor_sweeps_expired_mail_links_and_a_live_one_still_works(rt, client):
    await register(client, "alice")
    async with rt.db.read() as conn:
        alice = await user_store.find_by_login(conn, "alice")
    live = (await links.send_reset_link(rt, alice, mail=False)).partition("token=")[2]
    past = time.time() - 7200
    async with rt.db.write() as conn:  # expired links of both kinds, used and not
        for n in range(6):
            purpose = (EMAIL_VERIFICATION, PASSWORD_RESET)[n % 2]
            await security_store.insert_mail_link(
                conn, token_hash=credentials.sha256(f"expired {n}"), purpose=purpose, user_id=alice.id,
                email=alice.email, created_at=past, expires_at=past + 60)
        await security_store.use_mail_link(conn, credentials.sha256("expired 0"), EMAIL_VERIFICATION, past + 1)

    report = await sweep(rt)
    assert report.deleted["mail_links"] == 6
    assert await _count(rt, mail_links) == 1
    assert (await links.reset_link_user(rt, live)).id == alice.id
