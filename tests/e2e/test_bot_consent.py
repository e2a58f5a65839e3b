"""The bot consent ("Add to server", as Discord asks it) in a real browser: the servers the
bot may be added to as rows with their icons, the requested permissions as boxes to untick,
the Administrator warning, and the bot installed with exactly the ticked permissions; the
same by keyboard alone; screenshots light, dark and mobile (with the plain consent's too)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests

from fluxer_oauth.core.permissions import PERMISSIONS
from tests.e2e.a11y import axe_source, axe_violations, blocking, describe, needs_node
from tests.e2e.conftest import CALLBACK, SCREENSHOTS, api_app, api_user, log_in
from tests.e2e.test_consent_details import _png_data_uri
from tests.e2e.test_pages import authorize_url

__all__ = ["axe_source"]  # the fixture, imported for pytest to find
P = PERMISSIONS
REQUESTED = P["ADMINISTRATOR"] | P["KICK_MEMBERS"] | P["SEND_MESSAGES"] | P["EMBED_LINKS"] | P["MANAGE_ROLES"]
WARNING = ("Administrator gives this bot every permission in the server, and lets it bypass channel-specific "
           "permissions. Only grant it to bots you trust.")
VARIANTS = {
    "light": {"viewport": {"width": 1000, "height": 900}},
    "dark": {"viewport": {"width": 1000, "height": 900}, "color_scheme": "dark"},
    "mobile": {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True},
}


def _guild(server: str, owner: dict, name: str, color: tuple[int, int, int] | None = None) -> str:
    body = {"name": name, **({"icon": _png_data_uri(color, 128)} if color else {})}
    response = requests.post(f"{server}/api/v1/guilds", json=body, timeout=10,
                             headers={"Authorization": owner["token"]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _bot_url(server: str, app: dict, **extra) -> str:
    return f"{server}/oauth2/authorize?" + urlencode(
        {"client_id": app["id"], "scope": "bot", "permissions": str(REQUESTED), **extra})


def _bot_role_permissions(server: str, app: dict, guild_id: str) -> int | None:
    roles = requests.get(f"{server}/api/v1/guilds/{guild_id}/roles", timeout=10,
                         headers={"Authorization": f"Bot {app['bot']['token']}"})
    assert roles.status_code == 200, roles.text
    managed = [role for role in roles.json() if role["managed"]]
    return int(managed[0]["permissions"]) if managed else None


def test_untick_two_permissions_pick_a_server_by_its_icon_and_the_bot_gets_the_rest(server, page):
    owner = api_user(server, "pickyowner")
    app = api_app(server, owner, name="Picky Bot")
    garden = _guild(server, owner, "Garden", (35, 165, 90))
    workshop = _guild(server, owner, "Workshop", (250, 168, 26))
    page.goto(_bot_url(server, app))
    log_in(page, "pickyowner")
    page.wait_for_selector("#guild-picker")

    # The warning, next to Administrator, is a note screen readers hear with its box.
    warning = page.get_by_role("note")
    assert warning.is_visible() and " ".join(warning.inner_text().split()) == WARNING
    assert page.locator("#permission-ADMINISTRATOR").get_attribute("aria-describedby") == "administrator-warning"
    # Each server a labelled radio button with its icon; every requested permission ticked.
    for guild_id, name in ((garden, "Garden"), (workshop, "Workshop")):
        radio = page.get_by_role("radio", name=name)
        assert radio.count() == 1 and not radio.is_checked()
        icon = page.locator(f"img#guild-icon-{guild_id}")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=icon.element_handle())
    boxes = page.get_by_role("checkbox")
    assert boxes.count() == 5 and all(boxes.nth(i).is_checked() for i in range(5))
    assert page.get_by_role("checkbox", name="Manage Roles").is_checked()

    page.get_by_role("checkbox", name="Administrator").uncheck()
    page.get_by_role("checkbox", name="Kick Members").uncheck()
    page.click(f"img#guild-icon-{workshop}")  # the icon is part of the server's label
    assert page.get_by_role("radio", name="Workshop").is_checked()
    page.screenshot(path=str(SCREENSHOTS / "consent-bot-chosen.png"), full_page=True)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_selector("#bot-added")
    assert " ".join(page.inner_text("#bot-added").split()) == "Picky Bot has been added to Workshop."
    assert _bot_role_permissions(server, app, workshop) == P["SEND_MESSAGES"] | P["EMBED_LINKS"] | P["MANAGE_ROLES"]
    bot_guilds = requests.get(f"{server}/api/v1/users/@me/guilds", timeout=10,
                              headers={"Authorization": f"Bot {app['bot']['token']}"}).json()
    assert [g["id"] for g in bot_guilds] == [workshop]


def _focused(page) -> dict:
    return page.evaluate("""() => {
        const el = document.activeElement;
        return {id: el.id, type: el.type || "", value: el.value || "", checked: !!el.checked,
                outline: getComputedStyle(el).outlineStyle};
    }""")


def _tab_until(page, wanted, limit: int = 40) -> dict:
    """Press Tab until the focused element is the wanted one (a predicate on _focused)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = _focused(page)
        if wanted(focused):
            assert focused["outline"] != "none", f"no visible focus on {focused}"
            return focused
    raise AssertionError("Tab never reached the element")


