"""Application management (SPEC §5)."""

from __future__ import annotations

from sqlalchemy import select

from fluxer_oauth.core import credentials
from fluxer_oauth.store.tables import applications
from tests.conftest import PASSWORD, bearer, create_app, register, tokens_for


async def test_create_returns_secret_and_bot_token_once_and_stores_hashes(client, rt):
    owner = await register(client)
    app = await create_app(client, owner, description="hello")
    assert len(app.secret) >= 43
    bot = app.body["bot"]
    assert bot["id"] == app.id and bot["bot"] is True and bot["token"]
    assert credentials.verify_bot_token(rt.secret, bot["token"]) == int(app.id)
    fetched = await client.get(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers)
    assert fetched.status_code == 200
    assert "client_secret" not in fetched.json() and "token" not in fetched.json()["bot"]
    async with rt.db.read() as conn:
        row = (await conn.execute(select(applications).where(applications.c.id == int(app.id)))).first()
    assert row.secret_hash == credentials.client_secret_hash(rt.secret, app.secret)
    assert app.secret.encode() not in row.secret_hash
    assert row.bot_token_hash == credentials.sha256(bot["token"])


async def test_application_without_bot(client):
    owner = await register(client)
    app = await create_app(client, owner, bot=False)
    assert "bot" not in app.body


async def test_redirect_uri_rules_on_create_and_update(client):
    owner = await register(client)
    response = await client.post("/api/v1/oauth2/applications", headers=owner.headers,
                                 json={"name": "x", "redirect_uris": ["http://evil.example/cb", "https://ok.example/cb#f"]})
    assert response.status_code == 400
    assert [e["path"] for e in response.json()["errors"]] == ["redirect_uris.0", "redirect_uris.1"]
    response = await client.post("/api/v1/oauth2/applications", headers=owner.headers,
                                 json={"name": "x", "redirect_uris": [f"https://a.example/{i}" for i in range(11)]})
    assert response.status_code == 400
    app = await create_app(client, owner)
    response = await client.patch(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers,
                                  json={"redirect_uris": ["http://localhost:3000/cb", "https://new.example/cb"],
                                        "name": "Renamed"})
    assert response.status_code == 200
    assert response.json()["redirect_uris"] == ["http://localhost:3000/cb", "https://new.example/cb"]
    assert response.json()["name"] == "Renamed"


async def test_list_get_public_and_delete(client):
    owner = await register(client)
    other = await register(client)
    first = await create_app(client, owner, name="First")
    await create_app(client, owner, name="Second")
    listed = await client.get("/api/v1/users/@me/applications", headers=owner.headers)
    assert [a["name"] for a in listed.json()] == ["First", "Second"]
    assert (await client.get(f"/api/v1/oauth2/applications/{first.id}", headers=other.headers)).status_code == 404
    public = await client.get(f"/api/v1/oauth2/applications/{first.id}/public")
    assert public.status_code == 200 and "redirect_uris" not in public.json() and public.json()["verify_key"]
    assert (await client.delete(f"/api/v1/oauth2/applications/{first.id}", headers=other.headers)).status_code == 404
    assert (await client.delete(f"/api/v1/oauth2/applications/{first.id}", headers=owner.headers)).status_code == 204
    assert (await client.get(f"/api/v1/oauth2/applications/{first.id}/public")).status_code == 404


async def test_reset_client_secret_needs_password_and_kills_the_old_secret(client):
    owner = await register(client)
    app = await create_app(client, owner)
    url = f"/api/v1/oauth2/applications/{app.id}/client-secret/reset"
    assert (await client.post(url, json={"password": "wrong password"}, headers=owner.headers)).status_code == 403
    response = await client.post(url, json={"password": PASSWORD}, headers=owner.headers)
    assert response.status_code == 200
    new_secret = response.json()["client_secret"]
    old = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=app.basic)
    assert old.status_code == 401
    new = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=(app.id, new_secret))
    assert new.status_code == 200


async def test_at_most_25_applications(client):
    owner = await register(client)
    for index in range(25):
        await create_app(client, owner, name=f"app {index}", bot=False)
    response = await client.post("/api/v1/oauth2/applications", json={"name": "one too many"}, headers=owner.headers)
    assert response.status_code == 400 and response.json()["code"] == "MAX_APPLICATIONS"


async def test_bearer_tokens_cannot_manage_applications(client):
    owner = await register(client)
    app = await create_app(client, owner)
    tokens = await tokens_for(client, owner, app)
    response = await client.get("/api/v1/users/@me/applications", headers=bearer(tokens["access_token"]))
    assert response.status_code == 403 and response.json()["code"] == "ACCESS_DENIED"
    response = await client.get("/api/v1/users/@me/applications", headers={"Authorization": f"Bot {app.body['bot']['token']}"})
    assert response.status_code == 403
