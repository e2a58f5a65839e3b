"""Guilds, roles, members, invites and connected accounts."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.tables import connections, guild_members, guilds, invites, member_roles, roles, users


async def insert_guild(conn: AsyncConnection, **values) -> None:
    await conn.execute(guilds.insert().values(**values))


async def get_guild(conn: AsyncConnection, guild_id: int):
    return (await conn.execute(select(guilds).where(guilds.c.id == guild_id))).first()


async def update_guild(conn: AsyncConnection, guild_id: int, **values) -> bool:
    result = await conn.execute(update(guilds).where(guilds.c.id == guild_id).values(**values))
    return result.rowcount > 0


async def insert_role(conn: AsyncConnection, **values) -> None:
    await conn.execute(roles.insert().values(**values))


async def guild_roles(conn: AsyncConnection, guild_id: int):
    query = select(roles).where(roles.c.guild_id == guild_id).order_by(roles.c.position, roles.c.id)
    return (await conn.execute(query)).all()


async def add_member(conn: AsyncConnection, guild_id: int, user_id: int, now: float) -> None:
    await conn.execute(guild_members.insert().values(guild_id=guild_id, user_id=user_id, joined_at=now))


async def add_member_if_absent(conn: AsyncConnection, guild_id: int, user_id: int, now: float,
                               nick: str | None = None) -> bool:
    """Add a member unless they are one already (``ON CONFLICT DO NOTHING``: of two
    transactions adding the same member at once, the second waits for the first and adds
    nothing); whether this one added them."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(guild_members)
        .values(guild_id=guild_id, user_id=user_id, joined_at=now, nick=nick)
        .on_conflict_do_nothing(index_elements=[guild_members.c.guild_id, guild_members.c.user_id])
        .returning(guild_members.c.user_id)
    )
    return (await conn.execute(statement)).first() is not None


async def get_member(conn: AsyncConnection, guild_id: int, user_id: int):
    """The membership row (guild_id, user_id, joined_at, nick), or None."""
    query = select(guild_members).where(guild_members.c.guild_id == guild_id, guild_members.c.user_id == user_id)
    return (await conn.execute(query)).first()


async def member_top_position(conn: AsyncConnection, guild_id: int, user_id: int) -> int:
    """The position of the member's highest role (0, @everyone's, when they have none)."""
    query = select(func.coalesce(func.max(roles.c.position), 0)).select_from(
        member_roles.join(roles, roles.c.id == member_roles.c.role_id)
    ).where(member_roles.c.guild_id == guild_id, member_roles.c.user_id == user_id)
    return (await conn.execute(query)).scalar_one()


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


async def remove_member(conn: AsyncConnection, guild_id: int, user_id: int) -> bool:
    """Remove a member with their roles; the managed roles they held (a bot's, made when it
    was added) are deleted from the guild with them, since nobody else may hold one."""
    held = select(member_roles.c.role_id).where(member_roles.c.guild_id == guild_id,
                                                member_roles.c.user_id == user_id)
    await conn.execute(delete(roles).where(roles.c.guild_id == guild_id, roles.c.managed.is_(True),
                                           roles.c.id.in_(held)))
    await conn.execute(delete(member_roles).where(member_roles.c.guild_id == guild_id, member_roles.c.user_id == user_id))
    result = await conn.execute(
        delete(guild_members).where(guild_members.c.guild_id == guild_id, guild_members.c.user_id == user_id)
    )
    return result.rowcount > 0


async def remove_from_every_guild(conn: AsyncConnection, user_id: int) -> list[int]:
    """``remove_member`` in every guild the user is in; the guilds' ids."""
    guild_ids = list((await conn.execute(
        select(guild_members.c.guild_id).where(guild_members.c.user_id == user_id)
    )).scalars())
    for guild_id in guild_ids:
        await remove_member(conn, guild_id, user_id)
    return guild_ids


async def take_role(conn: AsyncConnection, guild_id: int, user_id: int, role_id: int) -> bool:
    result = await conn.execute(
        delete(member_roles).where(
            member_roles.c.guild_id == guild_id, member_roles.c.user_id == user_id, member_roles.c.role_id == role_id
        )
    )
    return result.rowcount > 0


async def get_role(conn: AsyncConnection, guild_id: int, role_id: int):
    query = select(roles).where(roles.c.guild_id == guild_id, roles.c.id == role_id)
    return (await conn.execute(query)).first()


async def top_role_position(conn: AsyncConnection, guild_id: int) -> int:
    query = select(func.coalesce(func.max(roles.c.position), 0)).where(roles.c.guild_id == guild_id)
    return (await conn.execute(query)).scalar_one()


async def members_with_roles(conn: AsyncConnection, guild_id: int, limit: int = 1000):
    """[(user row, joined_at, [role ids])] of a guild, oldest members first (each user row
    also carries the member's ``nick``)."""
    query = (
        select(users, guild_members.c.joined_at, guild_members.c.nick)
        .select_from(guild_members.join(users, users.c.id == guild_members.c.user_id))
        .where(guild_members.c.guild_id == guild_id)
        .order_by(guild_members.c.joined_at, users.c.id)
        .limit(limit)
    )
    rows = (await conn.execute(query)).all()
    assigned: dict[int, list[int]] = {}
    role_rows = await conn.execute(
        select(member_roles.c.user_id, member_roles.c.role_id).where(member_roles.c.guild_id == guild_id)
    )
    for user_id, role_id in role_rows.all():
        assigned.setdefault(user_id, []).append(role_id)
    return [(row, row.joined_at, assigned.get(row.id, [])) for row in rows]


async def member_role_ids(conn: AsyncConnection, guild_id: int, user_id: int) -> list[int]:
    query = select(member_roles.c.role_id).where(member_roles.c.guild_id == guild_id, member_roles.c.user_id == user_id)
    return list((await conn.execute(query)).scalars())


async def insert_invite(conn: AsyncConnection, **values) -> None:
    await conn.execute(invites.insert().values(**values))


async def use_invite(conn: AsyncConnection, code: str, now: float):
    """Count a use of a live invite and return it; None when unknown or expired."""
    query = (
        update(invites)
        .where(invites.c.code == code, (invites.c.expires_at.is_(None)) | (invites.c.expires_at > now))
        .values(uses=invites.c.uses + 1)
        .returning(invites.c.guild_id, invites.c.code)
    )
    return (await conn.execute(query)).first()


async def delete_connection(conn: AsyncConnection, user_id: int, kind: str, external_id: str) -> bool:
    result = await conn.execute(
        delete(connections).where(
            connections.c.user_id == user_id, connections.c.type == kind, connections.c.id == external_id
        )
    )
    return result.rowcount > 0
