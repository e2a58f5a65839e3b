"""The developer portal pages: create, edit, reset credentials (shown once, password
confirmed, CSRF-protected), delete, public clients and the OpenID Connect endpoints, and the
authorize-URL generator. The sections, Post/Redirect/Get and the flash: test_portal_pages.py."""

from __future__ import annotations

import io
import os
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from tests.api.test_authorize import browser_login
from tests.conftest import PASSWORD, create_app, csrf_of, query_of, register


async def test_portal_requires_login(client):
    response = await client.get("/developers/applications")
    assert response.status_code == 302 and response.headers["location"].startswith("/login?next=")
    assert (await client.get("/")).headers["location"] == "/developers/applications"


async def _confirmed(client, path: str, password: str = PASSWORD):
    """The confirmation page's form (GET), then its POST with ``password``."""
    page = await client.get(path)
    assert page.status_code == 200 and 'id="confirm-form"' in page.text
    return await client.post(path, data={"csrf_token": csrf_of(page.text), "password": password})


def _shown(html: str, element_id: str) -> str | None:
    match = re.search(rf'<code id="{element_id}">([^<]+)</code>', html)
    return match.group(1) if match else None


async def test_create_edit_reset_and_delete(client):
    await register(client, "dev")
    await browser_login(client, "dev")
    page = await client.get("/developers/applications")
    assert 'id="no-applications"' in page.text and page.headers["x-frame-options"] == "DENY"
    created = await client.post("/developers/applications", data={
        "csrf_token": csrf_of(page.text), "name": "Portal App", "redirect_uris": "https://p.example/cb\n", "bot": "1"})
    assert created.status_code == 303
    general = await client.get(created.headers["location"])
    secret, bot_token = _shown(general.text, "client-secret"), _shown(general.text, "bot-token")
    client_id = _shown(general.text, "client-id")
    token = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(client_id, secret))
    assert token.status_code == 200
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": f"Bot {bot_token}"})).status_code == 200

    app_page = await client.get(f"/developers/applications/{client_id}")
    assert secret not in app_page.text and bot_token not in app_page.text  # shown once only
    oauth2 = await client.get(f"/developers/applications/{client_id}/oauth2")
    bad = await client.post(f"/developers/applications/{client_id}/oauth2", data={
        "csrf_token": csrf_of(oauth2.text), "redirect_uris": "http://insecure.example/cb"})
    assert bad.status_code == 400 and "Redirect URIs: This redirect URI is not allowed" in bad.text
    assert "http://insecure.example/cb</textarea>" in bad.text  # what was typed stays in the box
    renamed = await client.post(f"/developers/applications/{client_id}", data={
        "csrf_token": csrf_of(app_page.text), "name": "Renamed", "description": "d"})
    assert renamed.status_code == 303
    saved = await client.post(f"/developers/applications/{client_id}/oauth2", data={
        "csrf_token": csrf_of(oauth2.text), "redirect_uris": "https://p.example/cb\nhttp://localhost:3000/cb",
        "id_token_signed_response_alg": "RS256"})
    assert saved.status_code == 303
    shown = await client.get(saved.headers["location"])
    assert "Renamed" in shown.text and "http://localhost:3000/cb" in shown.text

    wrong = await _confirmed(client, f"/developers/applications/{client_id}/reset-secret", "not my password")
    assert wrong.status_code == 403 and "Password confirmation failed." in wrong.text
    reset = await _confirmed(client, f"/developers/applications/{client_id}/reset-secret")
    assert reset.status_code == 303 and reset.headers["location"] == f"/developers/applications/{client_id}/oauth2"
    new_secret = _shown((await client.get(reset.headers["location"])).text, "client-secret")
    assert new_secret and new_secret != secret
    assert (await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(client_id, secret))).status_code == 401
    token_reset = await _confirmed(client, f"/developers/applications/{client_id}/reset-token")
    assert token_reset.headers["location"] == f"/developers/applications/{client_id}/bot"
    assert _shown((await client.get(token_reset.headers["location"])).text, "bot-token")
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": f"Bot {bot_token}"})).status_code == 401

    forged = await client.post(f"/developers/applications/{client_id}/delete", data={"csrf_token": "nope",
                                                                                      "password": PASSWORD})
    assert forged.status_code == 403
    deleted = await _confirmed(client, f"/developers/applications/{client_id}/delete")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/developers/applications"
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
    page = await client.get(f"/developers/applications/{app_id}/oauth2"
                            "?scope=identify&scope=bot&permission=KICK_MEMBERS&permission=SEND_MESSAGES")
    url = unescape(re.search(r'<code id="generated-url">([^<]+)</code>', page.text).group(1))
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"client_id": app_id, "scope": "identify bot", "response_type": "code",
                     "redirect_uri": "https://g.example/cb", "permissions": str((1 << 1) | (1 << 11))}
    opened = await client.get(url.removeprefix("http://testserver"))
    assert opened.status_code == 200 and "Gen" in opened.text  # the consent page of that app
    bot_only = await client.get(f"/developers/applications/{app_id}/oauth2?scope=bot")
    bot_url = unescape(re.search(r'<code id="generated-url">([^<]+)</code>', bot_only.text).group(1))
    assert "response_type" not in bot_url and "redirect_uri" not in bot_url