def test_the_bot_consent_by_keyboard_alone(server, page):
    owner = api_user(server, "keyowner")
    app = api_app(server, owner, name="Keyboard Bot")
    _guild(server, owner, "Keyboard Garden")
    _guild(server, owner, "Keyboard Workshop")
    page.goto(_bot_url(server, app))
    log_in(page, "keyowner")
    page.wait_for_selector("#guild-picker")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")

    # Tab into the server list and choose the focused server with Space.
    radio = _tab_until(page, lambda f: f["type"] == "radio")
    assert not radio["checked"]
    page.keyboard.press("Space")
    chosen = _focused(page)
    assert chosen["checked"] and chosen["value"] == radio["value"]
    # Untick Administrator and Manage Roles with Space, leave the rest.
    for name in ("ADMINISTRATOR", "MANAGE_ROLES"):
        _tab_until(page, lambda f, name=name: f["id"] == f"permission-{name}")
        page.keyboard.press("Space")
        assert not _focused(page)["checked"]
    _tab_until(page, lambda f: f["type"] == "submit" and f["value"] == "authorize")
    page.keyboard.press("Enter")
    page.wait_for_selector("#bot-added")
    assert "Keyboard Bot" in page.inner_text("#bot-added")
    assert _bot_role_permissions(server, app, chosen["value"]) == (
        P["KICK_MEMBERS"] | P["SEND_MESSAGES"] | P["EMBED_LINKS"])


@pytest.fixture(scope="module")
def signed_in(server, browser):
    """A signed-in person with two servers, a bot to add and an app to authorize: the
    browser storage state of one login, for contexts of each variant."""
    person = api_user(server, "shotowner")
    bot_app = api_app(server, person, name="Weather Station")
    other = api_user(server, "shotdev")
    plain_app = api_app(server, other, name="Photo Album", terms_of_service_url="https://album.example/terms",
                        privacy_policy_url="https://album.example/privacy")
    _guild(server, person, "Garden", (35, 165, 90))
    _guild(server, person, "Workshop")
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{server}/login")
    log_in(tab, "shotowner")
    tab.wait_for_load_state()
    state = context.storage_state()
    context.close()
    return state, bot_app, plain_app


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_consent_screenshots(server, browser, signed_in, variant):
    state, bot_app, plain_app = signed_in
    context = browser.new_context(storage_state=state, **VARIANTS[variant])
    tab = context.new_page()
    try:
        tab.goto(_bot_url(server, bot_app))
        tab.wait_for_selector("#guild-picker")
        assert tab.get_by_role("note").is_visible()
        assert tab.get_by_role("radio").count() == 2
        tab.get_by_role("radio", name="Garden").check()
        tab.screenshot(path=str(SCREENSHOTS / f"consent-bot-{variant}.png"), full_page=True)
        tab.goto(authorize_url(server, plain_app["id"]))
        tab.wait_for_selector("#app-links")
        assert tab.locator("#guild-picker").count() == 0 and tab.get_by_role("checkbox").count() == 0
        tab.screenshot(path=str(SCREENSHOTS / f"consent-{variant}.png"), full_page=True)
    finally:
        context.close()


def test_the_device_consent_has_no_bot_part(server, page):
    """activate_consent.html extends consent.html: the device's code, no server or boxes."""
    owner = api_user(server, "deviceconsent")
    app = api_app(server, owner, name="Living Room TV", public_client=True, bot=False, redirect_uris=[CALLBACK])
    pair = requests.post(f"{server}/api/v1/oauth2/device/authorize", timeout=10,
                         data={"client_id": app["id"], "scope": "identify"})
    assert pair.status_code == 200, pair.text
    page.goto(f"{server}/activate?" + urlencode({"user_code": pair.json()["user_code"]}))
    log_in(page, "deviceconsent")
    page.wait_for_selector("#user_code")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("#device-code")
    assert page.locator("#guild-picker").count() == 0 and page.get_by_role("checkbox").count() == 0
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_selector("#activate-result")
    assert page.get_attribute("#activate-result", "data-approved") == "true"


@needs_node
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_bot_consent_with_its_warning_and_without_a_server_passes_axe(server, browser, signed_in, variant,
                                                                          axe_source):
    state, bot_app, _plain_app = signed_in
    context = browser.new_context(storage_state=state, **VARIANTS[variant])
    tab = context.new_page()
    try:
        tab.goto(_bot_url(server, bot_app))
        tab.wait_for_selector("#administrator-warning")
        found = blocking(axe_violations(tab, axe_source))
        assert not found, describe(found)
        # A server the user cannot add the bot to, chosen and locked by the application.
        tab.goto(_bot_url(server, bot_app, guild_id="1", disable_guild_select="true"))
        tab.wait_for_selector("#no-guilds")
        assert tab.get_by_role("button", name="Authorize").is_disabled()
        found = blocking(axe_violations(tab, axe_source))
        assert not found, describe(found)
    finally:
        context.close()
