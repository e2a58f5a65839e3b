"""Each test is an attack that must fail (RFC 9700, OAuth 2.1, SPEC §2-§4). docs/security.md
maps every requirement to the test named after it here."""

from __future__ import annotations

import hmac
import json
import logging
import re
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import text

from fluxer_oauth.app import build_app
from fluxer_oauth.store.tables import authorization_codes
from tests.api.test_authorize import browser_login, form_fields
from tests.conftest import (
    PASSWORD,
    bearer,
    create_app,
    exchange,
    get_code,
    make_settings,
    pkce_pair,
    query_of,
    register,
    tokens_for,
)

CB = "https://client.example/callback"


@pytest.fixture
async def setup(client):
    owner = await register(client, "victim")
    app = await create_app(client, owner)
    return owner, app


def authorize(app_id: str, **params) -> str:
    query = {"client_id": app_id, "response_type": "code", "scope": "identify", "redirect_uri": CB, "state": "s"}
    query.update(params)
    return "/oauth2/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


async def refresh(client, app, token, **fields):
    return await client.post("/api/v1/oauth2/token", auth=app.basic,
                             data={"grant_type": "refresh_token", "refresh_token": token, **fields})


# --- redirect URIs (RFC 9700 §4.1.3, §2.1) -----------------------------------------------------------

@pytest.mark.parametrize("attack", [
    CB + "/", "https://CLIENT.example/callback", "https://client.example/%63allback", CB + "/../evil",
    CB + "?next=https://evil.example", CB + "#fragment", "https://client.example@evil.example/callback",
    "https://evil.example@client.example/callback", "https://client.example:8443/callback",
    "http://client.example/callback", "https://client.example.evil.example/callback", "https://evil.example/callback",
])
async def test_redirect_uri_exact_matching(client, setup, attack):
    _owner, app = setup
    for extra in ({}, {"prompt": "none"}, {"response_type": "token"}, {"scope": "bogus"}):
        response = await client.get(authorize(app.id, redirect_uri=attack, **extra))
        assert response.status_code == 400, (attack, extra)
        assert "location" not in response.headers


async def test_redirect_uri_loopback_port_only_for_ip_literals(client):
    owner = await register(client)
    app = await create_app(client, owner, redirect_uris=["http://127.0.0.1/cb", "http://localhost/cb"])
    ok = await client.get(authorize(app.id, redirect_uri="http://127.0.0.1:5050/cb", prompt="none"))
    assert ok.status_code == 302 and ok.headers["location"].startswith("http://127.0.0.1:5050/cb?")
    for attack in ("http://localhost:5050/cb", "http://127.0.0.1:5050/cb/x", "http://127.0.0.2:5050/cb"):
        assert (await client.get(authorize(app.id, redirect_uri=attack))).status_code == 400


async def test_no_redirect_to_unvalidated_uri_on_any_error_path(client, setup):
    _owner, app = setup
    evil = "https://evil.example/cb"
    attempts = [
        {"client_id": "999", "redirect_uri": evil},
        {"client_id": app.id, "redirect_uri": evil, "prompt": "none"},
        {"client_id": app.id, "redirect_uri": evil, "code_challenge_method": "plain"},
        {"client_id": [app.id, app.id], "redirect_uri": evil},
    ]
    for attempt in attempts:
        response = await client.get("/oauth2/authorize?" + urlencode(attempt, doseq=True))
        assert response.status_code == 400 and "location" not in response.headers


def test_redirect_uri_registration_rejects_dangerous_uris():
    from fluxer_oauth.core.redirect_uris import RedirectUriError, validate_for_registration

    for uri in ("http://app.example/cb", "https://app.example/cb#x", "https://u@app.example/cb",
                "javascript:alert(1)", "data:text/html,x", "https://app.example/\\evil"):
        with pytest.raises(RedirectUriError):
            validate_for_registration(uri)


# --- codes (RFC 9700 §4.2, RFC 6749 §4.1.2, §10.5) -------------------------------------------------------

async def test_code_single_use(client, setup):
    owner, app = setup
    code = await get_code(client, owner, app)
    assert (await exchange(client, app, code)).status_code == 200
    assert (await exchange(client, app, code)).json()["error"] == "invalid_grant"


