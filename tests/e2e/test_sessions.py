"""Sessions in a real browser: the forms pass the Origin check, logout and "Not you?" end
the session, and no referrer reaches the client's site."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import requests

from tests.e2e.conftest import CALLBACK, api_app, api_user, log_in, shoot
from tests.e2e.test_pages import authorize_url, query


def test_logout_ends_the_session_in_the_browser(server, page):
    api_user(server, "browserleaver")
    page.goto(f"{server}/settings/authorized-apps")
    log_in(page, "browserleaver")
    page.wait_for_selector("form.who")
    session = next(c["value"] for c in page.context.cookies() if c["name"] == "fluxer_session")
    page.click("form.who button")
    page.wait_for_url(f"{server}/login")
    assert not any(c["name"] == "fluxer_session" for c in page.context.cookies())
    # The session is gone on the server, not only from the browser.
    assert requests.get(f"{server}/api/v1/users/@me", headers={"Authorization": session}, timeout=10).status_code == 401
    page.goto(f"{server}/settings/authorized-apps")
    assert "/login" in page.url


def test_not_you_signs_in_someone_else_for_the_same_request(server, page):
    owner = api_user(server, "notyouowner")
    app = api_app(server, owner)
    api_user(server, "notyoufirst")
    api_user(server, "notyousecond")
    page.goto(authorize_url(server, app["id"]))
    log_in(page, "notyoufirst")
    page.wait_for_selector("button[value=authorize]")
    first = next(c["value"] for c in page.context.cookies() if c["name"] == "fluxer_session")
    shoot(page, "consent-signed-in")
    page.click("button:has-text('Not you?')")
    page.wait_for_selector("#login")
    assert requests.get(f"{server}/api/v1/users/@me", headers={"Authorization": first}, timeout=10).status_code == 401
    log_in(page, "notyousecond")
    page.wait_for_selector("button[value=authorize]")
    assert "notyousecond" in page.inner_text("main") and "notyoufirst" not in page.inner_text("main")
    # The same request, marked by the login as the one this sign-in was made for.
    asked, came_back = urlsplit(authorize_url(server, app["id"])), urlsplit(page.url)
    assert came_back.path == asked.path
    assert {k: v for k, v in parse_qsl(came_back.query) if k != "login_after"} == dict(parse_qsl(asked.query))


def test_no_referer_reaches_the_client_after_consent(server, page):
    owner = api_user(server, "referowner")
    app = api_app(server, owner)
    seen: list[dict] = []

    def handle(route):
        seen.append({"url": route.request.url, **route.request.all_headers()})
        route.fulfill(status=200, content_type="text/html", body="<h1>client callback</h1>")

    page.route("http://127.0.0.1:9/**", handle)
    page.goto(authorize_url(server, app["id"]))
    log_in(page, "referowner")
    page.click("button[value=authorize]")
    page.wait_for_url("http://127.0.0.1:9/**")
    assert seen and seen[-1]["url"].startswith(CALLBACK) and "code" in query(seen[-1]["url"])
    assert "referer" not in seen[-1]
