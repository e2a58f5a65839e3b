"""hikari's REST client, unchanged, against a real server: a bot adds a user to a guild with
the user's access token (``guilds.join``: ``RESTClient.add_user_to_guild``), and the user's
own token reads the member back (``guilds.members.read``: ``fetch_my_member``).

hikari takes the API's base URL (``RESTApp(url=...)``) and appends Discord's route paths
to it, so ``{server}/api/v1`` is all it needs: no ``/api/v10`` alias is involved."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import hikari
import pytest
import requests

from fluxer_oauth.core.permissions import PERMISSIONS
from tests.conftest import PASSWORD
from tests.interop.conftest import register_with_app

P = PERMISSIONS
TIMEOUT = 10


def session(account: dict) -> dict:
    return {"Authorization": account["token"]}


def register(base: str, username: str) -> dict:
    response = requests.post(f"{base}/api/v1/auth/register", timeout=TIMEOUT, json={
        "username": username, "email": f"{username}@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


def access_token(base: str, account: dict, app: dict, scope: str) -> str:
    redirect_uri = app["redirect_uris"][0]
    consent = requests.post(f"{base}/api/v1/oauth2/authorize/consent", headers=session(account), timeout=TIMEOUT,
                            json={"client_id": app["id"], "scope": scope, "authorize": True,
                                  "response_type": "code", "redirect_uri": redirect_uri})
    assert consent.status_code == 200, consent.text
    code = parse_qs(urlsplit(consent.json()["redirect_to"]).query)["code"][0]
    token = requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=TIMEOUT,
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri})
    assert token.status_code == 200, token.text
    return token.json()["access_token"]


@pytest.fixture(scope="module")
def joinable(live_server):
    """An owner's guild with a role, the owner's bot added to it (CREATE_INSTANT_INVITE,
    MANAGE_ROLES, MANAGE_NICKNAMES), and a user who granted the application guilds.join."""
    base = live_server
    owner, app = register_with_app(base, "Hikari Owner")
    guild = requests.post(f"{base}/api/v1/guilds", json={"name": "Hikari Guild"}, headers=session(owner),
                          timeout=TIMEOUT)
    assert guild.status_code == 201, guild.text
    guild_id = guild.json()["id"]
    role = requests.post(f"{base}/api/v1/guilds/{guild_id}/roles", headers=session(owner), timeout=TIMEOUT,
                         json={"name": "newcomer", "permissions": str(P["SEND_MESSAGES"])})
    assert role.status_code == 201, role.text
    permissions = P["CREATE_INSTANT_INVITE"] | P["MANAGE_ROLES"] | P["MANAGE_NICKNAMES"] | P["SEND_MESSAGES"]
    installed = requests.post(f"{base}/api/v1/oauth2/authorize/consent", headers=session(owner), timeout=TIMEOUT,
                              json={"client_id": app["id"], "scope": "bot", "authorize": True,
                                    "permissions": str(permissions), "guild_id": guild_id})
    assert installed.status_code == 200, installed.text
    user = register(base, "hikari_user")
    token = access_token(base, user, app, "identify guilds.join guilds.members.read")
    return {"base": base, "app": app, "guild_id": int(guild_id), "role_id": int(role.json()["id"]),
            "user": user, "token": token, "owner": owner}


async def test_hikari_adds_a_user_to_a_guild_and_the_user_reads_the_member(joinable):
    base, app, guild_id = joinable["base"], joinable["app"], joinable["guild_id"]
    user_id = int(joinable["user"]["user"]["id"])
    rest = hikari.RESTApp(url=f"{base}/api/v1")
    await rest.start()
    try:
        async with rest.acquire(app["bot"]["token"], hikari.TokenType.BOT) as bot:
            member = await bot.add_user_to_guild(joinable["token"], guild_id, user_id, nickname="Kari",
                                                 roles=[joinable["role_id"]], mute=False, deaf=False)
            assert isinstance(member, hikari.Member)
            assert member.id == user_id and member.guild_id == guild_id
            assert member.username == joinable["user"]["user"]["username"]
            assert member.nickname == "Kari" and member.is_mute is False and member.is_deaf is False
            assert set(member.role_ids) == {joinable["role_id"], guild_id}  # hikari adds @everyone itself
            assert member.joined_at is not None and member.joined_at.tzinfo is not None
            # Already a member: 204, which hikari returns as None.
            assert await bot.add_user_to_guild(joinable["token"], guild_id, user_id) is None

            # Refusals come back as hikari's errors, with the server's code and message.
            with pytest.raises(hikari.ForbiddenError) as refused:
                await bot.add_user_to_guild("not-a-token", guild_id, user_id)
            assert refused.value.code == "INVALID_OAUTH_TOKEN" and "access_token" in refused.value.message
            owner_token = access_token(base, joinable["owner"], app, "identify")
            with pytest.raises(hikari.ForbiddenError) as no_scope:
                await bot.add_user_to_guild(owner_token, guild_id, int(joinable["owner"]["user"]["id"]))
            assert no_scope.value.code == "MISSING_OAUTH_SCOPE"
            with pytest.raises(hikari.NotFoundError) as unknown:
                await bot.add_user_to_guild(joinable["token"], 4242, user_id)
            assert unknown.value.code == "UNKNOWN_GUILD"

        async with rest.acquire(joinable["token"], hikari.TokenType.BEARER) as user_client:
            mine = await user_client.fetch_my_member(guild_id)
            assert mine.id == user_id and mine.nickname == "Kari"
            assert set(mine.role_ids) == {joinable["role_id"], guild_id}
            assert mine.joined_at == member.joined_at
    finally:
        await rest.close()