async def test_code_replay_revokes_issued_tokens(client, setup):
    owner, app = setup
    code = await get_code(client, owner, app)
    tokens = (await exchange(client, app, code)).json()
    await exchange(client, app, code)
    assert (await client.get("/api/v1/users/@me", headers=bearer(tokens["access_token"]))).status_code == 401
    assert (await refresh(client, app, tokens["refresh_token"])).status_code == 400


async def test_code_bound_to_client(client, setup):
    owner, app = setup
    thief = await create_app(client, owner, name="thief")
    code = await get_code(client, owner, app)
    assert (await exchange(client, thief, code)).json()["error"] == "invalid_grant"


async def test_code_bound_to_redirect_uri(client):
    owner = await register(client)
    app = await create_app(client, owner, redirect_uris=[CB, "https://client.example/other"])
    code = await get_code(client, owner, app)
    response = await exchange(client, app, code, redirect_uri="https://client.example/other")
    assert response.json()["error"] == "invalid_grant"


async def test_code_bound_to_pkce_challenge(client, setup):
    owner, app = setup
    verifier, challenge = pkce_pair()
    code = await get_code(client, owner, app, code_challenge=challenge, code_challenge_method="S256")
    assert (await exchange(client, app, code, code_verifier=pkce_pair()[0])).json()["error"] == "invalid_grant"


async def test_code_expires_after_ten_minutes(client, setup, rt):
    owner, app = setup
    code = await get_code(client, owner, app)
    async with rt.db.read() as conn:
        row = (await conn.execute(authorization_codes.select())).first()
    assert row.expires_at - row.created_at == 600
    async with rt.db.write() as conn:
        await conn.execute(authorization_codes.update().values(expires_at=row.created_at - 1))
    assert (await exchange(client, app, code)).json()["error"] == "invalid_grant"


# --- PKCE (RFC 7636, RFC 9700 §2.1.1) -------------------------------------------------------------------

async def test_pkce_wrong_verifier(client, setup):
    owner, app = setup
    _verifier, challenge = pkce_pair()
    code = await get_code(client, owner, app, code_challenge=challenge, code_challenge_method="S256")
    assert (await exchange(client, app, code, code_verifier="x" * 43)).json()["error"] == "invalid_grant"


async def test_pkce_missing_verifier(client, setup):
    owner, app = setup
    _verifier, challenge = pkce_pair()
    code = await get_code(client, owner, app, code_challenge=challenge, code_challenge_method="S256")
    assert (await exchange(client, app, code)).json()["error"] == "invalid_grant"


async def test_pkce_downgrade_verifier_without_challenge(client, setup):
    owner, app = setup
    code = await get_code(client, owner, app)
    assert (await exchange(client, app, code, code_verifier=pkce_pair()[0])).json()["error"] == "invalid_grant"


async def test_pkce_plain_refused(client, setup):
    _owner, app = setup
    verifier = pkce_pair()[0]
    for params in ({"code_challenge": verifier[:43], "code_challenge_method": "plain"},
                   {"code_challenge": verifier[:43]}):
        response = await client.get(authorize(app.id, **params))
        assert query_of(response.headers["location"])["error"] == "invalid_request"


# --- refresh tokens (RFC 9700 §4.14) -----------------------------------------------------------------

