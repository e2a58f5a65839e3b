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


async def delete_application(conn: AsyncConnection, application_id: int) -> None:
    """Delete the application and its bot user (whose guild memberships must be removed first:
    see guilds.remove_from_every_guild)."""
    row = await get_application(conn, application_id)
    await conn.execute(delete(applications).where(applications.c.id == application_id))
    if row is not None and row.bot_id is not None:
        await conn.execute(delete(users).where(users.c.id == row.bot_id))
