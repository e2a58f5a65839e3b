"""POST /api/v1/oauth2/token (SPEC §4.2): client authentication, the code grant with
PKCE and single use, refresh rotation with reuse detection."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time

import pytest
from sqlalchemy import select

from fluxer_oauth.core import credentials
from fluxer_oauth.store.tables import audit_log, authorization_codes, tokens
from tests.conftest import bearer, create_app, exchange, get_code, pkce_pair, register, tokens_for


@pytest.fixture
async def setup(client):
    owner = await register(client)
    app = await create_app(client, owner)
    return owner, app


async def test_code_exchange_returns_token_pair(client, setup):
    owner, app = setup
    code = await get_code(client, owner, app, scope="identify email")
    response = await exchange(client, app, code)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 604800
    assert body["scope"] == "identify email"
    assert len(body["access_token"]) >= 43 and len(body["refresh_token"]) >= 43
    me = await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["email"] == owner.user["email"]


async def test_client_secret_in_form_body_works(client, setup):
    owner, app = setup
    code = await get_code(client, owner, app)
    response = await client.post("/api/v1/oauth2/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "https://client.example/callback",
        "client_id": app.id, "client_secret": app.secret})
    assert response.status_code == 200


@pytest.mark.parametrize("auth,form", [
    (None, {}),
    (("{id}", "wrong-secret"), {}),
    (("123456789", "{secret}"), {}),
    (None, {"client_id": "{id}", "client_secret": "nope"}),
    (None, {"client_id": "{id}"}),
])
async def test_bad_client_authentication_is_401_invalid_client(client, setup, auth, form):
    _owner, app = setup
    fill = lambda value: value.format(id=app.id, secret=app.secret)  # noqa: E731
    data = {"grant_type": "client_credentials", **{k: fill(v) for k, v in form.items()}}
    response = await client.post("/api/v1/oauth2/token", data=data,
                                 auth=tuple(fill(v) for v in auth) if auth else None)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="fluxer"'


async def test_basic_and_form_must_agree(client, setup):
    owner, app = setup
    other = await create_app(client, owner, name="other")
    response = await client.post("/api/v1/oauth2/token", auth=app.basic,
                                 data={"grant_type": "client_credentials", "client_id": other.id})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    same = await client.post("/api/v1/oauth2/token", auth=app.basic,
                             data={"grant_type": "client_credentials", "client_id": app.id, "client_secret": app.secret})
    assert same.status_code == 200


async def test_malformed_basic_header_is_invalid_client(client, setup):
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": "Basic !!!not-base64"})
    assert response.status_code == 401
    raw = base64.b64encode(b"no-colon").decode()
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {raw}"})
    assert response.status_code == 401


async def test_unsupported_grant_types(client, setup):
    _owner, app = setup
    for grant in ("password", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer"):
        response = await client.post("/api/v1/oauth2/token", data={"grant_type": grant}, auth=app.basic)
        assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"
    response = await client.post("/api/v1/oauth2/token", data={}, auth=app.basic)
    assert response.json()["error"] == "invalid_request"


async def test_json_body_is_refused(client, setup):
    _owner, app = setup
    response = await client.post("/api/v1/oauth2/token", json={"grant_type": "client_credentials"}, auth=app.basic)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_code_is_single_use_and_replay_revokes_issued_tokens(client, setup, rt):
    owner, app = setup
    code = await get_code(client, owner, app)
    first = await exchange(client, app, code)
    assert first.status_code == 200
    access, refresh = first.json()["access_token"], first.json()["refresh_token"]
    assert (await client.get("/api/v1/users/@me", headers=bearer(access))).status_code == 200
    replay = await exchange(client, app, code)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (await client.get("/api/v1/users/@me", headers=bearer(access))).status_code == 401
    refreshed = await client.post("/api/v1/oauth2/token", auth=app.basic,
                                  data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert refreshed.status_code == 400
    async with rt.db.read() as conn:
        actions = (await conn.execute(select(audit_log.c.action))).scalars().all()
    assert "code.replay_detected" in actions


async def test_parallel_redemptions_exactly_one_wins(client, setup):
    owner, app = setup
    code = await get_code(client, owner, app)
    results = await asyncio.gather(*(exchange(client, app, code) for _ in range(10)))
    assert sorted(r.status_code for r in results) == [200] + [400] * 9


async def test_code_is_bound_to_the_client(client, setup):
    owner, app = setup
    other = await create_app(client, owner, name="thief")
    code = await get_code(client, owner, app)
    stolen = await exchange(client, other, code)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert (await exchange(client, app, code)).status_code == 200  # the thief did not burn it


async def test_redirect_uri_must_match(client, setup):
    owner, app = setup
    code = await get_code(client, owner, app)
    response = await exchange(client, app, code, redirect_uri="https://client.example/other")
    assert response.json()["error"] == "invalid_grant"
    code = await get_code(client, owner, app)
    response = await exchange(client, app, code, redirect_uri=None)
    assert response.json()["error"] == "invalid_grant"


async def test_expired_code_is_refused(client, setup, rt):
    owner, app = setup
    code = await get_code(client, owner, app)
    async with rt.db.write() as conn:
        await conn.execute(authorization_codes.update().values(expires_at=1.0))
    assert (await exchange(client, app, code)).json()["error"] == "invalid_grant"


async def test_pkce(client, setup):
    owner, app = setup
    verifier, challenge = pkce_pair()
    extra = {"code_challenge": challenge, "code_challenge_method": "S256"}
    code = await get_code(client, owner, app, **extra)
    assert (await exchange(client, app, code)).json()["error"] == "invalid_grant"  # missing verifier
    code = await get_code(client, owner, app, **extra)
    wrong = pkce_pair()[0]
    assert (await exchange(client, app, code, code_verifier=wrong)).json()["error"] == "invalid_grant"
    code = await get_code(client, owner, app, **extra)
    assert (await exchange(client, app, code, code_verifier=verifier)).status_code == 200
    code = await get_code(client, owner, app)  # no challenge: a verifier is a downgrade attempt
    assert (await exchange(client, app, code, code_verifier=verifier)).json()["error"] == "invalid_grant"


async def refresh(client, app, token, **fields):
    return await client.post("/api/v1/oauth2/token", auth=app.basic,
                             data={"grant_type": "refresh_token", "refresh_token": token, **fields})


async def test_refresh_rotates_and_old_pair_stops_working(client, setup):
    owner, app = setup
    first = await tokens_for(client, owner, app, scope="identify guilds")
    second = await refresh(client, app, first["refresh_token"])
    assert second.status_code == 200
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"] and body["scope"] == "identify guilds"
    assert (await client.get("/api/v1/users/@me", headers=bearer(first["access_token"]))).status_code == 401
    assert (await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))).status_code == 200


@pytest.mark.settings(refresh_reuse_leeway=0)  # no leeway: every presentation after a rotation is reuse
async def test_refresh_reuse_revokes_the_whole_grant(client, setup, rt):
    owner, app = setup
    first = await tokens_for(client, owner, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    reuse = await refresh(client, app, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert (await client.get("/api/v1/users/@me", headers=bearer(second["access_token"]))).status_code == 401
    assert (await refresh(client, app, second["refresh_token"])).status_code == 400
    async with rt.db.read() as conn:
        actions = (await conn.execute(select(audit_log.c.action))).scalars().all()
    assert "refresh_token.reuse_detected" in actions


async def test_refresh_scope_may_narrow_never_widen(client, setup):
    owner, app = setup
    first = await tokens_for(client, owner, app, scope="identify guilds")
    widened = await refresh(client, app, first["refresh_token"], scope="identify guilds email")
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"
    narrowed = await refresh(client, app, first["refresh_token"], scope="identify")  # not spent by the failure
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "identify"
    guilds = await client.get("/api/v1/users/@me/guilds", headers=bearer(narrowed.json()["access_token"]))
    assert guilds.status_code == 403


async def test_another_clients_refresh_token_is_refused(client, setup):
    owner, app = setup
    other = await create_app(client, owner, name="other")
    first = await tokens_for(client, owner, app)
    assert (await refresh(client, other, first["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await refresh(client, app, first["refresh_token"])).status_code == 200


@pytest.mark.settings(refresh_reuse_leeway=0)  # no leeway: every presentation after a rotation is reuse
async def test_parallel_refreshes_exactly_one_new_pair(client, setup):
    owner, app = setup
    first = await tokens_for(client, owner, app)
    results = await asyncio.gather(*(refresh(client, app, first["refresh_token"]) for _ in range(10)))
    assert sorted(r.status_code for r in results)[0] == 200
    assert [r.status_code for r in results].count(200) == 1


async def test_tokens_are_stored_only_as_hashes(client, setup, rt):
    owner, app = setup
    body = await tokens_for(client, owner, app)
    async with rt.db.read() as conn:
        rows = (await conn.execute(select(tokens.c.token_hash))).scalars().all()
    dump = b"".join(rows)
    assert body["access_token"].encode() not in dump and body["refresh_token"].encode() not in dump


async def test_client_credentials_acts_as_the_bot(client, setup):
    _owner, app = setup
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials",
                                                               "scope": "identify guilds"}, auth=app.basic)
    assert response.status_code == 200
    body = response.json()
    assert "refresh_token" not in body and body["scope"] == "identify guilds"
    me = await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))
    assert me.json()["id"] == app.id and me.json()["bot"] is True
    bad = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials", "scope": "email identify"},
                            auth=app.basic)
    assert bad.json()["error"] == "invalid_scope"


async def test_client_credentials_without_bot_is_unauthorized_client(client, setup):
    owner, _app = setup
    botless = await create_app(client, owner, name="botless", bot=False)
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=botless.basic)
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"


async def test_client_credentials_after_a_secret_reset_and_error_order(client, setup):
    owner, app = setup
    cc = {"grant_type": "client_credentials"}
    assert (await client.post("/api/v1/oauth2/token", data=cc, auth=app.basic)).status_code == 200
    reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset",
                              json={"password": "correct horse battery"}, headers=owner.headers)
    assert reset.status_code == 200, reset.text
    new_secret = reset.json()["client_secret"]
    old = await client.post("/api/v1/oauth2/token", data=cc, auth=app.basic)
    assert old.status_code == 401 and old.json()["error"] == "invalid_client"  # at once, on every backend
    fresh = await client.post("/api/v1/oauth2/token", data=cc, auth=(app.id, new_secret))
    assert fresh.status_code == 200
    me = await client.get("/api/v1/users/@me", headers=bearer(fresh.json()["access_token"]))
    assert me.json()["id"] == app.id and me.json()["bot"] is True
    # a wrong secret is reported before a bad scope, whichever path the grant takes
    both = await client.post("/api/v1/oauth2/token", data={**cc, "scope": "email"}, auth=(app.id, "wrong"))
    assert both.status_code == 401 and both.json()["error"] == "invalid_client"
    unknown = await client.post("/api/v1/oauth2/token", data=cc, auth=("1" * 19, new_secret))
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"


# --- the stored form of access and refresh tokens ---------------------------------------------

async def test_tokens_are_stored_under_their_issue_time_then_their_hash(client, setup, rt):
    owner, app = setup
    before_ms = int(time.time() * 1000)
    body = await tokens_for(client, owner, app)
    after_ms = int(time.time() * 1000)
    async with rt.db.read() as conn:
        stored = set((await conn.execute(select(tokens.c.token_hash))).scalars().all())
    for token in (body["access_token"], body["refresh_token"]):
        assert len(token) == 51 and len(credentials.b64url_decode(token)) == 6 + 32
        key = credentials.stored_token_key(token)
        issued_ms = int.from_bytes(key[:6], "big")
        assert before_ms <= issued_ms <= after_ms
        assert key == key[:6] + hashlib.sha256(token.encode()).digest() and key in stored
    # A token whose time was altered keys elsewhere: the hash covers the whole token.
    forged = credentials.b64url(b"\xff" * 6) + body["access_token"][8:]
    assert (await client.get("/api/v1/users/@me", headers=bearer(forged))).status_code == 401


async def test_tokens_stored_before_the_issue_time_was_added_still_work(client, setup, rt):
    """Tokens from before the time prefix are 43 characters and keyed by their SHA-256 alone:
    every endpoint still finds them, and a refresh hands out the current form."""
    owner, app = setup
    body = await tokens_for(client, owner, app)
    old_access, old_refresh = credentials.new_opaque_token(), credentials.new_opaque_token()
    async with rt.db.write() as conn:
        for new, old in ((body["access_token"], old_access), (body["refresh_token"], old_refresh)):
            await conn.execute(tokens.update().where(tokens.c.token_hash == credentials.stored_token_key(new))
                               .values(token_hash=hashlib.sha256(old.encode()).digest()))
    assert (await client.get("/api/v1/users/@me", headers=bearer(old_access))).status_code == 200
    assert (await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))).status_code == 401
    introspected = await client.post("/api/v1/oauth2/introspect", data={"token": old_access}, auth=app.basic)
    assert introspected.json()["active"] is True
    rotated = await refresh(client, app, old_refresh)
    assert rotated.status_code == 200 and len(rotated.json()["refresh_token"]) == 51
    assert (await client.get("/api/v1/users/@me", headers=bearer(old_access))).status_code == 401
    new_access = rotated.json()["access_token"]
    revoked = await client.post("/api/v1/oauth2/token/revoke", data={"token": new_access}, auth=app.basic)
    assert revoked.status_code == 200
    assert (await client.get("/api/v1/users/@me", headers=bearer(new_access))).status_code == 401
