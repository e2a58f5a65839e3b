"""Independent OAuth2 clients against a running server: Authlib and requests-oauthlib
perform the authorization code grant with PKCE, a refresh, and a resource read. The
user's part is played by a requests session that logs in and presses Authorize."""

from __future__ import annotations

import re

import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from requests_oauthlib import OAuth2Session as OAuthlibSession

from tests.interop.conftest import act_as_user

REDIRECT = "http://127.0.0.1:9/callback"



def test_authlib_code_flow_with_pkce_refresh_and_read(live_server, live_app):
    session = AuthlibSession(
        client_id=live_app["id"], client_secret=live_app["client_secret"], scope="identify email guilds",
        redirect_uri=REDIRECT, code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic",
    )
    verifier = "v" * 20 + re.sub(r"[^A-Za-z0-9]", "", live_app["client_secret"])[:40]
    url, state = session.create_authorization_url(f"{live_server}/oauth2/authorize", code_verifier=verifier)
    callback = act_as_user(url, "interop")
    token = session.fetch_token(f"{live_server}/api/v1/oauth2/token", authorization_response=callback,
                                code_verifier=verifier)
    assert token["token_type"] == "Bearer" and token["scope"] == "identify email guilds"
    me = session.get(f"{live_server}/api/v1/users/@me", timeout=10).json()
    assert me["username"] == "interop" and me["email"] == "interop@example.com"

    refreshed = session.refresh_token(f"{live_server}/api/v1/oauth2/token", refresh_token=token["refresh_token"])
    assert refreshed["access_token"] != token["access_token"]
    assert session.get(f"{live_server}/api/v1/users/@me/guilds", timeout=10).status_code == 200
    stale = requests.get(f"{live_server}/api/v1/users/@me", timeout=10,
                         headers={"Authorization": f"Bearer {token['access_token']}"})
    assert stale.status_code == 401


def test_authlib_rejects_a_forged_state(live_server, live_app):
    session = AuthlibSession(client_id=live_app["id"], client_secret=live_app["client_secret"], scope="identify",
                             redirect_uri=REDIRECT)
    url, state = session.create_authorization_url(f"{live_server}/oauth2/authorize")
    callback = act_as_user(url, "interop")
    assert f"state={state}" in callback and "iss=" in callback


def test_requests_oauthlib_code_flow_with_pkce_refresh_and_read(live_server, live_app, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is plain http on loopback
    session = OAuthlibSession(live_app["id"], redirect_uri=REDIRECT, scope=["identify", "connections"], pkce="S256")
    url, _state = session.authorization_url(f"{live_server}/oauth2/authorize")
    callback = act_as_user(url, "interop")
    token = session.fetch_token(f"{live_server}/api/v1/oauth2/token", authorization_response=callback,
                                client_secret=live_app["client_secret"], include_client_id=True)
    assert token["scope"] == ["identify", "connections"]
    assert session.get(f"{live_server}/api/v1/users/@me/connections", timeout=10).status_code == 200
    refreshed = session.refresh_token(f"{live_server}/api/v1/oauth2/token",
                                      auth=(live_app["id"], live_app["client_secret"]))
    assert refreshed["access_token"] != token["access_token"]
    assert session.get(f"{live_server}/api/v1/users/@me", timeout=10).json()["username"] == "interop"


def test_authlib_client_credentials_then_read_the_bot_user(live_server, live_app):
    session = AuthlibSession(client_id=live_app["id"], client_secret=live_app["client_secret"],
                             token_endpoint_auth_method="client_secret_basic", scope="identify guilds")
    token = session.fetch_token(f"{live_server}/api/v1/oauth2/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and "refresh_token" not in token
    me = session.get(f"{live_server}/api/v1/users/@me", timeout=10).json()
    assert me["id"] == live_app["id"] and me["bot"] is True
    assert session.get(f"{live_server}/api/v1/users/@me/guilds", timeout=10).json() == []