async def test_refresh_rotation(client, setup):
    owner, app = setup
    first = await tokens_for(client, owner, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/api/v1/users/@me", headers=bearer(first["access_token"]))).status_code == 401


@pytest.mark.settings(refresh_reuse_leeway=0)  # no leeway: every presentation after a rotation is reuse
async def test_refresh_reuse_detection_revokes_grant(client, setup):
    owner, app = setup
    first = await tokens_for(client, owner, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    assert (await refresh(client, app, first["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await client.get("/api/v1/users/@me", headers=bearer(second["access_token"]))).status_code == 401
    assert (await refresh(client, app, second["refresh_token"])).status_code == 400


async def test_refresh_scope_can_narrow_never_widen(client, setup):
    owner, app = setup
    first = await tokens_for(client, owner, app, scope="identify guilds")
    assert (await refresh(client, app, first["refresh_token"], scope="identify email")).json()["error"] == \
        "invalid_scope"
    narrowed = (await refresh(client, app, first["refresh_token"], scope="guilds")).json()
    assert narrowed["scope"] == "guilds"


async def test_refresh_token_of_another_client_refused(client, setup):
    owner, app = setup
    thief = await create_app(client, owner, name="thief")
    first = await tokens_for(client, owner, app)
    assert (await refresh(client, thief, first["refresh_token"])).json()["error"] == "invalid_grant"


# --- client authentication (RFC 6749 §2.3, RFC 9700 §2.5) ------------------------------------------------

async def test_client_auth_wrong_secret(client, setup):
    _owner, app = setup
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                 auth=(app.id, app.secret[:-1] + ("A" if app.secret[-1] != "A" else "B")))
    assert response.status_code == 401 and response.headers["www-authenticate"] == 'Basic realm="fluxer"'


async def test_client_auth_another_apps_secret(client, setup):
    owner, app = setup
    other = await create_app(client, owner, name="other")
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                 auth=(app.id, other.secret))
    assert response.status_code == 401


async def test_client_auth_basic_and_form_disagreeing(client, setup):
    owner, app = setup
    other = await create_app(client, owner, name="other")
    response = await client.post("/api/v1/oauth2/token", auth=app.basic, data={
        "grant_type": "client_credentials", "client_id": other.id, "client_secret": other.secret})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_client_secret_compared_in_constant_time(client, setup, monkeypatch):
    _owner, app = setup
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                 auth=(app.id, "wrong"))
    assert response.status_code == 401
    assert (32, 32) in compared  # the keyed hashes, compared by hmac.compare_digest


# --- pages (RFC 9700 §4.4, §4.11; OWASP) --------------------------------------------------------------------

async def test_csrf_required_on_login(client):
    await register(client, "loginvictim")
    response = await client.post("/login", data={"login": "loginvictim", "password": PASSWORD, "next": "/"})
    assert response.status_code == 403 and "set-cookie" not in response.headers or \
        "fluxer_session" not in response.headers.get("set-cookie", "")


async def test_csrf_required_on_consent(client, setup):
    _owner, app = setup
    await browser_login(client, "victim")
    page = await client.get(authorize(app.id))
    fields = form_fields(page.text)
    response = await client.post("/oauth2/authorize", data={"request": fields["request"].replace("&amp;", "&"),
                                                            "action": "authorize"})
    assert response.status_code == 403 and "location" not in response.headers


async def test_csrf_required_on_revoke(client, setup):
    owner, app = setup
    tokens = await tokens_for(client, owner, app)
    await browser_login(client, "victim")
    response = await client.post(f"/settings/authorized-apps/{app.id}/revoke", data={})
    assert response.status_code == 403
    assert (await client.get("/api/v1/users/@me", headers=bearer(tokens["access_token"]))).status_code == 200


async def test_csrf_token_of_another_browser_refused(client, app):
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    foreign = re.search(r'name="csrf_token" value="([^"]+)"', (await other.get("/login")).text).group(1)
    await other.aclose()
    await register(client, "crossuser")
    await client.get("/login")  # our own CSRF cookie
    response = await client.post("/login", data={"csrf_token": foreign, "login": "crossuser", "password": PASSWORD})
    assert response.status_code == 403


@pytest.mark.parametrize("path", ["/login", "/settings/authorized-apps", "/developers/applications"])
async def test_pages_refuse_framing_and_referrers(client, path):
    response = await client.get(path)
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    # No referrer to other sites ("no-referrer" would make our own form POSTs send Origin: null).
    assert response.headers["referrer-policy"] == "same-origin"


async def test_session_cookie_flags(client):
    await register(client, "cookieuser")
    page = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = await client.post("/login", data={"csrf_token": csrf, "login": "cookieuser", "password": PASSWORD})
    cookie = response.headers["set-cookie"]
    assert "fluxer_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # the public URL is http here


async def test_https_deployment_sets_secure_cookies_and_hsts(database_url):
    app = build_app(make_settings(database_url, public_url="https://id.fluxer.example"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://id.fluxer.example") as http:
        page = await http.get("/login")
        assert page.headers["strict-transport-security"].startswith("max-age=")
        assert "Secure" in page.headers["set-cookie"]
        await register(http, "secureuser")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        response = await http.post("/login", data={"csrf_token": csrf, "login": "secureuser", "password": PASSWORD})
        assert "Secure" in response.headers["set-cookie"] and "HttpOnly" in response.headers["set-cookie"]
    await app.state.runtime.db.close()


async def test_no_307_after_credentials_post(client, setup):
    _owner, app = setup
    await register(client, "post307")
    page = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    login = await client.post("/login", data={"csrf_token": csrf, "login": "post307", "password": PASSWORD,
                                              "next": authorize(app.id)})
    assert login.status_code == 303
    consent_page = await client.get(authorize(app.id))
    fields = form_fields(consent_page.text)
    fields["request"] = fields["request"].replace("&amp;", "&")
    decided = await client.post("/oauth2/authorize", data={**fields, "action": "authorize"})
    assert decided.status_code == 303


# --- tokens (RFC 6750 §2.3, RFC 9700 §4.3) ---------------------------------------------------------------

async def test_bearer_token_in_query_string_ignored(client, setup):
    owner, app = setup
    tokens = await tokens_for(client, owner, app)
    for name in ("access_token", "token", "bearer"):
        response = await client.get(f"/api/v1/users/@me?{name}={tokens['access_token']}")
        assert response.status_code == 401


async def test_no_credential_in_any_log_line(client, setup, caplog, access_lines):
    owner, app = setup
    caplog.set_level(logging.DEBUG)
    logging.getLogger("fluxer").setLevel(logging.DEBUG)
    verifier, challenge = pkce_pair()
    code = await get_code(client, owner, app, code_challenge=challenge, code_challenge_method="S256")
    tokens = (await exchange(client, app, code, code_verifier=verifier)).json()
    refreshed = (await refresh(client, app, tokens["refresh_token"])).json()
    await client.get("/api/v1/users/@me?state=secret-state", headers=bearer(refreshed["access_token"]))
    await client.post("/api/v1/oauth2/revoke", data={"token": refreshed["access_token"]}, auth=app.basic)
    await client.post("/api/v1/auth/login", json={"login": "victim", "password": PASSWORD})
    await exchange(client, app, code, code_verifier=verifier)  # a replay is logged too
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # not the test client
    logged = "\n".join(record.getMessage() + repr(getattr(record, "fields", "")) for record in server_records)
    access = access_lines.lines()
    assert len(access) >= 7  # the access log was captured
    logged += "\n" + "\n".join(json.dumps(line) for line in access)
    for secret in (code, verifier, tokens["access_token"], tokens["refresh_token"], refreshed["access_token"],
                   refreshed["refresh_token"], app.secret, owner.token, PASSWORD, "secret-state"):
        assert secret not in logged


async def test_database_dump_holds_no_usable_credential(client, setup, rt):
    owner, app = setup
    verifier, challenge = pkce_pair()
    code = await get_code(client, owner, app, code_challenge=challenge, code_challenge_method="S256")
    unused_code = await get_code(client, owner, app)
    tokens = (await exchange(client, app, code, code_verifier=verifier)).json()
    credentials = [code, unused_code, tokens["access_token"], tokens["refresh_token"], app.secret, owner.token,
                   app.body["bot"]["token"], PASSWORD]
    dump = []
    async with rt.db.read() as conn:
        tables = [row[0] for row in (await conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type='table'" if rt.db.dialect == "sqlite" else
            "SELECT tablename FROM pg_tables WHERE schemaname='public'"))).all()]
        for table in tables:
            dump.extend(repr(tuple(row)) for row in (await conn.execute(text(f'SELECT * FROM "{table}"'))).all())
    blob = "\n".join(dump)
    for credential in credentials:
        assert credential not in blob
        assert credential.encode().hex() not in blob


async def test_no_implicit_grant(client, setup):
    _owner, app = setup
    for response_type in ("token", "id_token", "code token", "none"):
        response = await client.get(authorize(app.id, response_type=response_type))
        assert query_of(response.headers["location"])["error"] == "unsupported_response_type"
        assert "access_token" not in response.headers["location"]


async def test_no_password_grant(client, setup):
    _owner, app = setup
    response = await client.post("/api/v1/oauth2/token", auth=app.basic, data={
        "grant_type": "password", "username": "victim", "password": PASSWORD})
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"

