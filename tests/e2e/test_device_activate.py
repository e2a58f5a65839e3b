"""The device flow (RFC 8628) in a real browser against a real server: the device asks for
a code pair over HTTP, its user opens verification_uri_complete, logs in, checks the code,
consents, and the device's next poll receives the tokens."""

from __future__ import annotations

import requests

from tests.e2e.conftest import api_app, api_user, log_in, shoot

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def test_device_code_approved_in_the_browser_gives_the_device_its_tokens(server, page):
    owner = api_user(server, "tvowner")
    app = api_app(server, owner, name="Living Room TV", public_client=True, bot=False)
    api_user(server, "tvviewer")
    pair = requests.post(f"{server}/api/v1/oauth2/device/authorize", timeout=10,
                         data={"client_id": app["id"], "scope": "openid guilds"})
    assert pair.status_code == 200, pair.text
    pair = pair.json()

    def poll() -> requests.Response:
        return requests.post(f"{server}/api/v1/oauth2/token", timeout=10, data={
            "grant_type": DEVICE_GRANT, "device_code": pair["device_code"], "client_id": app["id"]})

    assert poll().json()["error"] == "authorization_pending"

    page.goto(pair["verification_uri_complete"])
    assert "/login" in page.url
    log_in(page, "tvviewer")
    page.wait_for_selector("#user_code")
    assert page.input_value("#user_code") == pair["user_code"]
    assert "tvviewer" in page.inner_text("main")
    shoot(page, "activate-enter")

    page.click("button[value=continue]")
    page.wait_for_selector("#device-code")
    assert page.inner_text("#device-code") == pair["user_code"]
    assert "Living Room TV" in page.inner_text("main")
    assert page.locator("li[data-scope=guilds]").count() == 1 and page.locator("li[data-scope=openid]").count() == 1
    shoot(page, "activate-consent")

    page.click("button[value=authorize]")
    page.wait_for_selector("#activate-result")
    assert page.get_attribute("#activate-result", "data-approved") == "true"
    assert "return to your device" in page.inner_text("main")
    shoot(page, "activate-done")

    tokens = poll()
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["scope"] == "identify guilds openid" and body["id_token"] and body["refresh_token"]
    me = requests.get(f"{server}/api/v1/users/@me", headers={"Authorization": f"Bearer {body['access_token']}"},
                      timeout=10)
    assert me.json()["username"] == "tvviewer"
    assert poll().json()["error"] == "invalid_grant"  # once


def test_a_typed_code_is_forgiving_and_cancel_tells_the_device(server, page):
    owner = api_user(server, "consoleowner")
    app = api_app(server, owner, name="Console")
    pair = requests.post(f"{server}/api/v1/oauth2/device/authorize", timeout=10, auth=(app["id"], app["client_secret"]),
                         data={"scope": "identify"}).json()
    page.goto(f"{server}/activate")
    log_in(page, "consoleowner")
    page.wait_for_selector("#user_code")
    page.fill("#user_code", "  " + pair["user_code"].lower().replace("-", " "))
    page.click("button[value=continue]")
    page.wait_for_selector("#device-code")
    page.click("button[value=cancel]")
    page.wait_for_selector("#activate-result")
    assert page.get_attribute("#activate-result", "data-approved") == "false"
    denied = requests.post(f"{server}/api/v1/oauth2/token", timeout=10, auth=(app["id"], app["client_secret"]),
                           data={"grant_type": DEVICE_GRANT, "device_code": pair["device_code"]})
    assert denied.json()["error"] == "access_denied"
