"""OpenID Connect (Core 1.0, Discovery 1.0): the id_token of the code grant, userinfo,
discovery and JWKS, nonce / max_age / prompt=login, and signing-key rotation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidClaimError, InvalidKeyIdError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import update

from fluxer_oauth.app import build_app
from fluxer_oauth.core import credentials
from fluxer_oauth.oauth import keys
from fluxer_oauth.oauth.authorize import login_marker
from fluxer_oauth.oauth.keys import KeyUnreadable
from fluxer_oauth.ops.janitor import sweep
from fluxer_oauth.settings import Settings
from fluxer_oauth.store import keys as key_store
from fluxer_oauth.store.tables import sessions, signing_keys
from tests.api.test_authorize import authorize_url, browser_login, form_fields
from tests.conftest import (PASSWORD, bearer, consent, create_app, exchange, get_code, pkce_pair, query_of, register,
                            tokens_for)

ISSUER = "http://testserver"


@pytest.fixture
async def setup(client):
    owner = await register(client, "oidc_owner")
    app = await create_app(client, owner)
    return owner, app


async def key_set(client) -> KeySet:
    return KeySet.import_key_set((await client.get("/api/v1/oauth2/keys")).json())


async def id_token_of(client, user, app, *, scope="openid", **extra) -> tuple[dict, dict]:
    code = await get_code(client, user, app, scope=scope, **extra)
    response = await exchange(client, app, code)
    assert response.status_code == 200, response.text
    return response.json(), response.json().get("id_token")


async def verified(client, token: str, app_id: str, *, nonce: str | None = None):
    """The token checked as a relying party would: signature with the JWKS, iss, aud, exp."""
    decoded = jwt.decode(token, await key_set(client), algorithms=["RS256", "ES256"])
    options = {"iss": {"essential": True, "value": ISSUER}, "aud": {"essential": True, "value": app_id},
               "exp": {"essential": True}, "iat": {"essential": True}, "sub": {"essential": True}}
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
    JWTClaimsRegistry(**options).validate(decoded.claims)
    return decoded


# --- the id_token ------------------------------------------------------------------------------

async def test_code_grant_with_openid_answers_a_signed_id_token(client, setup):
    owner, app = setup
    body, token = await id_token_of(client, owner, app, scope="openid email", nonce="n-0S6_WzA2Mj")
    decoded = await verified(client, token, app.id, nonce="n-0S6_WzA2Mj")
    claims = decoded.claims
    assert decoded.header["alg"] == "RS256" and decoded.header["typ"] == "JWT" and decoded.header["kid"]
    assert claims["sub"] == owner.id and claims["azp"] == app.id
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["auth_time"] <= claims["iat"] <= time.time() + 1
    assert claims["preferred_username"] == "oidc_owner" and claims["name"] == "oidc_owner"
    assert claims["email"] == "oidc_owner@example.com" and claims["email_verified"] is False
    # at_hash: the left half of the access token's SHA-256 (Core §3.1.3.6)
    digest = hashlib.sha256(body["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == credentials.b64url(digest)


async def test_openid_implies_identify(client, setup):
    owner, app = setup
    body, _token = await id_token_of(client, owner, app, scope="openid")
    assert body["scope"] == "identify openid"
    me = await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and "email" not in me.json()


async def test_email_claims_only_with_the_email_scope(client, setup):
    owner, app = setup
    _body, token = await id_token_of(client, owner, app, scope="openid")
    claims = (await verified(client, token, app.id)).claims
    assert "email" not in claims and "email_verified" not in claims
    assert "nonce" not in claims  # none was sent


async def test_no_id_token_without_openid(client, setup):
    owner, app = setup
    body = await tokens_for(client, owner, app, scope="identify email")
    assert "id_token" not in body


async def test_refresh_answers_no_id_token(client, setup):
    """OpenID Connect Core §12.2 lets a refresh omit it; the one of the sign-in stands."""
    owner, app = setup
    body, _token = await id_token_of(client, owner, app)
    refreshed = await client.post("/api/v1/oauth2/token", auth=app.basic,
                                  data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200 and "id_token" not in refreshed.json()
    assert refreshed.json()["scope"] == "identify openid"


async def test_es256_when_the_application_asks_for_it(client, setup):
    owner, _app = setup
    app = await create_app(client, owner, id_token_signed_response_alg="ES256")
    assert app.body["id_token_signed_response_alg"] == "ES256"
    _body, token = await id_token_of(client, owner, app, nonce="abc")
    decoded = await verified(client, token, app.id, nonce="abc")
    assert decoded.header["alg"] == "ES256"
    jwk = next(key for key in (await client.get("/api/v1/oauth2/keys")).json()["keys"]
               if key["kid"] == decoded.header["kid"])
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256" and jwk["use"] == "sig"


async def test_nonce_is_the_one_of_its_own_authorization(client, setup):
    owner, app = setup
    first = await get_code(client, owner, app, scope="openid", nonce="first-nonce")
    second = await get_code(client, owner, app, scope="openid", nonce="second-nonce")
    second_token = (await exchange(client, app, second)).json()["id_token"]
    first_token = (await exchange(client, app, first)).json()["id_token"]
    assert (await verified(client, first_token, app.id)).claims["nonce"] == "first-nonce"
    assert (await verified(client, second_token, app.id)).claims["nonce"] == "second-nonce"
    with pytest.raises(InvalidClaimError):
        await verified(client, first_token, app.id, nonce="second-nonce")


async def test_overlong_nonce_is_invalid_request(client, setup):
    owner, app = setup
    params = await consent(client, owner, app, scope="openid", nonce="n" * 257)
    assert params["error"] == "invalid_request" and "nonce" in params["error_description"]


# --- userinfo ---------------------------------------------------------------------------------

async def test_userinfo_answers_sub_and_the_claims_the_scopes_allow(client, setup):
    owner, app = setup
    plain = (await tokens_for(client, owner, app, scope="openid"))["access_token"]
    info = (await client.get("/api/v1/oauth2/userinfo", headers=bearer(plain))).json()
    assert info["sub"] == owner.id and info["preferred_username"] == "oidc_owner" and info["id"] == owner.id
    assert "email" not in info and "email_verified" not in info
    with_email = (await tokens_for(client, owner, app, scope="openid email"))["access_token"]
    posted = await client.post("/api/v1/oauth2/userinfo", headers=bearer(with_email))
    assert posted.status_code == 200
    assert posted.json()["email"] == "oidc_owner@example.com" and posted.json()["email_verified"] is False


async def test_userinfo_without_a_token_is_401_with_the_bearer_challenge(client):
    response = await client.get("/api/v1/oauth2/userinfo")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


# --- discovery and JWKS -----------------------------------------------------------------------

async def test_discovery_is_consistent_with_what_the_server_does(client, setup):
    owner, app = setup
    meta = (await client.get("/.well-known/openid-configuration")).json()
    for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                  "subject_types_supported", "id_token_signing_alg_values_supported", "userinfo_endpoint",
                  "scopes_supported", "claims_supported", "grant_types_supported"):
        assert field in meta, field
    assert meta["issuer"] == ISSUER and "openid" in meta["scopes_supported"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]
    assert set(meta["prompt_values_supported"]) == {"none", "consent", "login"}
    # every advertised algorithm has a published key, and every claim of a token is advertised
    published = (await client.get(meta["jwks_uri"].removeprefix(ISSUER))).json()["keys"]
    assert {key["alg"] for key in published} == set(meta["id_token_signing_alg_values_supported"])
    _body, token = await id_token_of(client, owner, app, scope="openid email", nonce="x")
    assert set((await verified(client, token, app.id)).claims) <= set(meta["claims_supported"])


async def test_jwks_has_public_halves_only(client):
    document = await client.get("/api/v1/oauth2/keys")
    assert document.status_code == 200 and document.headers["cache-control"] == "public, max-age=300"
    for key in document.json()["keys"]:
        assert key["kty"] in ("RSA", "EC") and key["use"] == "sig" and key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)


async def test_private_keys_are_stored_encrypted_under_the_server_secret(client, rt):
    await client.get("/api/v1/oauth2/keys")  # a new server makes its first keys
    async with rt.db.read() as conn:
        stored = await key_store.list_all(conn)
    assert {key.alg for key in stored} == {"RS256", "ES256"}
    for key in stored:
        assert b"PRIVATE" not in key.private_key and b"BEGIN" not in key.private_key
        assert "\"d\"" not in key.public_jwk
        assert keys.private_key(rt.secret, key.kid, key.alg, key.private_key).kid == key.kid
        with pytest.raises(KeyUnreadable):
            keys.private_key(b"another-secret-" + b"y" * 40, key.kid, key.alg, key.private_key)
        with pytest.raises(KeyUnreadable):  # the key id is bound to the row
            keys.private_key(rt.secret, key.kid + "x", key.alg, key.private_key)


# --- rotation ----------------------------------------------------------------------------------

async def test_a_new_key_is_published_before_it_signs(client, setup, rt):
    owner, app = setup
    _body, before = await id_token_of(client, owner, app)
    old_kid = jwt.decode(before, await key_set(client)).header["kid"]
    made = await keys.rotate(rt, publish_delay=3600)
    new_rs256 = next(key.kid for key in made if key.alg == "RS256")
    kids = {key["kid"] for key in (await client.get("/api/v1/oauth2/keys")).json()["keys"]}
    assert new_rs256 in kids and old_kid in kids
    _body, after = await id_token_of(client, owner, app)
    assert jwt.decode(after, await key_set(client)).header["kid"] == old_kid  # not signing yet


async def test_tokens_signed_before_a_rotation_still_validate_after_it(client, setup, rt):
    owner, app = setup
    _body, before = await id_token_of(client, owner, app, nonce="kept")
    old_kid = jwt.decode(before, await key_set(client)).header["kid"]
    made = await keys.rotate(rt, publish_delay=0)
    _body, after = await id_token_of(client, owner, app)
    new_kid = (await verified(client, after, app.id)).header["kid"]
    assert new_kid in {key.kid for key in made} and new_kid != old_kid
    assert (await verified(client, before, app.id, nonce="kept")).header["kid"] == old_kid


async def test_a_key_past_its_overlap_leaves_the_jwks(client, setup, rt):
    owner, app = setup
    _body, before = await id_token_of(client, owner, app)
    old_kid = jwt.decode(before, await key_set(client)).header["kid"]
    made = await keys.rotate(rt, publish_delay=0)
    async with rt.db.read() as conn:
        old = next(key for key in await key_store.list_all(conn) if key.kid == old_kid)
    # It stays for the id_token lifetime after it stopped signing, plus the workers' cache.
    assert old.published_until == pytest.approx(old.retires_at + rt.settings.id_token_ttl
                                                 + rt.settings.key_cache_seconds)
    async with rt.db.write() as conn:  # that time has come
        await conn.execute(update(signing_keys).where(signing_keys.c.kid == old_kid)
                           .values(published_until=time.time() - 1))
    rt.db.keys.forget()
    kids = {key["kid"] for key in (await client.get("/api/v1/oauth2/keys")).json()["keys"]}
    assert old_kid not in kids and {key.kid for key in made} <= kids  # (the old ES256 key is still in its overlap)
    with pytest.raises(InvalidKeyIdError):  # a relying party can no longer verify it: no such key
        jwt.decode(before, await key_set(client))
    await sweep(rt)
    async with rt.db.read() as conn:
        assert old_kid not in {key.kid for key in await key_store.list_all(conn)}


async def test_a_forged_signature_does_not_verify(client, setup):
    owner, app = setup
    _body, token = await id_token_of(client, owner, app)
    header, payload, signature = token.split(".")
    claims = json.loads(credentials.b64url_decode(payload))
    claims["sub"] = "1"
    forged = ".".join((header, credentials.b64url(json.dumps(claims).encode()), signature))
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, await key_set(client))


# --- prompt=login, max_age, auth_time -----------------------------------------------------------

def _login_form(html: str) -> tuple[str, str]:
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    next_url = re.search(r'name="next" value="([^"]+)"', html).group(1).replace("&amp;", "&")
    return csrf, next_url


async def _sign_in_again(client, location: str, username: str) -> str:
    """Follow the login page the authorization sent the user to; returns where it leads."""
    page = await client.get(location)
    assert page.status_code == 200 and "log in again" in page.text
    csrf, next_url = _login_form(page.text)
    response = await client.post("/login", data={"csrf_token": csrf, "login": username, "password": PASSWORD,
                                                 "next": next_url})
    assert response.status_code == 303
    return response.headers["location"]


async def _approve_on_page(client, url: str) -> dict:
    page = await client.get(url)
    assert page.status_code == 200, page.text
    fields = form_fields(page.text)
    decided = await client.post("/oauth2/authorize", data={**fields, "request": fields["request"].replace("&amp;", "&"),
                                                           "action": "authorize"})
    return query_of(decided.headers["location"])


async def _auth_time(client, app, code: str) -> int:
    token = (await exchange(client, app, code)).json()["id_token"]
    return (await verified(client, token, app.id)).claims["auth_time"]


async def _age_session(rt, seconds: float) -> None:
    async with rt.db.write() as conn:
        await conn.execute(update(sessions).values(created_at=time.time() - seconds))


async def test_prompt_login_asks_a_signed_in_user_to_sign_in_again(client, setup, rt):
    _owner, app = setup
    await register(client, "returning")
    await browser_login(client, "returning")
    await _age_session(rt, 600)
    url = authorize_url(app.id, scope="openid", prompt="login", nonce="n1")
    first = await client.get(url)
    assert first.status_code == 302 and first.headers["location"].startswith("/login?again=1&next=")
    back = await _sign_in_again(client, first.headers["location"], "returning")
    assert back.startswith("/oauth2/authorize?") and "login_after=" in back
    params = await _approve_on_page(client, back)  # no loop: the fresh sign-in satisfies it
    assert time.time() - await _auth_time(client, app, params["code"]) < 30


async def test_max_age_exceeded_asks_to_sign_in_again_and_within_it_does_not(client, setup, rt):
    _owner, app = setup
    await register(client, "aging")
    await browser_login(client, "aging")
    await _age_session(rt, 120)
    within = await client.get(authorize_url(app.id, scope="openid", max_age="3600"))
    assert within.status_code == 200  # the consent page
    params = await _approve_on_page(client, authorize_url(app.id, scope="openid", max_age="3600"))
    assert time.time() - await _auth_time(client, app, params["code"]) >= 119  # the session's start
    exceeded = await client.get(authorize_url(app.id, scope="openid", max_age="60"))
    assert exceeded.status_code == 302 and exceeded.headers["location"].startswith("/login?again=1&")
    back = await _sign_in_again(client, exceeded.headers["location"], "aging")
    params = await _approve_on_page(client, back)
    assert time.time() - await _auth_time(client, app, params["code"]) < 30


async def test_prompt_none_with_max_age_exceeded_is_login_required(client, setup, rt):
    _owner, app = setup
    await register(client, "silent")
    await browser_login(client, "silent")
    await _age_session(rt, 120)
    response = await client.get(authorize_url(app.id, scope="openid", prompt="none", max_age="60"))
    assert response.status_code == 302 and query_of(response.headers["location"])["error"] == "login_required"


@pytest.mark.parametrize("marker", ["0", "1700000000", "0.AAAAAAAAAAAAAAAAAAAAAA", "another session",
                                    "another client"])
async def test_a_typed_login_after_does_not_skip_prompt_login(client, setup, rt, marker):
    """login_after counts only as the server made it for this session's sign-in and this
    client: a typed time, the shape of a signed one, or a genuine marker of another session
    or another client does not let an old session through."""
    _owner, app = setup
    await register(client, "crafty")
    await browser_login(client, "crafty")
    await _age_session(rt, 600)
    if marker == "another session":
        marker = login_marker(rt.secret, "flx_another-browser-session", app.id, time.time())
    elif marker == "another client":
        marker = login_marker(rt.secret, client.cookies["fluxer_session"], "1234567890", time.time())
    for asked in ({"prompt": "login"}, {"max_age": "60"}):
        response = await client.get(authorize_url(app.id, scope="openid", login_after=marker, **asked))
        assert response.status_code == 302 and response.headers["location"].startswith("/login?again=1&")


async def test_consent_api_answers_login_required_for_a_stale_session(client, setup, rt):
    owner, app = setup
    await _age_session(rt, 120)
    assert (await consent(client, owner, app, scope="openid", prompt="login"))["error"] == "login_required"
    assert (await consent(client, owner, app, scope="openid", max_age=60))["error"] == "login_required"
    assert "code" in await consent(client, owner, app, scope="openid", max_age=3600)


@pytest.mark.parametrize("asked", [{"prompt": "login"}, {"max_age": "0"}])
async def test_a_signed_out_user_signs_in_once_for_prompt_login(client, setup, asked):
    """The first sign-in of a signed-out user is the fresh one: it is not asked for twice."""
    _owner, app = setup
    await register(client, "newcomer")
    client.cookies.clear()
    first = await client.get(authorize_url(app.id, scope="openid", **asked))
    assert first.status_code == 302 and first.headers["location"].startswith("/login?next=")
    page = await client.get(first.headers["location"])
    csrf, next_url = _login_form(page.text)
    signed_in = await client.post("/login", data={"csrf_token": csrf, "login": "newcomer", "password": PASSWORD,
                                                  "next": next_url})
    params = await _approve_on_page(client, signed_in.headers["location"])
    assert "code" in params, params


async def test_a_key_that_no_longer_decrypts_does_not_spend_the_code(client, settings):
    """After FLUXER_SECRET_KEY changed, signing fails before the code is spent: the client
    gets a 500, and the same code redeems once `keys rotate` made a key that signs."""

    owner = await register(client, "key_owner")
    app = await create_app(client, owner, public_client=True)
    await client.get("/api/v1/oauth2/keys")  # keys made under the first secret
    verifier, challenge = pkce_pair()
    code = (await consent(client, owner, app, scope="openid", code_challenge=challenge,
                          code_challenge_method="S256"))["code"]
    # A new Settings (a copy would keep the cached secret).
    changed = build_app(Settings(**{**settings.model_dump(), "secret_key": "another-secret-key-" + "z" * 40}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=changed, raise_app_exceptions=False),
                                     base_url="http://testserver") as other:
            redeem = {"grant_type": "authorization_code", "code": code, "client_id": app.id,
                      "redirect_uri": "https://client.example/callback", "code_verifier": verifier}
            failed = await other.post("/api/v1/oauth2/token", data=redeem)
            assert failed.status_code == 500
            await keys.rotate(changed.state.runtime)  # signs at once: the current key is unreadable
            redeemed = await other.post("/api/v1/oauth2/token", data=redeem)
            assert redeemed.status_code == 200, redeemed.text
            assert redeemed.json()["id_token"]
    finally:
        await changed.state.runtime.db.close()


async def test_parallel_first_signatures_make_one_key_and_no_error(client, rt):
    """A new server's first id_tokens, many at once: each waits for the one key made, none
    trips over another's refresh of the key cache."""
    results = await asyncio.gather(*(keys.signing_key(rt, "RS256") for _ in range(20)))
    assert len({key.kid for key in results}) == 1
    async with rt.db.read() as conn:
        assert [key.alg for key in await key_store.list_all(conn)] == ["RS256"]
