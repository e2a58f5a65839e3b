"""guilds.join (Discord's "Add Guild Member": ``PUT /guilds/{id}/members/{user_id}`` with the
bot's token and the user's access token) and guilds.members.read (``GET
/users/@me/guilds/{id}/member``): issue 20."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import pytest
from sqlalchemy import update

from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.platform import admin
from fluxer_oauth.store import audit
from fluxer_oauth.store.tables import roles, tokens
from tests.api.test_bots import bot_headers, install, make_guild
from tests.conftest import bearer, create_app, register, tokens_for

P = PERMISSIONS
JOIN = "identify guilds.join"
BASIC = P["CREATE_INSTANT_INVITE"] | P["MANAGE_ROLES"] | P["MANAGE_NICKNAMES"] | P["SEND_MESSAGES"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class BotGuild:
    id: str
    low: str  # a role made before the bot was added: below the bot's highest role
    high: str  # made after: above it
    bot_role: str | None  # the bot's managed role


async def role(client, owner, guild_id: str, name: str, permissions: int = 0) -> str:
    response = await client.post(f"/api/v1/guilds/{guild_id}/roles", headers=owner.headers,
                                 json={"name": name, "permissions": str(permissions)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def bot_guild(client, owner, app, permissions: int = BASIC) -> BotGuild:
    guild_id = await make_guild(client, owner)
    low = await role(client, owner, guild_id, "low", P["SEND_MESSAGES"])
    installed = await install(client, owner, app, guild_id, str(permissions))
    assert installed.status_code == 200, installed.text
    high = await role(client, owner, guild_id, "high")
    guild = (await client.get(f"/api/v1/guilds/{guild_id}", headers=owner.headers)).json()
    managed = [r["id"] for r in guild["roles"] if r["managed"]]
    return BotGuild(guild_id, low, high, managed[0] if managed else None)


@dataclass
class World:
    owner: object
    app: object
    user: object
    token: str  # the user's access token for app, with guilds.join
    guild: BotGuild

    @property
    def bot(self) -> dict:
        return bot_headers(self.app.body["bot"]["token"])


@pytest.fixture
async def world(client) -> World:
    owner = await register(client)
    app = await create_app(client, owner, name="Joiner")
    user = await register(client)
    token = (await tokens_for(client, user, app, scope=JOIN))["access_token"]
    return World(owner, app, user, token, await bot_guild(client, owner, app))


async def join(client, world: World, guild_id: str | None = None, user_id: str | None = None,
               headers: dict | None = None, **body):
    body.setdefault("access_token", world.token)
    return await client.put(f"/api/v1/guilds/{guild_id or world.guild.id}/members/{user_id or world.user.id}",
                            json=body, headers=headers or world.bot)


def refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["message"]
    return body


# --- added, already a member ------------------------------------------------------------------

async def test_added_answers_201_with_the_member_and_the_guild_lists_them(client, world, rt):
    response = await join(client, world)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    member = response.json()
    assert member["user"]["id"] == world.user.id and "email" not in member["user"]
    assert member["roles"] == [] and member["nick"] is None
    assert ISO.match(member["joined_at"])
    assert (member["deaf"], member["mute"], member["pending"], member["flags"]) == (False, False, False, 0)
    assert member["premium_since"] is None and member["communication_disabled_until"] is None
    members = (await client.get(f"/api/v1/guilds/{world.guild.id}/members", headers=world.bot)).json()
    assert [m for m in members if m["user"]["id"] == world.user.id] == [member]
    # The user sees the guild among theirs.
    theirs = (await client.get("/api/v1/users/@me/guilds", headers=world.user.headers)).json()
    assert world.guild.id in [g["id"] for g in theirs]
    async with rt.db.read() as conn:
        [entry] = await audit.entries(conn, action="guild.member_added")
    assert (entry.actor_id, entry.application_id, entry.target_user_id) == (
        int(world.app.body["bot"]["id"]), int(world.app.id), int(world.user.id))
    assert world.guild.id in entry.details and world.token not in entry.details


async def test_already_a_member_is_204_and_roles_and_nick_are_ignored(client, world):
    assert (await join(client, world)).status_code == 201
    again = await join(client, world, roles=[world.guild.high], nick="ignored")  # both would be refused
    assert again.status_code == 204 and again.content == b""
    owner_too = await join(client, world, user_id=world.owner.id,
                           access_token=(await tokens_for(client, world.owner, world.app, scope=JOIN))["access_token"])
    assert owner_too.status_code == 204  # the guild's owner is a member
    member = (await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=world.user.headers)).json()
    assert member["nick"] is None and member["roles"] == []


async def test_parallel_joins_add_the_member_once(client, world):
    answers = await asyncio.gather(*(join(client, world, roles=[world.guild.low]) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [201, 204, 204, 204], [a.text for a in answers]
    members = (await client.get(f"/api/v1/guilds/{world.guild.id}/members", headers=world.bot)).json()
    assert [m["roles"] for m in members if m["user"]["id"] == world.user.id] == [[world.guild.low]]


# --- the bot and the guild --------------------------------------------------------------------

async def test_a_bot_not_in_the_guild_is_404_unknown_guild(client, world):
    elsewhere = await make_guild(client, world.owner, "No bots here")
    refused(await join(client, world, guild_id=elsewhere), 404, "UNKNOWN_GUILD")
    refused(await join(client, world, guild_id="4242"), 404, "UNKNOWN_GUILD")
    refused(await join(client, world, guild_id="not-an-id"), 404, "UNKNOWN_GUILD")


async def test_a_bot_without_create_instant_invite_is_403(client, world, rt):
    guild = await bot_guild(client, world.owner, world.app, permissions=P["MANAGE_ROLES"])
    async with rt.db.write() as conn:  # @everyone has it by default: take it away
        await conn.execute(update(roles).where(roles.c.id == int(guild.id))
                           .values(permissions=roles.c.permissions.op("&")(~P["CREATE_INSTANT_INVITE"])))
    body = refused(await join(client, world, guild_id=guild.id), 403, "MISSING_PERMISSIONS")
    assert "CREATE_INSTANT_INVITE" in body["message"]


async def test_unknown_or_disabled_user_is_404_unknown_user(client, world, rt):
    refused(await join(client, world, user_id="4242"), 404, "UNKNOWN_USER")
    refused(await join(client, world, user_id="0x1"), 404, "UNKNOWN_USER")
    await admin.set_user_disabled(rt, None, int(world.user.id), True)
    refused(await join(client, world), 404, "UNKNOWN_USER")


async def test_a_disabled_application_bot_cannot_add(client, world, rt):
    await admin.set_application_disabled(rt, None, int(world.app.id), True)
    refused(await join(client, world), 401, "UNAUTHORIZED")  # its bot token authenticates nowhere


# --- the access token ----------------------------------------------------------------------------

async def test_a_token_of_another_application_is_403(client, world):
    other = await create_app(client, world.owner, name="Other")
    token = (await tokens_for(client, world.user, other, scope=JOIN))["access_token"]
    refused(await join(client, world, access_token=token), 403, "OAUTH_TOKEN_APPLICATION_MISMATCH")


async def test_a_token_without_guilds_join_is_403_missing_oauth_scope(client, world):
    token = (await tokens_for(client, world.user, world.app, scope="identify guilds"))["access_token"]
    body = refused(await join(client, world, access_token=token), 403, "MISSING_OAUTH_SCOPE")
    assert body["required_scope"] == "guilds.join"


async def test_a_token_of_another_user_is_403(client, world):
    other = await register(client)
    refused(await join(client, world, user_id=other.id), 403, "OAUTH_TOKEN_USER_MISMATCH")


async def test_revoked_expired_and_bogus_tokens_are_403_invalid_oauth_token(client, world, rt):
    for bogus in ("nope", "", "x" * 600, world.user.token):  # a session token is no access token either
        refused(await join(client, world, access_token=bogus), 403, "INVALID_OAUTH_TOKEN")
    pair = await tokens_for(client, world.user, world.app, scope=JOIN)
    refused(await join(client, world, access_token=pair["refresh_token"]), 403, "INVALID_OAUTH_TOKEN")
    async with rt.db.write() as conn:
        await conn.execute(update(tokens).where(tokens.c.user_id == int(world.user.id)).values(expires_at=1.0))
    refused(await join(client, world, access_token=pair["access_token"]), 403, "INVALID_OAUTH_TOKEN")
    fresh = (await tokens_for(client, world.user, world.app, scope=JOIN))["access_token"]
    revoked = await client.post("/api/v1/oauth2/token/revoke", data={"token": fresh}, auth=world.app.basic)
    assert revoked.status_code == 200
    refused(await join(client, world, access_token=fresh), 403, "INVALID_OAUTH_TOKEN")


async def test_a_missing_or_malformed_body_is_400(client, world):
    for content in (b"", b"{}", b'{"access_token": 5}', b"[1]"):
        response = await client.put(f"/api/v1/guilds/{world.guild.id}/members/{world.user.id}", content=content,
                                    headers={**world.bot, "Content-Type": "application/json"})
        refused(response, 400, "INVALID_FORM_BODY")
    for field in ({"mute": True}, {"deaf": True}):
        body = refused(await join(client, world, **field), 400, "INVALID_FORM_BODY")
        assert body["errors"][0]["code"] == "VOICE_UNSUPPORTED"
    assert (await join(client, world, mute=False, deaf=False)).status_code == 201


# --- roles and nick --------------------------------------------------------------------------------

async def test_roles_below_the_bot_are_given(client, world):
    response = await join(client, world, roles=[world.guild.low, world.guild.low])
    assert response.status_code == 201, response.text
    assert response.json()["roles"] == [world.guild.low]
    read = await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=bearer(
        (await tokens_for(client, world.user, world.app, scope="guilds.members.read"))["access_token"]))
    assert read.json()["roles"] == [world.guild.low]


async def test_a_role_above_the_bots_is_403(client, world):
    body = refused(await join(client, world, roles=[world.guild.low, world.guild.high]), 403, "MISSING_PERMISSIONS")
    assert body["role_id"] == world.guild.high
    assert (await join(client, world)).status_code == 201  # nothing was added by the refusal


async def test_everyone_managed_and_other_guilds_roles_are_400(client, world):
    other = await bot_guild(client, world.owner, world.app)
    cases = [(world.guild.id, "ROLE_EVERYONE"), (world.guild.bot_role, "ROLE_MANAGED"), (other.low, "UNKNOWN_ROLE"),
             ("4242", "UNKNOWN_ROLE"), ("01", "SNOWFLAKE_INVALID"), ("abc", "SNOWFLAKE_INVALID")]
    for role_id, code in cases:
        body = refused(await join(client, world, roles=[world.guild.low, role_id]), 400, "INVALID_FORM_BODY")
        assert body["errors"] == [{"path": "roles.1", "code": code, "message": body["errors"][0]["message"]}], body
    assert (await join(client, world, roles=[])).status_code == 201  # an empty list needs no MANAGE_ROLES


async def test_roles_without_manage_roles_are_403(client, world):
    guild = await bot_guild(client, world.owner, world.app, permissions=P["CREATE_INSTANT_INVITE"] | P["KICK_MEMBERS"])
    body = refused(await join(client, world, guild_id=guild.id, roles=[guild.low]), 403, "MISSING_PERMISSIONS")
    assert "MANAGE_ROLES" in body["message"]
    assert (await join(client, world, guild_id=guild.id)).status_code == 201


async def test_a_role_with_permissions_the_bot_lacks_is_403(client, world):
    guild_id = await make_guild(client, world.owner)
    strong = await role(client, world.owner, guild_id, "strong", P["BAN_MEMBERS"])
    assert (await install(client, world.owner, world.app, guild_id, str(BASIC))).status_code == 200
    body = refused(await join(client, world, guild_id=guild_id, roles=[strong]), 403, "MISSING_PERMISSIONS")
    assert "BAN_MEMBERS" in body["message"]


async def test_nick_with_and_without_manage_nicknames(client, world):
    plain = await bot_guild(client, world.owner, world.app, permissions=P["CREATE_INSTANT_INVITE"])
    body = refused(await join(client, world, guild_id=plain.id, nick="Newbie"), 403, "MISSING_PERMISSIONS")
    assert "MANAGE_NICKNAMES" in body["message"]
    too_long = refused(await join(client, world, nick="n" * 33), 400, "INVALID_FORM_BODY")
    assert too_long["errors"][0]["path"] == "nick"
    response = await join(client, world, nick="  Newbie  ")
    assert response.status_code == 201 and response.json()["nick"] == "Newbie"
    assert (await join(client, world, guild_id=plain.id, nick="   ")).status_code == 201  # blank: no nick


# --- who may call ---------------------------------------------------------------------------------

async def test_a_session_or_bearer_caller_is_refused(client, world):
    for headers in (world.owner.headers, world.user.headers, bearer(world.token)):
        body = refused(await join(client, world, headers=headers), 403, "ACCESS_DENIED")
        assert body["message"].endswith("credential may not use this route")


async def test_revoking_the_grant_leaves_the_membership(client, world):
    assert (await join(client, world)).status_code == 201
    revoked = await client.delete(f"/api/v1/oauth2/@me/authorizations/{world.app.id}", headers=world.user.headers)
    assert revoked.status_code == 204
    refused(await join(client, world), 403, "INVALID_OAUTH_TOKEN")  # the token is dead...
    member = await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=world.user.headers)
    assert member.status_code == 200  # ...the membership stays


# --- guilds.members.read ----------------------------------------------------------------------------

async def test_member_read_with_the_scope(client, world):
    assert (await join(client, world, nick="Reader", roles=[world.guild.low])).status_code == 201
    token = (await tokens_for(client, world.user, world.app, scope="guilds.members.read"))["access_token"]
    response = await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=bearer(token))
    assert response.status_code == 200, response.text
    member = response.json()
    assert member["user"]["id"] == world.user.id and member["nick"] == "Reader"
    assert member["roles"] == [world.guild.low] and ISO.match(member["joined_at"])
    assert member["deaf"] is False and member["mute"] is False
    session = await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=world.user.headers)
    assert session.json() == member
    owner = await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=world.owner.headers)
    assert owner.status_code == 200 and owner.json()["user"]["id"] == world.owner.id


async def test_member_read_without_the_scope_is_403(client, world):
    token = (await tokens_for(client, world.user, world.app, scope="identify guilds"))["access_token"]
    response = await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["code"] == "MISSING_OAUTH_SCOPE" and response.json()["required_scope"] == "guilds.members.read"
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="guilds.members.read"'


async def test_member_read_of_a_guild_the_user_is_not_in_is_404(client, world):
    token = (await tokens_for(client, world.user, world.app, scope="guilds.members.read"))["access_token"]
    for guild_id in (world.guild.id, "4242", "x"):
        response = await client.get(f"/api/v1/users/@me/guilds/{guild_id}/member", headers=bearer(token))
        refused(response, 404, "UNKNOWN_GUILD")
    bot = await client.get(f"/api/v1/users/@me/guilds/{world.guild.id}/member", headers=world.bot)
    refused(bot, 403, "ACCESS_DENIED")


async def test_the_document_describes_both_answers(client):
    document = (await client.get("/api/v1/openapi.json")).json()
    put = document["paths"]["/api/v1/guilds/{guild_id}/members/{user_id}"]["put"]
    assert {"201", "204", "400", "401", "403", "404"} <= set(put["responses"])
    assert put["security"] == [{"bot": []}]
    read = document["paths"]["/api/v1/users/@me/guilds/{guild_id}/member"]["get"]
    assert {"session": []} in read["security"] and {"oauth2": ["guilds.members.read"]} in read["security"]
