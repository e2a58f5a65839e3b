"""The example third-party app (examples/sign_in_with_fluxer) against a real server, in a
real browser: sign in, profile and guilds, refresh, revoke."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.e2e.conftest import api_user, log_in, shoot
from tests.interop.conftest import free_port, stop_server

ROOT = Path(__file__).resolve().parents[2]


def test_example_app_signs_in_refreshes_and_revokes(server, page, tmp_path):
    port = free_port()
    here = f"http://127.0.0.1:{port}"
    owner = api_user(server, "exampledev")
    app = requests.post(f"{server}/api/v1/oauth2/applications", headers={"Authorization": owner["token"]},
                        json={"name": "Example App", "redirect_uris": [f"{here}/callback"]}, timeout=10).json()
    user = api_user(server, "exampleuser")
    requests.post(f"{server}/api/v1/guilds", json={"name": "Example Guild"}, timeout=10,
                  headers={"Authorization": user["token"]})
    env = {**os.environ, "FLUXER_URL": server, "EXAMPLE_URL": here, "FLUXER_CLIENT_ID": app["id"],
           "FLUXER_CLIENT_SECRET": app["client_secret"], "EXAMPLE_SESSION_KEY": "k" * 32}
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
                page.wait_for_timeout(100)
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
    finally:
        stop_server(process)
