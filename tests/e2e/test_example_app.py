"""The example third-party app (examples/sign_in_with_fluxer) against a real server, in a
real browser: sign in, profile and guilds, refresh, revoke; and its OpenID Connect sign-in,
whose id_token the example validates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.e2e.conftest import api_user, log_in, shoot
from tests.interop.conftest import free_port, stop_server

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def example_app(server: str, tmp_path: Path, owner_name: str, **app_fields):
    """An application registered for the example (a new owner), and the example serving it:
    yields (the example's URL, the application's JSON)."""
    port = free_port()
    here = f"http://127.0.0.1:{port}"
    owner = api_user(server, owner_name)
    app = requests.post(f"{server}/api/v1/oauth2/applications", headers={"Authorization": owner["token"]},
                        json={"name": "Example App", "redirect_uris": [f"{here}/callback"], **app_fields},
                        timeout=10).json()
    env = {**os.environ, "FLUXER_URL": server, "EXAMPLE_URL": here, "FLUXER_CLIENT_ID": app["id"],
           "FLUXER_CLIENT_SECRET": app.get("client_secret", ""), "EXAMPLE_SESSION_KEY": "k" * 32}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.sign_in_with_fluxer.app:app", "--port", str(port),
         "--log-level", "warning"], cwd=ROOT, env=env, stdout=open(tmp_path / "example.log", "wb"), start_new_session=True,
        stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                requests.get(here, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield here, app
    finally:
        stop_server(process)


def test_example_app_signs_in_refreshes_and_revokes(server, page, tmp_path):
    user = api_user(server, "exampleuser")
    requests.post(f"{server}/api/v1/guilds", json={"name": "Example Guild"}, timeout=10,
                  headers={"Authorization": user["token"]})
    with example_app(server, tmp_path, "exampledev") as (here, _app):
        page.goto(here)
        page.click("#sign-in")
        log_in(page, "exampleuser")
        page.click("button[value=authorize]")
        page.wait_for_selector("#username")
        assert page.inner_text("#username") == "exampleuser"
        assert page.inner_text("#email") == "exampleuser@example.com"
        assert "Example Guild" in page.inner_text("#guilds")
        shoot(page, "example-app")
        page.click("button:has-text('Refresh token')")
        page.wait_for_selector("text=Token refreshed")
        assert page.inner_text("#username") == "exampleuser"
        page.click("button:has-text('Revoke access')")
        page.wait_for_selector("#sign-in")
        grants = requests.get(f"{server}/api/v1/oauth2/@me/authorizations", timeout=10,
                              headers={"Authorization": user["token"]}).json()
        assert grants == []  # the revocation ended the grant on the server


def oidc_sign_in(page, here: str, username: str) -> None:
    """The example's OpenID Connect button, the login and Authorize. The example shows the
    identity only once Authlib has validated the id_token (signature against the JWKS, iss,
    aud, exp, nonce, at_hash); otherwise it goes back to its home page with the error."""
    page.goto(here)
    page.click("#sign-in-oidc")
    log_in(page, username)
    page.click("button[value=authorize]")
    page.wait_for_selector("#oidc-username, [role=alert]")
    assert page.query_selector("[role=alert]") is None, page.inner_text("body")


def test_example_app_signs_in_with_openid_connect(server, page, tmp_path):
    user = api_user(server, "oidcuser")
    with example_app(server, tmp_path, "oidcdev") as (here, app):
        oidc_sign_in(page, here, "oidcuser")
        assert page.inner_text("#oidc-username") == "oidcuser"
        assert page.inner_text("#oidc-email") == "oidcuser@example.com"
        assert page.inner_text("#oidc-email-verified") == "no"
        assert page.inner_text("#oidc-sub") == user["user"]["id"]
        assert page.inner_text("#oidc-iss") == server
        assert page.inner_text("#oidc-aud") == app["id"]
        assert page.inner_text("#oidc-alg") == "RS256"
        userinfo = json.loads(page.inner_text("#userinfo"))
        assert userinfo["sub"] == user["user"]["id"] and userinfo["email"] == "oidcuser@example.com"
        shoot(page, "example-app-oidc")
        page.click("button:has-text('Sign out')")
        page.wait_for_selector("#sign-in-oidc")


def test_example_app_openid_connect_for_a_public_client_with_es256(server, page, tmp_path):
    """No secret (client_id alone at the token endpoint, PKCE) and an ES256 id_token: the
    example validates it all the same."""
    api_user(server, "oidcpublic")
    with example_app(server, tmp_path, "oidcpublicdev", public_client=True,
                     id_token_signed_response_alg="ES256") as (here, app):
        assert "client_secret" not in app
        oidc_sign_in(page, here, "oidcpublic")
        assert page.inner_text("#oidc-username") == "oidcpublic"
        assert page.inner_text("#oidc-alg") == "ES256"
        assert page.inner_text("#oidc-aud") == app["id"]
