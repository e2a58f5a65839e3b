"""What third-party applications read (SPEC §3, §4.4): the user, guilds, connections,
and the token's own authorization."""

from __future__ import annotations

import msgspec
from starlette.requests import Request

from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.scopes import ALL_SCOPES
from fluxer_oauth.oauth.id_token import user_claims
from fluxer_oauth.core.timefmt import iso
from fluxer_oauth.platform import applications, guilds
from fluxer_oauth.platform.accounts import user_json
from fluxer_oauth.platform.guilds import UNKNOWN_GUILD
from fluxer_oauth.web.api import BEARER_AUTH, BOT_AUTH, SESSION_AUTH, router
from fluxer_oauth.web.caller import BEARER, SESSION, Caller, runtime
from fluxer_oauth.web.edge import ALONGSIDE, JSON, Answer, Call, hot
from fluxer_oauth.web.responses import json_response
from fluxer_oauth.web.schemas import AuthorizationInfo, Connection, Guild, Member, PartialGuild, User, UserInfo

_encode = msgspec.json.Encoder().encode
ANY = (SESSION_AUTH, BEARER_AUTH, BOT_AUTH)
USER_READ_ERRORS = (401, 403)


async def users_me(call: Call, caller: Caller) -> Answer:
    """The busiest read, a hot route of the edge: the same function for every interface."""
    with_email = caller.kind == SESSION or (caller.kind == BEARER and "email" in caller.scopes)
    body = _bodies.get((with_email, caller.user))
    return 200, [JSON], body if body is not None else _user_body(caller.user, with_email)


router.route("GET", "/users/@me", summary="The calling user", auth=ANY, scope="identify", response=User,
             errors=USER_READ_ERRORS, tags=("users",))(hot(users_me, global_count=ALONGSIDE, reads_body=False))
_MAX_CACHED_BODIES = 10_000
_bodies: dict[tuple, bytes] = {}  # (with_email, user record) -> encoded: a hit is exact


def _user_body(user, with_email: bool) -> bytes:
    key = (with_email, user)
    body = _bodies.get(key)
    if body is None:
        if len(_bodies) >= _MAX_CACHED_BODIES:
            _bodies.clear()
        body = _bodies[key] = _encode(user_json(user, with_email=with_email))
    return body


@router.route("GET", "/users/@me/guilds", summary="Guilds of the calling user", auth=ANY, scope="guilds",
              response=list[PartialGuild], errors=USER_READ_ERRORS, tags=("users",))
async def users_me_guilds(request: Request, caller: Caller):
    return json_response(await guilds.user_guilds(runtime(request), caller.user.id))


@router.route("GET", "/users/@me/connections", summary="Connected accounts of the calling user",
              auth=(SESSION_AUTH, BEARER_AUTH), scope="connections", response=list[Connection],
              errors=USER_READ_ERRORS, tags=("users",))
async def users_me_connections(request: Request, caller: Caller):
    return json_response(await guilds.user_connections(runtime(request), caller.user.id))


@router.route("GET", "/guilds/{guild_id}", summary="A guild the caller is in", auth=ANY, scope="guilds",
              response=Guild, errors=(401, 403, 404), tags=("guilds",))
async def guild(request: Request, caller: Caller):
    guild_id = parse_snowflake(request.path_params["guild_id"])
    if guild_id is None:
        raise UNKNOWN_GUILD
    return json_response(await guilds.guild_for_member(runtime(request), guild_id, caller.user.id))


@router.route("GET", "/users/@me/guilds/{guild_id}/member", summary="The calling user's member object in a guild",
              auth=(SESSION_AUTH, BEARER_AUTH), scope="guilds.members.read", response=Member,
              errors=(401, 403, 404), tags=("users",))
async def users_me_guild_member(request: Request, caller: Caller):
    guild_id = parse_snowflake(request.path_params["guild_id"])
    if guild_id is None:
        raise UNKNOWN_GUILD
    return json_response(await guilds.own_member(runtime(request), guild_id, caller.user.id))


@router.route("GET", "/oauth2/@me", summary="The current authorization", auth=(SESSION_AUTH, BEARER_AUTH),
              response=AuthorizationInfo, errors=(401, 403), tags=("oauth2",))
async def oauth2_me(request: Request, caller: Caller):
    if caller.kind == SESSION:
        return json_response(
            {"application": None, "scopes": [], "expires": None, "user": user_json(caller.user, with_email=True)}
        )
    grant = caller.grant
    body = {
        "application": await applications.public_view(runtime(request), grant.application_id),
        "scopes": grant.scope_text.split(),
        "expires": iso(grant.expires_at),
    }
    if "identify" in grant.scopes:
        body["user"] = user_json(caller.user, with_email="email" in grant.scopes)
    return json_response(body)


@router.route("GET", "/oauth2/userinfo", summary="The user, OpenID Connect style (Core 1.0 §5.3)",
              auth=(SESSION_AUTH, BEARER_AUTH), scope="identify", response=UserInfo, errors=USER_READ_ERRORS,
              tags=("oauth2",))
async def userinfo(request: Request, caller: Caller):
    """The standard claims the token's scopes allow (``sub`` always), beside the user object
    Discord's clients read."""
    scopes = ALL_SCOPES if caller.kind == SESSION else caller.scopes
    return json_response({**user_json(caller.user, with_email="email" in scopes),
                          **user_claims(caller.user, scopes)})


userinfo_post = router.route(
    "POST", "/oauth2/userinfo", summary="The user, OpenID Connect style (POST, as Core 1.0 §5.3.1 allows)",
    auth=(SESSION_AUTH, BEARER_AUTH), scope="identify", response=UserInfo, errors=USER_READ_ERRORS, tags=("oauth2",),
)(userinfo)
