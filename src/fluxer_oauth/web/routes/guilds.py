"""The guild API for sessions and bots (SPEC §5), and a user's connected accounts."""

from __future__ import annotations

from msgspec import UNSET
from starlette.requests import Request

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.platform import guilds
from fluxer_oauth.platform.guilds import UNKNOWN_GUILD
from fluxer_oauth.web.api import BOT_AUTH, SESSION_AUTH, router
from fluxer_oauth.web.caller import Caller, runtime
from fluxer_oauth.web.responses import decode_json, json_response, no_content
from fluxer_oauth.web.schemas import (
    Connection,
    ConnectionCreateBody,
    Guild,
    GuildCreateBody,
    GuildUpdateBody,
    GuildMemberAddBody,
    Invite,
    InviteCreateBody,
    Member,
    Role,
    RoleCreateBody,
)

MEMBERS = (SESSION_AUTH, BOT_AUTH)


def _id(request: Request, name: str, unknown: ApiError) -> int:
    value = parse_snowflake(request.path_params[name])
    if value is None:
        raise unknown
    return value


@router.route("POST", "/guilds", summary="Create a guild (the caller becomes its owner)", auth=(SESSION_AUTH,),
              request=GuildCreateBody, response=Guild, status=201, errors=(400, 401, 403, 413), large_body=True,
              tags=("guilds",))
async def create_guild(request: Request, caller: Caller):
    user = caller.user
    body = await decode_json(request, GuildCreateBody)
    return json_response(await guilds.create_guild(runtime(request), user, body.name, body.icon), 201)


@router.route("PATCH", "/guilds/{guild_id}", summary="Change a guild's name or icon (MANAGE_GUILD)", auth=MEMBERS,
              request=GuildUpdateBody, response=Guild, errors=(400, 401, 403, 404, 413), large_body=True,
              tags=("guilds",))
async def update_guild(request: Request, caller: Caller):
    guild_id = _id(request, "guild_id", UNKNOWN_GUILD)
    body = await decode_json(request, GuildUpdateBody)
    changes = {name: getattr(body, name) for name in ("name", "icon") if getattr(body, name) is not UNSET}
    return json_response(await guilds.update_guild(runtime(request), guild_id, caller.user.id, changes))


@router.route("GET", "/guilds/{guild_id}/roles", summary="A guild's roles", auth=MEMBERS, response=list[Role],
              errors=(401, 403, 404), tags=("guilds",))
async def list_roles(request: Request, caller: Caller):
    user = caller.user
    return json_response(await guilds.list_roles(runtime(request), _id(request, "guild_id", UNKNOWN_GUILD), user.id))


@router.route("POST", "/guilds/{guild_id}/roles", summary="Create a role (MANAGE_ROLES)", auth=MEMBERS,
              request=RoleCreateBody, response=Role, status=201, errors=(400, 401, 403, 404),
              tags=("guilds",))
async def create_role(request: Request, caller: Caller):
    user = caller.user
    guild_id = _id(request, "guild_id", UNKNOWN_GUILD)
    body = await decode_json(request, RoleCreateBody)
    return json_response(await guilds.create_role(runtime(request), guild_id, user.id, body.name, body.permissions), 201)


@router.route("GET", "/guilds/{guild_id}/members", summary="A guild's members", auth=MEMBERS, response=list[Member],
              errors=(401, 403, 404), tags=("guilds",))
async def list_members(request: Request, caller: Caller):
    user = caller.user
    return json_response(await guilds.list_members(runtime(request), _id(request, "guild_id", UNKNOWN_GUILD), user.id))


@router.route("PUT", "/guilds/{guild_id}/members/{user_id}",
              summary="Add a user to a guild with their OAuth2 access token (guilds.join; the bot needs "
                      "CREATE_INSTANT_INVITE): 201 with the member, 204 when already a member",
              auth=(BOT_AUTH,), request=GuildMemberAddBody, response=Member, status=201, also=(204,),
              errors=(400, 401, 403, 404), tags=("guilds",))