# --- public clients and OpenID Connect ---------------------------------------------------------

def _form(html: str, **fields) -> dict:
    """The OAuth2 section's form as the page fills it, with ``fields`` changed (an unticked box is absent)."""
    values = {"csrf_token": csrf_of(html), "redirect_uris": "https://s.example/cb",
              "id_token_signed_response_alg": "RS256", **fields}
    return {name: value for name, value in values.items() if value is not None}


async def test_mark_public_refuses_the_secret_reset_and_back(client):
    owner = await register(client, "pubdev")
    app = await create_app(client, owner, name="Sign In App", redirect_uris=["https://s.example/cb"])
    await browser_login(client, "pubdev")
    oauth2 = f"/developers/applications/{app.id}/oauth2"
    page = await client.get(oauth2)
    assert "Confidential client" in page.text and "/reset-secret" in page.text
    assert "mobile, desktop, single-page, command-line" in page.text  # what the checkbox is for

    saved = await client.post(oauth2, data=_form(page.text, public_client="1", id_token_signed_response_alg="ES256"))
    assert saved.status_code == 303 and saved.headers["location"] == oauth2 + "?saved=public"
    shown = await client.get(saved.headers["location"])
    assert "its client secret no longer works" in shown.text
    assert '<span class="badge">Public client</span>' in shown.text
    assert 'id="no-secret"' in shown.text and "/reset-secret" not in shown.text
    assert re.search(r'<option value="ES256" selected>', shown.text)
    body = (await client.get(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers)).json()
    assert body["public_client"] is True and body["id_token_signed_response_alg"] == "ES256"
    assert (await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=app.basic)).status_code == 401  # the secret it had is gone

    confirm = await client.get(f"/developers/applications/{app.id}/reset-secret")
    assert 'id="nothing-to-reset"' in confirm.text and 'id="confirm-form"' not in confirm.text
    refused = await client.post(f"/developers/applications/{app.id}/reset-secret",
                                data={"csrf_token": csrf_of(shown.text), "password": PASSWORD})
    assert refused.status_code == 400 and "A public client has no secret" in refused.text
    assert 'id="client-secret"' not in refused.text

    back = await client.post(oauth2, data=_form(shown.text))
    assert back.headers["location"] == oauth2 + "?saved=confidential"
    confidential = await client.get(back.headers["location"])
    assert "reset the client secret below" in confidential.text and "/reset-secret" in confidential.text
    reset = await _confirmed(client, f"/developers/applications/{app.id}/reset-secret")
    assert _shown((await client.get(reset.headers["location"])).text, "client-secret")


async def test_an_unknown_signing_algorithm_is_refused(client):
    owner = await register(client, "algdev")
    app = await create_app(client, owner, name="Sign In App", redirect_uris=["https://s.example/cb"])
    await browser_login(client, "algdev")
    page = await client.get(f"/developers/applications/{app.id}/oauth2")
    refused = await client.post(f"/developers/applications/{app.id}/oauth2",
                                data=_form(page.text, id_token_signed_response_alg="HS256"))
    assert refused.status_code == 400
    assert "id_token signing algorithm: Choose one of the offered algorithms." in refused.text


