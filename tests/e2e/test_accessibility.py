"""Every page through axe-core, in three variants: light (the default), dark (the browser
prefers a dark colour scheme) and mobile (a 375x740 touch screen).

Each page is screenshot to tests/e2e/screenshots/<page>-<variant>.png and checked against
WCAG 2.0/2.1 A and AA and axe's best practices (tests/e2e/a11y.py). A violation of impact
"serious" or "critical" fails the test; every violation, the moderate and minor ones too,
goes to the test's output, to the run's terminal summary, and to
tests/e2e/screenshots/axe-report.txt. Two checks axe does not make ride along: no page
scrolls sideways on the phone (reflow), and Tab reaches a visible focus ring everywhere.

One server (dev mode, for /demo/callback; its mail goes to an SMTP server on loopback, for
the pages behind mailed links) and one browser for the module; one context per variant and
per signed-in state, the signed-in one made from a single login's storage state, and a
context of its own for each page that needs an account with two-factor sign-in (FRESH).
A second server, with a tiny global rate limit, serves the 429 page."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import pyotp
import pytest
import requests

from tests.conftest import PASSWORD
from tests.e2e.a11y import (
    axe_source, axe_violations, blocking, describe, format_table, needs_node, report_rows,
)
from tests.e2e.conftest import CALLBACK, SCREENSHOTS, api_app, api_user, links_to, log_in, mail_env, mailed_link
from tests.interop.conftest import running_server

pytestmark = [needs_node, pytest.mark.backend_independent]  # markup and styles: the same on every backend
__all__ = ["axe_source"]  # the fixture, imported for pytest to find

STATIC = Path(__file__).parents[2] / "src" / "fluxer_oauth" / "web" / "static"
DESKTOP = {"width": 1000, "height": 900}
VARIANTS = {
    "light": {"viewport": DESKTOP, "color_scheme": "light"},
    "dark": {"viewport": DESKTOP, "color_scheme": "dark"},
    "mobile": {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True,
               "color_scheme": "light"},
}
REPORT: list[tuple[str, ...]] = []
SKIPPED: list[str] = []


@dataclass
class Site:
    base: str
    user: dict  # the signed-in person: owns "Weather Station" and two servers
    own_app: dict  # confidential, with a bot
    other_app: dict  # someone else's, with terms and privacy links; the user authorized it
    garden: dict
    workshop: dict
    smtp: object  # tests/mail_server.MailServer: the mails the server sent


def post(base: str, path: str, token: str, body: dict) -> dict:
    response = requests.post(f"{base}/api/v1{path}", json=body, headers={"Authorization": token}, timeout=10)
    assert response.status_code in (200, 201), response.text
    return response.json()


def consent(base: str, token: str, **fields) -> str:
    return post(base, "/oauth2/authorize/consent", token, {"authorize": True, **fields})["redirect_to"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend, smtp_server):
    with running_server(tmp_path_factory.mktemp("a11y"), backend, FLUXER_DEV="1", **mail_env(smtp_server)) as base:
        user = api_user(base, "ada")
        own_app = api_app(base, user, name="Weather Station", description="Forecasts for your servers.")
        other = api_user(base, "grace")
        other_app = api_app(base, other, name="Photo Album",
                            terms_of_service_url="https://album.example/terms",
                            privacy_policy_url="https://album.example/privacy")
        garden = post(base, "/guilds", user["token"], {"name": "Garden"})
        workshop = post(base, "/guilds", user["token"], {"name": "Workshop"})
        # An authorized app to list: Photo Album's code redeemed for tokens.
        redirect = consent(base, user["token"], client_id=other_app["id"], scope="identify email guilds",
                           response_type="code", redirect_uri=CALLBACK)
        code = dict(pair.split("=", 1) for pair in redirect.split("?", 1)[1].split("&"))["code"]
        token = requests.post(f"{base}/api/v1/oauth2/token", auth=(other_app["id"], other_app["client_secret"]),
                              data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
                              timeout=10)
        assert token.status_code == 200, token.text
        # The bot in the Garden, for the "bot added" page.
        consent(base, user["token"], client_id=own_app["id"], scope="bot", permissions="2048",
                guild_id=garden["id"])
        yield Site(base, user, own_app, other_app, garden, workshop, smtp_server)


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, backend):
    """A server that answers every address's third request in a minute with 429."""
    with running_server(tmp_path_factory.mktemp("a11y-429"), backend, FLUXER_RATE_LIMITS="on",
                        FLUXER_RATE_LIMIT_GLOBAL="2/minute") as base:
        yield base


