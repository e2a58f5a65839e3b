"""GET /oauth2/authorize and consent (SPEC §4.1): the order of checks, every error code,
the login step, the consent page and its protections."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from tests.conftest import PASSWORD, consent, create_app, pkce_pair, query_of, register

CB = "https://client.example/callback"


def authorize_url(app_id: str, **params) -> str:
    query = {"client_id": app_id, "response_type": "code", "scope": "identify", "redirect_uri": CB, "state": "st8"}
    query.update(params)
    return "/oauth2/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


async def browser_login(client, username: str) -> None:
    page = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = await client.post("/login", data={"csrf_token": csrf, "login": username, "password": PASSWORD, "next": "/"})
    assert response.status_code == 303, response.text
    assert "fluxer_session" in client.cookies


def form_fields(html: str) -> dict:
    return dict(re.findall(r'name="(csrf_token|request)" value="([^"]*)"', html))


@pytest.fixture
async def setup(client):
    owner = await register(client, "owner")
    app = await create_app(client, owner)
    return owner, app


async def test_full_browser_flow_login_consent_redirect(client, setup):
    _owner, app = setup
    await register(client, "visitor")
    url = authorize_url(app.id)
    first = await client.get(url)
    assert first.status_code == 302 and first.headers["location"].startswith("/login?next=")
    login_page = await client.get(first.headers["location"])
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login_page.text).group(1)
    next_url = re.search(r'name="next" value="([^"]+)"', login_page.text).group(1).replace("&amp;", "&")
    logged_in = await client.post("/login", data={"csrf_token": csrf, "login": "visitor", "password": PASSWORD,
                                                  "next": next_url})
    # Back to the request, marked as one this sign-in was made for (pages._mark_sign_in).
    back = logged_in.headers["location"]
    assert logged_in.status_code == 303 and back.startswith("/oauth2/authorize?")
    assert {k: v for k, v in query_of(back).items() if k != "login_after"} == query_of(url) and "login_after" in back
    cookie = logged_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie

    page = await client.get(url)
    assert page.status_code == 200
    assert "Test App" in page.text and "visitor" in page.text and 'data-scope="identify"' in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "same-origin"  # none to other sites; see pages.PAGE_HEADERS
    fields = form_fields(page.text)
    decided = await client.post("/oauth2/authorize", data={**fields, "request": fields["request"].replace("&amp;", "&"),
                                                           "action": "authorize"})
    assert decided.status_code == 303
    location = decided.headers["location"]
    assert location.startswith(CB + "?")
    params = query_of(location)
    assert params["state"] == "st8" and params["iss"] == "http://testserver" and len(params["code"]) >= 43


async def test_cancel_redirects_access_denied(client, setup):
    _owner, app = setup
    await register(client, "canceller")
    await browser_login(client, "canceller")
    page = await client.get(authorize_url(app.id))
    fields = form_fields(page.text)
    fields["request"] = fields["request"].replace("&amp;", "&")
    decided = await client.post("/oauth2/authorize", data={**fields, "action": "cancel"})
    params = query_of(decided.headers["location"])
    assert params["error"] == "access_denied" and params["state"] == "st8" and "code" not in params


async def test_consent_form_without_csrf_is_refused(client, setup):
    _owner, app = setup
    await register(client, "csrfvictim")
    await browser_login(client, "csrfvictim")
    page = await client.get(authorize_url(app.id))
    fields = form_fields(page.text)
    fields["request"] = fields["request"].replace("&amp;", "&")
    decided = await client.post("/oauth2/authorize", data={"request": fields["request"], "action": "authorize",
                                                           "csrf_token": "forged"})
    assert decided.status_code == 403 and "location" not in decided.headers


async def test_login_without_csrf_is_refused(client):
    await register(client, "plain")
    response = await client.post("/login", data={"login": "plain", "password": PASSWORD, "next": "/"})
    assert response.status_code == 403 and "fluxer_session" not in client.cookies


async def test_login_next_is_never_an_open_redirect(client):
    await register(client, "nextuser")
    page = await client.get("/login?next=https://evil.example/")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = await client.post("/login", data={"csrf_token": csrf, "login": "nextuser", "password": PASSWORD,
                                                     "next": target})
        assert response.headers["location"] == "/"


# --- step 1: never redirect to an unvalidated URI ------------------------------------------------

@pytest.mark.parametrize("params", [
    {"client_id": "999999999999"},
    {"client_id": "not-a-number"},
    {"client_id": None},
    {"redirect_uri": "https://evil.example/callback"},
    {"redirect_uri": CB + "/"},
    {"redirect_uri": None},
])
async def test_unknown_client_or_redirect_shows_error_page(client, setup, params):
    owner, _app = setup
    # Two registered URIs, so a missing redirect_uri cannot be implied.
    app = await create_app(client, owner, name="two", redirect_uris=[CB, "https://client.example/two"])
    response = await client.get(authorize_url(app.id, **params))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"


async def test_repeated_redirect_uri_is_an_error_page(client, setup):
    _owner, app = setup
    response = await client.get(authorize_url(app.id) + "&redirect_uri=" + "https%3A%2F%2Fevil.example%2F")
    assert response.status_code == 400 and "location" not in response.headers


async def test_single_registered_redirect_uri_may_be_implied(client, setup):
    owner, app = setup
    params = await consent(client, owner, app, redirect_uri=None)
    assert "code" in params
    # ... and then the token request may leave it out too
    response = await client.post("/api/v1/oauth2/token", auth=app.basic,
                                 data={"grant_type": "authorization_code", "code": params["code"]})
    assert response.status_code == 200, response.text


# --- step 2: every later error redirects with error, state and iss --------------------------------

@pytest.mark.parametrize("params,error", [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "invalid_request"),
    ({"scope": None}, "invalid_request"),
    ({"scope": "identify unknown"}, "invalid_scope"),
    ({"scope": "email"}, "invalid_scope"),
    ({"scope": "admin identify"}, "invalid_scope"),
    ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "x" * 43}, "invalid_request"),
    ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
    ({"prompt": "select_account"}, "invalid_request"),
    ({"prompt": "none login"}, "invalid_request"),
    ({"max_age": "-1"}, "invalid_request"),
    ({"response_mode": "form_post"}, "invalid_request"),
    ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ({"request_uri": "https://client.example/r"}, "request_uri_not_supported"),
    ({"permissions": "-1"}, "invalid_request"),
    ({"permissions": "abc"}, "invalid_request"),
    ({"guild_id": "xyz"}, "invalid_request"),
    ({"state": "s" * 257}, "invalid_request"),
    ({"scope": "identify " + "x" * 300}, "invalid_request"),
])
async def test_errors_redirect_to_validated_uri(client, setup, params, error):
    _owner, app = setup
    response = await client.get(authorize_url(app.id, **params))
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CB + "?")
    result = query_of(location)
    assert result["error"] == error and result["error_description"]
    assert result["iss"] == "http://testserver"
    if "state" not in params:
        assert result["state"] == "st8"


async def test_repeated_scope_parameter_is_invalid_request(client, setup):
    _owner, app = setup
    response = await client.get(authorize_url(app.id) + "&scope=email")
    assert query_of(response.headers["location"])["error"] == "invalid_request"


async def test_bot_scope_for_application_without_bot_is_invalid_scope(client, setup):
    owner, _app = setup
    botless = await create_app(client, owner, name="no bot", bot=False)
    response = await client.get(authorize_url(botless.id, scope="bot identify"))
    assert query_of(response.headers["location"])["error"] == "invalid_scope"


async def test_registered_query_parameters_are_kept(client):
    owner = await register(client)
    app = await create_app(client, owner, redirect_uris=["https://client.example/cb?tenant=7"])
    params = await consent(client, owner, app, redirect_uri="https://client.example/cb?tenant=7")
    assert params["tenant"] == "7" and "code" in params


async def test_loopback_redirect_port_may_differ(client):
    owner = await register(client)
    app = await create_app(client, owner, redirect_uris=["http://127.0.0.1/cb"])
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers, json={
        "client_id": app.id, "scope": "identify", "authorize": True, "response_type": "code",
        "redirect_uri": "http://127.0.0.1:43123/cb"})
    assert response.json()["redirect_to"].startswith("http://127.0.0.1:43123/cb?code=")


# --- prompt ---------------------------------------------------------------------------------------

async def test_prompt_none_without_login_is_login_required(client, setup):
    _owner, app = setup
    response = await client.get(authorize_url(app.id, prompt="none"))
    assert query_of(response.headers["location"])["error"] == "login_required"


async def test_prompt_none_without_grant_is_consent_required_then_code_after_consent(client, setup):
    _owner, app = setup
    user = await register(client, "promptuser")
    await browser_login(client, "promptuser")
    response = await client.get(authorize_url(app.id, prompt="none"))
    assert query_of(response.headers["location"])["error"] == "consent_required"
    await consent(client, user, app, scope="identify email")
    response = await client.get(authorize_url(app.id, prompt="none", scope="identify"))
    assert response.status_code == 302 and "code" in query_of(response.headers["location"])
    response = await client.get(authorize_url(app.id, prompt="none", scope="identify guilds"))
    assert query_of(response.headers["location"])["error"] == "consent_required"


async def test_prompt_consent_always_shows_the_page(client, setup):
    _owner, app = setup
    user = await register(client, "again")
    await consent(client, user, app)
    await browser_login(client, "again")
    response = await client.get(authorize_url(app.id, prompt="consent"))
    assert response.status_code == 200 and "Authorize" in response.text


async def test_admin_scope_for_non_staff_user_is_access_denied(client, setup, rt):
    owner, app = setup
    from fluxer_oauth.store import applications as app_store

    async with rt.db.write() as conn:
        await app_store.update_application(conn, int(app.id), trusted=True)
    params = await consent(client, owner, app, scope="identify admin")
    assert params["error"] == "access_denied"


async def test_disabled_application_is_unauthorized_client(client, setup, rt):
    owner, app = setup
    from fluxer_oauth.store import applications as app_store

    async with rt.db.write() as conn:
        await app_store.update_application(conn, int(app.id), disabled_at=1.0)
    response = await client.get(authorize_url(app.id))
    assert query_of(response.headers["location"])["error"] == "unauthorized_client"


async def test_consent_api_requires_a_session(client, setup):
    owner, app = setup
    response = await client.post("/api/v1/oauth2/authorize/consent",
                                 json={"client_id": app.id, "scope": "identify", "authorize": True})
    assert response.status_code == 401
    response = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers,
                                 json={"client_id": "123", "scope": "identify", "authorize": True})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_api_authorize_redirects_to_the_page(client, setup):
    _owner, app = setup
    response = await client.get("/api/v1" + authorize_url(app.id))
    assert response.status_code == 302 and response.headers["location"] == authorize_url(app.id)


async def test_pkce_challenge_is_carried_on_the_code(client, setup):
    owner, app = setup
    verifier, challenge = pkce_pair()
    params = await consent(client, owner, app, code_challenge=challenge, code_challenge_method="S256")
    assert "code" in params


async def test_database_failure_after_validation_redirects_temporarily_unavailable(client, setup, monkeypatch):
    from fluxer_oauth.oauth import authorize as authz
    from fluxer_oauth.store.errors import StoreUnavailable

    _owner, app = setup
    await register(client, "outage")
    await browser_login(client, "outage")

    async def unavailable(*_args, **_kwargs):
        raise StoreUnavailable()

    monkeypatch.setattr(authz, "remembered_consent_covers", unavailable)
    response = await client.get(authorize_url(app.id, prompt="none"))
    params = query_of(response.headers["location"])
    assert params["error"] == "temporarily_unavailable" and params["state"] == "st8" and params["iss"]


async def test_unexpected_failure_after_validation_redirects_server_error(client, setup, monkeypatch, caplog):
    from fluxer_oauth.oauth import authorize as authz

    _owner, app = setup
    await register(client, "crashy")
    await browser_login(client, "crashy")

    async def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(authz, "remembered_consent_covers", broken)
    response = await client.get(authorize_url(app.id, prompt="none"))
    params = query_of(response.headers["location"])
    assert response.status_code == 302 and params["error"] == "server_error" and params["state"] == "st8"
    assert any(getattr(r, "fields", {}).get("request_id") == response.headers["x-request-id"] for r in caplog.records)
