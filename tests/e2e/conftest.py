"""Browser tests: Debian's Chromium driven by Playwright against a real server process.
Screenshots of every page go to tests/e2e/screenshots/ (ignored by git)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import sync_playwright

from tests.conftest import PASSWORD
from tests.interop.conftest import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent / "screenshots"
CALLBACK = "http://127.0.0.1:9/callback"  # nothing listens there: the tests intercept it


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend):
    with running_server(tmp_path_factory.mktemp("e2e"), backend) as base:
        yield base


@pytest.fixture(scope="module")
def smtp_server():
    """A real SMTP server on loopback (tests/mail_server.py) that ``mail_site`` sends to."""
    from tests.mail_server import MailServer

    instance = MailServer()
    instance.start()
    yield instance
    instance.stop()


def mail_env(smtp_server) -> dict[str, str]:
    """The environment that sends a server's mail to ``smtp_server``."""
    return {f"FLUXER_{name.upper()}": str(value) for name, value in smtp_server.settings().items()}


@pytest.fixture(scope="module")
def mail_site(tmp_path_factory, backend, smtp_server):
    """A server like ``server``, with mail configured (verification and reset links work)."""
    with running_server(tmp_path_factory.mktemp("e2e-mail"), backend, **mail_env(smtp_server)) as base:
        yield base


def links_to(smtp_server, address: str, path: str) -> list[str]:
    """The links to ``path`` in the mails ``address`` has received so far, in order."""
    from tests.mail_server import link_in

    links = []
    for message in smtp_server.messages_to(address):
        try:
            links.append(link_in(message, path))
        except AssertionError:
            pass
    return links


def mailed_link(smtp_server, address: str, path: str, count: int = 1, timeout: float = 10.0) -> str:
    """The link to ``path`` (e.g. "/reset-password") in the ``count``-th mail to ``address``
    that has one, waiting for it to arrive."""
    deadline = time.monotonic() + timeout
    while True:
        links = links_to(smtp_server, address, path)
        if len(links) >= count:
            return links[count - 1]
        assert time.monotonic() < deadline, f"no {path} mail #{count} to {address}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser():
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


def shoot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def api_user(base: str, username: str) -> dict:
    response = requests.post(f"{base}/api/v1/auth/register", timeout=10,
                             json={"username": username, "email": f"{username}@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


def api_app(base: str, owner: dict, **fields) -> dict:
    payload = {"name": "Browser App", "redirect_uris": [CALLBACK], **fields}
    response = requests.post(f"{base}/api/v1/oauth2/applications", json=payload, timeout=10,
                             headers={"Authorization": owner["token"]})
    assert response.status_code == 201, response.text
    return response.json()


def log_in(page, username: str) -> None:
    page.fill("#login", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


def catch_callback(page) -> list[str]:
    """Record navigations to the client's redirect URI and answer them with a small page."""
    seen: list[str] = []

    def handle(route):
        seen.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>client callback</h1>")

    page.route("http://127.0.0.1:9/**", handle)
    return seen
