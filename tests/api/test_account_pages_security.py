"""The account pages over HTTP (web/account_pages.py): two-factor sign-in's code step, a
forgotten password, email verification and the account settings, with the mails they send
read from a real SMTP server on loopback (tests/mail_server.py).

What they must hold: every form wants its CSRF token and this site; the forgotten-password
answer is one page for every account name typed; opening a mailed link uses nothing; a
reset ends every session; the enrolment form's secret cannot be swapped; recovery codes
are shown once and work once."""

from __future__ import annotations

import re
import time
from contextlib import asynccontextmanager
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import httpx
import pyotp
import pytest

from fluxer_oauth.app import build_app
from fluxer_oauth.platform import two_factor
from fluxer_oauth.platform.passwords import weakness
from fluxer_oauth.web import account_pages, i18n
from tests.api.test_authorize import browser_login
from tests.conftest import PASSWORD, csrf_of, register
from tests.mail_server import link_in, text_of

NEW_PASSWORD = "lantern orchard glacier"
WEAK_PASSWORD = "password1"
ACCOUNT = "/settings/account"
TWO_FACTOR = "/settings/account/two-factor"
RECOVERY = "/settings/account/two-factor/recovery-codes"
CROSS_SITE = {"Origin": "https://evil.example"}


# --- helpers -------------------------------------------------------------------------------------

def hidden(html: str, name: str) -> str:
    return unescape(re.search(rf'name="{name}" value="([^"]*)"', html).group(1))


def secret_on(html: str) -> str:
    return re.search(r'<code class="totp-secret" id="totp-secret">([A-Z2-7 ]+)</code>', html).group(1).replace(" ", "")


def codes_on(html: str) -> list[str]:
    return re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", html)


def tampered(value: str) -> str:
    """``value`` with one character in its middle changed."""
    middle = len(value) // 2
    return value[:middle] + ("B" if value[middle] == "A" else "A") + value[middle + 1:]


