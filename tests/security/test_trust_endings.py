"""Every way access ends closes every path derived from it (grants/endings.py): codes not
yet redeemed, access and refresh tokens, remembered consent, client-credentials tokens, and
a departed bot's guild memberships with their managed roles. Each test is a hole an attack
pass found open."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import delete, select, update

from fluxer_oauth.core import credentials
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.grants import endings
from fluxer_oauth.platform import admin
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store.records import ClientToken
from fluxer_oauth.store.tables import applications, grants, roles
from tests.backends import POSTGRES
from tests.api.test_bots import bot_headers, install, make_guild
from tests.api.test_lifecycle import alive, refresh
from tests.conftest import PASSWORD, bearer, create_app, exchange, get_code, register, tokens_for


async def cc(client, app):
    return await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=app.basic)


@pytest.fixture
async def trusted_app(client, rt):
    """A trusted application and a staff member who may grant it admin."""
    owner = await register(client)
    app = await create_app(client, owner)
    staff = await register(client)
    await admin.set_staff(rt, None, int(staff.id), True)
    await admin.set_application_trusted(rt, None, int(app.id), True)
    return app, staff


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


async def test_untrusting_an_application_ends_its_admin_grants(client, rt, trusted_app):
    app, staff = trusted_app
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
        rows = await conn.execute(select(roles.c.id).where(roles.c.guild_id == int(guild_id),
                                                          roles.c.managed.is_(True)))
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
    issue = rt.db.tokens.issue_client_token

    async def reset_first(token):
        reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset",
                                  json={"password": PASSWORD}, headers=owner.headers)
        assert reset.status_code == 200
        return await issue(token)

    monkeypatch.setattr(rt.db.tokens, "issue_client_token", reset_first)
    refused = await cc(client, app)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


# --- endings against what runs beside them ---------------------------------------------------
# The interleavings are forced by pausing one side at a chosen point (a hook around a real
# store call); everything else is the real server and database.

only_postgres = pytest.mark.skipif(not POSTGRES, reason="SQLite writes one transaction at a time: no interleaving")


@only_postgres
async def test_client_token_written_during_a_secret_reset_does_not_outlive_it(client, rt):
    """A client-credentials insert that arrives while a reset has changed the secret and
    revoked the old tokens, but not yet committed, waits for it and is then not written."""
    owner = await register(client)
    app = await create_app(client, owner)
    async with rt.db.read() as conn:
        old_hash = (await conn.execute(select(applications.c.secret_hash)
                                       .where(applications.c.id == int(app.id)))).scalar_one()
    token_key = credentials.stored_token_key(credentials.new_stored_token())
    now = time.time()
    async with rt.db.write() as conn:
        await conn.execute(update(applications).where(applications.c.id == int(app.id))
                           .values(secret_hash=b"\0" * 32))
        await endings.end_client_credentials(rt, conn, int(app.id), by="test", actor_id=None, at=now)
        insert = asyncio.ensure_future(rt.db.tokens.issue_client_token(ClientToken(
            token_key, int(app.id), old_hash, rt.ids.next(), "identify", now, now + 60)))
        await asyncio.sleep(0.3)
        assert not insert.done()  # waiting for the reset's row lock, not reading the old row
    assert await insert is False


@only_postgres
async def test_disabling_and_deleting_an_application_side_by_side_never_deadlock(client, rt, monkeypatch):
    """Staff disable an application while its owner deletes it: the disabling is paused right
    after it writes the application row. Both take the ending lock before writing a row,
    so one waits for the other; before, each held what the other wanted (a 500)."""
    owner = await register(client)
    app = await create_app(client, owner)
    write = app_store.update_application

    async def pause_after_writing(conn, application_id, **values):
        found = await write(conn, application_id, **values)
        await asyncio.sleep(0.3)
        return found

    monkeypatch.setattr(app_store, "update_application", pause_after_writing)
    disabling = asyncio.ensure_future(admin.set_application_disabled(rt, None, int(app.id), True))
    await asyncio.sleep(0.1)
    deleted = await client.delete(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers)
    await disabling
    assert deleted.status_code == 204


async def test_an_untrust_landing_before_an_admin_approval_refuses_it(client, rt, trusted_app, monkeypatch):
    """The admin scope is checked again inside the approval's transaction: an untrust that
    commits after the request was validated gives no code."""
    app, staff = trusted_app
    db = rt.db
    write = db.write

    @asynccontextmanager
    async def untrust_first():
        monkeypatch.setattr(db, "write", write)
        await admin.set_application_trusted(rt, None, int(app.id), False)
        async with write() as conn:
            yield conn

    monkeypatch.setattr(db, "write", untrust_first)
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=staff.headers, json={
        "client_id": app.id, "scope": "identify admin", "authorize": True, "response_type": "code",
        "redirect_uri": "https://client.example/callback"})
    assert response.status_code == 400 and response.json()["code"] == "APPLICATION_UNAVAILABLE"
    assert (await client.get("/api/v1/oauth2/@me/authorizations", headers=staff.headers)).json() == []


async def test_a_code_of_an_admin_grant_no_longer_allowed_does_not_redeem(client, rt, trusted_app):
    app, staff = trusted_app
    code = await get_code(client, staff, app, scope="identify admin")
    async with rt.db.write() as conn:  # trust taken away without the ending (as a race could leave it)
        await conn.execute(update(applications).where(applications.c.id == int(app.id)).values(trusted=False))
    redeemed = await exchange(client, app, code)
    assert redeemed.status_code == 400 and redeemed.json()["error"] == "invalid_grant"


@only_postgres
async def test_a_first_approval_beside_disabling_the_user_does_not_outlive_it(client, rt, monkeypatch):
    """The approval is paused after writing its code, uncommitted; the user is disabled
    meanwhile. The disabling waits for the approval (the user's lock), then ends its code."""
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    insert = oauth_store.insert_code

    async def pause_after_inserting(conn, **values):
        await insert(conn, **values)
        await asyncio.sleep(0.3)

    monkeypatch.setattr(oauth_store, "insert_code", pause_after_inserting)
    approving = asyncio.ensure_future(get_code(client, user, app))
    await asyncio.sleep(0.1)
    await admin.set_user_disabled(rt, None, int(user.id), True)
    code = await approving
    await admin.set_user_disabled(rt, None, int(user.id), False)
    redeemed = await exchange(client, app, code)
    assert redeemed.status_code == 400 and redeemed.json()["error"] == "invalid_grant"
