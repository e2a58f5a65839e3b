"""The account pages over HTTP: sign-up (/signup), the signed-in bar every signed-in page
shows, and the authorized apps with their revoke confirmation."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest

from fluxer_oauth.app import build_app
from tests.api.test_authorize import browser_login
from tests.conftest import PASSWORD, create_app, csrf_of, register, tokens_for

CB = "https://client.example/callback"


def input_tag(html: str, field_id: str) -> str:
    return re.search(rf'<input id="{field_id}"[^>]*>', html).group(0)


async def sign_up(client: httpx.AsyncClient, next_url: str | None = None, **fields) -> httpx.Response:
    page = await client.get("/signup" + (f"?next={quote(next_url, safe='')}" if next_url else ""))
    assert page.status_code == 200
    data = {"csrf_token": csrf_of(page.text), "next": next_url or "/", "username": "newcomer",
            "email": "newcomer@example.com", "password": PASSWORD, "password_confirm": PASSWORD, **fields}
    return await client.post("/signup", data=data)


async def api_login(client, login: str, password: str = PASSWORD) -> int:
    response = await client.post("/api/v1/auth/login", json={"login": login, "password": password})
    return response.status_code


# --- sign-up -------------------------------------------------------------------------------------

async def test_signing_up_creates_the_account_and_signs_in_like_a_login(client):
    response = await sign_up(client, "/settings/authorized-apps")
    assert response.status_code == 303 and response.headers["location"] == "/settings/authorized-apps"
    cookie = response.headers["set-cookie"]
    assert "fluxer_session=flx_" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    me = await client.get("/api/v1/users/@me", headers={"Authorization": client.cookies["fluxer_session"]})
    assert me.status_code == 200 and me.json()["username"] == "newcomer"
    assert me.json()["email"] == "newcomer@example.com"
    assert await api_login(client, "newcomer") == 200
    page = await client.get("/settings/authorized-apps")
    assert page.status_code == 200 and "Signed in as <strong>newcomer</strong>" in page.text


async def test_sign_up_leads_back_to_the_authorization_request(client):
    owner = await register(client, "requester")
    app = await create_app(client, owner)
    request = "/oauth2/authorize?" + urlencode({"client_id": app.id, "response_type": "code", "scope": "identify",
                                                "redirect_uri": CB, "state": "s1"})
    login = await client.get(request)
    assert login.status_code == 302
    login_page = await client.get(login.headers["location"])
    link = unescape(re.search(r'id="signup-link">[^<]*<a href="([^"]+)"', login_page.text).group(1))
    assert urlsplit(link).path == "/signup" and dict(parse_qsl(urlsplit(link).query))["next"] == request
    signup_page = await client.get(link)
    assert unescape(re.search(r'name="next" value="([^"]+)"', signup_page.text).group(1)) == request
    response = await sign_up(client, request)
    back = response.headers["location"]
    # The request itself, marked as the one this sign-in was made for (as after a login).
    assert urlsplit(back).path == "/oauth2/authorize"
    assert {k: v for k, v in parse_qsl(urlsplit(back).query) if k != "login_after"} == dict(
        parse_qsl(urlsplit(request).query))
    consent = await client.get(back)
    assert consent.status_code == 200 and 'value="authorize"' in consent.text and "newcomer" in consent.text


async def test_sign_up_never_redirects_to_another_site(client):
    for unsafe in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        client.cookies.clear()
        response = await sign_up(client, unsafe, username=f"safe{len(unsafe)}",
                                 email=f"safe{len(unsafe)}@example.com")
        assert response.status_code == 303 and response.headers["location"] == "/"


async def test_mismatched_passwords_are_refused_and_the_typed_values_kept(client):
    response = await sign_up(client, password_confirm=PASSWORD + "!")
    assert response.status_code == 400
    html = response.text
    assert 'id="password_confirm-error">The two passwords differ.<' in html
    assert 'aria-invalid="true"' in input_tag(html, "password_confirm")
    assert "password_confirm-error" in input_tag(html, "password_confirm")
    assert 'value="newcomer"' in input_tag(html, "username")
    assert 'value="newcomer@example.com"' in input_tag(html, "email")
    assert PASSWORD not in html  # never sent back
    assert "value" not in input_tag(html, "password") and "value" not in input_tag(html, "password_confirm")
    assert await api_login(client, "newcomer") == 400  # no account
    assert "fluxer_session" not in client.cookies


async def test_a_taken_username_is_said_under_its_field(client):
    await register(client, "newcomer")
    response = await sign_up(client, email="other@example.com")
    assert response.status_code == 400
    assert 'id="username-error">This username is already taken.<' in response.text
    assert 'aria-invalid="true"' in input_tag(response.text, "username")
    assert 'autofocus' in input_tag(response.text, "username")
    assert 'value="other@example.com"' in input_tag(response.text, "email")
    assert "fluxer_session" not in client.cookies


@pytest.mark.parametrize("fields, field, message", [
    ({"email": "newcomer@example.com"}, "email", "This email address is already registered."),
    ({"username": "x"}, "username", "2 to 32 characters"),
    ({"email": "not-an-address"}, "email", "This is not a valid email address."),
    ({"password": "short", "password_confirm": "short"}, "password", "Use 8 to 128 characters."),
])
async def test_the_apis_rules_are_said_per_field(client, fields, field, message):
    await register(client, "registered")  # holds registered@example.com
    if field == "email" and "newcomer@example.com" in fields.values():
        await client.post("/api/v1/auth/register", json={"username": "someone", "email": "newcomer@example.com",
                                                         "password": PASSWORD})
    response = await sign_up(client, **fields)
    assert response.status_code == 400
    error = re.search(rf'id="{field}-error">([^<]+)<', response.text)
    assert error is not None and message in unescape(error.group(1))
    assert 'autofocus' in input_tag(response.text, field)
    others = {"username", "email", "password", "password_confirm"} - {field}
    assert not any(f'id="{other}-error"' in response.text for other in others)


async def test_sign_up_needs_the_forms_token_and_this_site(client):
    page = await client.get("/signup")
    data = {"username": "forged", "email": "forged@example.com", "password": PASSWORD, "password_confirm": PASSWORD}
    missing = await client.post("/signup", data=data)
    assert missing.status_code == 403 and "Your form expired" in missing.text
    cross = await client.post("/signup", data={**data, "csrf_token": csrf_of(page.text)},
                              headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and "another site" in cross.text
    assert await api_login(client, "forged") == 400 and "fluxer_session" not in client.cookies


async def test_a_signed_in_visitor_is_sent_on(client):
    await register(client, "already")
    await browser_login(client, "already")
    response = await client.get("/signup?next=/settings/authorized-apps")
    assert response.status_code == 303 and response.headers["location"] == "/settings/authorized-apps"
    assert (await client.get("/signup?next=https://evil.example")).headers["location"] == "/"


async def test_the_form_names_what_browsers_and_password_managers_fill(client):
    html = (await client.get("/signup")).text
    assert 'autocomplete="username"' in input_tag(html, "username")
    assert 'autocomplete="email"' in input_tag(html, "email") and 'type="email"' in input_tag(html, "email")
    for field in ("password", "password_confirm"):
        assert 'autocomplete="new-password"' in input_tag(html, field) and 'type="password"' in input_tag(html, field)
    for field in ("username", "email", "password", "password_confirm"):
        assert f'<label for="{field}">' in html
    assert '<a href="/login">Log in</a>' in html


async def test_sign_ups_share_the_apis_throttle(settings):
    app = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_registrations": "2/hour"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        await register(client, "viaapi")  # the JSON API's sign-up counts too
        first = await sign_up(client, username="viapage", email="viapage@example.com")
        assert first.status_code == 303
        client.cookies.clear()
        refused = await sign_up(client, username="toomany", email="toomany@example.com")
    await app.state.runtime.db.close()
    assert refused.status_code == 429 and refused.headers["content-type"].startswith("text/html")
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 7200
    assert re.search(r'id="form-error">Too many accounts were created from your network\. Try again in \d+ '
                     r'(minute|second)s?\.<', refused.text)
    assert 'value="toomany"' in input_tag(refused.text, "username") and PASSWORD not in refused.text


# --- the signed-in bar -----------------------------------------------------------------------------

def bar_of(html: str) -> str:
    """The signed-in bar, which must open the card (the first thing in <main>)."""
    main = html[html.index("<main"):]
    main = main[main.index(">") + 1:].lstrip()
    bar = re.match(r'<div class="session-bar" id="session-bar">\s*<div class="session-row">.*?</form>\s*</div>'
                   r'\s*(<nav class="session-nav".*?</nav>\s*)?</div>', main, re.S)
    assert bar is not None, main[:300]
    return bar.group(0)


@pytest.mark.parametrize("where", ["authorized-apps", "revoke", "logout", "portal"])
async def test_signed_in_pages_open_with_the_bar_and_its_links(client, where):
    owner = await register(client, "barred")
    app = await create_app(client, owner)
    await tokens_for(client, owner, app)
    await browser_login(client, "barred")
    path = {"authorized-apps": "/settings/authorized-apps", "revoke": f"/settings/authorized-apps/{app.id}/revoke",
            "logout": "/logout", "portal": "/developers/applications"}[where]
    page = await client.get(path)
    assert page.status_code == 200
    bar = bar_of(page.text)
    assert "Signed in as <strong>barred</strong>" in bar
    assert '<a href="/settings/authorized-apps">Authorized apps</a>' in bar
    assert '<a href="/developers/applications">Developer portal</a>' in bar
    assert '<form method="post" action="/logout" class="who">' in bar and ">Log out</button>" in bar
    assert f'value="{csrf_of(page.text)}"' in bar


async def test_the_consent_page_bar_offers_not_you_and_no_way_out_of_the_request(client):
    owner = await register(client, "consenting")
    app = await create_app(client, owner)
    await browser_login(client, "consenting")
    request = "/oauth2/authorize?" + urlencode({"client_id": app.id, "response_type": "code", "scope": "identify",
                                                "redirect_uri": CB})
    bar = bar_of((await client.get(request)).text)
    assert ">Not you?</button>" in bar and "session-nav" not in bar
    assert unescape(re.search(r'name="next" value="([^"]+)"', bar).group(1)) == request


async def test_the_bar_shows_the_avatar(client, rt):
    account = await register(client, "pictured")
    async with rt.db.write() as conn:
        from sqlalchemy import update

        from fluxer_oauth.store.tables import users
        await conn.execute(update(users).where(users.c.id == int(account.id)).values(avatar="a" * 32))
    await browser_login(client, "pictured")
    bar = bar_of((await client.get("/settings/authorized-apps")).text)
    assert f'src="http://testserver/avatars/{account.id}/{"a" * 32}.png?size=32"' in bar and 'alt=""' in bar


# --- authorized apps ---------------------------------------------------------------------------------

@pytest.fixture
async def authorized(client):
    """A user who authorized "Test App" (identify and email), signed in; the app and a token."""
    owner = await register(client, "appowner")
    app = await create_app(client, owner)
    user = await register(client, "grantor")
    tokens = await tokens_for(client, user, app, scope="identify email")
    await browser_login(client, "grantor")
    return app, tokens


async def alive(client, access_token: str) -> bool:
    response = await client.get("/api/v1/users/@me", headers={"Authorization": f"Bearer {access_token}"})
    return response.status_code == 200


async def test_the_list_says_what_each_app_can_do_and_since_when(client, authorized):
    app, _tokens = authorized
    html = (await client.get("/settings/authorized-apps")).text
    item = html[html.index(f'data-application-id="{app.id}"'):]
    assert "<li>Know your username, avatar and profile details</li>" in item
    assert "<li>Know your email address and whether it is verified</li>" in item
    assert re.search(r"Authorized since <span class=\"nowrap\">[A-Z][a-z]+ \d{1,2}, \d{4}</span><br>"
                     r"Last used <span class=\"nowrap\">[A-Z][a-z]+ \d{1,2}, \d{4}</span>", item)
    assert f'href="/settings/authorized-apps/{app.id}/revoke"' in item
    assert 'aria-label="Revoke access of Test App"' in item
    assert "<form" not in item.split("</li>")[0]  # revoking starts with a link, not a POST


async def test_dates_are_written_as_the_readers_language_writes_them(client, authorized):
    french = await client.get("/settings/authorized-apps", headers={"Accept-Language": "fr"})
    assert re.search(r"\d{1,2} (janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|"
                     r"décembre) \d{4}", french.text)


async def test_revoke_asks_first_and_the_question_changes_nothing(client, authorized):
    app, tokens = authorized
    page = await client.get(f"/settings/authorized-apps/{app.id}/revoke")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert "Revoke access of Test App?" in page.text
    assert "Its access tokens and refresh tokens stop working at once." in page.text
    assert 'id="cancel-revoke"' in page.text and 'href="/settings/authorized-apps"' in page.text
    assert f'<form method="post" action="/settings/authorized-apps/{app.id}/revoke">' in page.text
    assert await alive(client, tokens["access_token"])
    listed = await client.get("/settings/authorized-apps")
    assert f'data-application-id="{app.id}"' in listed.text


async def test_confirming_revokes_and_the_list_names_the_app_once(client, authorized):
    app, tokens = authorized
    page = await client.get(f"/settings/authorized-apps/{app.id}/revoke")
    done = await client.post(f"/settings/authorized-apps/{app.id}/revoke", data={"csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == "/settings/authorized-apps"
    assert not await alive(client, tokens["access_token"])
    refreshed = await client.post("/api/v1/oauth2/token", auth=(app.id, app.secret), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 400
    listed = await client.get("/settings/authorized-apps")
    assert 'id="notice">Access of Test App revoked.<' in listed.text and 'id="no-apps"' in listed.text
    again = await client.get("/settings/authorized-apps")
    assert "revoked." not in again.text  # said once
    # Pressed twice: already gone, back to the list without a word.
    twice = await client.post(f"/settings/authorized-apps/{app.id}/revoke", data={"csrf_token": csrf_of(page.text)})
    assert twice.status_code == 303 and "revoked." not in (await client.get("/settings/authorized-apps")).text


async def test_the_notice_cannot_be_made_up_by_a_link(client, authorized):
    listed = await client.get("/settings/authorized-apps?revoked=1&name=Evil")
    assert "revoked." not in listed.text and "Evil" not in listed.text


async def test_an_app_not_authorized_by_the_user_is_the_404_page(client, authorized):
    app, tokens = authorized
    stranger = await register(client, "stranger")
    theirs = await create_app(client, stranger, name="Theirs")
    await tokens_for(client, stranger, theirs)  # authorized by someone else
    for application_id in (theirs.id, "123456789012345678", "not-a-number"):
        page = await client.get(f"/settings/authorized-apps/{application_id}/revoke")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "You have not authorized this application." in page.text
        assert page.headers["x-frame-options"] == "DENY"
    csrf = csrf_of((await client.get("/settings/authorized-apps")).text)
    other = await client.post(f"/settings/authorized-apps/{theirs.id}/revoke", data={"csrf_token": csrf})
    assert other.status_code == 303
    stranger_tokens = await client.get("/api/v1/oauth2/@me/authorizations", headers=stranger.headers)
    assert [a["application"]["id"] for a in stranger_tokens.json()] == [theirs.id]  # untouched
    assert await alive(client, tokens["access_token"])


async def test_the_confirmation_needs_a_session(client, authorized):
    app, _tokens = authorized
    client.cookies.delete("fluxer_session")
    page = await client.get(f"/settings/authorized-apps/{app.id}/revoke")
    assert page.status_code == 302
    assert page.headers["location"] == "/login?next=" + quote(f"/settings/authorized-apps/{app.id}/revoke", safe="")
