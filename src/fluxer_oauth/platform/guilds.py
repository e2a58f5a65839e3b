"""Guilds as the `guilds` scope shows them, with the caller's computed permissions."""

from __future__ import annotations

import json
import secrets

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.permissions import (
    ADMINISTRATOR,
    CREATE_INSTANT_INVITE,
    MANAGE_GUILD,
    MANAGE_ROLES,
    PERMISSIONS,
    compute_permissions,
    defined_only,
    has,
    parse_permissions,
    permission_names,
)
from fluxer_oauth.core.timefmt import iso, now
from fluxer_oauth.platform import images
from fluxer_oauth.platform.accounts import public_user_json
from fluxer_oauth.platform.validation import FormErrors, check_text, invalid_form_body
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import audit
from fluxer_oauth.store import guilds as guild_store
from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store import users as user_store
from fluxer_oauth.store.tables import ACCESS

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


# --- the guild API (sessions and bots) ------------------------------------------------------

MISSING_PERMISSIONS = "MISSING_PERMISSIONS"
DEFAULT_EVERYONE = (
    PERMISSIONS["CREATE_INSTANT_INVITE"] | PERMISSIONS["VIEW_CHANNEL"] | PERMISSIONS["SEND_MESSAGES"]
    | PERMISSIONS["READ_MESSAGE_HISTORY"] | PERMISSIONS["ADD_REACTIONS"] | PERMISSIONS["CONNECT"]
    | PERMISSIONS["SPEAK"] | PERMISSIONS["CHANGE_NICKNAME"]
)
INVITE_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def missing_permissions(names: str) -> ApiError:
    return ApiError(403, MISSING_PERMISSIONS, f"you lack the permission(s): {names}")


async def permissions_in(conn, guild, user_id: int) -> int:
    return compute_permissions(
        is_owner=guild.owner_id == user_id,
        role_permissions=await guild_store.member_role_permissions(conn, guild.id, user_id),
    )


async def _member_guild(conn, guild_id: int, user_id: int):
    guild = await guild_store.get_guild(conn, guild_id)
    if guild is None or not await guild_store.is_member(conn, guild_id, user_id):
        raise UNKNOWN_GUILD
    return guild


async def _require(conn, guild_id: int, user_id: int, permission: str):
    guild = await _member_guild(conn, guild_id, user_id)
    held = await permissions_in(conn, guild, user_id)
    if not has(held, PERMISSIONS[permission]):
        raise missing_permissions(permission)
    return guild, held


def _check_name(name: str, path: str = "name") -> str:
    errors = FormErrors()
    check_text(errors, path, name.strip(), min_len=1, max_len=100)
    errors.raise_if_any()
    return name.strip()


async def create_guild(rt: Runtime, user, name: str, icon: str | None = None) -> dict:
    name = _check_name(name)
    image = await images.process(rt, "icon", icon) if icon is not None else None
    guild_id, at = rt.ids.next(), now()
    async with images.storing(rt, image) as record_image, rt.db.write() as conn:
        await record_image(conn)
        await guild_store.insert_guild(conn, id=guild_id, name=name, owner_id=user.id, features="[]", created_at=at,
                                       icon=image.hash if image is not None else None)
        await guild_store.insert_role(
            conn, id=guild_id, guild_id=guild_id, name="@everyone", permissions=DEFAULT_EVERYONE, position=0,
            created_at=at,
        )
        await guild_store.add_member(conn, guild_id, user.id, at)
    return await guild_for_member(rt, guild_id, user.id)


async def update_guild(rt: Runtime, guild_id: int, user_id: int, changes: dict) -> dict:
    """``PATCH /guilds/{guild_id}`` (MANAGE_GUILD): ``changes`` holds the fields sent, ``name``
    and ``icon`` (a data URI, or None to remove it); the guild after."""
    async with rt.db.read() as conn:  # 404 and 403 before any work on an upload
        await _require(conn, guild_id, user_id, "MANAGE_GUILD")
    values: dict = {}
    if "name" in changes:
        values["name"] = _check_name(changes["name"])
    image = None
    if "icon" in changes:
        image = await images.process(rt, "icon", changes["icon"]) if changes["icon"] is not None else None
        values["icon"] = image.hash if image is not None else None
    if values:
        async with images.storing(rt, image) as record_image, rt.db.write() as conn:
            await _require(conn, guild_id, user_id, "MANAGE_GUILD")  # still, now that it writes
            await record_image(conn)
            await guild_store.update_guild(conn, guild_id, **values)
            await audit.record(
                conn, id=rt.ids.next(), now=now(), action="guild.updated", actor_id=user_id,
                details={"guild_id": str(guild_id), **values},
            )
    return await guild_for_member(rt, guild_id, user_id)


