"""The consent page's details in a real browser: the application's terms and privacy links,
its icon and the person's avatar (uploaded over the API, loaded under the pages' CSP)."""

from __future__ import annotations

import base64
import io
from urllib.parse import urlencode

import requests
from PIL import Image, ImageDraw

from tests.e2e.conftest import api_app, api_user, catch_callback, log_in, shoot
from tests.e2e.test_pages import authorize_url

TERMS = "https://links.example/terms"
PRIVACY = "https://links.example/privacy"


def test_consent_links_the_terms_and_privacy_policy(server, page):
    owner = api_user(server, "linksowner")
    app = api_app(server, owner, name="Linked App", terms_of_service_url=TERMS, privacy_policy_url=PRIVACY)
    api_user(server, "linksuser")
    page.goto(authorize_url(server, app["id"]))
    log_in(page, "linksuser")
    page.wait_for_selector("#app-links")
    said = " ".join(page.inner_text("#app-links").split())  # screen readers hear where the links open
    assert said == ("By authorizing, you agree to Linked App’s Terms of Service (opens in a new tab) and "
                    "Privacy Policy (opens in a new tab) .")
    for selector, href in (("#terms-link", TERMS), ("#privacy-link", PRIVACY)):
        link = page.locator(selector)
        assert link.get_attribute("href") == href and link.get_attribute("target") == "_blank"
        assert link.get_attribute("rel") == "noopener noreferrer"
    assert page.get_by_role("link", name="Terms of Service (opens in a new tab)").count() == 1
    shoot(page, "consent-links")


def _png_data_uri(color: tuple[int, int, int], side: int = 256) -> str:
    """A small PNG drawn here: a colored disc with a white ring, so a screenshot shows it."""
    image = Image.new("RGB", (side, side), color)
    draw = ImageDraw.Draw(image)
    inset = side // 5
    draw.ellipse((inset, inset, side - inset, side - inset), outline=(255, 255, 255), width=side // 12)
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_consent_shows_the_uploaded_app_icon_and_avatar(server, page):
    owner = api_user(server, "iconsowner")
    app = api_app(server, owner, name="Pictured App", terms_of_service_url=TERMS, privacy_policy_url=PRIVACY)
    icon = requests.patch(f"{server}/api/v1/oauth2/applications/{app['id']}", timeout=10,
                          headers={"Authorization": owner["token"]}, json={"icon": _png_data_uri((88, 101, 242))})
    assert icon.status_code == 200 and icon.json()["icon"], icon.text
    person = api_user(server, "iconsuser")
    avatar = requests.patch(f"{server}/api/v1/users/@me", timeout=10, headers={"Authorization": person["token"]},
                            json={"avatar": _png_data_uri((237, 66, 69))})
    assert avatar.status_code == 200 and avatar.json()["avatar"], avatar.text

    page.goto(authorize_url(server, app["id"]))
    log_in(page, "iconsuser")
    page.wait_for_selector("img#app-icon")
    expected = {"#app-icon": f"{server}/icons/{app['id']}/{icon.json()['icon']}.png?size=64",
                "#user-avatar": f"{server}/avatars/{person['user']['id']}/{avatar.json()['avatar']}.png?size=64"}
    for selector, src in expected.items():
        image = page.locator(f"img{selector}")
        assert image.get_attribute("src") == src
        # Loaded under the page's CSP, at the size the srcset picked (64 or 128 pixels).
        page.wait_for_function("(img) => img.complete", arg=image.element_handle())
        assert image.evaluate("(img) => img.naturalWidth") in (64, 128)
    shoot(page, "consent-with-icons")

    catch_callback(page)
    page.click("button[value=authorize]")
    page.wait_for_url("http://127.0.0.1:9/**")
    page.goto(f"{server}/settings/authorized-apps")
    listed = page.locator(f"li[data-application-id='{app['id']}'] img")
    page.wait_for_function("(img) => img.complete", arg=listed.element_handle())
    assert listed.evaluate("(img) => img.naturalWidth") in (64, 128)
    shoot(page, "authorized-apps-with-icons")


def _loaded(page, selector: str) -> int:
    image = page.locator(selector)
    page.wait_for_function("(img) => img.complete", arg=image.element_handle())
    return image.evaluate("(img) => img.naturalWidth")


def test_portal_and_the_bot_consent_show_icons(server, page):
    owner = api_user(server, "iconsdev")
    headers = {"Authorization": owner["token"]}
    app = api_app(server, owner, name="Pictured Bot")
    assert requests.patch(f"{server}/api/v1/oauth2/applications/{app['id']}", timeout=10, headers=headers,
                          json={"icon": _png_data_uri((35, 165, 90))}).status_code == 200
    guild = requests.post(f"{server}/api/v1/guilds", timeout=10, headers=headers,
                          json={"name": "Greenhouse", "icon": _png_data_uri((250, 168, 26))})
    assert guild.status_code == 201 and guild.json()["icon"], guild.text

    page.goto(f"{server}/developers/applications")
    log_in(page, "iconsdev")
    page.wait_for_selector("#app-list img")
    assert _loaded(page, "#app-list img") in (32, 64)
    page.goto(f"{server}/developers/applications/{app['id']}")
    assert _loaded(page, "img#app-icon") in (64, 128)
    shoot(page, "portal-app-with-icon")

    page.goto(f"{server}/oauth2/authorize?" + urlencode({"client_id": app["id"], "scope": "bot", "permissions": "0",
                                                          "guild_id": guild.json()["id"],
                                                          "disable_guild_select": "true"}))
    guild_id = guild.json()["id"]
    assert _loaded(page, f"img#guild-icon-{guild_id}") in (32, 64)
    locked = page.get_by_role("radio", name="Greenhouse")  # the chosen server only, fixed
    assert locked.is_checked() and locked.is_disabled() and page.get_by_role("radio").count() == 1
    shoot(page, "consent-bot-guild-icon")


def test_the_portal_uploads_an_icon_from_a_chosen_file(server, page, tmp_path):
    """The owner picks a file in the portal; the page's script sends it as a data URI and
    the icon shows on the page afterwards."""
    owner = api_user(server, "iconpicker")
    app = api_app(server, owner, name="Picked Icon")
    picked = tmp_path / "icon.png"
    picked.write_bytes(base64.b64decode(_png_data_uri((120, 80, 200)).split(",", 1)[1]))
    page.goto(f"{server}/developers/applications/{app['id']}")
    log_in(page, "iconpicker")
    assert page.locator("#icon-upload").is_disabled()  # nothing chosen yet
    page.set_input_files("#icon-file", str(picked))
    page.wait_for_function("() => !document.getElementById('icon-upload').disabled")
    page.click("#icon-upload")
    page.wait_for_selector("text=Icon saved.")
    assert _loaded(page, "img#app-icon") in (64, 128)
    shoot(page, "portal-icon-uploaded")
