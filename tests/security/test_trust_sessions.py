"""Browser sessions on the pages: logout, "Not you?", CSRF tokens bound to the session, and
form POSTs refused when another site sent them. Each test is an attack that must fail."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest
from starlette.routing import Route

from tests.api.test_authorize import browser_login, form_fields
from tests.conftest import PASSWORD, create_app, csrf_of, register

BASE = "http://testserver"
CB = "https://client.example/callback"
EVIL = "https://evil.example"


def logout_form(html: str) -> dict:
    """The hidden fields of the page's POST /logout form (fails when there is none)."""
    form = re.search(r'<form method="post" action="/logout"[^>]*>(.*?)</form>', html, re.S)
    assert form is not None, "no logout form on this page"
    return {name: unescape(value) for name, value in re.findall(r'name="(\w+)" value="([^"]*)"', form.group(1))}


def authorize_path(app_id: str) -> str:
    return "/oauth2/authorize?" + urlencode({"client_id": app_id, "response_type": "code", "scope": "identify",
                                             "redirect_uri": CB, "state": "s1"})


async def send(app, method: str, path: str, *, cookies: dict, data: dict | None = None,
               headers: dict | None = None) -> httpx.Response:
    """One request from a browser holding exactly ``cookies`` (for forged requests)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
        return await http.request(method, path, data=data, headers={"Cookie": cookie, **(headers or {})})


async def session_alive(client, token: str) -> bool:
    """Whether the session still exists on the server (the API takes it in the header)."""
    response = await client.get("/api/v1/users/@me", headers={"Authorization": token})
    return response.status_code == 200


def refused_page(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Traceback" not in response.text and "location" not in response.headers


# --- 1. logout -------------------------------------------------------------------------------

async def test_logout_ends_the_session_server_side(client, app):
    await register(client, "leaver")
    await browser_login(client, "leaver")
    token = client.cookies["fluxer_session"]
    page = await client.get("/settings/authorized-apps")
    fields = logout_form(page.text)
    response = await client.post("/logout", data=fields)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    cleared = response.headers["set-cookie"]
    assert "fluxer_session=" in cleared and ("Max-Age=0" in cleared or "expires=" in cleared.lower())
    assert "fluxer_session" not in client.cookies
    # The row is gone: the old cookie value is worthless, even replayed by hand.
    assert not await session_alive(client, token)
    replayed = await send(app, "GET", "/settings/authorized-apps", cookies={"fluxer_session": token})
    assert replayed.status_code == 302 and replayed.headers["location"].startswith("/login")


@pytest.mark.parametrize("where", ["consent", "authorized-apps", "portal-list", "portal-app", "url-generator",
                                   "logout-page"])
async def test_every_signed_in_page_has_a_logout_form(client, where):
    owner = await register(client, "shown")
    app = await create_app(client, owner)
    await browser_login(client, "shown")
    path = {
        "consent": authorize_path(app.id),
        "authorized-apps": "/settings/authorized-apps",
        "portal-list": "/developers/applications",
        "portal-app": f"/developers/applications/{app.id}",
        "url-generator": f"/developers/applications/{app.id}/oauth2",
        "logout-page": "/logout",
    }[where]
    page = await client.get(path)
    assert page.status_code == 200 and "shown" in page.text
    fields = logout_form(page.text)
    assert fields["csrf_token"] == csrf_of(page.text)


async def test_get_logout_does_not_end_the_session(client, app):
    account = await register(client, "stayer")
    await browser_login(client, "stayer")
    page = await client.get("/logout")
    assert page.status_code in (200, 302, 303)
    assert "fluxer_session" in client.cookies and await session_alive(client, client.cookies["fluxer_session"])
    assert await session_alive(client, account.token)
    # Without a session, GET /logout just points at the login page.
    assert (await send(app, "GET", "/logout", cookies={})).headers["location"] == "/login"


async def test_logout_without_a_valid_csrf_token_is_refused(client):
    await register(client, "forgedout")
    await browser_login(client, "forgedout")
    token = client.cookies["fluxer_session"]
    for forged in ({}, {"csrf_token": "forged"}):
        response = await client.post("/logout", data=forged)
        refused_page(response)
    assert await session_alive(client, token) and client.cookies["fluxer_session"] == token


# --- 2. "Not you?" -----------------------------------------------------------------------------

async def test_not_you_ends_the_old_session(client):
    owner = await register(client, "firstuser")
    app = await create_app(client, owner)
    await register(client, "seconduser")
    await browser_login(client, "firstuser")
    old = client.cookies["fluxer_session"]
    url = authorize_path(app.id)
    consent = await client.get(url)
    assert "firstuser" in consent.text
    fields = logout_form(consent.text)
    assert fields["next"] == url

    switched = await client.post("/logout", data=fields)
    assert switched.status_code == 303
    assert switched.headers["location"] == "/login?next=" + quote(url, safe="")
    assert not await session_alive(client, old) and "fluxer_session" not in client.cookies

    # The login page is shown (not skipped) and leads back to the same authorize request.
    login = await client.get(switched.headers["location"])
    assert login.status_code == 200
    next_url = unescape(re.search(r'name="next" value="([^"]*)"', login.text).group(1))
    assert next_url == url
    signed_in = await client.post("/login", data={"csrf_token": csrf_of(login.text), "login": "seconduser",
                                                  "password": PASSWORD, "next": next_url})
    # The same request, marked as the one this sign-in was made for (pages._mark_sign_in).
    back = signed_in.headers["location"]
    assert signed_in.status_code == 303 and back.startswith(url.split("?")[0] + "?")
    assert [pair for pair in parse_qsl(urlsplit(back).query) if pair[0] != "login_after"] == \
        parse_qsl(urlsplit(url).query)
    again = await client.get(url)
    assert again.status_code == 200 and "seconduser" in again.text and "firstuser" not in again.text


@pytest.mark.parametrize("target", [EVIL + "/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
async def test_not_you_next_stays_on_this_site(client, target):
    await register(client, "nextswitch")
    await browser_login(client, "nextswitch")
    fields = logout_form((await client.get("/settings/authorized-apps")).text)
    response = await client.post("/logout", data={**fields, "next": target})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/login") and "evil" not in location and "javascript" not in location
    query = parse_qs(urlsplit(location).query)
    assert all(value.startswith("/") and not value.startswith("//") for value in query.get("next", []))


# --- 3. CSRF bound to the session ------------------------------------------------------------

async def test_csrf_token_of_another_session_is_refused(client, app):
    """An attacker's own CSRF cookie and token, planted in the victim's browser (cookie
    tossing), do not work with the victim's session."""
    attacker = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
    try:
        await register(attacker, "mallory")
        await browser_login(attacker, "mallory")
        attacker_page = await attacker.get("/developers/applications")
        attacker_seed, attacker_token = attacker.cookies["fluxer_csrf"], csrf_of(attacker_page.text)
    finally:
        await attacker.aclose()
    victim = await register(client, "victim")
    await browser_login(client, "victim")
    victim_session = client.cookies["fluxer_session"]
    planted = {"fluxer_session": victim_session, "fluxer_csrf": attacker_seed}

    created = await send(app, "POST", "/developers/applications", cookies=planted,
                         data={"csrf_token": attacker_token, "name": "Planted", "redirect_uris": ""})
    assert created.status_code == 403
    owned = await client.get("/api/v1/users/@me/applications", headers=victim.headers)
    assert owned.json() == []
    logout = await send(app, "POST", "/logout", cookies=planted, data={"csrf_token": attacker_token})
    assert logout.status_code == 403 and await session_alive(client, victim_session)
    # The victim's own token (its cookie and its session) still works.
    page = await client.get("/developers/applications")
    ok = await client.post("/developers/applications",
                           data={"csrf_token": csrf_of(page.text), "name": "Mine", "redirect_uris": ""})
    assert ok.status_code == 303


