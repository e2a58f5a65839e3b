"""The people-facing pages in a real browser."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from tests.e2e.conftest import CALLBACK, api_app, api_user, catch_callback, log_in, shoot


def authorize_url(base: str, client_id: str, **extra) -> str:
    query = {"client_id": client_id, "response_type": "code", "scope": "identify email guilds",
             "redirect_uri": CALLBACK, "state": "browser-state", **extra}
    return f"{base}/oauth2/authorize?{urlencode(query)}"


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_login_consent_redirect_flow(server, page):
    owner = api_user(server, "flowowner")
    app = api_app(server, owner)
    api_user(server, "flowuser")
    seen = catch_callback(page)
    page.goto(authorize_url(server, app["id"]))
    assert "/login" in page.url
    shoot(page, "login")
    log_in(page, "flowuser")
    page.wait_for_selector("text=Authorize")
    assert page.locator("li[data-scope=email]").count() == 1
    assert "flowuser" in page.inner_text("main")
    shoot(page, "consent")
    page.click("button[value=authorize]")
    page.wait_for_url("http://127.0.0.1:9/**")
    params = query(seen[-1])
    assert params["state"] == "browser-state" and params["iss"] == server and len(params["code"]) >= 43
    token = requests.post(f"{server}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                          data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": CALLBACK})
    assert token.status_code == 200


def test_cancel_returns_access_denied(server, page):
    owner = api_user(server, "cancelowner")
    app = api_app(server, owner)
    seen = catch_callback(page)
    page.goto(authorize_url(server, app["id"]))
    log_in(page, "cancelowner")
    page.click("button[value=cancel]")
    page.wait_for_url("http://127.0.0.1:9/**")
    assert query(seen[-1])["error"] == "access_denied"


def test_invalid_request_shows_error_page_without_redirect(server, page):
    owner = api_user(server, "errorowner")
    app = api_app(server, owner)
    seen = catch_callback(page)
    response = page.goto(authorize_url(server, app["id"], redirect_uri="https://evil.example/cb"))
    assert response.status == 400 and seen == []
    assert "not registered" in page.inner_text("main")
    shoot(page, "error")


def test_bot_flow_with_guild_choice_and_permissions(server, page):
    owner = api_user(server, "botbrowser")
    app = api_app(server, owner, name="Browser Bot")
    headers = {"Authorization": owner["token"]}
    first = requests.post(f"{server}/api/v1/guilds", json={"name": "Garden"}, headers=headers, timeout=10).json()
    second = requests.post(f"{server}/api/v1/guilds", json={"name": "Workshop"}, headers=headers, timeout=10).json()
    permissions = (1 << 11) | (1 << 14)  # SEND_MESSAGES, EMBED_LINKS
    page.goto(f"{server}/oauth2/authorize?" + urlencode({"client_id": app["id"], "scope": "bot",
                                                          "permissions": str(permissions)}))
    log_in(page, "botbrowser")
    page.wait_for_selector("#guild-picker")
    assert page.locator("[data-permission=SEND_MESSAGES]").count() == 1
    assert page.locator("[data-permission=EMBED_LINKS]").count() == 1
    page.check(f"#guild-{second['id']}")
    shoot(page, "consent-bot")
    page.click("button[value=authorize]")
    page.wait_for_selector("#bot-added")
    assert "Workshop" in page.inner_text("#bot-added")
    shoot(page, "bot-added")
    bot = {"Authorization": f"Bot {app['bot']['token']}"}
    guilds = requests.get(f"{server}/api/v1/users/@me/guilds", headers=bot, timeout=10).json()
    assert [g["id"] for g in guilds] == [second["id"]] and first["id"] != second["id"]
    roles = requests.get(f"{server}/api/v1/guilds/{second['id']}/roles", headers=bot, timeout=10).json()
    assert any(r["name"] == "Browser Bot" and int(r["permissions"]) == permissions for r in roles)


def test_portal_create_application_and_reset_secret(server, page):
    api_user(server, "portaluser")
    page.goto(f"{server}/developers/applications")
    log_in(page, "portaluser")
    page.wait_for_selector("#no-applications")
    shoot(page, "portal-list")
    page.fill("#name", "Made In Browser")
    page.fill("#redirect_uris", "https://made.example/cb")
    page.click("button:has-text('Create')")
    page.wait_for_selector("#client-secret")
    first_secret = page.inner_text("#client-secret").strip()
    client_id = page.inner_text("#client-id").strip()
    shoot(page, "portal-created")
    page.goto(f"{server}/developers/applications/{client_id}/oauth2")
    page.click("#reset-secret-link")  # to the confirmation page
    page.fill("#password", "correct horse battery")
    page.click("#confirm")
    page.wait_for_selector("text=The old one no longer works.")
    second_secret = page.inner_text("#client-secret").strip()
    assert second_secret != first_secret
    old = requests.post(f"{server}/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                        auth=(client_id, first_secret), timeout=10)
    new = requests.post(f"{server}/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                        auth=(client_id, second_secret), timeout=10)
    assert old.status_code == 401 and new.status_code == 200
    page.goto(f"{server}/developers/applications/{client_id}/oauth2?scope=identify&scope=email")
    assert page.inner_text("#generated-url").startswith(f"{server}/oauth2/authorize?")
    shoot(page, "url-generator")


def test_portal_shows_a_public_clients_openid_endpoints(server, page):
    owner = api_user(server, "oidcportal")
    app = api_app(server, owner, name="Pocket Client", public_client=True, bot=False,
                  id_token_signed_response_alg="ES256")
    page.goto(f"{server}/developers/applications/{app['id']}/oauth2")
    log_in(page, "oidcportal")
    page.wait_for_selector("#oidc-endpoints")
    assert page.is_visible("#oidc-endpoints") and page.is_visible("#no-secret")
    assert page.inner_text("#oidc-discovery") == f"{server}/.well-known/openid-configuration"
    assert page.inner_text("#oidc-jwks_uri") == f"{server}/api/v1/oauth2/keys"
    assert page.is_checked("input[name=public_client]")
    assert page.locator("#id_token_signed_response_alg").input_value() == "ES256"
    assert page.locator("form[action$='/reset-secret']").count() == 0
    shoot(page, "portal-openid")


def test_revoke_an_authorized_app(server, page):
    owner = api_user(server, "revokeowner")
    app = api_app(server, owner, name="Revocable")
    user = api_user(server, "revoker")
    consent = requests.post(f"{server}/api/v1/oauth2/authorize/consent", headers={"Authorization": user["token"]},
                            timeout=10, json={"client_id": app["id"], "scope": "identify", "authorize": True,
                                              "response_type": "code", "redirect_uri": CALLBACK})
    code = query(consent.json()["redirect_to"])["code"]
    token = requests.post(f"{server}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(f"{server}/api/v1/users/@me", headers=bearer, timeout=10).status_code == 200
    page.goto(f"{server}/settings/authorized-apps")
    log_in(page, "revoker")
    page.wait_for_selector(".authorized-app")
    shoot(page, "authorized-apps")
    page.click(".authorized-app a:has-text('Revoke')")  # asks first, on a page of its own
    page.click("#confirm-revoke")
    page.wait_for_selector("#no-apps")
    assert requests.get(f"{server}/api/v1/users/@me", headers=bearer, timeout=10).status_code == 401


def test_consent_page_cannot_be_framed_and_loads_nothing_foreign(server, page):
    owner = api_user(server, "frameowner")
    app = api_app(server, owner)
    requests_seen: list[str] = []
    page.on("request", lambda request: requests_seen.append(request.url))
    page.goto(authorize_url(server, app["id"]))
    log_in(page, "frameowner")
    page.wait_for_selector("text=Authorize")
    assert all(url.startswith(server) for url in requests_seen)
    headers = page.request.get(authorize_url(server, app["id"])).headers
    assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]


def test_dark_mode_and_phone_layout(server, browser):
    context = browser.new_context(viewport={"width": 390, "height": 800}, color_scheme="dark")
    phone = context.new_page()
    phone.goto(f"{server}/login")
    background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(30, 31, 34)"  # the dark palette
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing overflows sideways on a phone
    phone.screenshot(path="tests/e2e/screenshots/login-phone-dark.png", full_page=True)
    context.close()
