"""Guilds as the `guilds` scope shows them, with the caller's computed permissions."""

from __future__ import annotations

import json

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.permissions import compute_permissions
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import guilds as guild_store

UNKNOWN_GUILD = ApiError(404, "UNKNOWN_GUILD", "unknown guild")


async def user_guilds(rt: Runtime, user_id: int) -> list[dict]:
    async with rt.db.read() as conn:
        rows = await guild_store.user_guilds_with_role_permissions(conn, user_id)
    return [
        {
            "id": str(guild.id),
            "name": guild.name,
            "icon": guild.icon,
            "owner": guild.owner_id == user_id,
            "permissions": str(compute_permissions(is_owner=guild.owner_id == user_id, role_permissions=perms)),
            "features": json.loads(guild.features),
        }
        for guild, perms in rows
    ]


async def guild_for_member(rt: Runtime, guild_id: int, user_id: int) -> dict:
    """The guild with its roles, for a member; 404 for anyone else (no existence leak)."""
    async with rt.db.read() as conn:
        guild = await guild_store.get_guild(conn, guild_id)
        if guild is None or not await guild_store.is_member(conn, guild_id, user_id):
            raise UNKNOWN_GUILD
        roles = await guild_store.guild_roles(conn, guild_id)
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": guild.icon,
        "owner_id": str(guild.owner_id),
        "features": json.loads(guild.features),
        "roles": [role_json(role) for role in roles],
    }


def role_json(role) -> dict:
    return {
        "id": str(role.id),
        "name": role.name,
        "permissions": str(role.permissions),
        "position": role.position,
        "managed": bool(role.managed),
    }


async def user_connections(rt: Runtime, user_id: int) -> list[dict]:
    async with rt.db.read() as conn:
        rows = await guild_store.user_connections(conn, user_id)
    return [
        {"type": row.type, "id": row.id, "name": row.name, "verified": bool(row.verified), "visibility": row.visibility}
        for row in rows
    ]