def totp_code(secret: str, steps_ahead: int = 0) -> str:
    """The code of the current step, or of a later one (the server takes one step of drift,
    and a step only once: the code after an enrolment's is the next step's)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def field_error(html: str, field_id: str) -> str | None:
    match = re.search(rf'id="{field_id}-error">([^<]+)<', html)
    return unescape(match.group(1)) if match else None


def api_me(client, token: str) -> httpx.Response:
    return client.get("/api/v1/users/@me", headers={"Authorization": token})


async def api_login_status(client, login: str, password: str) -> int:
    response = await client.post("/api/v1/auth/login", json={"login": login, "password": password})
    return response.status_code


async def signed_in(client, username: str):
    account = await register(client, username)
    await browser_login(client, username)
    return account


async def settings_post(client, path: str, **fields) -> httpx.Response:
    page = await client.get(ACCOUNT)
    return await client.post(path, data={"csrf_token": csrf_of(page.text), **fields})


async def enrol(client) -> tuple[str, list[str]]:
    """Two-factor sign-in turned on through the pages: the secret and the recovery codes."""
    page = await client.get(TWO_FACTOR)
    secret = secret_on(page.text)
    response = await client.post(TWO_FACTOR, data={"csrf_token": csrf_of(page.text), "enrolment": hidden(
        page.text, "enrolment"), "code": totp_code(secret), "password": PASSWORD})
    assert response.status_code == 303 and response.headers["location"] == RECOVERY, response.text
    shown = await client.get(RECOVERY)
    assert shown.status_code == 200
    return secret, codes_on(shown.text)


async def password_step(client, login: str, next_url: str = "/") -> httpx.Response:
    page = await client.get("/login")
    return await client.post("/login", data={"csrf_token": csrf_of(page.text), "login": login,
                                             "password": PASSWORD, "next": next_url})


async def code_step(client, ticket_page: httpx.Response, code: str) -> httpx.Response:
    html = ticket_page.text
    return await client.post("/login/code", data={"csrf_token": csrf_of(html), "ticket": hidden(html, "ticket"),
                                                  "next": hidden(html, "next"), "code": code})


def links_to(mail_server, address: str, path: str) -> list[str]:
    """The links to ``path`` in the mails ``address`` received, in order."""
    links = []
    for message in mail_server.messages_to(address):
        try:
            links.append(link_in(message, path))
        except AssertionError:
            pass
    return links


async def mailed_link(mail_server, address: str, path: str, count: int = 1) -> str:
    """The link to ``path`` in the ``count``-th mail to ``address`` that has one."""
    deadline = time.monotonic() + 10
    while True:
        links = links_to(mail_server, address, path)
        if len(links) >= count:
            return links[count - 1]
        assert time.monotonic() < deadline, f"no {path} mail #{count} to {address}"
        await mail_server.wait_for(address, len(mail_server.messages_to(address)) + 1, timeout=10)


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


@asynccontextmanager
async def app_client(settings, **overrides):
    application = build_app(settings.model_copy(update=overrides))
    transport = httpx.ASGITransport(app=application)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
    finally:
        await application.state.runtime.mail.close(timeout=1)
        await application.state.runtime.db.close()


# --- two-factor sign-in: the code step ------------------------------------------------------------

async def test_a_two_factor_sign_in_asks_for_a_code_and_keeps_where_it_was_going(client):
    await signed_in(client, "twofa")
    secret, _codes = await enrol(client)
    client.cookies.clear()
    asked = await password_step(client, "twofa", "/settings/authorized-apps")
    assert asked.status_code == 200 and 'action="/login/code"' in asked.text
    assert "fluxer_session" not in client.cookies  # the password alone signs nobody in
    assert hidden(asked.text, "next") == "/settings/authorized-apps"
    assert "recovery code" in asked.text
    done = await code_step(client, asked, totp_code(secret, 1))
    assert done.status_code == 303 and done.headers["location"] == "/settings/authorized-apps"
    assert "fluxer_session" in client.cookies
    assert (await client.get("/settings/authorized-apps")).status_code == 200


async def test_a_wrong_code_shows_the_code_form_again_and_signs_nobody_in(client):
    await signed_in(client, "twofa")
    secret, _codes = await enrol(client)
    client.cookies.clear()
    asked = await password_step(client, "twofa", "/settings/account")
    wrong = await code_step(client, asked, "000000" if totp_code(secret, 1) != "000000" else "111111")
    assert wrong.status_code == 400 and "This code is incorrect or was already used." in wrong.text
    assert hidden(wrong.text, "ticket") == hidden(asked.text, "ticket")
    assert hidden(wrong.text, "next") == "/settings/account"
    assert "fluxer_session" not in client.cookies


async def test_a_code_used_once_is_refused_the_next_time(client):
    await signed_in(client, "twofa")
    secret, _codes = await enrol(client)
    client.cookies.clear()
    code = totp_code(secret, 1)
    assert (await code_step(client, await password_step(client, "twofa"), code)).status_code == 303
    client.cookies.clear()
    again = await code_step(client, await password_step(client, "twofa"), code)
    assert again.status_code == 400 and "fluxer_session" not in client.cookies


async def test_a_forged_ticket_sends_back_to_the_login_page_with_a_message(client):
    await signed_in(client, "twofa")
    secret, _codes = await enrol(client)
    client.cookies.clear()
    asked = await password_step(client, "twofa", "/settings/account")
    ticket = hidden(asked.text, "ticket")
    forged = tampered(ticket)
    response = await client.post("/login/code", data={"csrf_token": csrf_of(asked.text), "ticket": forged,
                                                      "next": "/settings/account", "code": totp_code(secret, 1)})
    assert response.status_code == 303 and "fluxer_session" not in client.cookies
    location = response.headers["location"]
    assert urlsplit(location).path == "/login" and dict(parse_qsl(urlsplit(location).query)) == {
        "next": "/settings/account"}
    login = await client.get(location)
    assert "Your sign-in took too long. Log in again." in login.text
    assert "Your sign-in took too long" not in (await client.get(location)).text  # said once


async def test_a_recovery_code_signs_in_once(client):
    await signed_in(client, "twofa")
    _secret, codes = await enrol(client)
    assert len(codes) == 10 and len(set(codes)) == 10
    client.cookies.clear()
    assert (await code_step(client, await password_step(client, "twofa"), codes[0])).status_code == 303
    client.cookies.clear()
    again = await code_step(client, await password_step(client, "twofa"), codes[0])
    assert again.status_code == 400 and "fluxer_session" not in client.cookies
    assert (await code_step(client, again, codes[1])).status_code == 303


async def test_the_code_step_needs_the_forms_token_and_this_site(client):
    await signed_in(client, "twofa")
    secret, _codes = await enrol(client)
    client.cookies.clear()
    asked = await password_step(client, "twofa")
    data = {"ticket": hidden(asked.text, "ticket"), "next": "/", "code": totp_code(secret, 1)}
    missing = await client.post("/login/code", data=data)
    assert missing.status_code == 403 and "fluxer_session" not in client.cookies
    cross = await client.post("/login/code", data={**data, "csrf_token": csrf_of(asked.text)}, headers=CROSS_SITE)
    assert cross.status_code == 403 and "another site" in cross.text and "fluxer_session" not in client.cookies
    # Neither attempt used the code.
    assert (await code_step(client, asked, data["code"])).status_code == 303


async def test_wrong_codes_are_throttled_like_wrong_passwords(settings):
    async with app_client(settings, rate_limits="on", rate_limit_login_failures="2/5minutes") as client:
        await signed_in(client, "guarded")
        secret, _codes = await enrol(client)
        client.cookies.clear()
        asked = await password_step(client, "guarded")
        tries = [await code_step(client, asked, "aaaaa-aaaaa") for _ in range(3)]
        assert [t.status_code for t in tries] == [400, 400, 429]
        assert "Too many failed attempts. Try again in" in tries[-1].text and "retry-after" in tries[-1].headers
        # Even the right code waits until then.
        right = await code_step(client, asked, totp_code(secret, 1))
        assert right.status_code == 429 and "fluxer_session" not in client.cookies


async def test_a_get_of_the_code_step_goes_back_to_the_login_page(client):
    response = await client.get("/login/code?next=/settings/account")
    assert response.status_code == 302 and response.headers["location"] == "/login?next=%2Fsettings%2Faccount"


# --- a forgotten password -------------------------------------------------------------------------

async def test_the_login_page_leads_to_the_forgotten_password_form(mail_client):
    login = await mail_client.get("/login")
    assert 'href="/forgot-password"' in login.text and "Forgot password?" in login.text
    form = await mail_client.get("/forgot-password")
    assert form.status_code == 200 and 'action="/forgot-password"' in form.text


async def test_the_reset_answer_does_not_say_whether_the_account_exists(mail_client, mail_server):
    await register(mail_client, "known")
    page = await mail_client.get("/forgot-password")
    answers = [await mail_client.post("/forgot-password", data={"csrf_token": csrf_of(page.text), "login": login})
               for login in ("known", "nobody", "known@example.com", "nobody@example.com")]
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.text for answer in answers}) == 1  # the same page, byte for byte
    assert "If an account has this email address or username" in answers[0].text
    assert all("set-cookie" not in answer.headers for answer in answers)
    assert await mailed_link(mail_server, "known@example.com", "/reset-password", count=2)
    assert mail_server.messages_to("nobody@example.com") == []


async def test_without_mail_the_forgotten_password_page_says_it_is_not_available(client):
    """Production without SMTP: no form that pretends to send anything."""
    page = await client.get("/forgot-password")
    assert page.status_code == 200 and 'id="mail-unavailable"' in page.text
    assert "not available on this server" in page.text and 'action="/forgot-password"' not in page.text
    login = await client.get("/login")
    answer = await client.post("/forgot-password", data={"csrf_token": csrf_of(login.text), "login": "anyone"})
    assert answer.status_code == 503 and "not available on this server" in answer.text


async def test_reset_requests_are_throttled_per_address_and_per_account(settings, mail_server):
    async with app_client(settings, **mail_server.settings(), rate_limits="on", rate_limit_password_reset_ip="3/hour",
                          rate_limit_password_reset_account="1/hour") as client:
        await register(client, "popular")
        page = await client.get("/forgot-password")
        answers = [await client.post("/forgot-password", data={"csrf_token": csrf_of(page.text), "login": "popular"})
                   for _ in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        assert answers[0].text == answers[1].text  # the account's limit changes nothing in the answer
        assert "Try again in" in answers[3].text and int(answers[3].headers["retry-after"]) > 0
        await mailed_link(mail_server, "popular@example.com", "/reset-password")
        await client.post("/api/v1/auth/register", json={"username": "flush", "email": "flush@example.com",
                                                         "password": PASSWORD})
        await mail_server.wait_for("flush@example.com")  # later mail arrived: nothing else is coming
        assert len(links_to(mail_server, "popular@example.com", "/reset-password")) == 1


async def test_the_reset_mail_is_in_the_language_of_the_page_that_asked(mail_client, mail_server):
    await register(mail_client, "francophone")
    page = await mail_client.get("/forgot-password", headers={"accept-language": "fr"})
    sent = await mail_client.post("/forgot-password", headers={"accept-language": "fr"},
                                  data={"csrf_token": csrf_of(page.text), "login": "francophone"})
    assert "Si un compte a cette adresse" in sent.text
    await mailed_link(mail_server, "francophone@example.com", "/reset-password")
    mail = mail_server.messages_to("francophone@example.com")[-1]
    assert mail["Subject"] == "Réinitialisez votre mot de passe Fluxer"
    assert "Quelqu’un a demandé à réinitialiser le mot de passe" in text_of(mail)


# --- the reset link -------------------------------------------------------------------------------

async def reset_link_for(client, mail_server, login: str, address: str, count: int = 1) -> str:
    page = await client.get("/forgot-password")
    await client.post("/forgot-password", data={"csrf_token": csrf_of(page.text), "login": login})
    return path_of(await mailed_link(mail_server, address, "/reset-password", count))


async def submit_reset(client, link: str, password: str, confirm: str | None = None, **headers) -> httpx.Response:
    page = await client.get(link)
    return await client.post("/reset-password", headers=headers, data={
        "csrf_token": csrf_of(page.text), "token": hidden(page.text, "token"), "password": password,
        "password_confirm": password if confirm is None else confirm})


async def test_opening_a_reset_link_changes_nothing(mail_client, mail_server):
    await register(mail_client, "forgetful")
    link = await reset_link_for(mail_client, mail_server, "forgetful", "forgetful@example.com")
    for _ in range(3):  # a mail scanner, a preview, the person
        page = await mail_client.get(link)
        assert page.status_code == 200 and 'action="/reset-password"' in page.text
        assert hidden(page.text, "token") == dict(parse_qsl(urlsplit(link).query))["token"]
    assert await api_login_status(mail_client, "forgetful", PASSWORD) == 200
    assert (await submit_reset(mail_client, link, NEW_PASSWORD)).status_code == 303


async def test_a_reset_ends_every_session_and_the_login_page_says_so(mail_client, mail_server):
    other_device = await register(mail_client, "forgetful")
    link = await reset_link_for(mail_client, mail_server, "forgetful", "forgetful@example.com")
    done = await submit_reset(mail_client, link, NEW_PASSWORD)
    assert done.status_code == 303 and done.headers["location"] == "/login"
    assert (await api_me(mail_client, other_device.token)).status_code == 401
    login = await mail_client.get("/login")
    assert 'id="notice">Your password was changed. Sign in with the new one.<' in login.text
    assert await api_login_status(mail_client, "forgetful", PASSWORD) == 400
    assert await api_login_status(mail_client, "forgetful", NEW_PASSWORD) == 200
    notice = await mail_server.wait_for("forgetful@example.com", 3)  # verification, reset, notice
    assert "was just changed" in text_of(notice[-1])
    used = await mail_client.get(link)
    assert used.status_code == 400 and "This link does not work" in used.text and 'href="/forgot-password"' in used.text


async def test_a_used_reset_link_is_refused_by_the_form_too(mail_client, mail_server):
    await register(mail_client, "forgetful")
    link = await reset_link_for(mail_client, mail_server, "forgetful", "forgetful@example.com")
    page = await mail_client.get(link)
    data = {"csrf_token": csrf_of(page.text), "token": hidden(page.text, "token"), "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD}
    assert (await mail_client.post("/reset-password", data=data)).status_code == 303
    again = await mail_client.post("/reset-password", data={**data, "password": "another lantern orchard",
                                                            "password_confirm": "another lantern orchard"})
    assert again.status_code == 400 and "This link does not work" in again.text
    assert await api_login_status(mail_client, "forgetful", NEW_PASSWORD) == 200


@pytest.mark.parametrize("token", ["", "nonsense", "x" * 500, "flx_" + "A" * 43])
async def test_a_reset_link_that_is_not_ours_is_an_error_page(client, token):
    response = await client.get(f"/reset-password?token={token}")
    assert response.status_code == 400 and "This link does not work" in response.text
    assert 'action="/reset-password"' not in response.text


async def test_a_weak_new_password_is_refused_with_its_reason_in_the_readers_language(mail_client, mail_server):
    await register(mail_client, "forgetful")
    link = await reset_link_for(mail_client, mail_server, "forgetful", "forgetful@example.com")
    reason = weakness(WEAK_PASSWORD, min_score=3)
    assert reason
    english = await submit_reset(mail_client, link, WEAK_PASSWORD)
    assert english.status_code == 400
    assert field_error(english.text, "password") == f"This password is too easy to guess. {reason}"
    french = await submit_reset(mail_client, link, WEAK_PASSWORD, **{"accept-language": "fr"})
    translated = i18n.CATALOGS["fr"].gettext(reason)
    assert translated != reason and translated in field_error(french.text, "password")
    assert await api_login_status(mail_client, "forgetful", PASSWORD) == 200  # the link is still unused
    assert (await submit_reset(mail_client, link, NEW_PASSWORD)).status_code == 303


async def test_the_two_new_passwords_must_match(mail_client, mail_server):
    await register(mail_client, "forgetful")
    link = await reset_link_for(mail_client, mail_server, "forgetful", "forgetful@example.com")
    response = await submit_reset(mail_client, link, NEW_PASSWORD, NEW_PASSWORD + "!")
    assert response.status_code == 400 and field_error(response.text, "password_confirm") == "The two passwords differ."
    assert NEW_PASSWORD not in response.text
    assert await api_login_status(mail_client, "forgetful", PASSWORD) == 200


async def test_the_reset_form_needs_its_token_and_this_site(mail_client, mail_server):
    await register(mail_client, "forgetful")
    link = await reset_link_for(mail_client, mail_server, "forgetful", "forgetful@example.com")
    page = await mail_client.get(link)
    data = {"token": hidden(page.text, "token"), "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    assert (await mail_client.post("/reset-password", data=data)).status_code == 403
    cross = await mail_client.post("/reset-password", data={**data, "csrf_token": csrf_of(page.text)},
                                   headers=CROSS_SITE)
    assert cross.status_code == 403 and "another site" in cross.text
    assert await api_login_status(mail_client, "forgetful", PASSWORD) == 200
    assert (await submit_reset(mail_client, link, NEW_PASSWORD)).status_code == 303  # still unused


async def test_sign_up_says_why_a_password_is_too_weak(client):
    page = await client.get("/signup", headers={"accept-language": "fr"})
    response = await client.post("/signup", headers={"accept-language": "fr"}, data={
        "csrf_token": csrf_of(page.text), "next": "/", "username": "hopeful", "email": "hopeful@example.com",
        "password": WEAK_PASSWORD, "password_confirm": WEAK_PASSWORD})
    assert response.status_code == 400 and "fluxer_session" not in client.cookies
    reason = weakness(WEAK_PASSWORD, min_score=3, user_inputs=("hopeful", "hopeful@example.com"))
    shown = field_error(response.text, "password")
    assert shown is not None and i18n.CATALOGS["fr"].gettext(reason) in shown and reason not in shown


# --- email verification ---------------------------------------------------------------------------

async def test_opening_a_verification_link_verifies_nothing_until_the_button(mail_client, mail_server):
    account = await register(mail_client, "newbie")
    link = path_of(await mailed_link(mail_server, "newbie@example.com", "/verify-email"))
    for _ in range(2):
        page = await mail_client.get(link)
        assert page.status_code == 200 and 'id="verify-button"' in page.text
    assert (await api_me(mail_client, account.token)).json()["verified"] is False
    done = await mail_client.post("/verify-email", data={"csrf_token": csrf_of(page.text),
                                                         "token": hidden(page.text, "token")})
    assert done.status_code == 200 and "newbie@example.com</strong> is verified" in done.text
    assert (await api_me(mail_client, account.token)).json()["verified"] is True
    again = await mail_client.post("/verify-email", data={"csrf_token": csrf_of(page.text),
                                                          "token": hidden(page.text, "token")})
    assert again.status_code == 400 and "This link does not work" in again.text


async def test_the_verification_form_needs_its_token_and_this_site(mail_client, mail_server):
    account = await register(mail_client, "newbie")
    link = path_of(await mailed_link(mail_server, "newbie@example.com", "/verify-email"))
    page = await mail_client.get(link)
    data = {"token": hidden(page.text, "token")}
    assert (await mail_client.post("/verify-email", data=data)).status_code == 403
    cross = await mail_client.post("/verify-email", data={**data, "csrf_token": csrf_of(page.text)},
                                   headers=CROSS_SITE)
    assert cross.status_code == 403 and "another site" in cross.text
    assert (await api_me(mail_client, account.token)).json()["verified"] is False


async def test_a_verification_link_of_an_old_address_verifies_nothing(mail_client, mail_server):
    account = await register(mail_client, "mover")
    old_link = path_of(await mailed_link(mail_server, "mover@example.com", "/verify-email"))
    await browser_login(mail_client, "mover")
    changed = await settings_post(mail_client, ACCOUNT + "/email", email="moved@example.com", password=PASSWORD)
    assert changed.status_code == 303
    page = await mail_client.get(old_link)
    refused = await mail_client.post("/verify-email", data={"csrf_token": csrf_of(page.text),
                                                            "token": hidden(page.text, "token")})
    assert refused.status_code == 400
    assert (await api_me(mail_client, account.token)).json()["verified"] is False


# --- the account settings -------------------------------------------------------------------------

async def test_the_settings_need_a_session(client):
    for path in (ACCOUNT, TWO_FACTOR, RECOVERY):
        response = await client.get(path)
        assert response.status_code == 302 and response.headers["location"].startswith("/login?next=")


async def test_every_signed_in_page_leads_to_the_account_settings(client):
    await signed_in(client, "finder")
    for path in ("/settings/authorized-apps", "/developers/applications"):
        assert '<a href="/settings/account">Account</a>' in (await client.get(path)).text
    page = await client.get(ACCOUNT)
    assert page.status_code == 200 and 'id="current-email">finder@example.com<' in page.text
    assert 'id="email-status">Not verified<' in page.text and 'id="set-up-two-factor"' in page.text


async def test_resending_the_verification_mail(mail_client, mail_server):
    await signed_in(mail_client, "newbie")
    response = await settings_post(mail_client, ACCOUNT + "/verification")
    assert response.status_code == 303 and response.headers["location"] == ACCOUNT + "?done=verification"
    assert "We sent a new verification link" in (await mail_client.get(response.headers["location"])).text
    second = path_of(await mailed_link(mail_server, "newbie@example.com", "/verify-email", count=2))
    page = await mail_client.get(second)
    await mail_client.post("/verify-email", data={"csrf_token": csrf_of(page.text),
                                                  "token": hidden(page.text, "token")})
    settings = await mail_client.get(ACCOUNT)
    assert 'id="email-status">Verified<' in settings.text and 'id="resend-verification"' not in settings.text
    refused = await settings_post(mail_client, ACCOUNT + "/verification")
    assert refused.status_code == 400 and "This email address is already verified." in refused.text


async def test_resending_is_throttled_per_user(settings, mail_server):
    async with app_client(settings, **mail_server.settings(), rate_limits="on",
                          rate_limit_verification_resend="1/hour") as client:
        await signed_in(client, "impatient")
        assert (await settings_post(client, ACCOUNT + "/verification")).status_code == 303
        refused = await settings_post(client, ACCOUNT + "/verification")
        assert refused.status_code == 429 and "Try again in" in refused.text and "retry-after" in refused.headers


async def test_without_mail_the_settings_say_the_address_cannot_be_verified(client):
    await signed_in(client, "offline")
    page = await client.get(ACCOUNT)
    assert 'id="mail-unavailable"' in page.text and 'id="resend-verification"' not in page.text
    refused = await settings_post(client, ACCOUNT + "/verification")
    assert refused.status_code == 503 and "This server cannot send mail" in refused.text


async def test_changing_the_email_needs_the_password_and_unverifies_it(mail_client, mail_server):
    account = await signed_in(mail_client, "mover")
    wrong = await settings_post(mail_client, ACCOUNT + "/email", email="moved@example.com", password="not it at all")
    assert wrong.status_code == 403 and field_error(wrong.text, "email_password") == "Password confirmation failed."
    assert 'value="moved@example.com"' in wrong.text  # the address typed stays; the password never comes back
    same = await settings_post(mail_client, ACCOUNT + "/email", email="MOVER@example.com", password=PASSWORD)
    assert same.status_code == 400 and field_error(same.text, "new_email") == "This is already your email address."
    done = await settings_post(mail_client, ACCOUNT + "/email", email="moved@example.com", password=PASSWORD)
    assert done.status_code == 303 and done.headers["location"] == ACCOUNT + "?done=email"
    me = (await api_me(mail_client, account.token)).json()
    assert me["email"] == "moved@example.com" and me["verified"] is False
    assert await mailed_link(mail_server, "moved@example.com", "/verify-email")
    page = await mail_client.get(done.headers["location"])
    assert 'id="current-email">moved@example.com<' in page.text and "We sent a link to the new address" in page.text


async def test_changing_the_password(client):
    other_device = await signed_in(client, "changer")
    weak = await settings_post(client, ACCOUNT + "/password", password=PASSWORD, new_password=WEAK_PASSWORD,
                               new_password_confirm=WEAK_PASSWORD)
    assert weak.status_code == 400
    assert field_error(weak.text, "new_password") == \
        f"This password is too easy to guess. {weakness(WEAK_PASSWORD, min_score=3)}"
    differ = await settings_post(client, ACCOUNT + "/password", password=PASSWORD, new_password=NEW_PASSWORD,
                                 new_password_confirm=NEW_PASSWORD + "!")
    assert differ.status_code == 400 and field_error(differ.text, "new_password_confirm") == "The two passwords differ."
    wrong = await settings_post(client, ACCOUNT + "/password", password="not it at all", new_password=NEW_PASSWORD,
                                new_password_confirm=NEW_PASSWORD)
    assert wrong.status_code == 403 and field_error(wrong.text, "current_password") == "Password confirmation failed."
    assert NEW_PASSWORD not in wrong.text
    done = await settings_post(client, ACCOUNT + "/password", password=PASSWORD, new_password=NEW_PASSWORD,
                               new_password_confirm=NEW_PASSWORD)
    assert done.status_code == 303 and done.headers["location"] == ACCOUNT + "?done=password"
    assert (await client.get(ACCOUNT)).status_code == 200  # this browser stays signed in
    assert (await api_me(client, other_device.token)).status_code == 401  # the others do not
    assert await api_login_status(client, "changer", NEW_PASSWORD) == 200


async def test_the_two_factor_page_shows_the_secret_as_a_qr_image_and_as_text(client):
    await signed_in(client, "scanner")
    page = await client.get(TWO_FACTOR)
    assert page.status_code == 200
    secret = secret_on(page.text)
    assert len(secret) == two_factor.SECRET_LENGTH
    img = re.search(r'<img class="qr" id="totp-qr" src="([^"]+)" alt="([^"]+)">', page.text)
    assert img is not None and img.group(2).strip()
    src = unescape(img.group(1))
    assert src.startswith("data:image/svg+xml")
    # The QR code holds the otpauth URI of the secret shown as text.
    assert src == account_pages.qr_code(two_factor.provisioning_uri(secret, "scanner"))
    assert "img-src 'self' data:" in page.headers["content-security-policy"]
    assert secret_on((await client.get(TWO_FACTOR)).text) != secret  # a fresh secret each time


async def test_the_enrolment_secret_cannot_be_swapped(app, client):
    await signed_in(client, "victim")
    page = await client.get(TWO_FACTOR)
    mine = hidden(page.text, "enrolment")
    attacker_secret = pyotp.random_base32(32)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as other:
        await signed_in(other, "attacker")
        theirs_page = await other.get(TWO_FACTOR)
        theirs, their_secret = hidden(theirs_page.text, "enrolment"), secret_on(theirs_page.text)
    for enrolment, secret in ((theirs, their_secret), (tampered(mine), secret_on(page.text)),
                              (attacker_secret, attacker_secret)):
        response = await client.post(TWO_FACTOR, data={"csrf_token": csrf_of(page.text), "enrolment": enrolment,
                                                       "code": totp_code(secret), "password": PASSWORD})
        assert response.status_code == 400 and "The setup form was changed or has expired" in response.text
    settings = await client.get(ACCOUNT)
    assert 'id="two-factor-status">Off<' in settings.text


async def test_a_refused_enrolment_keeps_the_same_secret(client):
    await signed_in(client, "fumbler")
    page = await client.get(TWO_FACTOR)
    secret = secret_on(page.text)
    wrong = await client.post(TWO_FACTOR, data={"csrf_token": csrf_of(page.text), "enrolment": hidden(
        page.text, "enrolment"), "code": "000000" if totp_code(secret) != "000000" else "111111", "password": PASSWORD})
    assert wrong.status_code == 400 and field_error(wrong.text, "code") == "This code is incorrect or was already used."
    assert secret_on(wrong.text) == secret
    bad_password = await client.post(TWO_FACTOR, data={"csrf_token": csrf_of(page.text), "enrolment": hidden(
        wrong.text, "enrolment"), "code": totp_code(secret), "password": "not it at all"})
    assert bad_password.status_code == 403 and secret_on(bad_password.text) == secret
    assert field_error(bad_password.text, "password") == "Password confirmation failed."
    done = await client.post(TWO_FACTOR, data={"csrf_token": csrf_of(page.text), "enrolment": hidden(
        bad_password.text, "enrolment"), "code": totp_code(secret), "password": PASSWORD})
    assert done.status_code == 303


async def test_the_recovery_codes_are_shown_once(client):
    await signed_in(client, "keeper")
    _secret, codes = await enrol(client)
    assert len(codes) == 10
    reload = await client.get(RECOVERY)
    assert reload.status_code == 302 and reload.headers["location"] == ACCOUNT
    settings = await client.get(ACCOUNT)
    assert 'id="two-factor-status">On<' in settings.text and "10 recovery codes left." in settings.text
    assert (await client.get(TWO_FACTOR)).headers["location"] == ACCOUNT  # already on


async def test_new_recovery_codes_replace_the_old_ones(client):
    await signed_in(client, "keeper")
    secret, old = await enrol(client)
    wrong = await settings_post(client, RECOVERY, password=PASSWORD, code="aaaaa-aaaaa")
    assert wrong.status_code == 400 and field_error(wrong.text, "recovery_code")
    response = await settings_post(client, RECOVERY, password=PASSWORD, code=old[0])
    assert response.status_code == 303 and response.headers["location"] == RECOVERY
    new = codes_on((await client.get(RECOVERY)).text)
    assert len(new) == 10 and not set(new) & set(old)
    client.cookies.clear()
    refused = await code_step(client, await password_step(client, "keeper"), old[1])
    assert refused.status_code == 400
    assert (await code_step(client, refused, new[0])).status_code == 303


async def test_turning_two_factor_off_needs_the_password_and_a_code(client):
    await signed_in(client, "leaver")
    secret, codes = await enrol(client)
    wrong = await settings_post(client, TWO_FACTOR + "/disable", password="not it at all", code=codes[0])
    assert wrong.status_code == 403 and field_error(wrong.text, "disable_password") == "Password confirmation failed."
    done = await settings_post(client, TWO_FACTOR + "/disable", password=PASSWORD, code=totp_code(secret, 1))
    assert done.status_code == 303 and done.headers["location"] == ACCOUNT + "?done=two-factor-off"
    assert 'id="two-factor-status">Off<' in (await client.get(ACCOUNT)).text
    client.cookies.clear()
    assert (await password_step(client, "leaver")).status_code == 303  # the password alone again


@pytest.mark.parametrize("path, fields", [
    (ACCOUNT + "/verification", {}),
    (ACCOUNT + "/email", {"email": "stolen@example.com", "password": PASSWORD}),
    (ACCOUNT + "/password", {"password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD}),
    (TWO_FACTOR, {"password": PASSWORD, "code": "123456"}),
    (RECOVERY, {"password": PASSWORD, "code": "123456"}),
    (TWO_FACTOR + "/disable", {"password": PASSWORD, "code": "123456"}),
])
async def test_every_settings_form_needs_its_token_and_this_site(client, path, fields):
    account = await signed_in(client, "target")
    page = await client.get(ACCOUNT)
    missing = await client.post(path, data=fields)
    assert missing.status_code == 403 and "Your form expired" in missing.text
    forged = await client.post(path, data={**fields, "csrf_token": "forged"})
    assert forged.status_code == 403
    cross = await client.post(path, data={**fields, "csrf_token": csrf_of(page.text)}, headers=CROSS_SITE)
    assert cross.status_code == 403 and "another site" in cross.text
    me = (await api_me(client, account.token)).json()
    assert me["email"] == "target@example.com" and me["mfa_enabled"] is False
    assert await api_login_status(client, "target", PASSWORD) == 200