@pytest.fixture(scope="module")
def signed_in_state(site, browser) -> dict:
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{site.base}/login?next=/settings/authorized-apps")
    log_in(tab, "ada")
    tab.wait_for_url(f"{site.base}/settings/authorized-apps")
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture(scope="module")
def contexts(browser, signed_in_state):
    """contexts(variant, signed_in): one browser context each, made when first asked for."""
    made: dict[tuple[str, bool], object] = {}

    def get(variant: str, signed_in: bool):
        key = (variant, signed_in)
        if key not in made:
            made[key] = browser.new_context(**VARIANTS[variant],
                                            storage_state=signed_in_state if signed_in else None)
        return made[key]

    yield get
    for context in made.values():
        context.close()


@pytest.fixture(scope="module", autouse=True)
def axe_report(request):
    """The whole module's table, written to axe-report.txt and to the terminal summary."""
    yield
    text = format_table(REPORT) if REPORT else "no axe violations"
    if SKIPPED:
        text += "\n\nnot checked (no such page yet): " + ", ".join(SKIPPED)
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / "axe-report.txt").write_text(text + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # into the run's log, whatever -s or -q say
            reporter.write_line("")
            reporter.write_sep("-", f"axe-core: {len(REPORT)} violation(s), all impacts")
            reporter.write_line(text)


# --- the pages ------------------------------------------------------------------------------

def authorize_url(base: str, client_id: str, **extra) -> str:
    query = {"client_id": client_id, "response_type": "code", "scope": "identify email guilds",
             "redirect_uri": CALLBACK, "state": "a11y", **extra}
    return f"{base}/oauth2/authorize?{urlencode(query)}"


def exists(url: str) -> bool:
    """Whether the route is there (a page not built yet answers 404 whoever asks)."""
    return requests.get(url, allow_redirects=False, timeout=10).status_code != 404


def device_consent(tab, site: Site) -> None:
    pair = requests.post(f"{site.base}/api/v1/oauth2/device/authorize", auth=(site.own_app["id"],
                         site.own_app["client_secret"]), data={"scope": "identify guilds"}, timeout=10)
    assert pair.status_code == 200, pair.text
    tab.goto(f"{site.base}/activate?user_code={pair.json()['user_code']}")
    tab.click("button[value=continue]")
    tab.wait_for_selector("#device-code")


def activate_done(tab, site: Site) -> None:
    device_consent(tab, site)
    tab.click("button[value=authorize]")
    tab.wait_for_selector("#activate-result")


def login_error(tab, site: Site) -> None:
    tab.goto(f"{site.base}/login")
    tab.fill("#login", "ada")
    tab.fill("#password", PASSWORD + "-wrong")
    tab.click("button[type=submit]")
    tab.wait_for_selector("[role=alert]")


def portal_created(tab, site: Site) -> None:
    tab.goto(f"{site.base}/developers/applications")
    tab.fill("#name", "Fresh App")
    tab.fill("#redirect_uris", "https://fresh.example/cb")
    tab.click("button:has-text('Create')")
    tab.wait_for_selector("#client-secret")


def portal_section(section: str) -> Callable:
    def visit(tab, site: Site) -> None:
        url = f"{site.base}/developers/applications/{site.own_app['id']}/{section}"
        if not exists(url):
            skip_missing(f"portal-app-{section}")
        tab.goto(url)
    return visit


def signup(tab, site: Site) -> None:
    if not exists(f"{site.base}/signup"):
        skip_missing("signup")
    tab.goto(f"{site.base}/signup")


def skip_missing(name: str) -> None:
    if name not in SKIPPED:
        SKIPPED.append(name)
    pytest.skip(f"no {name} page in the app yet")


# --- the account pages ------------------------------------------------------------------------

FRESH = "fresh"  # a page that needs a context of its own: a new account, signed in there
NEW_NAMES = itertools.count(1)


def forgot_sent(tab, site: Site) -> None:
    tab.goto(f"{site.base}/forgot-password")
    tab.fill("#login", "nobody-by-this-name")
    tab.click("button[type=submit]")
    tab.wait_for_selector("#reset-sent")


def reset_form(tab, site: Site) -> None:
    """The form behind a fresh reset link of ada's (opening it uses nothing)."""
    asked = len(links_to(site.smtp, "ada@example.com", "/reset-password"))
    tab.goto(f"{site.base}/forgot-password")
    tab.fill("#login", "ada")
    tab.click("button[type=submit]")
    tab.wait_for_selector("#reset-sent")
    tab.goto(mailed_link(site.smtp, "ada@example.com", "/reset-password", count=asked + 1))
    tab.wait_for_selector("#password")


def reset_refused(tab, site: Site) -> None:
    reset_form(tab, site)
    tab.fill("#password", "password1")
    tab.fill("#password_confirm", "password1")
    tab.click("button[type=submit]")
    tab.wait_for_selector("#password-error")


def verify_email(tab, site: Site) -> None:
    tab.goto(mailed_link(site.smtp, "ada@example.com", "/verify-email"))
    tab.wait_for_selector("#verify-button")


def email_verified(tab, site: Site) -> None:
    name = f"verifier{next(NEW_NAMES)}"
    api_user(site.base, name)
    tab.goto(mailed_link(site.smtp, f"{name}@example.com", "/verify-email"))
    tab.click("#verify-button")
    tab.wait_for_selector("#verified")


def settings_refused(tab, site: Site) -> None:
    tab.goto(f"{site.base}/settings/account")
    tab.fill("#current_password", PASSWORD)
    tab.fill("#new_password", "password1")
    tab.fill("#new_password_confirm", "password1")
    tab.click("#password-form button[type=submit]")
    tab.wait_for_selector("#new_password-error")


def enrolled(tab, site: Site) -> tuple[str, list[str]]:
    """A new account signed in in ``tab``, two-factor sign-in turned on through the pages:
    its name and recovery codes; the tab shows the codes."""
    name = f"guarded{next(NEW_NAMES)}"
    api_user(site.base, name)
    tab.goto(f"{site.base}/login?next=/settings/account/two-factor")
    log_in(tab, name)
    tab.wait_for_selector("#totp-secret")
    tab.fill("#code", pyotp.TOTP(tab.inner_text("#totp-secret").replace(" ", "")).at(time.time()))
    tab.fill("#password", PASSWORD)
    tab.click("#enable-button")
    tab.wait_for_selector("#recovery-codes")
    return name, tab.locator("#recovery-codes code").all_inner_texts()


def settings_with_two_factor(tab, site: Site) -> None:
    enrolled(tab, site)
    tab.click("#codes-saved")
    tab.wait_for_selector("#codes-left")


def login_code(tab, site: Site) -> None:
    name, _codes = enrolled(tab, site)
    tab.context.clear_cookies()
    tab.goto(f"{site.base}/login")
    log_in(tab, name)
    tab.wait_for_selector("#code")


def too_many_requests(tab, limited_base: str) -> None:
    # The stylesheet would be refused too (it counts): the browser gets the same file from disk.
    tab.route(f"{limited_base}/static/**", lambda route: route.fulfill(
        path=str(STATIC / route.request.url.split("/static/", 1)[1].split("?")[0])))
    for _ in range(3):
        requests.get(f"{limited_base}/login", timeout=10)
    response = tab.goto(f"{limited_base}/no-such-page")
    assert response.status == 429


def goto(path: str | Callable[[Site], str]) -> Callable:
    def visit(tab, site: Site) -> None:
        response = tab.goto(site.base + (path(site) if callable(path) else path))
        assert response.ok or response.status in (400, 404), response.status
    return visit


# name -> (signed in?, how to get there). The error pages are all error.html; 400, 404 and
# 429 cover its messages, hint, retry line and request id.
PAGES: dict[str, tuple[bool, Callable]] = {
    "login": (False, goto("/login")),
    "login-error": (False, login_error),
    "signup": (False, signup),
    "logout": (True, goto("/logout")),
    "consent": (True, lambda tab, site: tab.goto(authorize_url(site.base, site.other_app["id"]))),
    "consent-bot": (True, goto(lambda site: "/oauth2/authorize?" + urlencode(
        {"client_id": site.own_app["id"], "scope": "bot", "permissions": str((1 << 11) | (1 << 14))}))),
    "activate": (True, goto("/activate")),
    "activate-consent": (True, device_consent),
    "activate-done": (True, activate_done),
    "authorized-apps": (True, goto("/settings/authorized-apps")),
    "portal-list": (True, goto("/developers/applications")),
    "portal-app": (True, goto(lambda site: f"/developers/applications/{site.own_app['id']}")),
    "portal-app-oauth2": (True, portal_section("oauth2")),
    "portal-app-bot": (True, portal_section("bot")),
    "portal-app-created": (True, portal_created),
    "url-generator": (True, goto(lambda site: f"/developers/applications/{site.own_app['id']}/url-generator?"
                                 "scope=identify&scope=email")),
    "bot-added": (True, goto(lambda site: f"/oauth2/authorized?client_id={site.own_app['id']}"
                             f"&guild_id={site.garden['id']}")),
    "demo-callback": (False, goto(lambda site: f"/demo/callback?code=Zm9vYmFy&state=a11y&iss={site.base}")),
    "forgot-password": (False, goto("/forgot-password")),
    "forgot-password-sent": (False, forgot_sent),
    "reset-password": (False, reset_form),
    "reset-password-refused": (False, reset_refused),
    "link-invalid": (False, goto("/reset-password?token=not-a-link")),
    "verify-email": (False, verify_email),
    "email-verified": (False, email_verified),
    "login-code": (FRESH, login_code),
    "settings-account": (True, goto("/settings/account")),
    "settings-account-refused": (True, settings_refused),
    "settings-two-factor": (True, goto("/settings/account/two-factor")),
    "recovery-codes": (FRESH, lambda tab, site: enrolled(tab, site)),
    "settings-account-two-factor-on": (FRESH, settings_with_two_factor),
    "error-400": (False, lambda tab, site: tab.goto(authorize_url(site.base, site.own_app["id"],
                                                                  redirect_uri="https://evil.example/cb"))),
    "error-404": (False, goto("/no-such-page")),
    "error-429": (False, None),  # on the rate-limited server
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", list(PAGES))
def test_page_has_no_serious_accessibility_violations(name, variant, site, limited_server, contexts, browser,
                                                       axe_source):
    # (Both servers start before the browser: on PostgreSQL, making a database runs asyncio,
    # which cannot run inside Playwright's loop.)
    signed_in, visit = PAGES[name]
    own_context = browser.new_context(**VARIANTS[variant]) if signed_in == FRESH else None
    tab = (own_context or contexts(variant, signed_in)).new_page()
    try:
        if visit is None:
            too_many_requests(tab, limited_server)
        else:
            visit(tab, site)
        tab.screenshot(path=str(SCREENSHOTS / f"{name}-{variant}.png"), full_page=True)
        violations = axe_violations(tab, axe_source)
        width = tab.evaluate("document.documentElement.scrollWidth")
    finally:
        tab.close()
        if own_context is not None:
            own_context.close()
    rows = report_rows(name, variant, violations)
    REPORT.extend(rows)
    if rows:
        print(format_table(rows))
        print(describe(violations))
    serious = blocking(violations)
    assert not serious, f"axe found serious or critical violations on {name} ({variant}):\n{describe(serious)}"
    # WCAG 1.4.10 (reflow), which axe leaves alone: nothing scrolls sideways on the phone.
    assert width <= VARIANTS[variant]["viewport"]["width"], f"{name} is {width}px wide in {variant}"


FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const style = getComputedStyle(e), box = e.getBoundingClientRect();
  return {element: e.outerHTML.slice(0, 120), outline: style.outlineStyle, width: parseFloat(style.outlineWidth),
          inView: box.bottom > 0 && box.right > 0 && box.top < innerHeight && box.left < innerWidth};
}"""


@pytest.mark.parametrize("variant", ["light", "dark"])
@pytest.mark.parametrize("name", ["consent", "portal-app"])
def test_keyboard_focus_is_always_visible(name, variant, site, limited_server, contexts):
    """Tab from the top of the page to its end: the skip link comes first and shows itself,
    and every control reached wears a focus ring at least 2px wide (Chromium's own is 1px).
    (limited_server: asked for so that it starts before the browser, as above.)"""
    tab = contexts(variant, True).new_page()
    try:
        PAGES[name][1](tab, site)
        reached = []
        for _ in range(100):
            tab.keyboard.press("Tab")
            focused = tab.evaluate(FOCUSED)
            if focused is None or focused in reached[:1]:
                break
            reached.append(focused)
    finally:
        tab.close()
    assert len(reached) > 3, reached
    assert 'class="skip"' in reached[0]["element"] and reached[0]["inView"], reached[0]
    unringed = [f["element"] for f in reached if f["outline"] in ("none", "hidden") or f["width"] < 2]
    assert not unringed, f"no visible focus ring on {name} ({variant}): {unringed}"