async def test_app_page_lists_the_openid_endpoints_of_the_discovery_document(client):
    owner = await register(client, "oidcdev")
    app = await create_app(client, owner)
    await browser_login(client, "oidcdev")
    page = await client.get(f"/developers/applications/{app.id}/oauth2")
    shown = dict(re.findall(r'<code id="oidc-([a-z_]+)">([^<]+)</code>', page.text))
    discovery = await client.get(shown["discovery"].removeprefix("http://testserver"))
    document = discovery.json()
    assert discovery.status_code == 200 and shown.pop("issuer") == document["issuer"] == "http://testserver"
    assert shown.pop("discovery") == "http://testserver/.well-known/openid-configuration"
    assert shown == {field: document[field] for field in ("authorization_endpoint", "token_endpoint",
                                                          "userinfo_endpoint", "jwks_uri",
                                                          "device_authorization_endpoint")}
    assert shown["device_authorization_endpoint"] == "http://testserver/api/v1/oauth2/device/authorize"
    assert page.text.count('class="copy" data-copy="oidc-') == 7


async def test_url_generator_offers_openid_and_says_pkce_is_required_for_a_public_client(client):
    owner = await register(client, "gendev")
    public = await create_app(client, owner, name="Phone App", public_client=True, bot=False)
    confidential = await create_app(client, owner, name="Web App")
    await browser_login(client, "gendev")
    page = await client.get(f"/developers/applications/{public.id}/oauth2?scope=openid&scope=email")
    assert 'value="openid"' in page.text
    url = unescape(re.search(r'<code id="generated-url">([^<]+)</code>', page.text).group(1))
    assert query_of(url)["scope"] == "email openid" and 'id="pkce-required"' in page.text
    other = await client.get(f"/developers/applications/{confidential.id}/oauth2?scope=openid")
    assert 'id="generated-url"' in other.text and 'id="pkce-required"' not in other.text


# --- the app icon ------------------------------------------------------------------------------

async def test_the_portal_uploads_and_removes_the_app_icon(client):
    """The page's script turns the chosen file into a data URI; the form posts it (a larger
    body than other forms: the edge allows it for this route and a browser with a session)."""
    from tests.api.test_images import data_uri

    owner = await register(client, "icondev")
    app = await create_app(client, owner)
    await browser_login(client, "icondev")
    page = await client.get(f"/developers/applications/{app.id}")
    assert 'id="icon-file"' in page.text and "/static/icon.js" in page.text
    noise = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(noise, "PNG")  # does not compress
    icon = data_uri(noise.getvalue())
    assert len(icon) > 64 * 1024  # above every other form's limit
    saved = await client.post(f"/developers/applications/{app.id}/icon",
                              data={"csrf_token": csrf_of(page.text), "action": "upload", "icon": icon})
    assert saved.status_code == 303 and saved.headers["location"].endswith("?saved=icon")
    body = (await client.get(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers)).json()
    assert body["icon"] and f"/icons/{app.id}/{body['icon']}.png" in (await client.get(saved.headers["location"])).text
    shown = await client.get(saved.headers["location"])
    refused = await client.post(f"/developers/applications/{app.id}/icon", data={
        "csrf_token": csrf_of(shown.text), "action": "upload", "icon": "data:image/svg+xml;base64,PHN2Zy8+"})
    assert refused.status_code == 400
    removed = await client.post(f"/developers/applications/{app.id}/icon",
                                data={"csrf_token": csrf_of(shown.text), "action": "remove"})
    assert removed.status_code == 303
    assert (await client.get(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers)).json()["icon"] is None


async def test_a_large_icon_form_without_a_session_is_413(client):
    owner = await register(client, "iconstranger")
    app = await create_app(client, owner)
    client.cookies.clear()
    response = await client.post(f"/developers/applications/{app.id}/icon", data={"icon": "x" * (100 * 1024)})
    assert response.status_code == 413
