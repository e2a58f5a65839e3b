"""Applications and their bots' credentials."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.common import rows_by_id
from fluxer_oauth.store.tables import applications, users


async def insert_application(conn: AsyncConnection, **values) -> None:
    await conn.execute(applications.insert().values(**values))


async def get_application(conn: AsyncConnection, application_id: int):
    return (await conn.execute(select(applications).where(applications.c.id == application_id))).first()


async def get_applications(conn: AsyncConnection, application_ids) -> dict:
    """Applications by id, in one query."""
    return await rows_by_id(conn, applications, application_ids)


async def list_owned(conn: AsyncConnection, owner_id: int):
    query = select(applications).where(applications.c.owner_id == owner_id).order_by(applications.c.id)
    return (await conn.execute(query)).all()


async def count_owned(conn: AsyncConnection, owner_id: int) -> int:
    query = select(func.count()).select_from(applications).where(applications.c.owner_id == owner_id)
    return (await conn.execute(query)).scalar_one()


async def list_all(conn: AsyncConnection, limit: int = 200):
    return (await conn.execute(select(applications).order_by(applications.c.id).limit(limit))).all()


async def update_application(conn: AsyncConnection, application_id: int, **values) -> bool:
    result = await conn.execute(update(applications).where(applications.c.id == application_id).values(**values))
    return result.rowcount > 0


async def may_authorize(conn: AsyncConnection, application_id: int, user_id: int, *, admin: bool) -> bool:
    """The application and its owner are enabled, and so is the user authorizing it; for the
    admin scope, the application is trusted and the user is staff."""
    owner, person = users.alias("owner"), users.alias("person")
    query = (select(applications.c.id)
             .join(owner, owner.c.id == applications.c.owner_id)
             .join(person, person.c.id == user_id)
             .where(applications.c.id == application_id, applications.c.disabled_at.is_(None),
                    owner.c.disabled_at.is_(None), person.c.disabled_at.is_(None)))
    if admin:
        query = query.where(applications.c.trusted.is_(True), person.c.staff.is_(True))
    return (await conn.execute(query)).first() is not None


async def delete_application(conn: AsyncConnection, application_id: int) -> None:
    """Delete the application and its bot user (whose guild memberships must be removed first:
    see guilds.remove_from_every_guild)."""
    row = await get_application(conn, application_id)
    await conn.execute(delete(applications).where(applications.c.id == application_id))
    if row is not None and row.bot_id is not None:
        await conn.execute(delete(users).where(users.c.id == row.bot_id))
