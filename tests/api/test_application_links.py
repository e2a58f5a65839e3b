"""An application's terms-of-service and privacy-policy links (issue 20): absolute https
only, through the API and the portal, public, and linked on the consent pages."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlencode

import pytest
from sqlalchemy import update

from fluxer_oauth.store.tables import applications, guilds, users

from tests.api.test_authorize import authorize_url, browser_login
from tests.api.test_device import activate, started
from tests.api.test_portal import csrf_of
from tests.conftest import create_app, register

TERMS = "https://client.example/terms?lang=en#use"
PRIVACY = "https://client.example/privacy"
APPS = "/api/v1/oauth2/applications"

REFUSED = [
    ("http://client.example/terms", "URL_TYPE_INVALID_SCHEME"),
    ("javascript:alert(1)", "URL_TYPE_INVALID_SCHEME"),
    ("JavaScript://client.example/%0aalert(1)", "URL_TYPE_INVALID_SCHEME"),
    ("data:text/html,hi", "URL_TYPE_INVALID_SCHEME"),
    ("/terms", "URL_TYPE_INVALID_SCHEME"),
    ("//client.example/terms", "URL_TYPE_INVALID_SCHEME"),
    ("client.example/terms", "URL_TYPE_INVALID_SCHEME"),
    ("https:/client.example/terms", "URL_TYPE_INVALID_URL"),
    ("https:client.example", "URL_TYPE_INVALID_URL"),
    ("https://", "URL_TYPE_INVALID_URL"),
    ("https:///terms", "URL_TYPE_INVALID_URL"),
    ("https://fluxer.app@evil.example/terms", "URL_TYPE_INVALID_URL"),
    ("https://user:pass@client.example/", "URL_TYPE_INVALID_URL"),
    ("https://client.example:99999/", "URL_TYPE_INVALID_URL"),
    ("https://client.example:/", "URL_TYPE_INVALID_URL"),
    ("https://client example/", "URL_TYPE_INVALID_URL"),
    ("https://client.example/te rms", "URL_TYPE_INVALID_URL"),
    ("https://client.example/\nterms", "URL_TYPE_INVALID_URL"),
    ("https://client.example\\@evil.example/", "URL_TYPE_INVALID_URL"),
    ("https://clíent.example/", "URL_TYPE_INVALID_URL"),
    ("https://%65vil.example/", "URL_TYPE_INVALID_URL"),
    ("https://client.example/" + "a" * 2030, "BASE_TYPE_MAX_LENGTH"),
]


async def test_links_are_saved_public_and_removed(client):
    owner = await register(client)
    app = await create_app(client, owner, terms_of_service_url=TERMS, privacy_policy_url=f"  {PRIVACY} ")
    assert (app.body["terms_of_service_url"], app.body["privacy_policy_url"]) == (TERMS, PRIVACY)
    public = (await client.get(f"{APPS}/{app.id}/public")).json()
    assert (public["terms_of_service_url"], public["privacy_policy_url"]) == (TERMS, PRIVACY)
    listed = (await client.get("/api/v1/users/@me/applications", headers=owner.headers)).json()
    assert listed[0]["terms_of_service_url"] == TERMS

    # Absent: unchanged. null or "": removed.
    renamed = await client.patch(f"{APPS}/{app.id}", headers=owner.headers, json={"name": "Renamed"})
    assert renamed.status_code == 200 and renamed.json()["terms_of_service_url"] == TERMS
    removed = await client.patch(f"{APPS}/{app.id}", headers=owner.headers,
                                 json={"terms_of_service_url": None, "privacy_policy_url": ""})
    assert removed.status_code == 200
    assert (removed.json()["terms_of_service_url"], removed.json()["privacy_policy_url"]) == (None, None)
    longest = "https://client.example/" + "a" * (2048 - len("https://client.example/"))
    readded = await client.patch(f"{APPS}/{app.id}", headers=owner.headers, json={"privacy_policy_url": longest})
    assert readded.status_code == 200 and readded.json()["privacy_policy_url"] == longest
    fetched = (await client.get(f"{APPS}/{app.id}", headers=owner.headers)).json()
    assert (fetched["terms_of_service_url"], fetched["privacy_policy_url"]) == (None, longest)

    without = await create_app(client, owner)
    assert (without.body["terms_of_service_url"], without.body["privacy_policy_url"]) == (None, None)


@pytest.mark.parametrize(("url", "code"), REFUSED)
async def test_only_absolute_https_links_are_accepted(client, url, code):
    owner = await register(client)
    created = await client.post(APPS, headers=owner.headers,
                                json={"name": "x", "terms_of_service_url": url, "privacy_policy_url": url})
    assert created.status_code == 400
    assert [(e["path"], e["code"]) for e in created.json()["errors"]] == [
        ("terms_of_service_url", code), ("privacy_policy_url", code)]

    app = await create_app(client, owner, privacy_policy_url=PRIVACY)
    patched = await client.patch(f"{APPS}/{app.id}", headers=owner.headers, json={"privacy_policy_url": url})
    assert patched.status_code == 400 and patched.json()["code"] == "INVALID_FORM_BODY"
    assert [(e["path"], e["code"]) for e in patched.json()["errors"]] == [("privacy_policy_url", code)]
    kept = (await client.get(f"{APPS}/{app.id}", headers=owner.headers)).json()
    assert kept["privacy_policy_url"] == PRIVACY


async def test_a_link_must_be_text(client):
    owner = await register(client)
    response = await client.post(APPS, headers=owner.headers, json={"name": "x", "terms_of_service_url": 1})
    assert response.status_code == 400


# --- the portal ------------------------------------------------------------------------------

async def _portal_app(client) -> tuple[str, str]:
    owner = await register(client, "linkdev")
    app = await create_app(client, owner, name="Linked")
    await browser_login(client, "linkdev")
    return app.id, f"/developers/applications/{app.id}"


def _settings(csrf: str, **fields) -> dict:
    return {"csrf_token": csrf, "name": "Linked", "redirect_uris": "https://client.example/callback", **fields}


async def test_portal_edits_and_removes_the_links(client):
    app_id, url = await _portal_app(client)
    page = await client.get(url)
    assert 'id="terms_of_service_url"' in page.text and 'id="privacy_policy_url"' in page.text
    saved = await client.post(url, data=_settings(csrf_of(page.text), terms_of_service_url=TERMS,
                                                  privacy_policy_url=PRIVACY))
    assert saved.status_code == 303
    shown = await client.get(saved.headers["location"])
    value = re.search(r'id="terms_of_service_url"[^>]*value="([^"]*)"', shown.text).group(1)
    assert unescape(value) == TERMS
    assert f'value="{PRIVACY}"' in shown.text
    public = (await client.get(f"{APPS}/{app_id}/public")).json()
    assert (public["terms_of_service_url"], public["privacy_policy_url"]) == (TERMS, PRIVACY)

    cleared = await client.post(url, data=_settings(csrf_of(shown.text), terms_of_service_url="",
                                                    privacy_policy_url=PRIVACY))
    assert cleared.status_code == 303
    public = (await client.get(f"{APPS}/{app_id}/public")).json()
    assert (public["terms_of_service_url"], public["privacy_policy_url"]) == (None, PRIVACY)


@pytest.mark.parametrize("bad", ["http://client.example/terms", "javascript:alert(1)", "/terms",
                                 "https://client.example/" + "a" * 5000])
async def test_portal_refuses_a_link_that_is_not_https_and_keeps_the_old(client, bad):
    app_id, url = await _portal_app(client)
    page = await client.get(url)
    await client.post(url, data=_settings(csrf_of(page.text), terms_of_service_url=TERMS))
    refused = await client.post(url, data=_settings(csrf_of(page.text), terms_of_service_url=bad))
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    assert "Terms of Service URL: " in refused.text  # the field as the form labels it
    assert (await client.get(f"{APPS}/{app_id}/public")).json()["terms_of_service_url"] == TERMS


async def test_portal_refuses_a_link_with_control_characters(client):
    app_id, url = await _portal_app(client)
    page = await client.get(url)
    refused = await client.post(url, data=_settings(csrf_of(page.text), privacy_policy_url="https://a.example/\x01"))
    assert refused.status_code == 400 and "Privacy Policy URL: This is not a well formed URL." in refused.text
    assert (await client.get(f"{APPS}/{app_id}/public")).json()["privacy_policy_url"] is None


# --- the consent pages -----------------------------------------------------------------------

def _links(html: str) -> dict[str, str]:
    """id -> the whole <a> tag of the consent page's legal links."""
    tags = re.finditer(r'<a href="[^"]*" id="(terms-link|privacy-link)"[^>]*>', html)
    return {match.group(1): match.group(0) for match in tags}


