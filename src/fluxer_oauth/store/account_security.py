"""Mailed links (email verification, password reset), the TOTP state of a user and their
two-factor recovery codes. Every credential here is kept as its hash only."""

from __future__ import annotations

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.tables import mail_links, recovery_codes, users


# --- mailed links ------------------------------------------------------------------------------

async def insert_mail_link(conn: AsyncConnection, *, token_hash: bytes, purpose: int, user_id: int, email: str,
                           created_at: float, expires_at: float) -> None:
    await conn.execute(mail_links.insert().values(
        token_hash=token_hash, purpose=purpose, user_id=user_id, email=email, created_at=created_at,
        expires_at=expires_at,
    ))


_USE_LINK = (
    update(mail_links)
    .where(mail_links.c.token_hash == bindparam("p_hash"), mail_links.c.purpose == bindparam("p_purpose"),
           mail_links.c.used_at.is_(None), mail_links.c.expires_at > bindparam("p_now"))
    .values(used_at=bindparam("p_now"))
    .returning(mail_links.c.user_id, mail_links.c.email)
)


async def use_mail_link(conn: AsyncConnection, token_hash: bytes, purpose: int, now: float):
    """Marks a live, unused link of ``purpose`` used and returns its (user_id, email), or None
    for an unknown, used, expired or other-purpose link. One statement: of two requests with
    the same link, one gets the row."""
    params = {"p_hash": token_hash, "p_purpose": purpose, "p_now": now}
    return (await conn.execute(_USE_LINK, params)).first()


async def live_mail_link(conn: AsyncConnection, token_hash: bytes, purpose: int, now: float):
    """A live, unused link of ``purpose`` (the row), without using it: what the page that
    asks for the new password checks before showing its form."""
    query = select(mail_links).where(
        mail_links.c.token_hash == token_hash, mail_links.c.purpose == purpose, mail_links.c.used_at.is_(None),
        mail_links.c.expires_at > now,
    )
    return (await conn.execute(query)).first()


async def end_mail_links(conn: AsyncConnection, user_id: int, purpose: int, now: float) -> None:
    """Every unused link of ``purpose`` the user was sent stops working (after a password
    reset: the other reset links; after an email change: the links mailed to the old address)."""
    await conn.execute(
        update(mail_links)
        .where(mail_links.c.user_id == user_id, mail_links.c.purpose == purpose, mail_links.c.used_at.is_(None))
        .values(used_at=now)
    )


# --- TOTP ------------------------------------------------------------------------------------

async def set_totp(conn: AsyncConnection, user_id: int, sealed_secret: bytes | None, last_step: int | None) -> bool:
    """Turns two-factor sign-in on (a sealed secret) or off (None) for the user. On only
    where it is off: False when a parallel request turned it on first (its secret and
    recovery codes stand)."""
    query = update(users).where(users.c.id == user_id)
    if sealed_secret is not None:
        query = query.where(users.c.totp_secret.is_(None))
    result = await conn.execute(
        query.values(totp_secret=sealed_secret, totp_last_step=last_step, mfa_enabled=sealed_secret is not None))
    return result.rowcount > 0


async def advance_totp_step(conn: AsyncConnection, user_id: int, step: int) -> bool:
    """Records that a code of time step ``step`` was accepted, only if no code of this step or
    a later one was: False means the code (or a later one) was used already."""
    result = await conn.execute(
        update(users)
        .where(users.c.id == user_id, users.c.totp_secret.is_not(None),
               or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < step))
        .values(totp_last_step=step)
    )
    return result.rowcount > 0


# --- recovery codes ----------------------------------------------------------------------------

async def replace_recovery_codes(conn: AsyncConnection, user_id: int, code_hashes: list[bytes]) -> None:
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    if code_hashes:
        await conn.execute(recovery_codes.insert(), [
            {"user_id": user_id, "code_hash": code_hash, "used_at": None} for code_hash in code_hashes
        ])


async def use_recovery_code(conn: AsyncConnection, user_id: int, code_hash: bytes, now: float) -> bool:
    """Marks an unused recovery code of the user used; False when it is not one (or was used)."""
    result = await conn.execute(
        update(recovery_codes)
        .where(and_(recovery_codes.c.user_id == user_id, recovery_codes.c.code_hash == code_hash,
                    recovery_codes.c.used_at.is_(None)))
        .values(used_at=now)
    )
    return result.rowcount > 0


async def unused_recovery_codes(conn: AsyncConnection, user_id: int) -> int:
    query = select(func.count()).select_from(recovery_codes).where(
        recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))
    return (await conn.execute(query)).scalar_one()
