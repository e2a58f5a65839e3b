"""OpenID Connect with Authlib's relying-party support, used unchanged, against a running
server: discovery, an authorization URL with nonce and PKCE, the code exchange, the
id_token verified against the JWKS and its claims validated by Authlib (CodeIDToken: iss,
aud, azp, exp, iat, nonce, at_hash), then userinfo. Also a public client (no secret,
``none`` at the token endpoint, PKCE) that signs in and refreshes, an ES256 application,
and prompt=login / max_age asking for exactly one fresh sign-in.

The relying party is composed the way Authlib's Flask integration composes it (OAuth2Mixin,
OpenIDMixin, requests' OAuth2Session), without Flask: the test keeps the authorization
request's state, verifier and nonce itself. The user's part is act_as_user (test_clients)."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from authlib.integrations.base_client import BaseApp, OAuth2Mixin, OpenIDMixin
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.base_client.framework_integration import FrameworkIntegration
from authlib.integrations.requests_client import OAuth2Session
from joserfc.errors import BadSignatureError, InvalidClaimError, MissingClaimError

from tests.interop.conftest import act_as_user, browser_consent

REDIRECT = "http://127.0.0.1:9/callback"


class RelyingParty(OAuth2Mixin, OpenIDMixin, BaseApp):
    """Authlib's synchronous OpenID Connect client (what FlaskOAuth2App is, minus Flask)."""

    client_cls = OAuth2Session


def relying_party(base: str, app: dict, *, scope: str = "openid email") -> RelyingParty:
    secret = app.get("client_secret")
    return RelyingParty(
        FrameworkIntegration("fluxer"), name="fluxer", client_id=app["id"], client_secret=secret,
        server_metadata_url=f"{base}/.well-known/openid-configuration",
        client_kwargs={"scope": scope, "code_challenge_method": "S256",
                       "token_endpoint_auth_method": "client_secret_basic" if secret else "none"},
    )


