"""OpenID Connect attacks: an id_token replayed at another relying party, a nonce swapped
between sign-ins, an unsigned or HMAC-signed token, and keys leaking their private half."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from joserfc import jwt
from joserfc.errors import InvalidClaimError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from fluxer_oauth.core import credentials
from tests.conftest import consent, create_app, exchange, get_code, register


@pytest.fixture
async def two_apps(client):
    owner = await register(client, "oidc_target")
    return owner, await create_app(client, owner), await create_app(client, owner, id_token_signed_response_alg="ES256")


async def _id_token(client, user, app, **extra) -> str:
    code = await get_code(client, user, app, scope="openid email", **extra)
    return (await exchange(client, app, code)).json()["id_token"]


def _header(token: str) -> dict:
    return json.loads(credentials.b64url_decode(token.split(".")[0]))


async def test_id_tokens_are_never_unsigned_or_hmac_signed(client, two_apps):
    owner, rs_app, es_app = two_apps
    for app, alg in ((rs_app, "RS256"), (es_app, "ES256")):
        token = await _id_token(client, owner, app)
        header = _header(token)
        assert header["alg"] == alg and token.split(".")[2]  # a signature is always there
    meta = (await client.get("/.well-known/openid-configuration")).json()
    assert set(meta["id_token_signing_alg_values_supported"]) == {"RS256", "ES256"}
    # No symmetric key is ever published: a relying party cannot be led to use one as a secret.
    assert {key["kty"] for key in (await client.get("/api/v1/oauth2/keys")).json()["keys"]} == {"RSA", "EC"}


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", ""])
async def test_an_application_cannot_choose_another_signing_algorithm(client, two_apps, alg):
    owner, app, _es = two_apps
    response = await client.patch(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers,
                                  json={"id_token_signed_response_alg": alg})
    assert response.status_code == 400
    created = await client.post("/api/v1/oauth2/applications", headers=owner.headers,
                                json={"name": "x", "redirect_uris": [], "id_token_signed_response_alg": alg})
    assert created.status_code == 400


async def test_a_public_key_used_as_an_hmac_secret_does_not_verify(client, two_apps):
    """The confusion attack: sign with HS256 using the published RSA key's bytes. Verifying
    with the JWKS and the advertised algorithms refuses it."""
    owner, app, _es = two_apps
    genuine = await _id_token(client, owner, app)
    jwks = (await client.get("/api/v1/oauth2/keys")).json()
    claims = jwt.decode(genuine, KeySet.import_key_set(jwks)).claims
    rsa = next(key for key in jwks["keys"] if key["kty"] == "RSA")
    header = credentials.b64url(json.dumps({"alg": "HS256", "kid": rsa["kid"]}).encode())
    body = credentials.b64url(json.dumps(claims).encode())
    signature = hmac.new(json.dumps(rsa).encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{credentials.b64url(signature)}"
    with pytest.raises(JoseError):
        jwt.decode(forged, KeySet.import_key_set(jwks), algorithms=["RS256", "ES256"])
    unsigned = f"{credentials.b64url(json.dumps({'alg': 'none'}).encode())}.{body}."
    with pytest.raises(JoseError):
        jwt.decode(unsigned, KeySet.import_key_set(jwks), algorithms=["RS256", "ES256"])


async def test_an_id_token_is_for_its_own_client_only(client, two_apps):
    """Replayed at another relying party, the audience check refuses it."""
    owner, rs_app, es_app = two_apps
    token = await _id_token(client, owner, rs_app)
    claims = jwt.decode(token, KeySet.import_key_set((await client.get("/api/v1/oauth2/keys")).json())).claims
    assert claims["aud"] == rs_app.id and claims["azp"] == rs_app.id
    with pytest.raises(InvalidClaimError):
        JWTClaimsRegistry(aud={"essential": True, "value": es_app.id}).validate(claims)


async def test_the_nonce_travels_with_the_code_not_the_session(client, two_apps):
    """A code redeemed by the client gets the nonce of its own authorization request, even
    when the same user authorized again with another nonce meanwhile."""
    owner, app, _es = two_apps
    victim_code = await get_code(client, owner, app, scope="openid", nonce="victim")
    await get_code(client, owner, app, scope="openid", nonce="attacker")
    token = (await exchange(client, app, victim_code)).json()["id_token"]
    claims = jwt.decode(token, KeySet.import_key_set((await client.get("/api/v1/oauth2/keys")).json())).claims
    assert claims["nonce"] == "victim"


async def test_a_redeemed_code_gives_no_second_id_token(client, two_apps):
    owner, app, _es = two_apps
    code = await get_code(client, owner, app, scope="openid", nonce="once")
    assert (await exchange(client, app, code)).status_code == 200
    replay = await exchange(client, app, code)
    assert replay.status_code == 400 and "id_token" not in replay.json()


async def test_prompt_none_with_another_users_id_token_hint_is_login_required(client, two_apps):
    """A relying party renewing user A's sign-in silently (prompt=none, id_token_hint of A)
    while B is signed in gets login_required, never a code for B (Core 1.0 §3.1.2.1)."""
    owner, app, other_app = two_apps
    someone = await register(client, "oidc_someone_else")
    hint = await _id_token(client, someone, app)
    refused = await consent(client, owner, app, scope="openid", prompt="none", id_token_hint=hint)
    assert refused.get("error") == "login_required" and "code" not in refused
    own_hint = await _id_token(client, owner, app)
    assert "code" in await consent(client, owner, app, scope="openid", id_token_hint=own_hint)
    # A hint issued to another client, or not signed by this server, is not a hint at all.
    foreign = await _id_token(client, owner, other_app)
    assert (await consent(client, owner, app, scope="openid", id_token_hint=foreign))["error"] == "invalid_request"
    header, payload, _signature = own_hint.split(".")
    assert (await consent(client, owner, app, scope="openid", id_token_hint=f"{header}.{payload}.AAAA")
            )["error"] == "invalid_request"
