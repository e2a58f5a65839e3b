"""Every way access ends closes every path derived from it (oauth/endings.py): codes not
yet redeemed, access and refresh tokens, remembered consent, client-credentials tokens, and
a departed bot's guild memberships with their managed roles. Each test is a hole an attack
pass found open."""

from __future__ import annotations

from sqlalchemy import delete, select

from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.platform import admin
from fluxer_oauth.store.tables import grants, roles
from tests.api.test_bots import bot_headers, install, make_guild
from tests.api.test_lifecycle import alive, refresh
from tests.conftest import PASSWORD, bearer, create_app, exchange, get_code, register, tokens_for


async def cc(client, app):
    return await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=app.basic)


async def test_code_issued_before_the_user_revoked_no_longer_redeems(client):
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    code = await get_code(client, user, app)
    revoked = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert revoked.status_code == 204
    redeemed = await exchange(client, app, code)
    assert redeemed.status_code == 400 and redeemed.json()["error"] == "invalid_grant"
    listed = await client.get("/api/v1/oauth2/@me/authorizations", headers=user.headers)
    assert listed.json() == []


async def test_revoking_an_authorization_ends_tokens_even_without_consent_row(client, rt):
    """The ending is committed whatever the answer: tokens left without a consent row (as a
    race could leave them) end, and the request says so with 204 instead of rolling back."""
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    body = await tokens_for(client, user, app)
    async with rt.db.write() as conn:
        await conn.execute(delete(grants).where(grants.c.application_id == int(app.id)))
    first = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert first.status_code == 204
    assert not await alive(client, body["access_token"])
    assert (await refresh(client, app, body["refresh_token"])).status_code == 400
    second = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert second.status_code == 404


async def test_untrusting_an_application_ends_its_admin_grants(client, rt):
    owner = await register(client)
    app = await create_app(client, owner)
    staff = await register(client)
    await admin.set_staff(rt, None, int(staff.id), True)
    await admin.set_application_trusted(rt, None, int(app.id), True)
    admin_tokens = await tokens_for(client, staff, app, scope="identify admin")
    assert (await client.get("/api/v1/admin/users", headers=bearer(admin_tokens["access_token"]))).status_code == 200
    await admin.set_application_trusted(rt, None, int(app.id), False)
    assert (await client.get("/api/v1/admin/users", headers=bearer(admin_tokens["access_token"]))).status_code == 401
    refreshed = await refresh(client, app, admin_tokens["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


async def test_disabled_owner_applications_stop_authenticating_and_their_grants_end(client, rt):
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    user_tokens = await tokens_for(client, user, app)
    client_token = (await cc(client, app)).json()["access_token"]
    bot_token = app.body["bot"]["token"]
    await admin.set_user_disabled(rt, None, int(owner.id), True)
    refused = await cc(client, app)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert (await client.get("/api/v1/users/@me", headers=bot_headers(bot_token))).status_code == 401
    assert not await alive(client, user_tokens["access_token"])
    assert not await alive(client, client_token)
    assert (await client.get(f"/oauth2/authorize?client_id={app.id}&response_type=code&scope=identify")
            ).status_code == 400  # no redirect to an application nobody may use
    # Enabled again, the application authenticates again; nothing ended comes back.
    await admin.set_user_disabled(rt, None, int(owner.id), False)
    assert (await cc(client, app)).status_code == 200
    assert (await client.get("/api/v1/users/@me", headers=bot_headers(bot_token))).status_code == 200
    assert not await alive(client, user_tokens["access_token"])
    assert (await refresh(client, app, user_tokens["refresh_token"])).status_code == 400


async def test_disabling_an_application_ends_unredeemed_codes_for_good(client, rt):
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    code = await get_code(client, user, app)
    await admin.set_application_disabled(rt, None, int(app.id), True)
    await admin.set_application_disabled(rt, None, int(app.id), False)
    redeemed = await exchange(client, app, code)
    assert redeemed.status_code == 400 and redeemed.json()["error"] == "invalid_grant"


async def test_secret_reset_ends_client_credentials_tokens(client):
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    user_tokens = await tokens_for(client, user, app)
    client_token = (await cc(client, app)).json()["access_token"]
    reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset",
                              json={"password": PASSWORD}, headers=owner.headers)
    assert reset.status_code == 200
    assert not await alive(client, client_token)
    # A user's grant is theirs, not the secret's: it lives, and refreshes with the new secret.
    assert await alive(client, user_tokens["access_token"])


async def test_bot_token_reset_ends_client_credentials_tokens(client):
    owner = await register(client)
    app = await create_app(client, owner)
    client_token = (await cc(client, app)).json()["access_token"]
    reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/bot/reset-token",
                              json={"password": PASSWORD}, headers=owner.headers)
    assert reset.status_code == 200
    assert not await alive(client, client_token)


async def _managed_roles(rt, guild_id: str) -> list:
    async with rt.db.read() as conn:
        rows = await conn.execute(select(roles.c.id).where(roles.c.guild_id == int(guild_id), roles.c.managed.is_(True)))
        return list(rows.scalars())


async def test_bot_leaving_a_guild_takes_its_managed_role_with_it(client, rt):
    owner = await register(client)
    app = await create_app(client, owner, name="Admin Bot")
    guild_id = await make_guild(client, owner)
    assert (await install(client, owner, app, guild_id, str(PERMISSIONS["ADMINISTRATOR"]))).status_code == 200
    assert len(await _managed_roles(rt, guild_id)) == 1
    left = await client.delete(f"/api/v1/users/@me/guilds/{guild_id}", headers=bot_headers(app.body["bot"]["token"]))
    assert left.status_code == 204
    assert await _managed_roles(rt, guild_id) == []
    guild = (await client.get(f"/api/v1/guilds/{guild_id}", headers=owner.headers)).json()
    assert [role["name"] for role in guild["roles"] if role["name"] == "Admin Bot"] == []


async def test_deleting_an_application_removes_its_bot_and_managed_roles(client, rt):
    owner = await register(client)
    app = await create_app(client, owner, name="Admin Bot")
    guild_id = await make_guild(client, owner)
    assert (await install(client, owner, app, guild_id, str(PERMISSIONS["ADMINISTRATOR"]))).status_code == 200
    deleted = await client.delete(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers)
    assert deleted.status_code == 204
    assert await _managed_roles(rt, guild_id) == []
    members = (await client.get(f"/api/v1/guilds/{guild_id}/members", headers=owner.headers)).json()
    assert [member["user"]["id"] for member in members] == [owner.id]


async def test_client_token_authenticated_before_a_reset_is_not_issued_after_it(client, rt, monkeypatch):
    """The secret is checked again where the token is written: a reset (or a disabling)
    committed between the client's lookup and its token's insert ends that token too. The
    reset is made to land in that gap, through the real API."""
    owner = await register(client)
    app = await create_app(client, owner)
    hot = rt.db.hot
    write = hot.execute

    async def reset_first(name, *args):
        if name == "issue_client_token":
            reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset",
                                      json={"password": PASSWORD}, headers=owner.headers)
            assert reset.status_code == 200
        return await write(name, *args)

    monkeypatch.setattr(hot, "execute", reset_first)
    refused = await cc(client, app)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
