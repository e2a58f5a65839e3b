"""Grants, authorization codes and tokens: every write here is a single conditional
statement, so that two parallel requests can never both consume the same code or
rotate the same refresh token."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.tables import ACCESS, REFRESH, applications, authorization_codes, grants, tokens, users

# --- grants (remembered consent) -----------------------------------------------------------

async def get_grant(conn: AsyncConnection, user_id: int, application_id: int):
    query = select(grants).where(grants.c.user_id == user_id, grants.c.application_id == application_id)
    return (await conn.execute(query)).first()


async def upsert_grant(conn: AsyncConnection, grant_id: int, user_id: int, application_id: int, scopes: str, now: float):
    """Record consent to ``scopes``; returns the grant's id (an existing one is widened)."""
    existing = await get_grant(conn, user_id, application_id)
    if existing is not None:
        await conn.execute(update(grants).where(grants.c.id == existing.id).values(scopes=scopes))
        return existing.id
    await conn.execute(
        grants.insert().values(
            id=grant_id, user_id=user_id, application_id=application_id, scopes=scopes, created_at=now
        )
    )
    return grant_id


async def touch_grant(conn: AsyncConnection, grant_id: int, now: float) -> None:
    await conn.execute(update(grants).where(grants.c.id == grant_id).values(last_used_at=now))


async def revoke_grant(conn: AsyncConnection, user_id: int, application_id: int, now: float) -> bool:
    """End the grant of a user for an application: forget the consent, revoke every token."""
    result = await conn.execute(
        delete(grants).where(grants.c.user_id == user_id, grants.c.application_id == application_id)
    )
    await conn.execute(
        update(tokens)
        .where(tokens.c.user_id == user_id, tokens.c.application_id == application_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount > 0


async def list_user_grants(conn: AsyncConnection, user_id: int):
    query = (
        select(grants, applications.c.name.label("application_name"))
        .select_from(grants.join(applications, applications.c.id == grants.c.application_id))
        .where(grants.c.user_id == user_id)
        .order_by(grants.c.created_at)
    )
    return (await conn.execute(query)).all()


# --- authorization codes ------------------------------------------------------------------

async def insert_code(conn: AsyncConnection, **values) -> None:
    await conn.execute(authorization_codes.insert().values(**values))


async def consume_code(conn: AsyncConnection, code_hash: bytes, application_id: int, now: float):
    """Mark a live code consumed and return it; None when it is unknown, expired, another
    client's, or already consumed (exactly one of parallel callers gets the row)."""
    query = (
        update(authorization_codes)
        .where(
            authorization_codes.c.code_hash == code_hash,
            authorization_codes.c.application_id == application_id,
            authorization_codes.c.consumed_at.is_(None),
            authorization_codes.c.expires_at > now,
        )
        .values(consumed_at=now)
        .returning(*authorization_codes.c)
    )
    return (await conn.execute(query)).first()


async def get_code(conn: AsyncConnection, code_hash: bytes):
    query = select(authorization_codes).where(authorization_codes.c.code_hash == code_hash)
    return (await conn.execute(query)).first()


# --- tokens --------------------------------------------------------------------------------

async def insert_tokens(conn: AsyncConnection, rows: list[dict]) -> None:
    await conn.execute(tokens.insert(), rows)


async def revoke_family(conn: AsyncConnection, family_id: int, now: float) -> int:
    result = await conn.execute(
        update(tokens).where(tokens.c.family_id == family_id, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return result.rowcount


async def revoke_issue(conn: AsyncConnection, issue_id: int, now: float) -> None:
    await conn.execute(
        update(tokens).where(tokens.c.issue_id == issue_id, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )


async def rotate_refresh_token(conn: AsyncConnection, token_hash: bytes, application_id: int, now: float):
    """Spend a live refresh token; returns its row, or None when it is not live."""
    query = (
        update(tokens)
        .where(
            tokens.c.token_hash == token_hash,
            tokens.c.kind == REFRESH,
            tokens.c.application_id == application_id,
            tokens.c.revoked_at.is_(None),
            tokens.c.expires_at > now,
        )
        .values(revoked_at=now, rotated=True)
        .returning(*tokens.c)
    )
    return (await conn.execute(query)).first()


async def get_token(conn: AsyncConnection, token_hash: bytes):
    return (await conn.execute(select(tokens).where(tokens.c.token_hash == token_hash))).first()


# Prepared once: the hottest query of the server (every bearer-authenticated request).
_LIVE_ACCESS_TOKEN = (
    select(
        tokens.c.user_id,
        tokens.c.application_id,
        tokens.c.grant_id,
        tokens.c.scopes,
        tokens.c.expires_at,
        tokens.c.created_at,
    )
    .select_from(
        tokens.join(users, users.c.id == tokens.c.user_id).join(
            applications, applications.c.id == tokens.c.application_id
        )
    )
    .where(
        tokens.c.token_hash == bindparam("token_hash"),
        tokens.c.kind == ACCESS,
        tokens.c.revoked_at.is_(None),
        tokens.c.expires_at > bindparam("now"),
        users.c.disabled_at.is_(None),
        applications.c.disabled_at.is_(None),
    )
)


async def live_access_token(conn: AsyncConnection, token_hash: bytes, now: float):
    """The live access token with this hash whose user and application are enabled, or None."""
    return (await conn.execute(_LIVE_ACCESS_TOKEN, {"token_hash": token_hash, "now": now})).first()

