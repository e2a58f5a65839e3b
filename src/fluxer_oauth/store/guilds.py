"""Guilds, roles, members, invites and connected accounts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.tables import connections, guild_members, guilds, member_roles, roles


async def insert_guild(conn: AsyncConnection, **values) -> None:
    await conn.execute(guilds.insert().values(**values))


async def get_guild(conn: AsyncConnection, guild_id: int):
    return (await conn.execute(select(guilds).where(guilds.c.id == guild_id))).first()


async def insert_role(conn: AsyncConnection, **values) -> None:
    await conn.execute(roles.insert().values(**values))


async def guild_roles(conn: AsyncConnection, guild_id: int):
    query = select(roles).where(roles.c.guild_id == guild_id).order_by(roles.c.position, roles.c.id)
    return (await conn.execute(query)).all()


async def add_member(conn: AsyncConnection, guild_id: int, user_id: int, now: float) -> None:
    await conn.execute(guild_members.insert().values(guild_id=guild_id, user_id=user_id, joined_at=now))


async def is_member(conn: AsyncConnection, guild_id: int, user_id: int) -> bool:
    query = select(guild_members.c.user_id).where(
        guild_members.c.guild_id == guild_id, guild_members.c.user_id == user_id
    )
    return (await conn.execute(query)).first() is not None


async def give_role(conn: AsyncConnection, guild_id: int, user_id: int, role_id: int) -> None:
    await conn.execute(member_roles.insert().values(guild_id=guild_id, user_id=user_id, role_id=role_id))


async def user_guilds_with_role_permissions(conn: AsyncConnection, user_id: int):
    """Rows of (guild, member's role permissions) for every guild the user is in; the
    @everyone role is included by its id being the guild's."""
    member_guilds = (
        select(guilds)
        .select_from(guilds.join(guild_members, guild_members.c.guild_id == guilds.c.id))
        .where(guild_members.c.user_id == user_id)
        .order_by(guilds.c.id)
    )
    guild_rows = (await conn.execute(member_guilds)).all()
    if not guild_rows:
        return []
    ids = [row.id for row in guild_rows]
    assigned = select(member_roles.c.guild_id, roles.c.permissions).select_from(
        member_roles.join(roles, roles.c.id == member_roles.c.role_id)
    ).where(member_roles.c.user_id == user_id, member_roles.c.guild_id.in_(ids))
    everyone = select(roles.c.guild_id, roles.c.permissions).where(roles.c.id.in_(ids))
    permissions: dict[int, list[int]] = {guild_id: [] for guild_id in ids}
    for guild_id, value in (await conn.execute(assigned.union_all(everyone))).all():
        permissions[guild_id].append(value)
    return [(row, permissions[row.id]) for row in guild_rows]


async def member_role_permissions(conn: AsyncConnection, guild_id: int, user_id: int) -> list[int]:
    assigned = select(roles.c.permissions).select_from(
        member_roles.join(roles, roles.c.id == member_roles.c.role_id)
    ).where(member_roles.c.user_id == user_id, member_roles.c.guild_id == guild_id)
    everyone = select(roles.c.permissions).where(roles.c.id == guild_id)
    return list((await conn.execute(assigned.union_all(everyone))).scalars())


async def insert_connection(conn: AsyncConnection, **values) -> None:
    await conn.execute(connections.insert().values(**values))


async def user_connections(conn: AsyncConnection, user_id: int):
    query = select(connections).where(connections.c.user_id == user_id).order_by(connections.c.created_at)
    return (await conn.execute(query)).all()
