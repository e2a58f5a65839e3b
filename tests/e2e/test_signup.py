"""Sign-up in a real browser: from an authorization request's login page to a new account,
back to the consent page and on to the client with a code; the form's errors; the page in
light, dark and mobile (screenshots signup-*, login-*, and the pages' axe check)."""

from __future__ import annotations

import shutil
from typing import Callable

import pytest
import requests

from tests.conftest import PASSWORD
from tests.e2e.a11y import axe_source, axe_violations, blocking, describe
from tests.e2e.conftest import CALLBACK, SCREENSHOTS, api_app, api_user, catch_callback
from tests.e2e.test_pages import authorize_url, query

__all__ = ["axe_source"]  # the fixture, imported for pytest to find

VARIANTS = {
    "light": {"viewport": {"width": 1000, "height": 900}},
    "dark": {"viewport": {"width": 1000, "height": 900}, "color_scheme": "dark"},
    "mobile": {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True},
}
HAS_NODE = shutil.which("node") is not None and shutil.which("npm") is not None


def in_variants(browser, name: str, visit: Callable, *, storage_state: dict | None = None,
                axe: str | None = None) -> None:
    """``visit(tab)`` in a fresh context of each variant; a screenshot <name>-<variant>.png
    of what it shows and, given axe's source, no serious or critical axe violation."""
    for variant, options in VARIANTS.items():
        context = browser.new_context(**options, storage_state=storage_state)
        tab = context.new_page()
        try:
            visit(tab)
            tab.screenshot(path=str(SCREENSHOTS / f"{name}-{variant}.png"), full_page=True)
            assert tab.evaluate("document.documentElement.scrollWidth") <= options["viewport"]["width"]
            if axe is not None:
                serious = blocking(axe_violations(tab, axe))
                assert not serious, f"axe on {name} ({variant}):\n{describe(serious)}"
        finally:
            context.close()


@pytest.fixture(scope="module")
def axe(request):
    """axe-core's source when Node.js is there to install it, else None (no axe check)."""
    return request.getfixturevalue("axe_source") if HAS_NODE else None


def fill_sign_up(page, username: str, *, email: str | None = None, confirm: str = PASSWORD) -> None:
    page.fill("#username", username)
    page.fill("#email", email or f"{username}@example.com")
    page.fill("#password", PASSWORD)
    page.fill("#password_confirm", confirm)
    page.click("button:has-text('Create account')")


def test_sign_up_from_an_authorization_request_ends_with_a_code(server, page):
    owner = api_user(server, "signupowner")
    app = api_app(server, owner, name="Fresh Client")
    seen = catch_callback(page)
    page.goto(authorize_url(server, app["id"]))
    assert "/login" in page.url
    page.click("#signup-link a")
    page.wait_for_selector("#password_confirm")
    assert "/signup?next=" in page.url
    fill_sign_up(page, "freshperson")
    page.wait_for_selector("button[value=authorize]")
    assert "/oauth2/authorize?" in page.url
    assert "freshperson" in page.inner_text("#session-bar")
    page.click("button[value=authorize]")
    page.wait_for_url("http://127.0.0.1:9/**")
    params = query(seen[-1])
    assert params["state"] == "browser-state" and len(params["code"]) >= 43
    token = requests.post(f"{server}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                          data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": CALLBACK})
    assert token.status_code == 200, token.text
    me = requests.get(f"{server}/api/v1/users/@me", timeout=10,
                      headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert me.json()["username"] == "freshperson"


def test_sign_up_errors_are_shown_at_their_fields(server, page):
    api_user(server, "takenname")
    page.goto(f"{server}/signup")
    fill_sign_up(page, "takenname", email="someone.else@example.com")
    page.wait_for_selector("#username-error")
    assert page.inner_text("#username-error") == "This username is already taken."
    assert page.input_value("#email") == "someone.else@example.com"  # kept
    assert page.input_value("#password") == ""  # never sent back
    assert page.evaluate("document.activeElement.id") == "username"
    fill_sign_up(page, "untakenname", confirm=PASSWORD + "?")
    page.wait_for_selector("#password_confirm-error")
    assert page.inner_text("#password_confirm-error") == "The two passwords differ."
    assert page.get_attribute("#password_confirm", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "password_confirm"
    assert requests.post(f"{server}/api/v1/auth/login", json={"login": "untakenname", "password": PASSWORD},
                         timeout=10).status_code == 400


def test_the_login_and_sign_up_pages_in_every_variant(server, browser, axe):
    api_user(server, "shownagain")

    def signup_with_errors(tab):
        tab.goto(f"{server}/signup")
        fill_sign_up(tab, "shownagain", email="not.taken@example.com", confirm="something else")
        tab.wait_for_selector("#password_confirm-error")

    in_variants(browser, "login", lambda tab: tab.goto(f"{server}/login"), axe=axe)
    in_variants(browser, "signup", lambda tab: tab.goto(f"{server}/signup"), axe=axe)
    in_variants(browser, "signup-errors", signup_with_errors, axe=axe)
