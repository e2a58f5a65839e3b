"""Every error a page route can meet is answered with the HTML error page (error.html), with
the pages' security headers; the JSON API keeps its JSON errors. 5xx pages name the request
id (the X-Request-Id of the answer), 429 says when to try again and keeps Retry-After."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager

import httpx
import pytest

from fluxer_oauth.app import build_app
from tests.api.test_authorize import browser_login
from tests.conftest import PASSWORD, create_app, database_out_of_reach, register


def assert_error_page(response: httpx.Response, status: int, *texts: str) -> None:
    """``response`` is the error page for ``status``: HTML, the pages' headers, the texts."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert response.headers["cache-control"] == "no-store"
    body = response.text
    assert body.startswith("<!doctype html>") and "Traceback" not in body
    assert f'id="status-code">Error {status}<' in body
    assert 'href="/static/style.css"' in body  # in the pages' style
    for text in texts:
        assert text in body, f"{text!r} not on the page"


def request_id_shown(response: httpx.Response) -> str:
    shown = re.search(r'id="request-id">[^<]*<code>([^<]+)</code>', response.text)
    assert shown is not None, "no request id on the page"
    assert shown.group(1) == response.headers["x-request-id"]
    return shown.group(1)


async def signed_in(client: httpx.AsyncClient, name: str) -> None:
    await register(client, name)
    await browser_login(client, name)


# --- 404 and 405 -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/no-such-page", "/settings/nothing", "/developers/applications/1/nothing",
                                  "/login/"])
async def test_an_unknown_page_path_is_the_404_page(client, path):
    response = await client.get(path)
    assert_error_page(response, 404, "Page not found", "There is nothing at this address.",
                      'href="/">Go to the home page<')
    assert 'id="request-id"' not in response.text  # only 5xx pages name one


async def test_an_unknown_api_path_is_still_json(client):
    for path in ("/api/v1/no-such-thing", "/v1/no-such-thing"):
        response = await client.get(path)
        assert response.status_code == 404 and response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize("method, path", [("PUT", "/login"), ("DELETE", "/signup"), ("PATCH", "/logout"),
                                          ("PUT", "/settings/authorized-apps")])
async def test_a_method_a_page_does_not_take_is_an_error_page(client, method, path):
    response = await client.request(method, path)
    assert_error_page(response, 405, "Page not found")
    assert "GET" in response.headers["allow"]  # a 405 names what the route takes (RFC 9110 §15.5.6)


async def test_images_and_static_files_are_not_pages_when_the_database_is_out_of_reach(app, client, monkeypatch):
    """Their errors are plain (JSON), never an HTML page in whatever locale came last."""
    database_out_of_reach(app, monkeypatch)
    response = await client.get("/icons/123/0123456789abcdef0123456789abcdef.png")
    assert response.status_code == 503 and response.headers["content-type"] == "application/json"


# --- 400 and 403 -------------------------------------------------------------------------------

async def test_an_authorize_request_without_a_valid_redirect_is_a_400_page(client):
    owner = await register(client, "badredirect")
    app = await create_app(client, owner)
    response = await client.get("/oauth2/authorize", params={
        "client_id": app.id, "response_type": "code", "scope": "identify",
        "redirect_uri": "https://evil.example/callback"})
    assert_error_page(response, 400, "This request is invalid", "Tell the developer of the application")
    assert "location" not in response.headers
    unknown = await client.get("/oauth2/authorize?client_id=123&response_type=code&scope=identify")
    assert_error_page(unknown, 400)


async def test_a_form_sent_from_another_site_is_a_403_page(client):
    await register(client, "crosssite")
    page = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = await client.post("/login", headers={"Origin": "https://evil.example"},
                                 data={"csrf_token": csrf, "login": "crosssite", "password": PASSWORD})
    assert_error_page(response, 403, "Request refused", "sent from another site")
    assert "fluxer_session" not in client.cookies


