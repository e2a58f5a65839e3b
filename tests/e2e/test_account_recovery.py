"""Getting back into an account, in Chromium against a server that sends real mail (to the
SMTP server the tests run on loopback): a forgotten password reset by mail ends the sessions
signed in elsewhere, and two-factor sign-in works with an app's code and with a recovery
code, which then works no more."""

from __future__ import annotations

import time

import pyotp

from tests.conftest import PASSWORD
from tests.e2e.conftest import api_user, log_in, mailed_link, shoot

NEW_PASSWORD = "lantern orchard glacier"


def signed_in_cookie(context) -> str | None:
    return next((c["value"] for c in context.cookies() if c["name"] == "fluxer_session"), None)


def test_a_forgotten_password_is_reset_by_mail_and_the_old_sessions_end(mail_site, smtp_server, browser):
    api_user(mail_site, "forgetter")
    elsewhere = browser.new_context()  # another device, signed in before the reset
    other_tab = elsewhere.new_page()
    other_tab.goto(f"{mail_site}/settings/account")
    log_in(other_tab, "forgetter")
    other_tab.wait_for_url(f"{mail_site}/settings/account")

    here = browser.new_context()
    tab = here.new_page()
    try:
        tab.goto(f"{mail_site}/login")
        tab.click("#forgot-link")
        tab.wait_for_url(f"{mail_site}/forgot-password")
        tab.fill("#login", "forgetter@example.com")
        tab.click("button[type=submit]")
        tab.wait_for_selector("#reset-sent")
        shoot(tab, "forgot-password-sent")

        tab.goto(mailed_link(smtp_server, "forgetter@example.com", "/reset-password"))
        tab.fill("#password", NEW_PASSWORD)
        tab.fill("#password_confirm", NEW_PASSWORD)
        shoot(tab, "reset-password")
        tab.click("button[type=submit]")
        tab.wait_for_url(f"{mail_site}/login")
        assert tab.inner_text("#notice") == "Your password was changed. Sign in with the new one."

        # The device signed in before is signed out: its next page is the login page.
        other_tab.reload()
        other_tab.wait_for_url(f"{mail_site}/login?next=%2Fsettings%2Faccount")

        log_in(tab, "forgetter")  # the old password
        tab.wait_for_selector("#form-error")
        assert signed_in_cookie(here) is None
        tab.fill("#login", "forgetter")
        tab.fill("#password", NEW_PASSWORD)
        tab.click("button[type=submit]")
        tab.wait_for_url(f"{mail_site}/developers/applications")
        assert signed_in_cookie(here) is not None
    finally:
        here.close()
        elsewhere.close()


def sign_out(tab, base: str) -> None:
    tab.click("form.who button")
    tab.wait_for_url(f"{base}/login")


def password_step(tab, base: str, username: str) -> None:
    tab.goto(f"{base}/login?next=/settings/account")
    log_in(tab, username)
    tab.wait_for_selector("#code")


def test_two_factor_sign_in_with_a_code_then_a_recovery_code_that_works_once(mail_site, page):
    base = mail_site
    api_user(base, "twofactor")
    page.goto(f"{base}/settings/account")
    log_in(page, "twofactor")
    page.wait_for_url(f"{base}/settings/account")

    page.click("#set-up-two-factor")
    page.wait_for_url(f"{base}/settings/account/two-factor")
    assert page.evaluate("document.getElementById('totp-qr').naturalWidth") > 0  # the QR image renders
    shoot(page, "two-factor-setup")
    totp = pyotp.TOTP(page.inner_text("#totp-secret").replace(" ", ""))
    enrolled_at = time.time()
    page.fill("#code", totp.at(enrolled_at))
    page.fill("#password", PASSWORD)
    page.click("#enable-button")
    page.wait_for_url(f"{base}/settings/account/two-factor/recovery-codes")
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == 10
    shoot(page, "recovery-codes")
    page.click("#codes-saved")
    page.wait_for_url(f"{base}/settings/account")
    assert page.inner_text("#two-factor-status") == "On"
    sign_out(page, base)

    # Password, then the app's code (the next step's: the enrolment's code works once).
    password_step(page, base, "twofactor")
    assert signed_in_cookie(page.context) is None
    shoot(page, "login-code")
    page.fill("#code", totp.at((int(enrolled_at // 30) + 1) * 30))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/settings/account")
    sign_out(page, base)

    # Password, then a recovery code instead.
    password_step(page, base, "twofactor")
    page.fill("#code", codes[0])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/settings/account")
    assert page.inner_text("#codes-left") == "9 recovery codes left."
    sign_out(page, base)

    # The same recovery code a second time: refused.
    password_step(page, base, "twofactor")
    page.fill("#code", codes[0])
    page.click("button[type=submit]")
    page.wait_for_selector("#form-error")
    assert "incorrect or was already used" in page.inner_text("#form-error")
    assert page.url == f"{base}/login/code" and signed_in_cookie(page.context) is None