async def test_csrf_token_from_before_login_is_refused_after_login(client):
    owner = await register(client, "earlybird")
    app = await create_app(client, owner)
    login_page = await client.get("/login")
    anonymous_token = csrf_of(login_page.text)
    await browser_login(client, "earlybird")
    consent = await client.get(authorize_path(app.id))
    fields = form_fields(consent.text)
    decided = await client.post("/oauth2/authorize", data={"request": unescape(fields["request"]),
                                                           "csrf_token": anonymous_token, "action": "authorize"})
    assert decided.status_code == 403 and "location" not in decided.headers
    revoke = await client.post(f"/settings/authorized-apps/{app.id}/revoke", data={"csrf_token": anonymous_token})
    assert revoke.status_code == 403


async def test_csrf_token_of_an_ended_session_is_refused_in_the_next(client):
    await register(client, "twice")
    await browser_login(client, "twice")
    first_token = csrf_of((await client.get("/developers/applications")).text)
    await client.post("/logout", data=logout_form((await client.get("/developers/applications")).text))
    await browser_login(client, "twice")  # same browser, same CSRF cookie, new session
    response = await client.post("/developers/applications",
                                 data={"csrf_token": first_token, "name": "Stale", "redirect_uris": ""})
    assert response.status_code == 403


async def test_login_form_works_with_and_without_an_old_session_cookie(client):
    await register(client, "relogin")
    page = await client.get("/login")
    token = csrf_of(page.text)
    first = await client.post("/login", data={"csrf_token": token, "login": "relogin", "password": PASSWORD,
                                              "next": "/"})
    assert first.status_code == 303
    # The same login form, sent again with the session cookie now present, still works.
    again = await client.post("/login", data={"csrf_token": token, "login": "relogin", "password": PASSWORD,
                                              "next": "/"})
    assert again.status_code == 303


