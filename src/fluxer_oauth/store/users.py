"""Users and sessions."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.common import rows_by_id
from fluxer_oauth.store.errors import AlreadyExists
from fluxer_oauth.store.tables import sessions, users


async def insert_user(conn: AsyncConnection, **values) -> None:
    """Raises ``AlreadyExists`` when the username or email (or id) is taken."""
    try:
        await conn.execute(users.insert().values(**values))
    except IntegrityError as exc:
        raise AlreadyExists("username or email") from exc


_GET_USER = select(users).where(users.c.id == bindparam("user_id"))


async def get_user(conn: AsyncConnection, user_id: int):
    return (await conn.execute(_GET_USER, {"user_id": user_id})).first()


async def get_users(conn: AsyncConnection, user_ids) -> dict:
    """Users by id, in one query."""
    return await rows_by_id(conn, users, user_ids)


async def find_by_login(conn: AsyncConnection, login: str):
    key = login.strip().lower()
    query = select(users).where(or_(users.c.username_key == key, users.c.email_key == key))
    return (await conn.execute(query)).first()


async def username_or_email_taken(conn: AsyncConnection, username_key: str, email_key: str) -> str | None:
    rows = (
        await conn.execute(
            select(users.c.username_key, users.c.email_key).where(
                or_(users.c.username_key == username_key, users.c.email_key == email_key)
            )
        )
    ).all()
    for row in rows:
        if row.username_key == username_key:
            return "username"
    return "email" if rows else None


async def search_users(conn: AsyncConnection, text: str | None, limit: int = 100):
    """People (not bots) whose username or email starts with ``text``; all when it is empty."""
    query = select(users).where(users.c.bot.is_(False)).order_by(users.c.id).limit(limit)
    if text:
        key = text.strip().lower()
        query = query.where(
            or_(users.c.username_key.startswith(key, autoescape=True), users.c.email_key.startswith(key, autoescape=True))
        )
    return (await conn.execute(query)).all()


async def set_user_fields(conn: AsyncConnection, user_id: int, **values) -> bool:
    result = await conn.execute(update(users).where(users.c.id == user_id).values(**values))
    return result.rowcount > 0


async def update_profile(conn: AsyncConnection, user_id: int, **values) -> None:
    """Change a user's own fields; raises ``AlreadyExists`` when a new username is taken."""
    try:
        await conn.execute(update(users).where(users.c.id == user_id).values(**values))
    except IntegrityError as exc:
        raise AlreadyExists("username") from exc


async def username_taken(conn: AsyncConnection, username_key: str, user_id: int) -> bool:
    """Whether a person other than ``user_id`` has this username (lower-cased)."""
    query = select(users.c.id).where(users.c.username_key == username_key, users.c.id != user_id)
    return (await conn.execute(query)).first() is not None


async def email_taken(conn: AsyncConnection, email_key: str, user_id: int) -> bool:
    """Whether an account other than ``user_id`` has this email (lower-cased)."""
    query = select(users.c.id).where(users.c.email_key == email_key, users.c.id != user_id)
    return (await conn.execute(query)).first() is not None


async def count_users(conn: AsyncConnection) -> int:
    return (await conn.execute(select(func.count()).select_from(users))).scalar_one()


# --- sessions ------------------------------------------------------------------------------

async def insert_session(conn: AsyncConnection, token_hash: bytes, user_id: int, now: float, expires_at: float) -> None:
    await conn.execute(
        sessions.insert().values(token_hash=token_hash, user_id=user_id, created_at=now, expires_at=expires_at)
    )


async def session_user(conn: AsyncConnection, token_hash: bytes, now: float):
    """The live, enabled user behind a session token hash, or None. The row also carries
    ``signed_in_at``: when the session began (OpenID Connect's auth_time)."""
    query = (
        select(users, sessions.c.created_at.label("signed_in_at"))
        .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
        .where(sessions.c.token_hash == token_hash, sessions.c.expires_at > now, users.c.disabled_at.is_(None))
    )
    return (await conn.execute(query)).first()


async def delete_session(conn: AsyncConnection, token_hash: bytes) -> None:
    await conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash))


async def end_sessions(conn: AsyncConnection, user_id: int, *, keep: bytes | None = None) -> None:
    """Every session of the user ends (``keep``: but the one with this token hash)."""
    query = delete(sessions).where(sessions.c.user_id == user_id)
    if keep is not None:
        query = query.where(sessions.c.token_hash != keep)
    await conn.execute(query)
