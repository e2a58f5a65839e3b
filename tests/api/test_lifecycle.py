"""Grant lifecycle (SPEC §4.3, §4.4, §6): revocation, introspection, metadata, authorized
apps, the admin scope and the audit log."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from fluxer_oauth.platform import admin
from fluxer_oauth.store.tables import audit_log
from tests.api.test_authorize import authorize_url, browser_login
from tests.conftest import bearer, consent, create_app, exchange, get_code, pkce_pair, query_of, register, tokens_for


@pytest.fixture
async def setup(client):
    owner = await register(client)
    app = await create_app(client, owner)
    return owner, app


async def alive(client, access_token) -> bool:
    response = await client.get("/api/v1/users/@me", headers=bearer(access_token))
    assert response.status_code in (200, 401)
    return response.status_code == 200


async def refresh(client, app, token):
    return await client.post("/api/v1/oauth2/token", auth=app.basic,
                             data={"grant_type": "refresh_token", "refresh_token": token})


# --- revocation (RFC 7009) ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/oauth2/token/revoke", "/api/v1/oauth2/revoke"])
@pytest.mark.parametrize("which,hint", [("access_token", None), ("access_token", "refresh_token"),
                                        ("refresh_token", None), ("refresh_token", "access_token")])
async def test_revoking_either_token_ends_the_whole_grant(client, setup, path, which, hint):
    owner, app = setup
    first = await tokens_for(client, owner, app)
    second = await tokens_for(client, owner, app)  # another pair of the same grant
    data = {"token": first[which], **({"token_type_hint": hint} if hint else {})}
    response = await client.post(path, data=data, auth=app.basic)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert not await alive(client, first["access_token"])
    assert not await alive(client, second["access_token"])
    assert (await refresh(client, app, first["refresh_token"])).status_code == 400
    assert (await refresh(client, app, second["refresh_token"])).status_code == 400


async def test_unknown_or_foreign_tokens_still_answer_200(client, setup):
    owner, app = setup
    other = await create_app(client, owner, name="other")
    mine = await tokens_for(client, owner, app)
    assert (await client.post("/api/v1/oauth2/token/revoke", data={"token": "nope"}, auth=app.basic)).status_code == 200
    foreign = await client.post("/api/v1/oauth2/token/revoke", data={"token": mine["access_token"]}, auth=other.basic)
    assert foreign.status_code == 200
    assert await alive(client, mine["access_token"])


async def test_revocation_needs_client_authentication(client, setup):
    owner, app = setup
    mine = await tokens_for(client, owner, app)
    response = await client.post("/api/v1/oauth2/token/revoke", data={"token": mine["access_token"]})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    missing = await client.post("/api/v1/oauth2/token/revoke", data={}, auth=app.basic)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


# --- introspection (RFC 7662) ----------------------------------------------------------------------

async def test_introspection_of_own_tokens(client, setup):
    owner, app = setup
    body = await tokens_for(client, owner, app, scope="identify guilds")
    result = (await client.post("/api/v1/oauth2/introspect", data={"token": body["access_token"]},
                                auth=app.basic)).json()
    assert result["active"] is True and result["client_id"] == app.id and result["sub"] == owner.id
    assert result["scope"] == "identify guilds" and result["token_type"] == "Bearer"
    assert result["iss"] == "http://testserver" and result["exp"] - result["iat"] == 604800
    refresh_info = (await client.post("/api/v1/oauth2/introspect", data={"token": body["refresh_token"]},
                                      auth=app.basic)).json()
    assert refresh_info["active"] is True and refresh_info["token_type"] == "refresh_token"


async def test_introspection_by_another_client_says_inactive(client, setup):
    owner, app = setup
    other = await create_app(client, owner, name="other")
    body = await tokens_for(client, owner, app)
    result = await client.post("/api/v1/oauth2/introspect", data={"token": body["access_token"]}, auth=other.basic)
    assert result.json() == {"active": False}


async def test_revoked_and_unknown_tokens_introspect_inactive(client, setup):
    owner, app = setup
    body = await tokens_for(client, owner, app)
    await client.post("/api/v1/oauth2/revoke", data={"token": body["access_token"]}, auth=app.basic)
    for token in (body["access_token"], body["refresh_token"], "garbage"):
        result = await client.post("/api/v1/oauth2/introspect", data={"token": token}, auth=app.basic)
        assert result.json() == {"active": False}


# --- metadata (RFC 8414) ---------------------------------------------------------------------------

async def test_metadata_matches_what_the_server_enforces(client, setup):
    owner, app = setup
    meta = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == "http://testserver"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["response_types_supported"] == ["code"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post", "none"}
    # introspection is for confidential clients only
    assert "none" not in meta["introspection_endpoint_auth_methods_supported"]
    # OpenID Connect Discovery serves the same document
    assert (await client.get("/.well-known/openid-configuration")).json() == meta
    # plain PKCE (not advertised) is refused
    response = await client.get(authorize_url(app.id, code_challenge="a" * 43, code_challenge_method="plain"))
    assert query_of(response.headers["location"])["error"] == "invalid_request"
    # every advertised grant type is understood by the token endpoint
    for grant_type in meta["grant_types_supported"]:
        answer = await client.post("/api/v1/oauth2/token", data={"grant_type": grant_type}, auth=app.basic)
        assert answer.json().get("error") != "unsupported_grant_type"
    # and every advertised scope parses
    params = await consent(client, owner, app, scope=" ".join(s for s in meta["scopes_supported"]
                                                              if s not in ("bot", "admin")))
    assert "code" in params
    # every advertised endpoint is routed
    for key in ("token_endpoint", "revocation_endpoint", "introspection_endpoint", "device_authorization_endpoint"):
        path = meta[key].removeprefix("http://testserver")
        assert (await client.post(path, data={}, auth=app.basic)).status_code != 404
    for key in ("jwks_uri", "userinfo_endpoint"):
        assert (await client.get(meta[key].removeprefix("http://testserver"))).status_code in (200, 401)
    assert (await client.get(meta["authorization_endpoint"].removeprefix("http://testserver"))).status_code == 400


# --- users' authorized apps ------------------------------------------------------------------------

async def test_authorized_apps_list_and_revoke(client, setup):
    owner, app = setup
    user = await register(client)
    body = await tokens_for(client, user, app, scope="identify email")
    listed = (await client.get("/api/v1/oauth2/@me/authorizations", headers=user.headers)).json()
    assert len(listed) == 1
    entry = listed[0]
    assert entry["application"]["id"] == app.id and entry["scopes"] == ["identify", "email"]
    assert entry["first_authorized_at"].endswith("Z") and entry["last_used_at"].endswith("Z")
    response = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert response.status_code == 204
    assert not await alive(client, body["access_token"])
    assert (await client.get("/api/v1/oauth2/@me/authorizations", headers=user.headers)).json() == []
    again = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert again.status_code == 404
    assert (await client.get("/api/v1/oauth2/@me/authorizations",
                             headers=bearer(body["access_token"]))).status_code == 401


async def test_last_used_is_kept_to_the_minute(client, setup, monkeypatch):
    owner, app = setup
    user = await register(client)
    body = await tokens_for(client, user, app, scope="identify")

    async def last_used() -> str:
        listed = (await client.get("/api/v1/oauth2/@me/authorizations", headers=user.headers)).json()
        return listed[0]["last_used_at"]

    first = await last_used()
    body = (await refresh(client, app, body["refresh_token"])).json()
    assert await last_used() == first  # within the minute: the grant's row is left alone
    from fluxer_oauth.core.timefmt import now as real_now
    monkeypatch.setattr("fluxer_oauth.oauth.token.now", lambda: real_now() + 61)
    assert (await refresh(client, app, body["refresh_token"])).status_code == 200
    assert await last_used() > first  # a minute on, the refresh marks it used again


async def test_settings_page_lists_and_revokes_with_csrf(client, setup):
    owner, app = setup
    user = await register(client, "settingsuser")
    body = await tokens_for(client, user, app)
    assert (await client.get("/settings/authorized-apps")).status_code == 302  # not logged in
    await browser_login(client, "settingsuser")
    page = await client.get("/settings/authorized-apps")
    assert page.status_code == 200 and "Test App" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    refused = await client.post(f"/settings/authorized-apps/{app.id}/revoke", data={"csrf_token": "forged"})
    assert refused.status_code == 403 and await alive(client, body["access_token"])
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    done = await client.post(f"/settings/authorized-apps/{app.id}/revoke", data={"csrf_token": csrf})
    assert done.status_code == 303
    assert not await alive(client, body["access_token"])
    assert 'id="no-apps"' in (await client.get("/settings/authorized-apps")).text


async def test_prompt_none_after_consent_returns_code_without_page(client, setup):
    owner, app = setup
    user = await register(client, "silent")
    await consent(client, user, app, scope="identify")
    await browser_login(client, "silent")
    response = await client.get(authorize_url(app.id, prompt="none"))
    assert response.status_code == 302 and "code" in query_of(response.headers["location"])


# --- admin ------------------------------------------------------------------------------------------

@pytest.fixture
async def staff_setup(client, rt, setup):
    owner, app = setup
    staff = await register(client, "staffer")
    await admin.set_staff(rt, None, int(staff.id), True)
    await admin.set_application_trusted(rt, None, int(app.id), True)
    return staff, app


async def test_admin_api_with_staff_session_and_admin_token(client, staff_setup):
    staff, app = staff_setup
    found = await client.get("/api/v1/admin/users?q=staff", headers=staff.headers)
    assert found.status_code == 200 and [u["username"] for u in found.json()] == ["staffer"]
    admin_token = await tokens_for(client, staff, app, scope="identify admin")
    assert admin_token["scope"] == "identify admin"
    details = await client.get(f"/api/v1/admin/users/{staff.id}", headers=bearer(admin_token["access_token"]))
    assert details.status_code == 200 and details.json()["user"]["staff"] is True
    identify_only = await tokens_for(client, staff, app, scope="identify")
    refused = await client.get("/api/v1/admin/users", headers=bearer(identify_only["access_token"]))
    assert refused.status_code == 403 and refused.json()["required_scope"] == "admin"


async def test_admin_api_refuses_non_staff(client, staff_setup, rt):
    staff, app = staff_setup
    someone = await register(client)
    assert (await client.get("/api/v1/admin/users", headers=someone.headers)).status_code == 403
    admin_token = await tokens_for(client, staff, app, scope="identify admin")
    await admin.set_staff(rt, None, int(staff.id), False)  # staff flag removed: the grant carrying admin ends
    response = await client.get("/api/v1/admin/users", headers=bearer(admin_token["access_token"]))
    assert response.status_code == 401


async def test_non_staff_user_asking_for_admin_gets_access_denied(client, staff_setup):
    _staff, app = staff_setup
    someone = await register(client)
    params = await consent(client, someone, app, scope="identify admin")
    assert params["error"] == "access_denied"


async def test_disabling_a_user_ends_sessions_and_tokens_at_once(client, staff_setup):
    staff, app = staff_setup
    victim = await register(client)
    body = await tokens_for(client, victim, app)
    assert await alive(client, body["access_token"])
    response = await client.post(f"/api/v1/admin/users/{victim.id}/disable", headers=staff.headers)
    assert response.status_code == 204
    assert not await alive(client, body["access_token"])
    assert (await client.get("/api/v1/users/@me", headers=victim.headers)).status_code == 401
    assert (await refresh(client, app, body["refresh_token"])).status_code == 400
    login = await client.post("/api/v1/auth/login", json={"login": victim.user["username"], "password": "x" * 10})
    assert login.status_code == 400


async def test_disabling_an_application_kills_its_tokens_and_requests(client, staff_setup):
    staff, app = staff_setup
    body = await tokens_for(client, staff, app)
    assert (await client.post(f"/api/v1/admin/applications/{app.id}/disable", headers=staff.headers)).status_code == 204
    assert not await alive(client, body["access_token"])
    response = await client.get(authorize_url(app.id))
    assert query_of(response.headers["location"])["error"] == "unauthorized_client"
    token = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=app.basic)
    assert token.json()["error"] == "unauthorized_client"
    listed = (await client.get("/api/v1/admin/applications", headers=staff.headers)).json()
    assert [a["disabled"] for a in listed if a["id"] == app.id] == [True]
    assert (await client.post(f"/api/v1/admin/applications/{app.id}/enable", headers=staff.headers)).status_code == 204
    assert (await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=app.basic)).status_code == 200


async def test_admin_revokes_any_grant_and_reads_the_audit_log(client, staff_setup):
    staff, app = staff_setup
    user = await register(client)
    body = await tokens_for(client, user, app)
    response = await client.delete(f"/api/v1/admin/grants/{user.id}/{app.id}", headers=staff.headers)
    assert response.status_code == 204 and not await alive(client, body["access_token"])
    log = (await client.get("/api/v1/admin/audit-log?action=grant.revoked", headers=staff.headers)).json()
    assert log[0]["target_user_id"] == user.id and log[0]["details"] == {"by": "admin"}
    assert log[0]["actor_id"] == staff.id


@pytest.mark.settings(refresh_reuse_leeway=0)  # no leeway: every presentation after a rotation is reuse
async def test_audit_log_records_reuse_detection_and_never_a_credential(client, setup, staff_setup, rt):
    owner, _app = setup
    staff, app = staff_setup
    verifier, challenge = pkce_pair()
    code = await get_code(client, staff, app, code_challenge=challenge, code_challenge_method="S256")
    first = (await exchange(client, app, code, code_verifier=verifier)).json()
    await exchange(client, app, code, code_verifier=verifier)  # replay
    second = await tokens_for(client, staff, app)
    await refresh(client, app, second["refresh_token"])
    await refresh(client, app, second["refresh_token"])  # reuse
    await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset",
                      json={"password": "correct horse battery"}, headers=owner.headers)
    entries = (await client.get("/api/v1/admin/audit-log?limit=200", headers=staff.headers)).json()
    actions = {entry["action"] for entry in entries}
    assert {"refresh_token.reuse_detected", "code.replay_detected", "grant.approved", "application.secret_reset",
            "application.created", "grant.revoked"} <= actions
    async with rt.db.read() as conn:
        dump = repr((await conn.execute(select(audit_log))).all())
    for secret in (first["access_token"], first["refresh_token"], code, verifier, second["refresh_token"],
                   app.secret, staff.token):
        assert secret not in dump


async def test_every_admin_action_is_audited(client, staff_setup):
    staff, app = staff_setup
    victim = await register(client)
    await client.get("/api/v1/admin/users?q=x", headers=staff.headers)
    await client.get(f"/api/v1/admin/users/{victim.id}", headers=staff.headers)
    await client.get("/api/v1/admin/applications", headers=staff.headers)
    await client.post(f"/api/v1/admin/users/{victim.id}/disable", headers=staff.headers)
    await client.post(f"/api/v1/admin/applications/{app.id}/disable", headers=staff.headers)
    entries = (await client.get("/api/v1/admin/audit-log?limit=200", headers=staff.headers)).json()
    by_staff = {e["action"] for e in entries if e["actor_id"] == staff.id}
    assert {"admin.users.searched", "admin.user.viewed", "admin.applications.listed", "admin.user.disabled",
            "admin.application.disabled"} <= by_staff
    again = (await client.get("/api/v1/admin/audit-log?action=admin.audit_log.read", headers=staff.headers)).json()
    assert again and again[0]["actor_id"] == staff.id  # reading the log is itself logged
