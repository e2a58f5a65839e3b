"""Public clients (RFC 6749 §2.1, OAuth 2.1): no secret, PKCE S256 required, client_id-only
authentication ("none"), refresh rotation with reuse detection, no client_credentials, no
introspection, and limits counted per (client, address)."""

from __future__ import annotations

import httpx
import pytest

from fluxer_oauth.app import build_app
from tests.conftest import (PASSWORD, Client, bearer, consent, create_app, pkce_pair, register)

CB = "https://client.example/callback"


@pytest.fixture
async def owner(client):
    return await register(client, "public_owner")


@pytest.fixture
async def public_app(client, owner) -> Client:
    return await create_app(client, owner, public_client=True)


async def sign_in(client, user, app: Client, *, scope="identify") -> dict:
    verifier, challenge = pkce_pair()
    params = await consent(client, user, app, scope=scope, code_challenge=challenge, code_challenge_method="S256")
    response = await client.post("/api/v1/oauth2/token", data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CB, "code_verifier": verifier,
        "client_id": app.id})
    assert response.status_code == 200, response.text
    return response.json()


async def refresh(client, app: Client, refresh_token: str, **auth) -> httpx.Response:
    return await client.post("/api/v1/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app.id}, **auth)


async def test_a_public_client_is_created_without_a_secret(client, owner):
    response = await client.post("/api/v1/oauth2/applications", headers=owner.headers,
                                 json={"name": "Phone app", "redirect_uris": [CB], "public_client": True})
    assert response.status_code == 201
    assert response.json()["public_client"] is True and "client_secret" not in response.json()


async def test_a_public_client_must_use_pkce(client, owner, public_app):
    params = await consent(client, owner, public_app)
    assert params["error"] == "invalid_request" and "PKCE" in params["error_description"]


async def test_a_public_client_signs_in_with_pkce_and_refreshes_with_its_client_id(client, owner, public_app):
    tokens = await sign_in(client, owner, public_app, scope="identify openid")
    assert tokens["id_token"] and tokens["refresh_token"]
    assert (await client.get("/api/v1/users/@me", headers=bearer(tokens["access_token"]))).status_code == 200
    rotated = await refresh(client, public_app, tokens["refresh_token"])
    assert rotated.status_code == 200 and rotated.json()["refresh_token"] != tokens["refresh_token"]
    # Reuse of the spent refresh token is detected and ends the grant, as for any client.
    reused = await refresh(client, public_app, tokens["refresh_token"])
    assert reused.json()["error"] == "invalid_grant"
    assert (await refresh(client, public_app, rotated.json()["refresh_token"])).json()["error"] == "invalid_grant"
    me = await client.get("/api/v1/users/@me", headers=bearer(rotated.json()["access_token"]))
    assert me.status_code == 401


async def test_a_public_client_authenticates_with_an_empty_basic_password_too(client, owner, public_app):
    tokens = await sign_in(client, owner, public_app)
    response = await client.post("/api/v1/oauth2/token", auth=(public_app.id, ""),
                                 data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200, response.text


async def test_a_secret_presented_for_a_public_client_is_invalid_client(client, owner):
    app = await create_app(client, owner)
    patched = await client.patch(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers,
                                 json={"public_client": True})
    assert patched.status_code == 200 and patched.json()["public_client"] is True
    tokens = await sign_in(client, owner, app)
    response = await refresh(client, app, tokens["refresh_token"], auth=app.basic)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_a_confidential_client_without_its_secret_is_invalid_client(client, owner):
    app = await create_app(client, owner)
    verifier, challenge = pkce_pair()
    params = await consent(client, owner, app, code_challenge=challenge, code_challenge_method="S256")
    response = await client.post("/api/v1/oauth2/token", data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CB, "code_verifier": verifier,
        "client_id": app.id})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_a_public_client_cannot_use_client_credentials(client, public_app):
    response = await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials",
                                                                "client_id": public_app.id})
    assert response.status_code == 400 and response.json()["error"] == "unauthorized_client"


async def test_a_public_client_cannot_introspect(client, owner, public_app):
    tokens = await sign_in(client, owner, public_app)
    response = await client.post("/api/v1/oauth2/introspect", data={"token": tokens["access_token"],
                                                                      "client_id": public_app.id})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_a_public_client_revokes_its_own_tokens(client, owner, public_app):
    tokens = await sign_in(client, owner, public_app)
    response = await client.post("/api/v1/oauth2/token/revoke", data={"token": tokens["refresh_token"],
                                                                       "client_id": public_app.id})
    assert response.status_code == 200
    assert (await client.get("/api/v1/users/@me", headers=bearer(tokens["access_token"]))).status_code == 401


async def test_a_code_issued_without_pkce_is_refused_once_the_client_is_public(client, owner):
    app = await create_app(client, owner)
    params = await consent(client, owner, app)  # confidential, no PKCE
    await client.patch(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers, json={"public_client": True})
    response = await client.post("/api/v1/oauth2/token", data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CB, "client_id": app.id})
    assert response.json()["error"] == "invalid_grant"


async def test_making_a_client_public_ends_its_client_credentials_tokens_and_secret(client, owner):
    app = await create_app(client, owner)
    issued = await client.post("/api/v1/oauth2/token", auth=app.basic, data={"grant_type": "client_credentials"})
    machine_token = issued.json()["access_token"]
    assert (await client.get("/api/v1/users/@me", headers=bearer(machine_token))).status_code == 200
    await client.patch(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers, json={"public_client": True})
    assert (await client.get("/api/v1/users/@me", headers=bearer(machine_token))).status_code == 401
    # Back to confidential: the old secret stays dead until the owner resets it.
    await client.patch(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers, json={"public_client": False})
    again = await client.post("/api/v1/oauth2/token", auth=app.basic, data={"grant_type": "client_credentials"})
    assert again.status_code == 401
    reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset", headers=owner.headers,
                              json={"password": PASSWORD})
    fresh = Client(app.id, reset.json()["client_secret"], app.body)
    ok = await client.post("/api/v1/oauth2/token", auth=fresh.basic, data={"grant_type": "client_credentials"})
    assert ok.status_code == 200


async def test_a_public_client_has_no_secret_to_reset(client, owner, public_app):
    response = await client.post(f"/api/v1/oauth2/applications/{public_app.id}/client-secret/reset",
                                 headers=owner.headers, json={"password": PASSWORD})
    assert response.status_code == 400 and response.json()["code"] == "PUBLIC_CLIENT"


async def test_a_stranger_naming_a_public_client_spends_only_their_own_allowance(settings, owner, public_app):
    """A public client's client_id proves nothing: its token bucket is counted per address,
    so one address hammering the endpoint in its name never blocks the app's other users."""
    app = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_token": "3/minute"}))
    try:
        async def poll(address: str) -> int:
            transport = httpx.ASGITransport(app=app, client=(address, 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                response = await http.post("/api/v1/oauth2/token", data={
                    "grant_type": "refresh_token", "refresh_token": "nope", "client_id": public_app.id})
                return response.status_code
        assert [await poll("192.0.2.1") for _ in range(4)] == [400, 400, 400, 429]
        assert await poll("192.0.2.2") == 400
    finally:
        await app.state.runtime.db.close()
