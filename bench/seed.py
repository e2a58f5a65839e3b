"""Seeding a benchmark database directly through the store: a user, an application with a
bot, a live access token, and as many single-use refresh tokens and codes as the runs need.

Direct inserts, because issuing 100k codes through the HTTP flow would take longer than the
benchmark itself; the rows are exactly what the flow writes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from fluxer_oauth.core import credentials
from fluxer_oauth.platform import accounts, applications
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.settings import Settings
from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store.tables import ACCESS, REFRESH, authorization_codes, grants, tokens, users

REDIRECT_URI = "https://bench.example/callback"
CHUNK = 20_000


async def seed(settings: Settings, workdir: Path, *, refresh: int, codes: int) -> dict:
    rt = Runtime.create(settings, exclusive_worker_id=True)
    try:
        user = await accounts.create_user(rt, "bench", "bench@example.com", "bench password 1")
        app = await applications.create(rt, user, name="Bench", redirect_uris=[REDIRECT_URI])
        app_id = int(app["id"])
        now = time.time()
        async with rt.db.write() as conn:
            grant_id = await oauth_store.upsert_grant(conn, rt.ids.next(), user.id, app_id, "identify guilds", now)
        access = credentials.new_stored_token()
        rows = [_token_row(rt, access, ACCESS, user.id, app_id, grant_id, now, settings.access_token_ttl)]
        refresh_tokens = [credentials.new_stored_token() for _ in range(refresh)]
        rows += [_token_row(rt, t, REFRESH, user.id, app_id, grant_id, now, settings.refresh_token_ttl)
                 for t in refresh_tokens]
        await _insert(rt, tokens, rows)
        # Plain codes, and OpenID Connect ones (their grant signs an RS256 id_token).
        for name, extra in (("codes.txt", dict(scopes="identify")),
                            ("codes_openid.txt", dict(scopes="identify openid", nonce="bench", auth_time=now))):
            code_values = [credentials.new_opaque_token() for _ in range(codes)]
            await _insert(rt, authorization_codes, [
                dict(code_hash=credentials.sha256(code), family_id=rt.ids.next(), application_id=app_id,
                     user_id=user.id, grant_id=grant_id, redirect_uri=REDIRECT_URI, redirect_uri_explicit=True,
                     created_at=now, expires_at=now + 3600, **extra)
                for code in code_values
            ])
            (workdir / name).write_text("\n".join(code_values) + "\n")
        (workdir / "refresh.txt").write_text("\n".join(refresh_tokens) + "\n")
        return {
            "client_id": app["id"],
            "client_secret": app["client_secret"],
            "bot_token": app["bot"]["token"],
            "access_token": access,
            "redirect_uri": REDIRECT_URI,
            "user_id": str(user.id),
            "application_id": app["id"],
            "grant_id": grant_id,
        }
    finally:
        await rt.db.close()


async def add_filler(settings: Settings, info: dict, count: int) -> None:
    """``count`` other users, each with a grant to the application and a live access token
    of that grant, so that lookups and the grants' writes run against big tables and
    indexes (the tokens' family and issue indexes cover only tokens with a grant)."""
    rt = Runtime.create(settings, exclusive_worker_id=True)
    try:
        now = time.time()
        application_id = int(info["application_id"])
        for start in range(0, count, CHUNK):
            numbers = range(start, min(count, start + CHUNK))
            ids = [rt.ids.next() for _ in numbers]
            async with rt.db.write() as conn:
                await conn.execute(users.insert(), [
                    dict(id=user_id, username=f"filler{n}", username_key=f"filler{n}", discriminator="0001",
                         created_at=now) for n, user_id in zip(numbers, ids)])
                await conn.execute(grants.insert(), [
                    dict(id=user_id, user_id=user_id, application_id=application_id, scopes="identify",
                         created_at=now) for user_id in ids])
                await conn.execute(tokens.insert(), [
                    dict(token_hash=credentials.stored_token_key(credentials.new_stored_token()), kind=ACCESS,
                         application_id=application_id, user_id=user_id, grant_id=user_id, family_id=user_id,
                         issue_id=user_id, scopes="identify", created_at=now, expires_at=now + 86400, rotated=False)
                    for user_id in ids])
    finally:
        await rt.db.close()


def _token_row(rt, token, kind, user_id, app_id, grant_id, now, ttl) -> dict:
    issue = rt.ids.next()
    return dict(token_hash=credentials.stored_token_key(token), kind=kind, application_id=app_id, user_id=user_id,
                grant_id=grant_id, family_id=issue, issue_id=issue, scopes="identify guilds", created_at=now,
                expires_at=now + ttl, rotated=False)


async def _insert(rt, table, rows) -> None:
    for start in range(0, len(rows), CHUNK):
        async with rt.db.write() as conn:
            await conn.execute(table.insert(), rows[start:start + CHUNK])


if __name__ == "__main__":  # python bench/seed.py WORKDIR REFRESH CODES (settings from FLUXER_*)
    out = Path(sys.argv[1])
    print(json.dumps(asyncio.run(seed(Settings(), out, refresh=int(sys.argv[2]), codes=int(sys.argv[3])))))