async def test_signing_in_again_ends_the_session_the_browser_had(client):
    await register(client, "firstuser")
    await register(client, "seconduser")
    token = csrf_of((await client.get("/login")).text)
    first = await client.post("/login", data={"csrf_token": token, "login": "firstuser", "password": PASSWORD,
                                              "next": "/"})
    assert first.status_code == 303
    old = client.cookies["fluxer_session"]
    second = await client.post("/login", data={"csrf_token": token, "login": "seconduser", "password": PASSWORD,
                                               "next": "/"})
    assert second.status_code == 303
    assert not await session_alive(client, old)
    assert await session_alive(client, client.cookies["fluxer_session"])


# --- 4. Origin / Sec-Fetch-Site --------------------------------------------------------------

def page_post_paths(app) -> list[str]:
    """Every state-changing route of the pages (the JSON API takes no cookie)."""
    return sorted({route.path for route in app.routes if isinstance(route, Route) and "POST" in route.methods
                   and not route.path.startswith(("/api/", "/v1/"))})


async def test_cross_origin_form_post_is_refused(client, app):
    owner = await register(client, "originuser")
    target = await create_app(client, owner)
    await browser_login(client, "originuser")
    page = await client.get(f"/developers/applications/{target.id}")
    token, session = csrf_of(page.text), client.cookies["fluxer_session"]
    login_page = await send(app, "GET", "/login", cookies={"fluxer_csrf": client.cookies["fluxer_csrf"]})
    login_token = csrf_of(login_page.text)
    consent = form_fields((await client.get(authorize_path(target.id))).text)
    paths = page_post_paths(app)
    assert {"/login", "/logout", "/oauth2/authorize", "/developers/applications",
            "/settings/authorized-apps/{application_id}/revoke"} <= set(paths)
    # Each POST is otherwise valid (session, CSRF token, fields): only its Origin is wrong.
    bodies = {
        "/login": {"csrf_token": login_token, "login": "originuser", "password": PASSWORD, "next": "/"},
        "/oauth2/authorize": {"csrf_token": token, "request": unescape(consent["request"]), "action": "authorize"},
    }
    for origin in (EVIL, "null", "http://testserver:8080", "https://testserver", "http://evil.testserver"):
        for path in paths:
            data = bodies.get(path, {"csrf_token": token, "name": "Hijacked", "password": PASSWORD,
                                     "redirect_uris": ""})
            response = await send(app, "POST", path.replace("{application_id}", target.id), data=data,
                                  cookies=dict(client.cookies), headers={"Origin": origin})
            refused_page(response)
            assert "set-cookie" not in response.headers or "fluxer_session" not in response.headers["set-cookie"]
    # Nothing happened: still signed in, the application unchanged, no grant, no new app.
    assert await session_alive(client, session)
    owned = (await client.get("/api/v1/users/@me/applications", headers=owner.headers)).json()
    assert [a["name"] for a in owned] == ["Test App"]
    assert (await client.get("/api/v1/oauth2/@me/authorizations", headers=owner.headers)).json() == []


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site"])
async def test_cross_site_form_post_without_origin_is_refused(client, fetch_site):
    await register(client, "fetchsite")
    await browser_login(client, "fetchsite")
    page = await client.get("/developers/applications")
    response = await client.post("/developers/applications", headers={"Sec-Fetch-Site": fetch_site},
                                 data={"csrf_token": csrf_of(page.text), "name": "Sneaky", "redirect_uris": ""})
    refused_page(response)
    assert "Sneaky" not in (await client.get("/developers/applications")).text


@pytest.mark.parametrize("headers", [{"Origin": BASE}, {"Origin": BASE, "Sec-Fetch-Site": "same-origin"},
                                     {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}])
async def test_same_origin_and_headerless_form_posts_are_accepted(client, headers):
    await register(client, "sameorigin")
    page = await client.get("/login")
    login = await client.post("/login", headers=headers, data={"csrf_token": csrf_of(page.text),
                                                               "login": "sameorigin", "password": PASSWORD})
    assert login.status_code == 303 and "fluxer_session" in client.cookies
    portal = await client.get("/developers/applications")
    created = await client.post("/developers/applications", headers=headers,
                                data={"csrf_token": csrf_of(portal.text), "name": "Fine", "redirect_uris": ""})
    assert created.status_code == 303 and "Fine" in (await client.get(created.headers["location"])).text
