"""Bots (SPEC §2.1, §4.2, §5): bot tokens, the guild API and its permission checks, the
bot scope with its guild picker and role, and client credentials."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from sqlalchemy import event

from fluxer_oauth.core import credentials
from fluxer_oauth.core.permissions import ALL_PERMISSIONS, PERMISSIONS
from tests.api.test_authorize import browser_login, form_fields
from tests.conftest import PASSWORD, bearer, consent, create_app, exchange, query_of, register

P = PERMISSIONS
CB = "https://client.example/callback"


def bot_headers(token: str) -> dict:
    return {"Authorization": f"Bot {token}"}


async def make_guild(client, owner, name="Guild") -> str:
    response = await client.post("/api/v1/guilds", json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def add_member(client, owner, guild_id, member, permissions: int = 0) -> str | None:
    invite = await client.post(f"/api/v1/guilds/{guild_id}/invites", json={}, headers=owner.headers)
    assert invite.status_code == 201, invite.text
    joined = await client.post(f"/api/v1/invites/{invite.json()['code']}", headers=member.headers)
    assert joined.status_code == 200
    if not permissions:
        return None
    role = await client.post(f"/api/v1/guilds/{guild_id}/roles", headers=owner.headers,
                             json={"name": "granted", "permissions": str(permissions)})
    assert role.status_code == 201, role.text
    role_id = role.json()["id"]
    given = await client.put(f"/api/v1/guilds/{guild_id}/members/{member.id}/roles/{role_id}", headers=owner.headers)
    assert given.status_code == 204, given.text
    return role_id


@pytest.fixture
async def setup(client):
    owner = await register(client, "botowner")
    app = await create_app(client, owner, name="Helper Bot")
    return owner, app


# --- bot tokens ------------------------------------------------------------------------------

async def test_bot_token_on_bot_routes(client, setup):
    owner, app = setup
    token = app.body["bot"]["token"]
    guild_id = await make_guild(client, owner)
    me = await client.get("/api/v1/users/@me", headers=bot_headers(token))
    assert me.status_code == 200 and me.json()["bot"] is True and me.json()["id"] == app.id
    own = await client.get("/api/v1/oauth2/applications/@me", headers=bot_headers(token))
    assert own.status_code == 200 and own.json()["id"] == app.id and own.json()["owner"]["id"] == owner.id
    assert (await client.get("/api/v1/users/@me/guilds", headers=bot_headers(token))).json() == []
    assert (await client.get(f"/api/v1/guilds/{guild_id}", headers=bot_headers(token))).status_code == 404


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/users/@me/applications"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/users/@me/connections"),
    ("POST", "/api/v1/guilds"),
    ("GET", "/api/v1/oauth2/@me"),
])
async def test_bot_token_refused_on_user_only_routes(client, setup, method, path):
    _owner, app = setup
    response = await client.request(method, path, headers=bot_headers(app.body["bot"]["token"]), json={"name": "x"})
    assert response.status_code == 403 and response.json()["code"] == "ACCESS_DENIED"


async def test_reset_bot_token_kills_the_old_one_at_once(client, setup):
    owner, app = setup
    old = app.body["bot"]["token"]
    url = f"/api/v1/oauth2/applications/{app.id}/bot/reset-token"
    assert (await client.post(url, json={"password": "nope nope"}, headers=owner.headers)).status_code == 403
    response = await client.post(url, json={"password": PASSWORD}, headers=owner.headers)
    assert response.status_code == 200
    new = response.json()["token"]
    assert new != old and new.split(".")[0] == old.split(".")[0]  # same bot ID segment
    assert (await client.get("/api/v1/users/@me", headers=bot_headers(old))).status_code == 401
    assert (await client.get("/api/v1/users/@me", headers=bot_headers(new))).status_code == 200


async def test_forged_bot_token_is_refused_without_a_database_query(client, setup, rt, monkeypatch):
    _owner, app = setup
    real = app.body["bot"]["token"]
    id_part, time_part, tail = real.split(".")
    raw = credentials.b64url_decode(tail)
    forged = f"{id_part}.{time_part}.{credentials.b64url(raw[:-1] + bytes([raw[-1] ^ 1]))}"
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(rt.db.sync_engine, "before_cursor_execute", listener)
    find_bot = rt.db.clients.bot

    async def spy(bot_id):  # the hot store's lookups are counted too
        statements.append(f"bot {bot_id}")
        return await find_bot(bot_id)

    monkeypatch.setattr(rt.db.clients, "bot", spy)
    try:
        response = await client.get("/api/v1/users/@me", headers=bot_headers(forged))
        assert response.status_code == 401
        assert statements == []
        await client.get("/api/v1/users/@me", headers=bot_headers(real))
        assert statements  # the spy does see queries of a well-signed token
    finally:
        event.remove(rt.db.sync_engine, "before_cursor_execute", listener)


# --- guild API ---------------------------------------------------------------------------------

async def test_guild_api_roles_members_invites_and_leaving(client):
    owner = await register(client)
    member = await register(client)
    guild_id = await make_guild(client, owner, "Home")
    guild = (await client.get(f"/api/v1/guilds/{guild_id}", headers=owner.headers)).json()
    assert guild["owner_id"] == owner.id and guild["roles"][0]["id"] == guild_id  # @everyone has the guild's id
    role_id = await add_member(client, owner, guild_id, member, P["KICK_MEMBERS"] | P["MANAGE_ROLES"])
    members = (await client.get(f"/api/v1/guilds/{guild_id}/members", headers=member.headers)).json()
    assert {m["user"]["id"]: m["roles"] for m in members} == {owner.id: [], member.id: [role_id]}
    mine = (await client.get("/api/v1/users/@me/guilds", headers=member.headers)).json()
    held = int(mine[0]["permissions"])
    assert held & P["KICK_MEMBERS"] and held & P["MANAGE_ROLES"] and not held & P["MANAGE_GUILD"]
    # MANAGE_ROLES, but not for permissions the member does not hold
    too_much = await client.post(f"/api/v1/guilds/{guild_id}/roles", headers=member.headers,
                                 json={"name": "admin", "permissions": str(P["ADMINISTRATOR"])})
    assert too_much.status_code == 403 and too_much.json()["code"] == "MISSING_PERMISSIONS"
    took = await client.delete(f"/api/v1/guilds/{guild_id}/members/{member.id}/roles/{role_id}", headers=owner.headers)
    assert took.status_code == 204
    denied = await client.post(f"/api/v1/guilds/{guild_id}/roles", headers=member.headers,
                               json={"name": "r", "permissions": "0"})
    assert denied.status_code == 403 and denied.json()["code"] == "MISSING_PERMISSIONS"
    assert (await client.delete(f"/api/v1/users/@me/guilds/{guild_id}", headers=owner.headers)).status_code == 400
    assert (await client.delete(f"/api/v1/users/@me/guilds/{guild_id}", headers=member.headers)).status_code == 204
    assert (await client.get(f"/api/v1/guilds/{guild_id}", headers=member.headers)).status_code == 404


async def test_invite_needs_create_instant_invite(client):
    owner = await register(client)
    member = await register(client)
    guild_id = await make_guild(client, owner)
    await add_member(client, owner, guild_id, member)
    roles = (await client.get(f"/api/v1/guilds/{guild_id}/roles", headers=owner.headers)).json()
    assert int(roles[0]["permissions"]) & P["CREATE_INSTANT_INVITE"]  # @everyone may invite by default
    outsider = await register(client)
    response = await client.post(f"/api/v1/guilds/{guild_id}/invites", json={}, headers=outsider.headers)
    assert response.status_code == 404
    assert (await client.post("/api/v1/invites/nonexistent", headers=outsider.headers)).status_code == 404


async def test_connections_add_list_delete(client):
    user = await register(client)
    added = await client.post("/api/v1/users/@me/connections", json={"type": "github", "name": "octo"},
                              headers=user.headers)
    assert added.status_code == 201
    bad = await client.post("/api/v1/users/@me/connections", json={"type": "myspace", "name": "x"}, headers=user.headers)
    assert bad.status_code == 400
    listed = (await client.get("/api/v1/users/@me/connections", headers=user.headers)).json()
    assert [c["type"] for c in listed] == ["github"]
    connection_id = listed[0]["id"]
    assert (await client.delete(f"/api/v1/users/@me/connections/github/{connection_id}",
                                headers=user.headers)).status_code == 204
    assert (await client.get("/api/v1/users/@me/connections", headers=user.headers)).json() == []


# --- the bot scope -----------------------------------------------------------------------------

async def install(client, user, app, guild_id, permissions="0", **extra):
    return await client.post("/api/v1/oauth2/authorize/consent", headers=user.headers, json={
        "client_id": app.id, "scope": "bot", "authorize": True, "permissions": permissions,
        "guild_id": guild_id, "response_type": None, **extra})


async def test_bot_install_creates_role_with_exactly_the_requested_bits(client, setup, rt):
    owner, app = setup
    guild_id = await make_guild(client, owner)
    requested = P["KICK_MEMBERS"] | P["SEND_MESSAGES"] | (1 << 19)  # bit 19 is undefined
    response = await install(client, owner, app, guild_id, str(requested))
    assert response.status_code == 200, response.text
    assert response.json()["redirect_to"].startswith("http://testserver/oauth2/authorized?")
    token = app.body["bot"]["token"]
    guild = (await client.get(f"/api/v1/guilds/{guild_id}", headers=bot_headers(token))).json()
    role = next(r for r in guild["roles"] if r["name"] == "Helper Bot")
    assert int(role["permissions"]) == P["KICK_MEMBERS"] | P["SEND_MESSAGES"] and role["managed"] is True
    members = (await client.get(f"/api/v1/guilds/{guild_id}/members", headers=bot_headers(token))).json()
    assert [m["roles"] for m in members if m["user"]["id"] == app.id] == [[role["id"]]]
    again = await install(client, owner, app, guild_id)
    assert again.status_code == 400 and again.json()["code"] == "BOT_ALREADY_IN_GUILD"


async def test_bot_install_without_permissions_adds_no_role(client, setup):
    owner, app = setup
    guild_id = await make_guild(client, owner)
    assert (await install(client, owner, app, guild_id, "0")).status_code == 200
    roles = (await client.get(f"/api/v1/guilds/{guild_id}/roles", headers=owner.headers)).json()
    assert [r["name"] for r in roles] == ["@everyone"]


async def test_user_without_manage_guild_cannot_pick_the_guild(client, setup):
    owner, app = setup
    member = await register(client)
    guild_id = await make_guild(client, owner)
    await add_member(client, owner, guild_id, member, P["KICK_MEMBERS"])
    response = await install(client, member, app, guild_id)
    assert response.status_code == 403 and response.json()["code"] == "MISSING_PERMISSIONS"
    await browser_login(client, member.user["username"])
    page = await client.get("/oauth2/authorize?" + urlencode({"client_id": app.id, "scope": "bot"}))
    assert page.status_code == 200 and 'id="no-guilds"' in page.text and guild_id not in page.text


async def test_requested_permissions_beyond_the_users_are_refused(client, setup):
    owner, app = setup
    manager = await register(client)
    guild_id = await make_guild(client, owner)
    await add_member(client, owner, guild_id, manager, P["MANAGE_GUILD"] | P["SEND_MESSAGES"])
    response = await install(client, manager, app, guild_id, str(P["SEND_MESSAGES"] | P["BAN_MEMBERS"]))
    assert response.status_code == 403 and "BAN_MEMBERS" in response.json()["message"]
    assert (await install(client, manager, app, guild_id, str(P["SEND_MESSAGES"]))).status_code == 200


async def test_administrator_may_grant_any_permission(client, setup):
    owner, app = setup
    admin = await register(client)
    guild_id = await make_guild(client, owner)
    await add_member(client, owner, guild_id, admin, P["ADMINISTRATOR"])
    response = await install(client, admin, app, guild_id, str(ALL_PERMISSIONS))
    assert response.status_code == 200


async def test_private_bot_only_by_its_owner(client):
    owner = await register(client)
    app = await create_app(client, owner, bot_public=False)
    stranger = await register(client)
    guild_id = await make_guild(client, stranger)
    response = await install(client, stranger, app, guild_id)
    assert response.status_code == 403 and response.json()["code"] == "BOT_IS_PRIVATE"
    own_guild = await make_guild(client, owner)
    assert (await install(client, owner, app, own_guild)).status_code == 200


async def test_consent_page_shows_picker_and_permission_names(client, setup):
    owner, app = setup
    first = await make_guild(client, owner, "First Guild")
    second = await make_guild(client, owner, "Second Guild")
    await browser_login(client, "botowner")
    query = {"client_id": app.id, "scope": "bot", "permissions": str(P["KICK_MEMBERS"]), "guild_id": second}
    page = await client.get("/oauth2/authorize?" + urlencode(query))
    assert "First Guild" in page.text and "Second Guild" in page.text
    assert re.search(rf'type="radio" id="guild-{second}" name="guild_id" value="{second}" checked', page.text)
    assert not re.search(rf'value="{first}" checked', page.text)
    assert 'data-permission="KICK_MEMBERS"' in page.text and "Kick Members" in page.text
    locked = await client.get("/oauth2/authorize?" + urlencode({**query, "disable_guild_select": "true"}))
    assert "First Guild" not in locked.text
    assert re.search(rf'value="{second}" checked disabled>', locked.text)
    assert f'<input type="hidden" name="guild_id" value="{second}">' in locked.text
    fields = form_fields(locked.text)
    fields["request"] = fields["request"].replace("&amp;", "&")
    # the lock wins over whatever guild the form posts
    done = await client.post("/oauth2/authorize", data={**fields, "action": "authorize", "guild_id": first})
    assert done.status_code == 303 and done.headers["location"].startswith("http://testserver/oauth2/authorized")
    success = await client.get(done.headers["location"])
    assert "Second Guild" in success.text and "Helper Bot" in success.text
    bot_guilds = await client.get("/api/v1/users/@me/guilds", headers=bot_headers(app.body["bot"]["token"]))
    assert [g["id"] for g in bot_guilds.json()] == [second]


async def test_bot_with_code_grant_returns_guild_in_token_response(client, setup):
    owner, app = setup
    guild_id = await make_guild(client, owner, "Coded")
    params = await consent(client, owner, app, scope="bot identify", guild_id=guild_id, permissions="2048")
    response = await exchange(client, app, params["code"])
    assert response.status_code == 200
    body = response.json()
    assert body["guild"] == {"id": guild_id, "name": "Coded", "icon": None, "owner_id": owner.id}
    assert body["scope"] == "identify bot"


async def test_bot_require_code_grant_needs_a_redirect(client):
    owner = await register(client)
    app = await create_app(client, owner, bot_require_code_grant=True,
                           redirect_uris=[CB, "https://client.example/two"])
    guild_id = await make_guild(client, owner)
    response = await install(client, owner, app, guild_id)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    ok = await install(client, owner, app, guild_id, redirect_uri=CB, response_type="code")
    assert "code" in query_of(ok.json()["redirect_to"])


async def test_bot_only_install_errors_show_a_page_not_a_redirect(client, setup):
    owner, app = setup
    await browser_login(client, "botowner")
    page = await client.get("/oauth2/authorize?" + urlencode({"client_id": app.id, "scope": "bot", "permissions": "x"}))
    assert page.status_code == 400 and "location" not in page.headers


async def test_guild_is_required_for_bot_scope(client, setup):
    owner, app = setup
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers,
                                 json={"client_id": app.id, "scope": "bot", "authorize": True})
    assert response.status_code == 400 and response.json()["code"] == "GUILD_REQUIRED"


# --- end to end ----------------------------------------------------------------------------------

async def test_bot_end_to_end_install_read_role_then_join_by_invite(client):
    owner = await register(client)
    app = await create_app(client, owner, name="E2E Bot")
    token = app.body["bot"]["token"]
    first = await make_guild(client, owner, "First")
    wanted = P["VIEW_CHANNEL"] | P["SEND_MESSAGES"] | P["EMBED_LINKS"]
    assert (await install(client, owner, app, first, str(wanted))).status_code == 200
    guild = (await client.get(f"/api/v1/guilds/{first}", headers=bot_headers(token))).json()
    assert any(r["name"] == "E2E Bot" and int(r["permissions"]) == wanted for r in guild["roles"])
    mine = (await client.get("/api/v1/users/@me/guilds", headers=bot_headers(token))).json()
    assert int(mine[0]["permissions"]) & wanted == wanted

    other_owner = await register(client)
    second = await make_guild(client, other_owner, "Second")
    invite = (await client.post(f"/api/v1/guilds/{second}/invites", json={}, headers=other_owner.headers)).json()
    joined = await client.post(f"/api/v1/invites/{invite['code']}", headers=bot_headers(token))
    assert joined.status_code == 200 and joined.json()["guild"]["id"] == second
    names = {g["name"] for g in (await client.get("/api/v1/users/@me/guilds", headers=bot_headers(token))).json()}
    assert names == {"First", "Second"}


async def test_client_credentials_token_reads_bot_guilds(client, setup):
    owner, app = setup
    guild_id = await make_guild(client, owner)
    await install(client, owner, app, guild_id)
    token = (await client.post("/api/v1/oauth2/token", auth=app.basic,
                               data={"grant_type": "client_credentials", "scope": "guilds identify"})).json()
    guilds = await client.get("/api/v1/users/@me/guilds", headers=bearer(token["access_token"]))
    assert [g["id"] for g in guilds.json()] == [guild_id]