async def test_consent_page_links_the_terms_and_privacy_policy(client):
    owner = await register(client, "owner")
    app = await create_app(client, owner, name="Linked App", terms_of_service_url=TERMS, privacy_policy_url=PRIVACY)
    await register(client, "reader")
    await browser_login(client, "reader")
    page = await client.get(authorize_url(app.id))
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page.text))
    assert "By authorizing, you agree to Linked App’s Terms of Service (opens in a new tab) and Privacy Policy" in text
    links = _links(page.text)
    assert set(links) == {"terms-link", "privacy-link"}
    for tag, href in ((links["terms-link"], TERMS), (links["privacy-link"], PRIVACY)):
        assert unescape(re.search(r'href="([^"]*)"', tag).group(1)) == href
        assert 'target="_blank"' in tag and 'rel="noopener noreferrer"' in tag

    # One link alone reads right; none at all: no sentence.
    await client.patch(f"{APPS}/{app.id}", headers=owner.headers, json={"terms_of_service_url": None})
    page = await client.get(authorize_url(app.id))
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page.text))
    assert "you agree to Linked App’s Privacy Policy (opens in a new tab)." in text
    assert set(_links(page.text)) == {"privacy-link"}
    await client.patch(f"{APPS}/{app.id}", headers=owner.headers, json={"privacy_policy_url": None})
    page = await client.get(authorize_url(app.id))
    assert 'id="app-links"' not in page.text and not _links(page.text)


