"""The developer portal in sections (General information, OAuth2, Bot): each section's form
saves only its own fields; every successful POST answers 303 to a page (Post/Redirect/Get);
a new credential crosses the redirect in a sealed one-time cookie (web/flash.py) and is
shown once; destructive actions have confirmation pages; an operator's disabling shows; the
URL generator lives in the OAuth2 section."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.routing import Route

from fluxer_oauth.app import build_app
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.platform import admin
from fluxer_oauth.web import flash, portal
from tests.api.test_authorize import browser_login
from tests.backends import backend_settings
from tests.conftest import PASSWORD, SECRET_KEY, create_app, csrf_of, make_settings, register, shown

LIST = "/developers/applications"
TERMS = "https://client.example/terms"
PRIVACY = "https://client.example/privacy"


async def signed_in_owner(client, username: str = "sections", **fields):
    owner = await register(client, username)
    app = await create_app(client, owner, **fields)
    await browser_login(client, username)
    return owner, app


async def api_view(client, owner, app_id: str) -> dict:
    return (await client.get(f"/api/v1/oauth2/applications/{app_id}", headers=owner.headers)).json()


SECTION_FIELDS = {
    "general": ("name", "description", "terms_of_service_url", "privacy_policy_url"),
    "oauth2": ("redirect_uris", "public_client", "id_token_signed_response_alg"),
    "bot": ("bot_public", "bot_require_code_grant"),
}


# --- each section saves only its own fields ----------------------------------------------------

async def test_saving_each_section_leaves_the_other_sections_fields_as_they_were(client):
    owner, app = await signed_in_owner(
        client, name="Before", description="old words", redirect_uris=["https://a.example/cb", "https://b.example/cb"],
        terms_of_service_url=TERMS, privacy_policy_url=PRIVACY, bot_public=False, bot_require_code_grant=True,
        id_token_signed_response_alg="ES256")
    path = f"{LIST}/{app.id}"
    forms = {
        "general": (path, {"name": "After", "description": "new words", "terms_of_service_url": "",
                           "privacy_policy_url": "https://client.example/privacy-2"}),
        "oauth2": (path + "/oauth2", {"redirect_uris": "https://c.example/cb", "public_client": "1",
                                      "id_token_signed_response_alg": "RS256"}),
        "bot": (path + "/bot", {"bot_public": "1"}),  # require-code-grant unticked
    }
    for section, (url, fields) in forms.items():
        before = await api_view(client, owner, app.id)
        page = await client.get(url)
        saved = await client.post(url, data={"csrf_token": csrf_of(page.text), **fields})
        assert saved.status_code == 303, (section, saved.text)
        assert saved.headers["location"].startswith(url + "?saved=")
        after = await api_view(client, owner, app.id)
        for other, names in SECTION_FIELDS.items():
            if other != section:
                assert {n: after[n] for n in names} == {n: before[n] for n in names}, (section, other)
        assert {n: after[n] for n in SECTION_FIELDS[section]} != {n: before[n] for n in SECTION_FIELDS[section]}
    final = await api_view(client, owner, app.id)
    assert (final["name"], final["description"], final["terms_of_service_url"]) == ("After", "new words", None)
    assert final["redirect_uris"] == ["https://c.example/cb"] and final["public_client"] is True
    assert final["id_token_signed_response_alg"] == "RS256"
    assert (final["bot_public"], final["bot_require_code_grant"]) == (True, False)


async def test_a_refused_save_shows_the_section_again_with_what_was_typed(client):
    owner, app = await signed_in_owner(client)
    page = await client.get(f"{LIST}/{app.id}")
    refused = await client.post(f"{LIST}/{app.id}", data={"csrf_token": csrf_of(page.text), "name": "",
                                                          "description": "typed words"})
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    assert "Name: This is too short or too long." in refused.text  # a capitalised sentence, the field as labelled
    assert ">typed words</textarea>" in refused.text and 'aria-current="page">General information' in refused.text
    assert (await api_view(client, owner, app.id))["name"] == "Test App"


async def test_the_bot_section_of_an_application_without_a_bot_says_it_has_none(client):
    owner, app = await signed_in_owner(client, bot=False)
    page = await client.get(f"{LIST}/{app.id}/bot")
    assert page.status_code == 200 and 'id="no-bot"' in page.text and 'id="bot-form"' not in page.text
    assert "No bot" in page.text
    refused = await client.post(f"{LIST}/{app.id}/bot", data={"csrf_token": csrf_of(page.text), "bot_public": "1"})
    assert refused.status_code == 400 and "This application has no bot." in refused.text
    confirm = await client.get(f"{LIST}/{app.id}/reset-token")
    assert 'id="nothing-to-reset"' in confirm.text and 'id="confirm-form"' not in confirm.text


async def test_the_sections_are_links_with_the_current_one_marked(client):
    _owner, app = await signed_in_owner(client)
    for section, tail in portal.SECTION_PATHS.items():
        page = await client.get(f"{LIST}/{app.id}{tail}")
        assert page.status_code == 200
        current = re.findall(r'<a href="([^"]+)" id="tab-(\w+)" aria-current="page">', page.text)
        assert current == [(f"{LIST}/{app.id}{tail}", section)]
        assert len(re.findall(r'id="tab-\w+"', page.text)) == 3


# --- Post/Redirect/Get --------------------------------------------------------------------------

def _portal_posts(app) -> set[str]:
    return {route.path for route in app.routes
            if isinstance(route, Route) and "POST" in route.methods and route.path.startswith(LIST)}


async def test_every_successful_portal_post_answers_303_to_a_page(client, app):
    await register(client, "prg")
    await browser_login(client, "prg")
    listing = await client.get(LIST)
    created = await client.post(LIST, data={"csrf_token": csrf_of(listing.text), "name": "PRG", "bot": "1",
                                            "redirect_uris": "https://prg.example/cb"})
    app_id = created.headers["location"].rsplit("/", 1)[1]
    base = f"{LIST}/{app_id}"
    token = csrf_of(listing.text)
    posts = [
        (LIST, None, base),
        (base, {"name": "PRG 2", "description": ""}, base + "?saved=1"),
        (base + "/icon", {"action": "remove"}, base + "?saved=icon"),
        (base + "/oauth2", {"redirect_uris": "https://prg.example/cb"}, base + "/oauth2?saved=1"),
        (base + "/bot", {"bot_public": "1"}, base + "/bot?saved=1"),
        (base + "/reset-secret", {"password": PASSWORD}, base + "/oauth2"),
        (base + "/reset-token", {"password": PASSWORD}, base + "/bot"),
        (base + "/delete", {"password": PASSWORD}, LIST),
    ]
    assert {path.replace(app_id, "{application_id}") for path, _fields, _to in posts} == _portal_posts(app)
    posts[0] = (LIST, {"name": "Another", "redirect_uris": ""}, None)
    for path, fields, location in posts:
        response = await client.post(path, data={"csrf_token": token, **fields})
        assert response.status_code == 303, (path, response.text)
        if location is None:  # the new application's General page
            assert re.fullmatch(LIST + r"/\d+", response.headers["location"])
        else:
            assert response.headers["location"] == location, path
        landed = await client.get(response.headers["location"])
        assert landed.status_code == 200, path


async def test_the_old_url_generator_address_redirects_to_the_oauth2_section(client):
    _owner, app = await signed_in_owner(client)
    moved = await client.get(f"{LIST}/{app.id}/url-generator?scope=identify&scope=bot&permission=KICK_MEMBERS")
    assert moved.status_code == 302
    assert moved.headers["location"] == (f"{LIST}/{app.id}/oauth2?scope=identify&scope=bot&permission=KICK_MEMBERS"
                                         "#url-generator")
    bare = await client.get(f"{LIST}/{app.id}/url-generator")
    assert bare.status_code == 302 and bare.headers["location"] == f"{LIST}/{app.id}/oauth2#url-generator"


# --- the flash: new credentials shown once ------------------------------------------------------

async def _create(client, name="Flashy", **fields) -> httpx.Response:
    listing = await client.get(LIST)
    data = {"csrf_token": csrf_of(listing.text), "name": name, "redirect_uris": "https://f.example/cb", "bot": "1",
            **fields}
    created = await client.post(LIST, data=data)
    assert created.status_code == 303
    return created


async def test_the_new_credentials_are_shown_once_and_not_after_a_reload(client):
    await register(client, "flasher")
    await browser_login(client, "flasher")
    created = await _create(client)
    cookie = created.headers["set-cookie"]
    app_path = created.headers["location"]
    assert cookie.startswith(f"{flash.COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert f"Path={app_path};" in cookie + ";" and "Max-Age=120" in cookie and "Secure" not in cookie
    sealed = cookie.split(";", 1)[0].split("=", 1)[1]
    page = await client.get(app_path)
    secret, token = shown(page.text, "client-secret"), shown(page.text, "bot-token")
    assert secret and token and "Application created." in page.text
    assert secret not in sealed and token not in sealed  # the browser holds ciphertext only
    assert f'{flash.COOKIE}=""' in page.headers["set-cookie"] and "Max-Age=0" in page.headers["set-cookie"]
    reloaded = await client.get(app_path)
    assert secret not in reloaded.text and token not in reloaded.text and 'id="client-secret"' not in reloaded.text
    for section in ("/oauth2", "/bot"):  # nor on another section
        assert secret not in (await client.get(app_path + section)).text
    # The credentials work: it is the secret the application has.
    app_id = app_path.rsplit("/", 1)[1]
    assert (await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(app_id, secret))).status_code == 200


async def test_a_flash_cookie_is_not_readable_by_another_session(client, app):
    await register(client, "holder")
    await browser_login(client, "holder")
    created = await _create(client)
    sealed = created.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    app_path = created.headers["location"]
    # The same account signed in again elsewhere: another session, same application.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as other:
        await browser_login(other, "holder")
        page = await other.get(app_path, headers={"Cookie": f"fluxer_session={other.cookies['fluxer_session']}; "
                                                            f"{flash.COOKIE}={sealed}"})
        assert page.status_code == 200 and 'id="client-secret"' not in page.text
        assert "Application created." not in page.text
    # Its own session still reads it (the cookie was not spent by the other one).
    assert shown((await client.get(app_path)).text, "client-secret")


async def test_a_tampered_or_foreign_flash_cookie_is_ignored(client):
    await register(client, "tamperer")
    await browser_login(client, "tamperer")
    first = await _create(client, "First")
    second = await _create(client, "Second")
    sealed = first.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    session = client.cookies["fluxer_session"]
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    for value in (flipped, sealed[:-4], "garbage", "", "x" * 5000):
        page = await client.get(first.headers["location"],
                                headers={"Cookie": f"fluxer_session={session}; {flash.COOKIE}={value}"})
        assert page.status_code == 200 and 'id="client-secret"' not in page.text, value[:30]
    # A flash sealed for one application is not shown on another's page.
    other = await client.get(second.headers["location"],
                             headers={"Cookie": f"fluxer_session={session}; {flash.COOKIE}={sealed}"})
    assert 'id="client-secret"' not in other.text


def test_a_sealed_flash_opens_only_for_its_session_and_scope_and_in_time():
    secret, now = SECRET_KEY.encode(), time.time()
    sealed = flash.seal(secret, "session-a", "42", {"credentials": [["client_secret", "s3cret"]]}, now=now)
    assert flash.unseal(secret, "session-a", "42", sealed, now=now) == {"credentials": [["client_secret", "s3cret"]]}
    assert flash.unseal(secret, "session-b", "42", sealed, now=now) is None
    assert flash.unseal(secret, None, "42", sealed, now=now) is None
    assert flash.unseal(secret, "session-a", "43", sealed, now=now) is None
    assert flash.unseal(secret, "session-a", "42", sealed, now=now + flash.MAX_AGE + 1) is None
    assert flash.unseal(b"another server secret", "session-a", "42", sealed, now=now) is None
    assert "s3cret" not in sealed


async def test_the_flash_cookie_is_secure_on_https(database_url, redis_prefix):
    settings = make_settings(database_url, redis_prefix=redis_prefix, **backend_settings(),
                             public_url="https://testserver")
    application = build_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                                     base_url="https://testserver") as client:
            await register(client, "secure")
            await browser_login(client, "secure")
            created = await _create(client)
            assert "Secure" in created.headers["set-cookie"]
            assert shown((await client.get(created.headers["location"])).text, "client-secret")
    finally:
        await application.state.runtime.db.close()


async def test_a_reset_shows_the_new_credential_once_on_its_section(client):
    _owner, app = await signed_in_owner(client)
    reset = await _confirm(client, f"{LIST}/{app.id}/reset-token")
    page = await client.get(reset.headers["location"])
    token = shown(page.text, "bot-token")
    assert token and "Bot token reset. The old one no longer works." in page.text
    assert 'aria-current="page">Bot' in page.text
    assert token not in (await client.get(reset.headers["location"])).text


# --- confirmation pages ---------------------------------------------------------------------------

async def _confirm(client, path: str, password: str = PASSWORD) -> httpx.Response:
    page = await client.get(path)
    return await client.post(path, data={"csrf_token": csrf_of(page.text), "password": password})


@pytest.mark.parametrize("action,says,cancel", [
    ("reset-secret", "The current secret stops working at once", "/oauth2"),
    ("reset-token", "the bot disconnects until it uses the new token", "/bot"),
    ("delete", "Its bot leaves every server it is in.", ""),
])
async def test_a_confirmation_page_explains_and_asks_for_the_password(client, action, says, cancel):
    _owner, app = await signed_in_owner(client)
    section = await client.get(f"{LIST}/{app.id}{portal.SECTION_PATHS[portal.CONFIRM_SECTIONS[action]]}")
    assert f'href="{LIST}/{app.id}/{action}"' in section.text  # the section links to it (a GET)
    assert f'action="{LIST}/{app.id}/{action}"' not in section.text  # no direct POST form on the section
    page = await client.get(f"{LIST}/{app.id}/{action}")
    assert page.status_code == 200 and says in page.text
    assert 'type="password"' in page.text and "Your Fluxer account password, to confirm it is you." in page.text
    assert re.search(rf'<a href="{LIST}/{app.id}{cancel}" class="button" id="cancel">Cancel</a>', page.text)
    if action == "delete":
        assert "This cannot be undone." in page.text and "every token and authorization" in page.text.lower()
    wrong = await _confirm(client, f"{LIST}/{app.id}/{action}", "wrong password")
    assert wrong.status_code == 403 and "Password confirmation failed." in wrong.text
    assert 'id="confirm-form"' in wrong.text  # the page again, to try once more
    assert (await client.get(f"{LIST}/{app.id}")).status_code == 200  # nothing happened


async def test_deleting_lands_on_the_list_with_a_notice_shown_once(client):
    owner, app = await signed_in_owner(client, name="<b>Doomed</b> & co")
    deleted = await _confirm(client, f"{LIST}/{app.id}/delete")
    assert deleted.status_code == 303 and deleted.headers["location"] == LIST
    assert f"Path={LIST};" in deleted.headers["set-cookie"]
    listing = await client.get(LIST)
    assert "Application &lt;b&gt;Doomed&lt;/b&gt; &amp; co deleted." in listing.text  # escaped on output
    assert "<b>Doomed</b>" not in listing.text
    assert "deleted." not in (await client.get(LIST)).text  # once
    assert (await client.get(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers)).status_code == 404


async def test_confirmation_pages_of_someone_elses_application_are_not_found(client):
    owner = await register(client, "victim")
    app = await create_app(client, owner)
    await register(client, "stranger")
    await browser_login(client, "stranger")
    for action in ("reset-secret", "reset-token", "delete", "oauth2", "bot"):
        assert (await client.get(f"{LIST}/{app.id}/{action}")).status_code == 404
    page = await client.get(LIST)
    refused = await client.post(f"{LIST}/{app.id}/delete", data={"csrf_token": csrf_of(page.text),
                                                                  "password": PASSWORD})
    assert refused.status_code == 404
    assert (await api_view(client, owner, app.id))["id"] == app.id


# --- an operator's disabling ------------------------------------------------------------------------

async def test_a_disabled_application_says_so_on_every_page_and_in_the_list(client, rt):
    _owner, app = await signed_in_owner(client)
    before = await client.get(f"{LIST}/{app.id}")
    assert 'id="disabled-banner"' not in before.text
    await admin.set_application_disabled(rt, None, int(app.id), True)
    for tail in ("", "/oauth2", "/bot", "/reset-secret", "/reset-token", "/delete"):
        page = await client.get(f"{LIST}/{app.id}{tail}")
        assert 'id="disabled-banner"' in page.text, tail
        assert ("An operator disabled this application: nobody can authorize it and its credentials are refused. "
                "Contact support.") in page.text
    listing = await client.get(LIST)
    item = re.search(rf'data-application-id="{app.id}">(.*?)</li>', listing.text, re.S).group(1)
    assert '<span class="badge badge-danger">Disabled</span>' in item
    assert "Confidential client" in item and ">Bot<" in item


async def test_the_list_shows_client_type_and_bot(client):
    owner = await register(client, "lister")
    public = await create_app(client, owner, name="Phone", public_client=True, bot=False)
    await browser_login(client, "lister")
    listing = await client.get(LIST)
    item = re.search(rf'data-application-id="{public.id}">(.*?)</li>', listing.text, re.S).group(1)
    assert "Public client" in item and "No bot" in item and "Disabled" not in item


# --- the URL generator, server side ---------------------------------------------------------------------

def _generated(html: str) -> dict | None:
    url = shown(html, "generated-url")
    if url is None:
        return None
    assert url.startswith("http://testserver/oauth2/authorize?")
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def test_the_generator_is_in_the_oauth2_section_with_the_link_before_the_boxes(client):
    _owner, app = await signed_in_owner(client, redirect_uris=["https://g.example/cb", "https://g.example/other"])
    page = await client.get(f"{LIST}/{app.id}/oauth2?scope=bot&scope=guilds&permission=ADMINISTRATOR"
                            "&permission=VIEW_CHANNEL_MEMBERS&redirect_uri=https://g.example/other")
    text = page.text
    assert text.index('id="generated-url"') < text.index('name="scope"') < text.index('name="permission"')
    assert _generated(text) == {"client_id": app.id, "scope": "guilds bot", "response_type": "code",
                                "redirect_uri": "https://g.example/other",
                                "permissions": str(PERMISSIONS["ADMINISTRATOR"] | PERMISSIONS["VIEW_CHANNEL_MEMBERS"])}
    # What the script rebuilds the link from.
    form = re.search(r'<form method="get"[^>]*id="generator-form"[^>]*>', text, re.S).group(0)
    assert f'data-client-id="{app.id}"' in form and 'data-authorize-url="http://testserver/oauth2/authorize"' in form
    bits = dict(re.findall(r'name="permission" value="(\w+)" data-bit="(\d+)"', text))
    assert {name: int(bit) for name, bit in bits.items()} == PERMISSIONS
    # Labels as Discord names them, in groups; the Administrator box carries a warning.
    assert re.search(r'value="MANAGE_GUILD"[^>]*> Manage Server</label>', text)
    assert re.search(r'value="ADMINISTRATOR"[^>]*aria-describedby="administrator-warning"', text)
    assert 'id="administrator-warning"' in text
    for heading in ("General permissions", "Text permissions", "Voice permissions"):
        assert heading in text
    assert "/static/url-generator.js" in text


async def test_the_generator_without_scopes_or_redirect_uri_explains_instead(client):
    _owner, app = await signed_in_owner(client, redirect_uris=[])
    empty = await client.get(f"{LIST}/{app.id}/oauth2")
    assert _generated(empty.text) is None
    assert re.search(r'<p class="muted" id="generated-empty">', empty.text)  # shown, not hidden
    needs_redirect = await client.get(f"{LIST}/{app.id}/oauth2?scope=identify")
    assert re.search(r'<p class="error" id="generated-error">Add a redirect URI', needs_redirect.text)
    assert _generated(needs_redirect.text) is None
    bot_only = await client.get(f"{LIST}/{app.id}/oauth2?scope=bot&permission=SEND_MESSAGES")
    assert _generated(bot_only.text) == {"client_id": app.id, "scope": "bot",
                                         "permissions": str(PERMISSIONS["SEND_MESSAGES"])}


def test_generated_url_follows_the_rules_the_script_copies():
    view = {"id": "7", "public_client": True}
    url, error, pkce = portal.generated_url("https://f.example", view, ["identify", "openid"], [],
                                            "http://localhost:3000/cb?a=b c*~")
    assert error is None and pkce is True
    assert url == ("https://f.example/oauth2/authorize?client_id=7&scope=identify+openid&response_type=code"
                   "&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcb%3Fa%3Db+c%2A~")
    assert portal.generated_url("https://f.example", view, [], ["ADMINISTRATOR"], None) == (None, None, False)
    url, error, pkce = portal.generated_url("https://f.example", view, ["bot"], ["ADMINISTRATOR", "KICK_MEMBERS"], None)
    assert url == "https://f.example/oauth2/authorize?client_id=7&scope=bot&permissions=10" and not pkce