async def list_roles(rt: Runtime, guild_id: int, user_id: int) -> list[dict]:
    async with rt.db.read() as conn:
        await _member_guild(conn, guild_id, user_id)
        return [role_json(role) for role in await guild_store.guild_roles(conn, guild_id)]


async def create_role(rt: Runtime, guild_id: int, user_id: int, name: str, permissions_text: str | int) -> dict:
    name = _check_name(name)
    requested = parse_permissions(str(permissions_text))
    if requested is None:
        raise invalid_form_body([{"path": "permissions", "code": "PERMISSIONS_INVALID",
                                  "message": "must be a non-negative integer"}])
    requested = defined_only(requested)
    role_id, at = rt.ids.next(), now()
    async with rt.db.write() as conn:
        _guild, held = await _require(conn, guild_id, user_id, "MANAGE_ROLES")
        _check_subset(requested, held)
        position = await guild_store.top_role_position(conn, guild_id) + 1
        await guild_store.insert_role(
            conn, id=role_id, guild_id=guild_id, name=name, permissions=requested, position=position, created_at=at
        )
        return role_json(await guild_store.get_role(conn, guild_id, role_id))


def _check_subset(requested: int, held: int) -> None:
    """Nobody hands out permissions they do not hold, unless they are administrators."""
    if not held & ADMINISTRATOR and requested & ~held:
        raise missing_permissions(", ".join(permission_names(requested & ~held)))


async def list_members(rt: Runtime, guild_id: int, user_id: int) -> list[dict]:
    async with rt.db.read() as conn:
        await _member_guild(conn, guild_id, user_id)
        rows = await guild_store.members_with_roles(conn, guild_id)
    return [member_json(user, joined_at, role_ids, user.nick) for user, joined_at, role_ids in rows]