async def add_guild_member(request: Request, caller: Caller):
    guild_id = _id(request, "guild_id", UNKNOWN_GUILD)
    user_id = _id(request, "user_id", guilds.UNKNOWN_USER)
    body = await decode_json(request, GuildMemberAddBody)
    nick, role_ids = guilds.check_member_fields(body.nick, body.roles, body.mute, body.deaf)
    member = await guilds.add_member_with_token(runtime(request), bot=caller.user, guild_id=guild_id,
                                                user_id=user_id, access_token=body.access_token, nick=nick,
                                                role_ids=role_ids)
    return no_content() if member is None else json_response(member, 201)


UNKNOWN_MEMBER = ApiError(404, "UNKNOWN_MEMBER", "unknown member")


async def _member_role(request: Request, caller: Caller, give: bool):
    await guilds.set_member_role(
        runtime(request), _id(request, "guild_id", UNKNOWN_GUILD), caller.user.id,
        _id(request, "user_id", UNKNOWN_MEMBER), _id(request, "role_id", ApiError(404, "UNKNOWN_ROLE", "unknown role")),
        give,
    )
    return no_content()


@router.route("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", summary="Give a member a role",
              auth=MEMBERS, status=204, errors=(401, 403, 404), tags=("guilds",))
async def give_role(request: Request, caller: Caller):
    return await _member_role(request, caller, give=True)


@router.route("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", summary="Take a role from a member",
              auth=MEMBERS, status=204, errors=(401, 403, 404), tags=("guilds",))
async def take_role(request: Request, caller: Caller):
    return await _member_role(request, caller, give=False)


@router.route("POST", "/guilds/{guild_id}/invites", summary="Create an invite (CREATE_INSTANT_INVITE)",
              auth=MEMBERS, request=InviteCreateBody, response=Invite, status=201, errors=(400, 401, 403, 404),
              tags=("guilds",))
async def create_invite(request: Request, caller: Caller):
    user = caller.user
    guild_id = _id(request, "guild_id", UNKNOWN_GUILD)
    body = await decode_json(request, InviteCreateBody) if await request.body() else InviteCreateBody()
    max_age = max(0, min(body.max_age, 7 * 86400))
    return json_response(await guilds.create_invite(runtime(request), guild_id, user.id, max_age), 201)


@router.route("POST", "/invites/{code}", summary="Join a guild through an invite (users and bots)", auth=MEMBERS,
              response=Invite, errors=(401, 403, 404), tags=("guilds",))
async def accept_invite(request: Request, caller: Caller):
    user = caller.user
    return json_response(await guilds.accept_invite(runtime(request), request.path_params["code"], user.id))


@router.route("DELETE", "/users/@me/guilds/{guild_id}", summary="Leave a guild", auth=MEMBERS, status=204,
              errors=(400, 401, 403, 404), tags=("guilds",))
async def leave_guild(request: Request, caller: Caller):
    user = caller.user
    await guilds.leave_guild(runtime(request), _id(request, "guild_id", UNKNOWN_GUILD), user.id)
    return no_content()


@router.route("POST", "/users/@me/connections", summary="Connect an account", auth=(SESSION_AUTH,),
              request=ConnectionCreateBody, response=Connection, status=201, errors=(400, 401, 403),
              tags=("users",))
async def add_connection(request: Request, caller: Caller):
    user = caller.user
    body = await decode_json(request, ConnectionCreateBody)
    return json_response(await guilds.add_connection(runtime(request), user.id, body.type, body.name), 201)


@router.route("DELETE", "/users/@me/connections/{type}/{connection_id}", summary="Remove a connected account",
              auth=(SESSION_AUTH,), status=204, errors=(401, 403, 404), tags=("users",))
async def remove_connection(request: Request, caller: Caller):
    user = caller.user
    await guilds.remove_connection(runtime(request), user.id, request.path_params["type"],
                                   request.path_params["connection_id"])
    return no_content()