async def test_device_consent_links_them_too(client):
    owner = await register(client, "devowner")
    app = await create_app(client, owner, name="Living Room TV", terms_of_service_url=TERMS)
    await register(client, "viewer")
    await browser_login(client, "viewer")
    pair = await started(client, app)
    shown = await activate(client, pair["user_code"], "continue")
    assert shown.status_code == 200 and 'id="device-code"' in shown.text
    assert set(_links(shown.text)) == {"terms-link"} and 'id="app-links"' in shown.text


# --- icons and avatars on the pages ----------------------------------------------------------

ICON = "0123456789abcdef0123456789abcdef"
AVATAR = "fedcba9876543210fedcba9876543210"


async def _set_images(rt, *, app_id=None, user_id=None, guild_id=None) -> None:
    """Image hashes written as an upload leaves them (the upload itself is tested elsewhere)."""
    async with rt.db.write() as conn:
        if app_id is not None:
            await conn.execute(update(applications).where(applications.c.id == int(app_id)).values(icon=ICON))
        if user_id is not None:
            await conn.execute(update(users).where(users.c.id == int(user_id)).values(avatar=AVATAR))
        if guild_id is not None:
            await conn.execute(update(guilds).where(guilds.c.id == int(guild_id)).values(icon=ICON))


def _img(html: str, element_id: str) -> dict[str, str] | None:
    tag = re.search(rf'<img [^>]*id="{element_id}"[^>]*>', html)
    return None if tag is None else {k: unescape(v) for k, v in re.findall(r'(\w+)="([^"]*)"', tag.group(0))}


async def test_consent_page_shows_the_app_icon_and_the_users_avatar(client, rt):
    owner = await register(client, "owner")
    app = await create_app(client, owner, name="Pictured App")
    person = await register(client, "pictured")
    await browser_login(client, "pictured")
    page = await client.get(authorize_url(app.id))
    # None yet: the letter circles.
    assert _img(page.text, "app-icon") is None and _img(page.text, "user-avatar") is None
    assert re.search(r'<span class="picture px64 letter" aria-hidden="true" id="app-icon">P</span>', page.text)
    assert re.search(r'<span class="picture px64 letter person" aria-hidden="true" id="user-avatar">P</span>',
                     page.text)

    await _set_images(rt, app_id=app.id, user_id=person.id)
    page = await client.get(authorize_url(app.id))
    icon, avatar = _img(page.text, "app-icon"), _img(page.text, "user-avatar")
    assert icon["src"] == f"http://testserver/icons/{app.id}/{ICON}.png?size=64"
    assert icon["srcset"] == f"http://testserver/icons/{app.id}/{ICON}.png?size=128 2x"
    assert avatar["src"] == f"http://testserver/avatars/{person.id}/{AVATAR}.png?size=64"
    assert avatar["srcset"] == f"http://testserver/avatars/{person.id}/{AVATAR}.png?size=128 2x"
    assert icon["alt"] == avatar["alt"] == "" and icon["width"] == "64"
    # Same origin: what the pages' CSP lets load.
    assert "img-src 'self' data:" in page.headers["content-security-policy"]


async def test_authorized_apps_and_portal_show_the_app_icon(client, rt):
    owner = await register(client, "iconowner")
    app = await create_app(client, owner, name="Iconic")
    await _set_images(rt, app_id=app.id)
    await browser_login(client, "iconowner")
    await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers, json={
        "client_id": app.id, "scope": "identify", "authorize": True, "response_type": "code",
        "redirect_uri": "https://client.example/callback"})
    icon = f"http://testserver/icons/{app.id}/{ICON}.png"
    settings = await client.get("/settings/authorized-apps")
    assert f'src="{icon}?size=64" srcset="{icon}?size=128 2x" width="40"' in settings.text
    listed = await client.get("/developers/applications")
    assert f'src="{icon}?size=32" srcset="{icon}?size=64 2x" width="32"' in listed.text
    shown = await client.get(f"/developers/applications/{app.id}")
    assert _img(shown.text, "app-icon")["src"] == f"{icon}?size=64"


async def test_the_server_picker_shows_each_servers_icon(client, rt):
    owner = await register(client, "guildowner")
    app = await create_app(client, owner, name="Bot")
    guild = (await client.post("/api/v1/guilds", headers=owner.headers, json={"name": "Garden"})).json()
    await _set_images(rt, guild_id=guild["id"])
    await browser_login(client, "guildowner")
    query = {"client_id": app.id, "scope": "bot", "guild_id": guild["id"]}
    icon = f"http://testserver/icons/{guild['id']}/{ICON}.png?size=32"
    chosen = await client.get("/oauth2/authorize?" + urlencode(query))
    assert _img(chosen.text, f"guild-icon-{guild['id']}")["src"] == icon  # each server's row has its icon
    locked = await client.get("/oauth2/authorize?" + urlencode({**query, "disable_guild_select": "true"}))
    assert _img(locked.text, f"guild-icon-{guild['id']}")["src"] == icon