def member_json(user, joined_at: float, role_ids: list[int], nick: str | None = None) -> dict:
    """Discord's guild member object, as far as the platform has its data: no guild
    avatars, boosts, voice or timeouts, so those fields are always empty or false."""
    return {
        "user": public_user_json(user),
        "nick": nick,
        "avatar": None,
        "banner": None,
        "roles": [str(role_id) for role_id in role_ids],
        "joined_at": iso(joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }


async def _member_of(conn, guild_id: int, user_id: int) -> dict | None:
    """A member's object read inside ``conn``, or None when the user is not a member."""
    member = await guild_store.get_member(conn, guild_id, user_id)
    if member is None:
        return None
    user = await user_store.get_user(conn, user_id)
    role_ids = await guild_store.member_role_ids(conn, guild_id, user_id)
    return member_json(user, member.joined_at, sorted(role_ids), member.nick)


async def own_member(rt: Runtime, guild_id: int, user_id: int) -> dict:
    """The user's own member object in a guild (``guilds.members.read``); 404 UNKNOWN_GUILD
    when they are not in it."""
    async with rt.db.read() as conn:
        member = await _member_of(conn, guild_id, user_id)
    if member is None:
        raise UNKNOWN_GUILD
    return member


# --- guilds.join: a bot adds a user with the user's access token ---------------------------

GUILDS_JOIN = "guilds.join"
UNKNOWN_USER = ApiError(404, "UNKNOWN_USER", "unknown user")
INVALID_OAUTH_TOKEN = ApiError(403, "INVALID_OAUTH_TOKEN",
                               "the access_token is not a live OAuth2 access token (unknown, expired or revoked)")
TOKEN_OF_ANOTHER_APPLICATION = ApiError(403, "OAUTH_TOKEN_APPLICATION_MISMATCH",
                                        "the access_token was issued to another application than this bot's")
TOKEN_OF_ANOTHER_USER = ApiError(403, "OAUTH_TOKEN_USER_MISMATCH",
                                 "the access_token belongs to another user than user_id")
TOKEN_WITHOUT_GUILDS_JOIN = ApiError(403, "MISSING_OAUTH_SCOPE", "the access_token lacks the guilds.join scope",
                                     required_scope=GUILDS_JOIN)
MAX_MEMBER_ROLES = 250
MAX_NICK_LENGTH = 32


def check_member_fields(nick: str | None, roles: list | None, mute: bool, deaf: bool) -> tuple[str | None, list[int]]:
    """The body of an add-member request, checked before anything is read: the nick (None
    when absent or blank) and the role ids (duplicates collapsed), or 400 INVALID_FORM_BODY."""
    errors = FormErrors()
    if nick is not None:
        nick = nick.strip() or None
        check_text(errors, "nick", nick, min_len=1, max_len=MAX_NICK_LENGTH)
    role_ids: list[int] = []
    if roles is not None:
        if len(roles) > MAX_MEMBER_ROLES:
            errors.add("roles", "BASE_TYPE_MAX_LENGTH", f"must be {MAX_MEMBER_ROLES} or fewer in length")
        else:
            for index, value in enumerate(roles):
                role_id = parse_snowflake(value)
                if role_id is None:
                    errors.add(f"roles.{index}", "SNOWFLAKE_INVALID", "must be a snowflake (a decimal string)")
                elif role_id not in role_ids:
                    role_ids.append(role_id)
    for name, value in (("mute", mute), ("deaf", deaf)):
        if value:
            errors.add(name, "VOICE_UNSUPPORTED", "Fluxer has no voice state to set: must be false or left out")
    errors.raise_if_any()
    return nick, role_ids


async def add_member_with_token(rt: Runtime, *, bot, guild_id: int, user_id: int, access_token: str,
                                nick: str | None, role_ids: list[int]) -> dict | None:
    """``PUT /guilds/{guild_id}/members/{user_id}``: the bot adds the user whose access
    token carries ``guilds.join`` for the bot's application. The member object when added,
    None when the user already was a member (``nick`` and ``roles`` are then ignored, as
    on Discord). In this order: 404 UNKNOWN_GUILD (the bot is not in the guild), 403
    MISSING_PERMISSIONS (CREATE_INSTANT_INVITE), 404 UNKNOWN_USER (no such enabled user),
    403 for the token (INVALID_OAUTH_TOKEN, OAUTH_TOKEN_APPLICATION_MISMATCH,
    MISSING_OAUTH_SCOPE, OAUTH_TOKEN_USER_MISMATCH), then, only when adding: roles
    (MANAGE_ROLES; 400 for roles that cannot be given; 403 for one not below the bot's
    highest role or with permissions the bot lacks) and nick (MANAGE_NICKNAMES).

    The join holds the user's and the application's locks shared, as a consent approval
    does, and reads the token again under them: an ending (revocation, disabling) either
    committed first, and the join is refused, or waits for the join to commit. Ending the
    grant later leaves the membership in place (joining was the user's act)."""
    key = credentials.stored_token_key(access_token) if 0 < len(access_token) <= credentials.MAX_PRESENTED_TOKEN_LENGTH else None
    at = now()
    async with rt.db.write() as conn:
        token = await oauth_store.get_token(conn, key) if key is not None else None
        if token is not None and token.kind == ACCESS:
            await oauth_store.hold_for_approval(conn, token.user_id, token.application_id)
            if conn.dialect.name == "postgresql":  # what an ending committed while we waited
                token = await oauth_store.get_token(conn, key)
        guild = await _member_guild(conn, guild_id, bot.id)
        held = await permissions_in(conn, guild, bot.id)
        if not has(held, CREATE_INSTANT_INVITE):
            raise missing_permissions("CREATE_INSTANT_INVITE")
        user = await user_store.get_user(conn, user_id)
        if user is None or user.disabled_at is not None:
            raise UNKNOWN_USER
        app = await _check_join_token(conn, token, at, bot_id=bot.id, user_id=user_id)
        if await guild_store.is_member(conn, guild_id, user_id):
            return None
        if role_ids:
            await _check_given_roles(conn, guild, bot.id, held, role_ids)
        if nick is not None and not has(held, PERMISSIONS["MANAGE_NICKNAMES"]):
            raise missing_permissions("MANAGE_NICKNAMES")
        if not await guild_store.add_member_if_absent(conn, guild_id, user_id, at, nick):
            return None  # added by a request that committed meanwhile
        for role_id in role_ids:
            await guild_store.give_role(conn, guild_id, user_id, role_id)
        await audit.record(
            conn, id=rt.ids.next(), now=at, action="guild.member_added", actor_id=bot.id, application_id=app.id,
            target_user_id=user_id,
            details={"guild_id": str(guild_id), "via": GUILDS_JOIN, "roles": [str(r) for r in role_ids],
                     "nick": nick},
        )
        return await _member_of(conn, guild_id, user_id)


async def _check_join_token(conn, token, at: float, *, bot_id: int, user_id: int):
    """The token of a guilds.join request, as the database has it now; its application."""
    if token is None or token.kind != ACCESS or token.revoked_at is not None or token.expires_at <= at:
        raise INVALID_OAUTH_TOKEN
    app = await app_store.get_application(conn, token.application_id)
    owner = await user_store.get_user(conn, app.owner_id) if app is not None else None
    holder = await user_store.get_user(conn, token.user_id)
    if (app is None or app.disabled_at is not None or owner is None or owner.disabled_at is not None
            or holder is None or holder.disabled_at is not None):
        raise INVALID_OAUTH_TOKEN
    if app.bot_id != bot_id:
        raise TOKEN_OF_ANOTHER_APPLICATION
    if GUILDS_JOIN not in token.scopes.split():
        raise TOKEN_WITHOUT_GUILDS_JOIN
    if token.user_id != user_id:
        raise TOKEN_OF_ANOTHER_USER
    return app


async def _check_given_roles(conn, guild, bot_id: int, held: int, role_ids: list[int]) -> None:
    """Roles a bot gives a member it adds: MANAGE_ROLES; each a role of this guild that may
    be given by hand (not @everyone, not a bot's managed role: else 400), below the bot's
    highest role unless the bot owns the guild (Discord's hierarchy), and holding no
    permission the bot lacks (the platform's rule for giving roles: else 403)."""
    if not has(held, MANAGE_ROLES):
        raise missing_permissions("MANAGE_ROLES")
    errors, found = FormErrors(), []
    for index, role_id in enumerate(role_ids):
        role = await guild_store.get_role(conn, guild.id, role_id)
        if role is None:
            errors.add(f"roles.{index}", "UNKNOWN_ROLE", f"role {role_id} is not a role of this guild")
        elif role.id == guild.id:
            errors.add(f"roles.{index}", "ROLE_EVERYONE", "every member has @everyone: it is not given")
        elif role.managed:
            errors.add(f"roles.{index}", "ROLE_MANAGED", "a bot's own role cannot be given")
        else:
            found.append(role)
    errors.raise_if_any()
    if guild.owner_id != bot_id:
        top = await guild_store.member_top_position(conn, guild.id, bot_id)
        for role in found:
            if role.position >= top:
                raise ApiError(403, MISSING_PERMISSIONS,
                               f"role {role.id} is not below the bot's highest role", role_id=str(role.id))
    combined = 0
    for role in found:
        combined |= role.permissions
    _check_subset(combined, held)


async def set_member_role(rt: Runtime, guild_id: int, caller_id: int, member_id: int, role_id: int, give: bool) -> None:
    async with rt.db.write() as conn:
        _guild, held = await _require(conn, guild_id, caller_id, "MANAGE_ROLES")
        role = await guild_store.get_role(conn, guild_id, role_id)
        if role is None or role.id == guild_id:
            raise ApiError(404, "UNKNOWN_ROLE", "unknown role")
        if role.managed:
            raise ApiError(403, "ROLE_MANAGED", "a bot's own role cannot be given or taken")
        _check_subset(role.permissions, held)
        if not await guild_store.is_member(conn, guild_id, member_id):
            raise ApiError(404, "UNKNOWN_MEMBER", "unknown member")
        if give:
            if role_id not in await guild_store.member_role_ids(conn, guild_id, member_id):
                await guild_store.give_role(conn, guild_id, member_id, role_id)
        else:
            await guild_store.take_role(conn, guild_id, member_id, role_id)


async def create_invite(rt: Runtime, guild_id: int, user_id: int, max_age: int = 86400) -> dict:
    code = "".join(secrets.choice(INVITE_ALPHABET) for _ in range(10))
    at = now()
    async with rt.db.write() as conn:
        guild, _held = await _require(conn, guild_id, user_id, "CREATE_INSTANT_INVITE")
        expires_at = at + max_age if max_age > 0 else None
        await guild_store.insert_invite(
            conn, code=code, guild_id=guild_id, inviter_id=user_id, uses=0, created_at=at, expires_at=expires_at
        )
    return {"code": code, "guild": partial_guild_json(guild), "expires_at": iso(expires_at)}


async def accept_invite(rt: Runtime, code: str, user_id: int) -> dict:
    at = now()
    async with rt.db.write() as conn:
        invite = await guild_store.use_invite(conn, code[:16], at) if code.isalnum() else None
        if invite is None:
            raise ApiError(404, "UNKNOWN_INVITE", "unknown or expired invite")
        guild = await guild_store.get_guild(conn, invite.guild_id)
        if not await guild_store.is_member(conn, guild.id, user_id):
            await guild_store.add_member(conn, guild.id, user_id, at)
    return {"code": invite.code, "guild": partial_guild_json(guild)}


async def leave_guild(rt: Runtime, guild_id: int, user_id: int) -> None:
    async with rt.db.write() as conn:
        guild = await _member_guild(conn, guild_id, user_id)
        if guild.owner_id == user_id:
            raise ApiError(400, "CANNOT_LEAVE_OWNED_GUILD", "the owner cannot leave their guild")
        await guild_store.remove_member(conn, guild_id, user_id)


def partial_guild_json(guild) -> dict:
    return {"id": str(guild.id), "name": guild.name, "icon": guild.icon, "owner_id": str(guild.owner_id)}


# --- connections ----------------------------------------------------------------------------

CONNECTION_TYPES = ("github", "twitter", "bsky", "domain", "twitch", "youtube", "steam", "reddit")


async def add_connection(rt: Runtime, user_id: int, kind: str, name: str) -> dict:
    errors = FormErrors()
    if kind not in CONNECTION_TYPES:
        errors.add("type", "CONNECTION_TYPE_INVALID", f"type must be one of {', '.join(CONNECTION_TYPES)}")
    check_text(errors, "name", name, min_len=1, max_len=100)
    errors.raise_if_any()
    external_id = str(rt.ids.next())
    async with rt.db.write() as conn:
        await guild_store.insert_connection(
            conn, user_id=user_id, type=kind, id=external_id, name=name, verified=False, visibility=1, created_at=now()
        )
    return {"type": kind, "id": external_id, "name": name, "verified": False, "visibility": 1}


async def remove_connection(rt: Runtime, user_id: int, kind: str, external_id: str) -> None:
    async with rt.db.write() as conn:
        if not await guild_store.delete_connection(conn, user_id, kind[:32], external_id[:100]):
            raise ApiError(404, "UNKNOWN_CONNECTION", "unknown connection")


# --- the bot scope ---------------------------------------------------------------------------

async def manageable_guilds(rt: Runtime, user_id: int, *, bot_id: int | None = None) -> list[dict]:
    """Guilds where the user may add a bot: MANAGE_GUILD or ADMINISTRATOR (owners included),
    and, given ``bot_id``, where that bot is not already a member (``install_bot`` would
    refuse it: BOT_ALREADY_IN_GUILD). What the consent page offers; ``install_bot`` checks
    it all again when the bot is added."""
    manageable = [g for g in await user_guilds(rt, user_id) if has(int(g["permissions"]), MANAGE_GUILD)]
    if bot_id is None or not manageable:
        return manageable
    async with rt.db.read() as conn:
        return [g for g in manageable if not await guild_store.is_member(conn, int(g["id"]), bot_id)]


async def install_bot(rt: Runtime, conn, *, app, user, guild_id: int, permissions: int):
    """Add the application's bot to a guild inside the caller's transaction; returns the guild."""
    if not app.bot_public and app.owner_id != user.id:
        raise ApiError(403, "BOT_IS_PRIVATE", "only the owner of this private bot can add it")
    guild = await _member_guild(conn, guild_id, user.id)
    held = await permissions_in(conn, guild, user.id)
    if not has(held, MANAGE_GUILD):
        raise missing_permissions("MANAGE_GUILD")
    requested = defined_only(permissions)
    _check_subset(requested, held)
    if await guild_store.is_member(conn, guild_id, app.bot_id):
        raise ApiError(400, "BOT_ALREADY_IN_GUILD", "this bot is already in that guild")
    at = now()
    await guild_store.add_member(conn, guild_id, app.bot_id, at)
    if requested:
        role_id = rt.ids.next()
        await guild_store.insert_role(
            conn, id=role_id, guild_id=guild_id, name=app.name[:100], permissions=requested,
            position=await guild_store.top_role_position(conn, guild_id) + 1, managed=True, created_at=at,
        )
        await guild_store.give_role(conn, guild_id, app.bot_id, role_id)
    await audit.record(
        conn, id=rt.ids.next(), now=at, action="bot.added", actor_id=user.id, application_id=app.id,
        details={"guild_id": str(guild_id), "permissions": str(requested)},
    )
    return guild


async def install_names(rt: Runtime, application_id: int, guild_id: int | None,
                        user_id: int | None) -> tuple[str | None, str | None]:
    """The application's and the guild's names, for the page that ends a bot-only install:
    only when the application's bot is in that guild and the viewer is a member of it, so a
    crafted link cannot make the page claim an install that did not happen (None, None)."""
    if guild_id is None or user_id is None:
        return None, None
    async with rt.db.read() as conn:
        app = await app_store.get_application(conn, application_id)
        guild = await guild_store.get_guild(conn, guild_id)
        if app is None or app.bot_id is None or guild is None:
            return None, None
        if not (await guild_store.is_member(conn, guild.id, user_id)
                and await guild_store.is_member(conn, guild.id, app.bot_id)):
            return None, None
    return app.name, guild.name