async def test_an_expired_form_is_a_403_page(client):
    await signed_in(client, "expiredform")
    response = await client.post("/logout", data={"csrf_token": "forged"})
    assert_error_page(response, 403, "Your form expired")
    assert "fluxer_session" in client.cookies


# --- 413 -----------------------------------------------------------------------------------------

async def test_a_too_large_post_to_a_page_is_a_413_page(client, settings):
    body = "login=x&password=" + "a" * (settings.max_body_bytes + 1)
    response = await client.post("/login", content=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error_page(response, 413, "Too much data")


# --- 429 -----------------------------------------------------------------------------------------

@asynccontextmanager
async def limited(settings, **rates):
    app = build_app(settings.model_copy(update={"rate_limits": "on", **rates}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        yield http
    await app.state.runtime.db.close()


async def test_the_global_limit_on_a_page_is_a_429_page_that_says_when_to_retry(settings):
    async with limited(settings, rate_limit_global="3/minute") as client:
        answers = [await client.get("/login") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert_error_page(refused, 429, "Slow down", "Try again in")
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 120  # a sliding window: at most two periods
    shown = re.search(r'id="retry-after">Try again in (\d+) (second|minute)s?\.<', refused.text)
    assert shown is not None and int(shown.group(1)) == (retry_after if shown.group(2) == "second"
                                                         else -(-retry_after // 60))


async def test_too_many_failed_logins_say_when_to_retry(settings):
    async with limited(settings, rate_limit_login_failures="2/5minutes") as client:
        await register(client, "guessed")
        page = await client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        tries = [await client.post("/login", data={"csrf_token": csrf, "login": "guessed", "password": "wrong pass"})
                 for _ in range(3)]
        assert [t.status_code for t in tries] == [400, 400, 429]
        refused = tries[-1]
        assert refused.headers["content-type"].startswith("text/html")
        assert refused.headers["x-frame-options"] == "DENY"
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 600  # a sliding window: at most two periods
        minutes = -(-retry_after // 60)
        assert f"Too many failed attempts. Try again in {minutes} minutes." in refused.text
        # The login form stays, with the name typed: the person tries again later.
        assert 'id="login"' in refused.text and 'value="guessed"' in refused.text
        # Even the right password waits until then.
        right = await client.post("/login", data={"csrf_token": csrf, "login": "guessed", "password": PASSWORD})
        assert right.status_code == 429 and "fluxer_session" not in client.cookies


# --- 500 and 503 ---------------------------------------------------------------------------------

async def test_an_unexpected_failure_of_a_page_is_a_500_page_with_the_request_id(client, monkeypatch, caplog):
    await signed_in(client, "unlucky")

    async def broken(*_args, **_kwargs):  # fault injection: the page's platform call fails
        raise RuntimeError("injected failure")

    monkeypatch.setattr("fluxer_oauth.platform.authorizations.list_authorizations", broken)
    response = await client.get("/settings/authorized-apps")
    assert_error_page(response, 500, "Something went wrong", "It was logged, and it is not your fault.")
    request_id = request_id_shown(response)
    assert "injected failure" not in response.text
    # The log line with the same id tells the operator what happened.
    assert any(request_id in record.getMessage() or request_id in str(getattr(record, "request_id", ""))
               or request_id in str(getattr(record, "fields", "")) for record in caplog.records)


async def test_the_database_out_of_reach_is_a_503_page_with_the_request_id(app, client, monkeypatch):
    await signed_in(client, "patient")

    database_out_of_reach(app, monkeypatch)
    for path in ("/settings/authorized-apps", "/signup", "/logout"):
        response = await client.get(path)
        assert_error_page(response, 503, "Temporarily unavailable", "Try again in a moment.")
        request_id_shown(response)
    api = await client.get("/api/v1/users/@me", headers={"Authorization": client.cookies["fluxer_session"]})
    assert api.status_code == 503 and api.headers["content-type"] == "application/json"
