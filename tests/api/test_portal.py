"""The developer portal pages: create, edit, reset credentials (shown once, password
confirmed, CSRF-protected), delete, and the authorize-URL generator."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

from tests.api.test_authorize import browser_login
from tests.conftest import PASSWORD, register


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def test_portal_requires_login(client):
    response = await client.get("/developers/applications")
    assert response.status_code == 302 and response.headers["location"].startswith("/login?next=")
    assert (await client.get("/")).headers["location"] == "/developers/applications"


async def test_create_edit_reset_and_delete(client):
    await register(client, "dev")
    await browser_login(client, "dev")
    page = await client.get("/developers/applications")
    assert 'id="no-applications"' in page.text and page.headers["x-frame-options"] == "DENY"
    created = await client.post("/developers/applications", data={
        "csrf_token": csrf_of(page.text), "name": "Portal App", "redirect_uris": "https://p.example/cb\n", "bot": "1"})
    assert created.status_code == 200
    secret = re.search(r'<code id="client-secret">([^<]+)</code>', created.text).group(1)
    bot_token = re.search(r'<code id="bot-token">([^<]+)</code>', created.text).group(1)
    client_id = re.search(r'<code id="client-id">(\d+)</code>', created.text).group(1)
    token = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert token.status_code == 200
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": f"Bot {bot_token}"})).status_code == 200

    app_page = await client.get(f"/developers/applications/{client_id}")
    assert secret not in app_page.text and bot_token not in app_page.text  # shown once only
    bad = await client.post(f"/developers/applications/{client_id}", data={
        "csrf_token": csrf_of(app_page.text), "name": "Renamed", "redirect_uris": "http://insecure.example/cb"})
    assert bad.status_code == 400 and "redirect_uris.0" in bad.text
    saved = await client.post(f"/developers/applications/{client_id}", data={
        "csrf_token": csrf_of(app_page.text), "name": "Renamed", "description": "d",
        "redirect_uris": "https://p.example/cb\nhttp://localhost:3000/cb", "bot_public": "1"})
    assert saved.status_code == 303
    shown = await client.get(saved.headers["location"])
    assert "Renamed" in shown.text and "http://localhost:3000/cb" in shown.text

    wrong = await client.post(f"/developers/applications/{client_id}/reset-secret",
                              data={"csrf_token": csrf_of(shown.text), "password": "not my password"})
    assert wrong.status_code == 403
    reset = await client.post(f"/developers/applications/{client_id}/reset-secret",
                              data={"csrf_token": csrf_of(shown.text), "password": PASSWORD})
    new_secret = re.search(r'<code id="client-secret">([^<]+)</code>', reset.text).group(1)
    assert new_secret != secret
    assert (await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(client_id, secret))).status_code == 401
    token_reset = await client.post(f"/developers/applications/{client_id}/reset-token",
                                    data={"csrf_token": csrf_of(shown.text), "password": PASSWORD})
    assert re.search(r'<code id="bot-token">([^<]+)</code>', token_reset.text)
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": f"Bot {bot_token}"})).status_code == 401

    forged = await client.post(f"/developers/applications/{client_id}/delete", data={"csrf_token": "nope"})
    assert forged.status_code == 403
    deleted = await client.post(f"/developers/applications/{client_id}/delete", data={"csrf_token": csrf_of(shown.text)})
    assert deleted.status_code == 303
    assert (await client.get(f"/developers/applications/{client_id}")).status_code == 404


async def test_other_users_application_is_not_found(client):
    owner = await register(client, "owner2")
    created = await client.post("/api/v1/oauth2/applications", json={"name": "Mine"}, headers=owner.headers)
    await register(client, "stranger")
    await browser_login(client, "stranger")
    assert (await client.get(f"/developers/applications/{created.json()['id']}")).status_code == 404


async def test_url_generator_builds_a_working_authorize_link(client):
    owner = await register(client, "gen")
    created = await client.post("/api/v1/oauth2/applications", headers=owner.headers,
                                json={"name": "Gen", "redirect_uris": ["https://g.example/cb"]})
    app_id = created.json()["id"]
    await browser_login(client, "gen")
    page = await client.get(f"/developers/applications/{app_id}/url-generator"
                            "?scope=identify&scope=bot&permission=KICK_MEMBERS&permission=SEND_MESSAGES")
    url = unescape(re.search(r'<code id="generated-url">([^<]+)</code>', page.text).group(1))
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"client_id": app_id, "scope": "identify bot", "response_type": "code",
                     "redirect_uri": "https://g.example/cb", "permissions": str((1 << 1) | (1 << 11))}
    opened = await client.get(url.removeprefix("http://testserver"))
    assert opened.status_code == 200 and "Gen" in opened.text  # the consent page of that app
    bot_only = await client.get(f"/developers/applications/{app_id}/url-generator?scope=bot")
    bot_url = unescape(re.search(r'<code id="generated-url">([^<]+)</code>', bot_only.text).group(1))
    assert "response_type" not in bot_url and "redirect_uri" not in bot_url