def new_app(base: str, account: dict, name: str, **fields) -> dict:
    response = requests.post(f"{base}/api/v1/oauth2/applications", headers={"Authorization": account["token"]},
                             json={"name": name, "redirect_uris": [REDIRECT], **fields}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def sign_in(rp: RelyingParty, username: str, **params) -> tuple[dict, dict]:
    """The whole code flow as a relying party runs it: returns (the token response, the
    authorization request's data: url, state, code_verifier, nonce)."""
    started = rp.create_authorization_url(REDIRECT, **params)
    query = dict(parse_qsl(urlsplit(started["url"]).query))
    # Authlib made the nonce itself (the scope has openid), and the S256 challenge.
    assert query["nonce"] == started["nonce"] and query["code_challenge_method"] == "S256"
    assert started["url"].startswith(rp.server_metadata["authorization_endpoint"] + "?")
    callback = dict(parse_qsl(urlsplit(act_as_user(started["url"], username)).query))
    assert callback["state"] == started["state"]
    assert callback["iss"] == rp.server_metadata["issuer"]  # RFC 9207, advertised in discovery
    token = rp.fetch_access_token(REDIRECT, code=callback["code"], code_verifier=started["code_verifier"])
    return token, started


def strict_options(rp: RelyingParty) -> dict:
    """Authlib checks iss by default; a careful relying party also pins aud, and requires
    the nonce, at_hash and auth_time this server promises."""
    return {"iss": {"essential": True, "values": [rp.server_metadata["issuer"]]},
            "aud": {"essential": True, "values": [rp.client_id]},
            "nonce": {"essential": True}, "at_hash": {"essential": True}, "auth_time": {"essential": True}}


def unverified_header(id_token: str) -> dict:
    head = id_token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def test_discovery_document_is_what_authlib_needs(live_server):
    rp = relying_party(live_server, {"id": "0", "client_secret": None})
    metadata = rp.load_server_metadata()
    assert metadata["issuer"] == live_server
    for field in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert metadata[field].startswith(live_server + "/"), field
    assert "openid" in metadata["scopes_supported"]
    assert "code" in metadata["response_types_supported"]
    assert metadata["subject_types_supported"] == ["public"]
    assert set(metadata["id_token_signing_alg_values_supported"]) == {"RS256", "ES256"}
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    # The RFC 8414 address serves the same document.
    assert requests.get(f"{live_server}/.well-known/oauth-authorization-server", timeout=10).json() == {
        k: v for k, v in metadata.items() if k != "_loaded_at"}
    keys = rp.fetch_jwk_set()["keys"]
    assert {key["alg"] for key in keys} >= {"RS256", "ES256"}
    assert all("d" not in key and "p" not in key for key in keys)  # public halves only
    assert all(key["use"] == "sig" and key["kid"] for key in keys)


def test_authlib_openid_sign_in_validates_the_id_token_then_reads_userinfo(live_server, live_account):
    rp = relying_party(live_server, new_app(live_server, live_account, "OIDC RP"))
    before = int(time.time())
    token, started = sign_in(rp, "interop")
    assert token["scope"] == "identify email openid"  # openid implies identify
    assert token["token_type"] == "Bearer" and token["refresh_token"]

    claims = rp.parse_id_token(token, nonce=started["nonce"], claims_options=strict_options(rp))
    assert claims["iss"] == live_server
    assert claims["aud"] == rp.client_id and claims["azp"] == rp.client_id
    assert claims["nonce"] == started["nonce"]
    assert claims["sub"] == live_account["user"]["id"]
    assert claims["preferred_username"] == "interop"
    assert claims["email"] == "interop@example.com" and claims["email_verified"] is False
    assert before - 5 <= claims["auth_time"] <= claims["iat"] <= int(time.time()) + 5
    assert claims["exp"] > claims["iat"]
    assert unverified_header(token["id_token"])["alg"] == "RS256"

    info = rp.userinfo(token=token)
    assert info["sub"] == claims["sub"]
    assert info["preferred_username"] == "interop" and info["email"] == "interop@example.com"
    assert info["email_verified"] is False
    # Core 1.0 §5.3.1 allows POST too, with the token in the header.
    posted = requests.post(rp.server_metadata["userinfo_endpoint"], timeout=10,
                           headers={"Authorization": f"Bearer {token['access_token']}"})
    assert posted.status_code == 200 and posted.json()["sub"] == claims["sub"]


def test_authlib_refuses_an_id_token_for_another_nonce_or_access_token(live_server, live_account):
    """The validation above is not a formality: Authlib rejects what the server would get
    wrong (nonce echo, at_hash), and a token whose signature does not verify."""
    rp = relying_party(live_server, new_app(live_server, live_account, "OIDC Checks"))
    token, started = sign_in(rp, "interop")
    with pytest.raises(InvalidClaimError, match="nonce"):
        rp.parse_id_token(token, nonce="another-nonce", claims_options=strict_options(rp))
    with pytest.raises(InvalidClaimError, match="at_hash"):
        rp.parse_id_token({**token, "access_token": token["access_token"] + "x"}, nonce=started["nonce"],
                          claims_options=strict_options(rp))
    head, body, signature = token["id_token"].split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(BadSignatureError):
        rp.parse_id_token({**token, "id_token": f"{head}.{body}.{flipped}"}, nonce=started["nonce"])
    # Without the email scope, no email claims; without openid, no id_token at all.
    rp_profile = relying_party(live_server, {"id": rp.client_id, "client_secret": rp.client_secret},
                               scope="openid")
    token, started = sign_in(rp_profile, "interop")
    claims = rp_profile.parse_id_token(token, nonce=started["nonce"], claims_options=strict_options(rp_profile))
    assert "email" not in claims and "email_verified" not in claims and claims["preferred_username"] == "interop"
    assert "email" not in rp_profile.userinfo(token=token)
    plain = relying_party(live_server, {"id": rp.client_id, "client_secret": rp.client_secret}, scope="identify")
    started = plain.create_authorization_url(REDIRECT)
    assert "nonce" not in started  # Authlib sends none without openid
    callback = dict(parse_qsl(urlsplit(act_as_user(started["url"], "interop")).query))
    token = plain.fetch_access_token(REDIRECT, code=callback["code"], code_verifier=started["code_verifier"])
    assert "id_token" not in token and plain.parse_id_token(token, nonce=None) is None


def test_authlib_public_client_signs_in_and_refreshes_with_rotation(live_server, live_account):
    app = new_app(live_server, live_account, "OIDC Public", public_client=True)
    assert app["public_client"] is True and "client_secret" not in app
    rp = relying_party(live_server, app)
    token, started = sign_in(rp, "interop")
    claims = rp.parse_id_token(token, nonce=started["nonce"], claims_options=strict_options(rp))
    assert claims["aud"] == app["id"] and claims["preferred_username"] == "interop"

    # Authlib's refresh, with client_id alone (token_endpoint_auth_method "none").
    session = OAuth2Session(client_id=app["id"], token_endpoint_auth_method="none", token=token)
    token_endpoint = rp.server_metadata["token_endpoint"]
    refreshed = session.refresh_token(token_endpoint)
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["refresh_token"] != token["refresh_token"]  # rotated
    assert refreshed["scope"] == "identify email openid"
    assert rp.userinfo(token=refreshed)["sub"] == claims["sub"]
    assert requests.get(rp.server_metadata["userinfo_endpoint"], timeout=10,
                        headers={"Authorization": f"Bearer {token['access_token']}"}).status_code == 401

    # The first refresh token again: reuse detected, the whole grant ends.
    replay = OAuth2Session(client_id=app["id"], token_endpoint_auth_method="none")
    with pytest.raises(OAuthError) as refused:
        replay.refresh_token(token_endpoint, refresh_token=token["refresh_token"])
    assert refused.value.error == "invalid_grant"
    with pytest.raises(OAuthError) as ended:
        replay.refresh_token(token_endpoint, refresh_token=refreshed["refresh_token"])
    assert ended.value.error == "invalid_grant"
    assert requests.get(rp.server_metadata["userinfo_endpoint"], timeout=10,
                        headers={"Authorization": f"Bearer {refreshed['access_token']}"}).status_code == 401


def test_public_client_must_use_pkce_and_cannot_present_a_secret(live_server, live_account):
    app = new_app(live_server, live_account, "OIDC Public Strict", public_client=True)
    rp = RelyingParty(FrameworkIntegration("fluxer"), name="fluxer", client_id=app["id"],
                      server_metadata_url=f"{live_server}/.well-known/openid-configuration",
                      client_kwargs={"scope": "openid", "token_endpoint_auth_method": "none"})
    started = rp.create_authorization_url(REDIRECT)  # no code_challenge_method: no PKCE
    assert "code_challenge" not in started["url"]
    refused = requests.get(started["url"], allow_redirects=False, timeout=10)
    location = refused.headers["location"]
    assert location.startswith(REDIRECT) and dict(parse_qsl(urlsplit(location).query))["error"] == "invalid_request"

    pkce = relying_party(live_server, app)
    started = pkce.create_authorization_url(REDIRECT)
    code = dict(parse_qsl(urlsplit(act_as_user(started["url"], "interop")).query))["code"]
    posing = OAuth2Session(client_id=app["id"], client_secret="a-made-up-secret",
                           token_endpoint_auth_method="client_secret_basic")
    with pytest.raises(OAuthError) as failed:
        posing.fetch_token(pkce.server_metadata["token_endpoint"], grant_type="authorization_code", code=code,
                           redirect_uri=REDIRECT, code_verifier=started["code_verifier"])
    assert failed.value.error == "invalid_client"


def test_authlib_validates_an_es256_id_token(live_server, live_account):
    app = new_app(live_server, live_account, "OIDC ES256", id_token_signed_response_alg="ES256")
    assert app["id_token_signed_response_alg"] == "ES256"
    rp = relying_party(live_server, app)
    token, started = sign_in(rp, "interop")
    header = unverified_header(token["id_token"])
    assert header["alg"] == "ES256"
    key = next(key for key in rp.fetch_jwk_set()["keys"] if key["kid"] == header["kid"])
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
    claims = rp.parse_id_token(token, nonce=started["nonce"], claims_options=strict_options(rp))
    assert claims["aud"] == app["id"] and claims["nonce"] == started["nonce"]
    assert rp.userinfo(token=token)["sub"] == claims["sub"]
    with pytest.raises(MissingClaimError):  # strict options hold for ES256 too
        rp.parse_id_token(token, nonce=started["nonce"],
                          claims_options={**strict_options(rp), "acr": {"essential": True}})



def test_prompt_login_and_max_age_ask_for_one_fresh_sign_in(live_server, live_account):
    """prompt=login and max_age=0 make a signed-in browser sign in again, once, and the
    id_token's auth_time moves with it; a signed-out browser signs in once (not twice);
    a max_age the sign-in is within asks nothing. Authlib validates every id_token."""
    rp = relying_party(live_server, new_app(live_server, live_account, "OIDC Fresh Login"))

    def run(browser, **params) -> tuple[dict, int]:
        started = rp.create_authorization_url(REDIRECT, **params)
        callback, sign_ins = browser_consent(browser, started["url"], "interop")
        code = dict(parse_qsl(urlsplit(callback).query))["code"]
        token = rp.fetch_access_token(REDIRECT, code=code, code_verifier=started["code_verifier"])
        return rp.parse_id_token(token, nonce=started["nonce"], claims_options=strict_options(rp)), sign_ins

    for params in ({"prompt": "login"}, {"max_age": 0}):
        claims, sign_ins = run(requests.Session(), **params)  # signed out
        assert sign_ins == 1, params

    browser = requests.Session()
    first, sign_ins = run(browser)
    assert sign_ins == 1
    time.sleep(1.1)  # auth_time counts whole seconds
    again, sign_ins = run(browser, prompt="login")
    assert sign_ins == 1 and again["auth_time"] > first["auth_time"]
    time.sleep(1.1)
    aged, sign_ins = run(browser, max_age=0)
    assert sign_ins == 1 and aged["auth_time"] > again["auth_time"]
    recent, sign_ins = run(browser, max_age=3600)
    assert sign_ins == 0 and recent["auth_time"] == aged["auth_time"]
