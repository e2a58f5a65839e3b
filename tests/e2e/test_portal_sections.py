"""The developer portal in a real browser: an application's three sections, the new
credentials shown once across the create redirect, the URL generator rebuilding the link as
boxes are ticked (and agreeing with the server's own generation), the Bot section, and
deleting through the confirmation page. Screenshots of every portal page in light, dark and
mobile (tests/e2e/screenshots/portal-*-<variant>.png)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from fluxer_oauth.core.permissions import PERMISSIONS
from tests.conftest import PASSWORD
from tests.e2e.conftest import CALLBACK, SCREENSHOTS, api_app, api_user, log_in, shoot

LIST = "/developers/applications"
ODD_REDIRECT = "http://localhost:3000/cb?next=(a)!*'~"  # characters the two encoders treat differently
VARIANTS = {
    "light": {"viewport": {"width": 1000, "height": 900}},
    "dark": {"viewport": {"width": 1000, "height": 900}, "color_scheme": "dark"},
    "mobile": {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True},
}


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def test_create_shows_the_secret_once_then_the_sections(server, page):
    api_user(server, "sectioned")
    page.goto(f"{server}{LIST}")
    log_in(page, "sectioned")
    page.wait_for_selector("#no-applications")
    page.fill("#name", "Sectioned App")
    page.fill("#redirect_uris", "https://sectioned.example/cb")
    page.click("button:has-text('Create')")
    page.wait_for_selector("#client-secret")
    # Post/Redirect/Get: the browser is on the application's General page, not on the POST.
    client_id = page.inner_text("#client-id").strip()
    assert page.url == f"{server}{LIST}/{client_id}"
    assert page.get_attribute("#tab-general", "aria-current") == "page"
    secret = page.inner_text("#client-secret").strip()
    assert page.inner_text("#bot-token").strip() and "Application created." in page.inner_text("#notice")
    shoot(page, "portal-general-created")
    token = requests.post(f"{server}/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(client_id, secret), timeout=10)
    assert token.status_code == 200
    page.reload()
    page.wait_for_selector("#app-facts")
    assert page.locator("#client-secret").count() == 0 and page.locator("#bot-token").count() == 0
    assert secret not in page.content()

    page.click("#tab-oauth2")
    page.wait_for_selector("#generator-form")
    assert page.url == f"{server}{LIST}/{client_id}/oauth2"
    assert page.get_attribute("#tab-oauth2", "aria-current") == "page"
    assert page.get_attribute("#tab-general", "aria-current") is None
    page.click("#tab-bot")
    page.wait_for_selector("#bot-form")
    assert page.inner_text("#bot-id").strip() == client_id


def test_the_generated_link_updates_live_and_matches_the_server(server, page):
    owner = api_user(server, "generating")
    app = api_app(server, owner, name="Live Link", redirect_uris=[CALLBACK, ODD_REDIRECT])
    page.goto(f"{server}{LIST}/{app['id']}/oauth2")
    log_in(page, "generating")
    page.wait_for_selector("#generator-form")
    assert page.is_visible("#generated-empty") and not page.is_visible("#generated-url")
    # The link comes before the boxes.
    assert page.evaluate("""() => {
        const link = document.getElementById('generated');
        const box = document.querySelector('input[name=scope]');
        return !!(link.compareDocumentPosition(box) & Node.DOCUMENT_POSITION_FOLLOWING);
    }""")

    page.check("input[name=scope][value=identify]")
    page.wait_for_selector("#generated-url", state="visible")
    first = page.inner_text("#generated-url")
    assert _query(first) == {"client_id": app["id"], "scope": "identify", "response_type": "code",
                             "redirect_uri": CALLBACK}
    page.check("input[name=scope][value=bot]")
    page.wait_for_function("(before) => document.getElementById('generated-url').textContent !== before", arg=first)
    ticked = ["KICK_MEMBERS", "SEND_MESSAGES", "ADMINISTRATOR", "VIEW_CHANNEL_MEMBERS"]  # bit 54: beyond 2**53
    for name in ticked:
        page.check(f"input[name=permission][value={name}]")
    page.select_option("#redirect_uri", ODD_REDIRECT)
    expected = 0
    for name in ticked:
        expected |= PERMISSIONS[name]
    page.wait_for_function("(bits) => document.getElementById('generated-url').textContent.includes("
                           "'permissions=' + bits)", arg=str(expected))
    live = page.inner_text("#generated-url")
    assert _query(live) == {"client_id": app["id"], "scope": "identify bot", "response_type": "code",
                            "redirect_uri": ODD_REDIRECT, "permissions": str(expected)}
    assert page.get_attribute("#open-url", "href") == live
    assert page.is_visible("#administrator-warning")
    shoot(page, "portal-generator-live")

    # The server's own generation (the Generate button, as without the script) agrees, to the byte.
    page.click("#generate")
    page.wait_for_url("**/oauth2?*")
    assert page.inner_text("#generated-url") == live
    assert page.is_checked("input[name=permission][value=VIEW_CHANNEL_MEMBERS]")


def test_the_generator_works_without_javascript(server, browser):
    owner = api_user(server, "noscript")
    app = api_app(server, owner, name="No Script")
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 900})
    try:
        tab = context.new_page()
        tab.goto(f"{server}{LIST}/{app['id']}/url-generator?scope=bot&permission=SEND_MESSAGES")
        log_in(tab, "noscript")
        tab.wait_for_selector("#generator-form")
        assert tab.url.startswith(f"{server}{LIST}/{app['id']}/oauth2?")  # the choices survive the login
        assert _query(tab.inner_text("#generated-url")) == {"client_id": app["id"], "scope": "bot",
                                                            "permissions": str(PERMISSIONS["SEND_MESSAGES"])}
        tab.check("input[name=scope][value=email]")
        tab.click("#generate")
        tab.wait_for_url("**scope=email**")
        assert _query(tab.inner_text("#generated-url"))["scope"] == "email bot"
        # A confirmation page works without JavaScript too.
        tab.goto(f"{server}{LIST}/{app['id']}/reset-token")
        tab.fill("#password", PASSWORD)
        tab.click("#confirm")
        tab.wait_for_selector("#bot-token")
        assert tab.url == f"{server}{LIST}/{app['id']}/bot"
    finally:
        context.close()


def test_bot_section_saves_its_settings(server, page):
    owner = api_user(server, "botsettings")
    app = api_app(server, owner, name="Settings Bot", bot_public=True)
    page.goto(f"{server}{LIST}/{app['id']}/bot")
    log_in(page, "botsettings")
    page.wait_for_selector("#bot-form")
    assert page.inner_text("#bot-name").strip() and page.is_checked("input[name=bot_public]")
    page.uncheck("input[name=bot_public]")
    page.check("input[name=bot_require_code_grant]")
    page.click("#bot-form button[type=submit]")
    page.wait_for_selector("#notice")
    assert page.url == f"{server}{LIST}/{app['id']}/bot?saved=1" and page.inner_text("#notice") == "Saved."
    body = requests.get(f"{server}/api/v1/oauth2/applications/{app['id']}", timeout=10,
                        headers={"Authorization": owner["token"]}).json()
    assert (body["bot_public"], body["bot_require_code_grant"], body["name"]) == (False, True, "Settings Bot")


def test_confirm_then_delete_lands_on_the_list_with_a_notice(server, page):
    owner = api_user(server, "deleter")
    app = api_app(server, owner, name="Short Lived")
    page.goto(f"{server}{LIST}/{app['id']}")
    log_in(page, "deleter")
    page.click("#delete-link")
    page.wait_for_selector("#confirm-form")
    assert page.url == f"{server}{LIST}/{app['id']}/delete"
    assert "This cannot be undone." in page.inner_text("#consequences")
    page.click("#cancel")  # changing one's mind leads back
    page.wait_for_selector("#app-facts")
    page.click("#delete-link")
    page.fill("#password", PASSWORD)
    page.click("#confirm")
    page.wait_for_selector("#notice")
    assert page.url == f"{server}{LIST}" and page.inner_text("#notice") == "Application Short Lived deleted."
    assert page.locator(f"[data-application-id='{app['id']}']").count() == 0
    page.reload()
    page.wait_for_selector("#create-form")
    assert page.locator("#notice").count() == 0


def test_screenshots_of_every_portal_page(server, browser):
    owner = api_user(server, "pictured")
    app = api_app(server, owner, name="Pictured App", description="Reads the weather for your server.",
                  redirect_uris=[CALLBACK, "https://pictured.example/cb"])
    pages = {
        "list": LIST,
        "general": f"{LIST}/{app['id']}",
        "oauth2": f"{LIST}/{app['id']}/oauth2?scope=identify&scope=bot&permission=SEND_MESSAGES",
        "bot": f"{LIST}/{app['id']}/bot",
        "confirm-reset-secret": f"{LIST}/{app['id']}/reset-secret",
        "confirm-reset-token": f"{LIST}/{app['id']}/reset-token",
        "confirm-delete": f"{LIST}/{app['id']}/delete",
    }
    SCREENSHOTS.mkdir(exist_ok=True)
    for variant, options in VARIANTS.items():
        context = browser.new_context(**options)
        try:
            tab = context.new_page()
            tab.goto(f"{server}{LIST}")
            log_in(tab, "pictured")
            tab.wait_for_selector("#app-list")
            for name, path in pages.items():
                tab.goto(f"{server}{path}")
                tab.wait_for_selector("main h1")
                assert tab.locator("body").evaluate("(body) => body.scrollWidth <= window.innerWidth + 1"), \
                    f"{name} scrolls sideways in {variant}"
                tab.screenshot(path=str(SCREENSHOTS / f"portal-{name}-{variant}.png"), full_page=True)
        finally:
            context.close()
