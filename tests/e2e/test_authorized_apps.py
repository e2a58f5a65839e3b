"""The authorized apps and the signed-in bar in a real browser: revoking asks first (no
JavaScript), Cancel changes nothing, confirming ends the app's tokens and the list says so;
the pages in light, dark and mobile (screenshots authorized-apps-*, revoke-confirm-*,
logout-*)."""

from __future__ import annotations

import requests

from tests.e2e.conftest import CALLBACK, api_app, api_user, log_in, shoot
from tests.e2e.test_pages import query
from tests.e2e.test_signup import axe, axe_source, in_variants  # noqa: F401  (fixtures)


def authorized_token(server: str, user: dict, app: dict, scope: str = "identify email") -> str:
    """``user`` authorizes ``app`` (the JSON consent) and the app redeems the code: its access token."""
    consent = requests.post(f"{server}/api/v1/oauth2/authorize/consent", headers={"Authorization": user["token"]},
                            timeout=10, json={"client_id": app["id"], "scope": scope, "authorize": True,
                                              "response_type": "code", "redirect_uri": CALLBACK})
    assert consent.status_code == 200, consent.text
    code = query(consent.json()["redirect_to"])["code"]
    token = requests.post(f"{server}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK})
    assert token.status_code == 200, token.text
    return token.json()["access_token"]


def me_status(server: str, access_token: str) -> int:
    return requests.get(f"{server}/api/v1/users/@me", headers={"Authorization": f"Bearer {access_token}"},
                        timeout=10).status_code


def test_revoke_asks_first_then_ends_the_apps_access(server, page):
    owner = api_user(server, "confirmowner")
    app = api_app(server, owner, name="Weather Widget")
    other = api_app(server, owner, name="Calendar Sync")
    user = api_user(server, "confirmer")
    token = authorized_token(server, user, app)
    kept = authorized_token(server, user, other, scope="identify")
    page.goto(f"{server}/settings/authorized-apps")
    log_in(page, "confirmer")
    item = page.locator(f"li[data-application-id='{app['id']}']")
    item.wait_for()
    assert "Know your email address and whether it is verified" in item.inner_text()
    assert "Authorized since" in item.inner_text()
    shoot(page, "authorized-apps-two")

    # Revoke opens the question; Cancel goes back with nothing changed.
    item.locator("a:has-text('Revoke')").click()
    page.wait_for_selector("#confirm-revoke")
    assert page.url == f"{server}/settings/authorized-apps/{app['id']}/revoke"
    assert "Revoke access of Weather Widget?" in page.inner_text("h1")
    shoot(page, "revoke-confirm")
    page.click("#cancel-revoke")
    page.wait_for_url(f"{server}/settings/authorized-apps")
    assert page.locator(f"li[data-application-id='{app['id']}']").count() == 1
    assert me_status(server, token) == 200

    # Confirmed: the app is gone from the list, the notice names it, its token is dead.
    page.locator(f"li[data-application-id='{app['id']}'] a:has-text('Revoke')").click()
    page.click("#confirm-revoke")
    page.wait_for_selector("#notice")
    assert page.url == f"{server}/settings/authorized-apps"
    assert page.inner_text("#notice") == "Access of Weather Widget revoked."
    assert page.locator(f"li[data-application-id='{app['id']}']").count() == 0
    assert page.locator(f"li[data-application-id='{other['id']}']").count() == 1
    shoot(page, "authorized-apps-revoked")
    assert me_status(server, token) == 401
    assert me_status(server, kept) == 200  # the other app keeps its access
    page.reload()
    assert page.locator("#notice").count() == 0  # said once


def test_the_bar_leads_to_the_settings_and_the_portal(server, page):
    api_user(server, "navigator")
    page.goto(f"{server}/logout")
    log_in(page, "navigator")
    page.wait_for_selector("#session-bar")
    page.click("#session-bar >> text=Developer portal")
    page.wait_for_url(f"{server}/developers/applications")
    page.click("#session-bar >> text=Authorized apps")
    page.wait_for_url(f"{server}/settings/authorized-apps")
    assert page.locator("#no-apps").count() == 1
    # The bar opens the card, above the page's heading.
    first = page.evaluate("document.querySelector('main').firstElementChild.id")
    assert first == "session-bar"
    page.click("#session-bar button:has-text('Log out')")
    page.wait_for_url(f"{server}/login")


def test_the_signed_in_pages_in_every_variant(server, browser, axe):  # noqa: F811
    owner = api_user(server, "variantowner")
    app = api_app(server, owner, name="Photo Frame")
    user = api_user(server, "variantuser")
    authorized_token(server, user, app, scope="identify email guilds")
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{server}/login?next=/settings/authorized-apps")
    log_in(tab, "variantuser")
    tab.wait_for_url(f"{server}/settings/authorized-apps")
    state = context.storage_state()
    context.close()

    in_variants(browser, "authorized-apps", lambda tab: tab.goto(f"{server}/settings/authorized-apps"),
                storage_state=state, axe=axe)
    in_variants(browser, "revoke-confirm",
                lambda tab: tab.goto(f"{server}/settings/authorized-apps/{app['id']}/revoke"),
                storage_state=state, axe=axe)
    in_variants(browser, "logout", lambda tab: tab.goto(f"{server}/logout"), storage_state=state, axe=axe)
