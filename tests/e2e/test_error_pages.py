"""Error pages in a real browser: too many failed logins (the login form answers 429 and
says when to try again), and the 404 page, in light, dark and mobile (screenshots
login-429-*, error-404-*)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_signup import VARIANTS, axe, axe_source, in_variants  # noqa: F401  (fixtures)
from tests.interop.conftest import running_server

FAILURES = 3


@pytest.fixture(scope="module")
def throttled_server(tmp_path_factory, backend):
    """Limits on, and three failed logins per account and address in five minutes."""
    with running_server(tmp_path_factory.mktemp("e2e-429"), backend, FLUXER_RATE_LIMITS="on",
                        FLUXER_RATE_LIMIT_LOGIN_FAILURES=f"{FAILURES}/5minutes") as base:
        yield base


def fail_login(tab, name: str) -> int:
    tab.fill("#login", name)
    tab.fill("#password", "not the password")
    with tab.expect_navigation() as answer:
        tab.click("button[type=submit]")
    return answer.value.status


def test_too_many_failed_logins_show_when_to_try_again(throttled_server, browser, axe):  # noqa: F811
    for variant, options in VARIANTS.items():
        context = browser.new_context(**options)
        tab = context.new_page()
        try:
            tab.goto(f"{throttled_server}/login")
            name = f"guessed-{variant}"  # each variant its own account: a fresh count
            statuses = [fail_login(tab, name) for _ in range(FAILURES + 1)]
            assert statuses == [400] * FAILURES + [429]
            alert = tab.inner_text("[role=alert]")
            assert alert.startswith("Too many failed attempts. Try again in ") and "minute" in alert
            assert tab.input_value("#login") == name  # the form stays, with the name typed
            tab.screenshot(path=str(SCREENSHOTS / f"login-429-{variant}.png"), full_page=True)
        finally:
            context.close()


def test_the_404_page(throttled_server, browser, axe):  # noqa: F811
    def not_found(tab):
        response = tab.goto(f"{throttled_server}/no-such-page")
        assert response.status == 404
        assert tab.inner_text("h1") == "Page not found"
        assert tab.inner_text("#status-code") == "Error 404"
        assert tab.get_attribute("text=Go to the home page", "href") == "/"

    in_variants(browser, "error-404", not_found, axe=axe)
