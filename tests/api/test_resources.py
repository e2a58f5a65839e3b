"""Resource routes (SPEC §3, §4.4): scope enforcement, 401/403 shapes, data from storage."""

from __future__ import annotations

import pytest

from fluxer_oauth.core.permissions import ALL_PERMISSIONS, PERMISSIONS
from fluxer_oauth.store import guilds as guild_store
from fluxer_oauth.store import users as user_store
from tests.conftest import bearer, create_app, register, tokens_for


@pytest.fixture
async def setup(client):
    owner = await register(client)
    app = await create_app(client, owner)
    return owner, app


async def seed_guild(rt, owner_id: int, member_id: int) -> int:
    guild_id = rt.ids.next()
    role_id = rt.ids.next()
    async with rt.db.write() as conn:
        await guild_store.insert_guild(conn, id=guild_id, name="Guild", owner_id=owner_id, features="[]", created_at=1.0)
        await guild_store.insert_role(conn, id=guild_id, guild_id=guild_id, name="@everyone",
                                      permissions=PERMISSIONS["VIEW_CHANNEL"], created_at=1.0)
        await guild_store.insert_role(conn, id=role_id, guild_id=guild_id, name="mods",
                                      permissions=PERMISSIONS["KICK_MEMBERS"], created_at=1.0)
        await guild_store.add_member(conn, guild_id, owner_id, 1.0)
        await guild_store.add_member(conn, guild_id, member_id, 1.0)
        await guild_store.give_role(conn, guild_id, member_id, role_id)
        await guild_store.insert_connection(conn, user_id=member_id, type="github", id="42", name="octo",
                                            verified=True, visibility=1, created_at=1.0)
    return guild_id


async def test_missing_or_bad_token_is_401_invalid_token(client):
    for headers in ({}, bearer("not-a-token"), {"Authorization": "flx_" + "a" * 36}, {"Authorization": "Bot x.y.z"}):
        response = await client.get("/api/v1/users/@me", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_scope_enforcement_403_with_www_authenticate(client, setup):
    owner, app = setup
    body = await tokens_for(client, owner, app, scope="identify")
    response = await client.get("/api/v1/users/@me/guilds", headers=bearer(body["access_token"]))
    assert response.status_code == 403
    assert response.json() == {"code": "MISSING_OAUTH_SCOPE", "message": response.json()["message"],
                               "required_scope": "guilds"}
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="guilds"'
    response = await client.get("/api/v1/users/@me/connections", headers=bearer(body["access_token"]))
    assert response.json()["required_scope"] == "connections"


async def test_identify_without_email_hides_email(client, setup):
    owner, app = setup
    body = await tokens_for(client, owner, app, scope="identify")
    me = (await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))).json()
    assert "email" not in me and "verified" not in me
    assert set(me) >= {"id", "username", "discriminator", "global_name", "avatar", "banner", "accent_color", "bot",
                       "system", "mfa_enabled", "locale", "flags", "public_flags"}
    guilds_only = await tokens_for(client, owner, app, scope="guilds")
    response = await client.get("/api/v1/users/@me", headers=bearer(guilds_only["access_token"]))
    assert response.status_code == 403 and response.json()["required_scope"] == "identify"


async def test_guilds_with_computed_permissions(client, setup, rt):
    owner, app = setup
    member = await register(client)
    guild_id = await seed_guild(rt, int(owner.id), int(member.id))
    body = await tokens_for(client, member, app, scope="guilds")
    guilds = (await client.get("/api/v1/users/@me/guilds", headers=bearer(body["access_token"]))).json()
    assert guilds == [{"id": str(guild_id), "name": "Guild", "icon": None, "owner": False,
                       "permissions": str(PERMISSIONS["VIEW_CHANNEL"] | PERMISSIONS["KICK_MEMBERS"]), "features": []}]
    owned = (await client.get("/api/v1/users/@me/guilds", headers=owner.headers)).json()
    assert owned[0]["owner"] is True and owned[0]["permissions"] == str(ALL_PERMISSIONS)
    guild = await client.get(f"/api/v1/guilds/{guild_id}", headers=bearer(body["access_token"]))
    assert guild.status_code == 200 and {r["name"] for r in guild.json()["roles"]} == {"@everyone", "mods"}
    outsider = await register(client)
    assert (await client.get(f"/api/v1/guilds/{guild_id}", headers=outsider.headers)).status_code == 404


async def test_connections(client, setup, rt):
    owner, app = setup
    member = await register(client)
    await seed_guild(rt, int(owner.id), int(member.id))
    body = await tokens_for(client, member, app, scope="connections")
    response = await client.get("/api/v1/users/@me/connections", headers=bearer(body["access_token"]))
    assert response.json() == [{"type": "github", "id": "42", "name": "octo", "verified": True, "visibility": 1}]


async def test_oauth2_me_and_userinfo(client, setup):
    owner, app = setup
    body = await tokens_for(client, owner, app, scope="identify email")
    info = (await client.get("/api/v1/oauth2/@me", headers=bearer(body["access_token"]))).json()
    assert info["application"]["id"] == app.id and info["scopes"] == ["identify", "email"]
    assert info["expires"].endswith("Z") and info["user"]["email"] == owner.user["email"]
    userinfo = (await client.get("/api/v1/oauth2/userinfo", headers=bearer(body["access_token"]))).json()
    assert userinfo["sub"] == owner.id and userinfo["email"] == owner.user["email"]
    no_identify = await tokens_for(client, owner, app, scope="guilds")
    info = (await client.get("/api/v1/oauth2/@me", headers=bearer(no_identify["access_token"]))).json()
    assert "user" not in info
    session = await client.get("/api/v1/oauth2/userinfo", headers=owner.headers)
    assert session.status_code == 200 and session.json()["sub"] == owner.id


async def test_disabled_user_token_stops_working(client, setup, rt):
    owner, app = setup
    body = await tokens_for(client, owner, app)
    async with rt.db.write() as conn:
        await user_store.set_user_fields(conn, int(owner.id), disabled_at=1.0)
    assert (await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))).status_code == 401


async def test_tokens_in_the_query_string_are_ignored(client, setup):
    owner, app = setup
    body = await tokens_for(client, owner, app)
    response = await client.get(f"/api/v1/users/@me?access_token={body['access_token']}")
    assert response.status_code == 401


async def test_v1_alias_answers(client, setup):
    owner, _app = setup
    assert (await client.get("/v1/users/@me", headers=owner.headers)).status_code == 200


async def test_bot_token_reads_its_own_user(client, setup):
    _owner, app = setup
    response = await client.get("/api/v1/users/@me", headers={"Authorization": f"Bot {app.body['bot']['token']}"})
    assert response.status_code == 200 and response.json()["id"] == app.id


async def test_unknown_route_is_json_404(client):
    response = await client.get("/api/v1/nope")
    assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND"


async def test_oversized_body_is_413(client):
    response = await client.post("/api/v1/auth/login", content=b"x" * (70 * 1024),
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413
