"""The JSON API of issue 23: email verification and password reset by mailed links (through a
real SMTP server on loopback), the two-step sign-in with a TOTP or recovery code, two-factor
enrolment, and email and password changes on PATCH /users/@me."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from fluxer_oauth.app import build_app
from fluxer_oauth.platform.mail_links import RESET_PATH, VERIFY_PATH
from fluxer_oauth.store.tables import mail_links
from tests.conftest import PASSWORD, bearer, create_app, query_of, register, tokens_for
from tests.mail_server import link_in, text_of

NEW_PASSWORD = "velvet lantern orchard 42"
API = "/api/v1"


@pytest.fixture
def mail_rt(mail_app):
    return mail_app.state.runtime


async def mailed_token(mail_server, address: str, path: str, nth: int = 1, timeout: float = 10.0) -> str:
    """The token of the ``nth`` mail to ``address`` with a link to ``path``, once it arrived."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in mail_server.messages_to(address) if path in text_of(m)]
        if len(found) >= nth:
            return query_of(link_in(found[nth - 1], path))["token"]
        if time.monotonic() > deadline:
            raise AssertionError(f"mail {nth} to {address} with a {path} link did not arrive; got {len(found)}")
        await asyncio.sleep(0.02)


async def me(client, token: str) -> dict:
    response = await client.get(f"{API}/users/@me", headers={"Authorization": token})
    assert response.status_code == 200, response.text
    return response.json()


async def login(client, name: str, password: str = PASSWORD):
    return await client.post(f"{API}/auth/login", json={"login": name, "password": password})


@pytest.fixture
async def limited(settings, mail_server):
    """A client of an app with mail and the rate limits on (the global one out of the way)."""
    app = build_app(settings.model_copy(update={**mail_server.settings(), "rate_limits": "on",
                                                "rate_limit_global": "100000/second"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        http.rt = app.state.runtime
        yield http
    await app.state.runtime.mail.close(timeout=1)
    await app.state.runtime.db.close()


async def expire_links(rt, user_id: str) -> None:
    async with rt.db.write() as conn:
        await conn.execute(update(mail_links).where(mail_links.c.user_id == int(user_id))
                           .values(expires_at=time.time() - 1))


# --- email verification -------------------------------------------------------------------

async def test_sign_up_mails_a_link_that_verifies_the_address_once(mail_client, mail_server, mail_rt):
    account = await register(mail_client, "vera")
    assert account.user["verified"] is False
    token = await mailed_token(mail_server, "vera@example.com", VERIFY_PATH)

    verified = await mail_client.post(f"{API}/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True and verified.json()["email"] == "vera@example.com"
    assert (await me(mail_client, account.token))["verified"] is True

    again = await mail_client.post(f"{API}/auth/verify", json={"token": token})
    assert again.status_code == 400 and again.json()["code"] == "INVALID_LINK"
    async with mail_rt.db.read() as conn:  # only the token's hash is kept
        stored = (await conn.execute(select(mail_links.c.token_hash))).scalars().all()
    assert hashlib.sha256(token.encode()).digest() in stored
    assert all(token.encode() not in bytes(value) for value in stored)


async def test_an_expired_verification_link_is_refused(mail_client, mail_server, mail_rt):
    account = await register(mail_client, "late")
    token = await mailed_token(mail_server, "late@example.com", VERIFY_PATH)
    await expire_links(mail_rt, account.id)
    response = await mail_client.post(f"{API}/auth/verify", json={"token": token})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_LINK"
    assert (await me(mail_client, account.token))["verified"] is False


async def test_a_new_email_is_unverified_and_links_sent_to_the_old_one_verify_nothing(mail_client, mail_server):
    account = await register(mail_client, "moss")
    first = await mailed_token(mail_server, "moss@example.com", VERIFY_PATH)
    resent = await mail_client.post(f"{API}/auth/verify/resend", headers=account.headers)
    assert resent.status_code == 204
    second = await mailed_token(mail_server, "moss@example.com", VERIFY_PATH, nth=2)
    assert (await mail_client.post(f"{API}/auth/verify", json={"token": second})).status_code == 200
    refused = await mail_client.post(f"{API}/auth/verify/resend", headers=account.headers)
    assert refused.status_code == 400 and refused.json()["code"] == "EMAIL_ALREADY_VERIFIED"

    without_password = await mail_client.patch(f"{API}/users/@me", headers=account.headers,
                                                json={"email": "fern@example.com"})
    assert without_password.status_code == 403 and without_password.json()["code"] == "INVALID_PASSWORD"
    changed = await mail_client.patch(f"{API}/users/@me", headers=account.headers,
                                      json={"email": "fern@example.com", "password": PASSWORD})
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == "fern@example.com" and changed.json()["verified"] is False
    assert (await me(mail_client, account.token))["verified"] is False

    stale = await mail_client.post(f"{API}/auth/verify", json={"token": first})  # sent to moss@, never used
    assert stale.status_code == 400 and stale.json()["code"] == "INVALID_LINK"
    fresh = await mailed_token(mail_server, "fern@example.com", VERIFY_PATH)
    assert (await mail_client.post(f"{API}/auth/verify", json={"token": fresh})).json()["verified"] is True
    notices = [m for m in mail_server.messages_to("moss@example.com") if VERIFY_PATH not in text_of(m)]
    assert len(notices) == 1 and "fern@example.com" in text_of(notices[0])  # the old address is told


async def test_an_email_with_a_control_character_is_invalid_not_a_server_error(client):
    # PostgreSQL refuses NUL in text: before the address was checked for it, this was a 500.
    account = await register(client, "nulmail")
    for email in ("a\u0000b@example.com", "ab@exam\u0007ple.com"):
        registered = await client.post(f"{API}/auth/register",
                                       json={"username": "other", "email": email, "password": PASSWORD})
        changed = await client.patch(f"{API}/users/@me", headers=account.headers,
                                     json={"email": email, "password": PASSWORD})
        for response in (registered, changed):
            assert response.status_code == 400, response.text
            assert response.json()["errors"][0]["code"] == "EMAIL_INVALID"


# --- password reset -------------------------------------------------------------------------

async def test_a_password_reset_ends_every_session_and_its_link_works_once(mail_client, mail_server):
    account = await register(mail_client, "rowan")
    other_session = (await login(mail_client, "rowan")).json()["token"]
    asked = await mail_client.post(f"{API}/auth/forgot", json={"login": "Rowan@Example.com"})
    assert asked.status_code == 204 and asked.content == b""
    token = await mailed_token(mail_server, "rowan@example.com", RESET_PATH)

    reset = await mail_client.post(f"{API}/auth/reset", json={"token": token, "password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.text
    assert reset.json()["user"]["id"] == account.id  # signed in with the new password (SPEC §8)
    new_session = {"Authorization": reset.json()["token"]}
    assert (await mail_client.get(f"{API}/users/@me", headers=new_session)).status_code == 200
    for session in (account.token, other_session):
        assert (await mail_client.get(f"{API}/users/@me", headers={"Authorization": session})).status_code == 401
    assert (await login(mail_client, "rowan")).status_code == 400
    assert "token" in (await login(mail_client, "rowan", NEW_PASSWORD)).json()

    again = await mail_client.post(f"{API}/auth/reset",
                                   json={"token": token, "password": "another fine " + NEW_PASSWORD})
    assert again.status_code == 400 and again.json()["code"] == "INVALID_LINK"
    assert "token" in (await login(mail_client, "rowan", NEW_PASSWORD)).json()
    messages = await mail_server.wait_for("rowan@example.com", count=3)  # verify, reset, and the notice
    assert any("password" in m["Subject"].lower() and RESET_PATH not in text_of(m) for m in messages[2:])


async def test_an_expired_reset_link_is_refused(mail_client, mail_server, mail_rt):
    account = await register(mail_client, "ashe")
    assert (await mail_client.post(f"{API}/auth/forgot", json={"login": "ashe"})).status_code == 204
    token = await mailed_token(mail_server, "ashe@example.com", RESET_PATH)
    await expire_links(mail_rt, account.id)
    response = await mail_client.post(f"{API}/auth/reset", json={"token": token, "password": NEW_PASSWORD})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_LINK"
    assert (await mail_client.get(f"{API}/users/@me", headers=account.headers)).status_code == 200


async def test_forgot_does_not_reveal_whether_an_account_exists(mail_client, mail_server, mail_rt):
    await register(mail_client, "known")
    answers = [await mail_client.post(f"{API}/auth/forgot", json={"login": login_name})
               for login_name in ("known@example.com", "nobody@example.com", "known", "nobody")]
    assert {(a.status_code, a.content) for a in answers} == {(204, b"")}
    assert len({tuple(sorted((k, v) for k, v in a.headers.items() if k not in ("date", "x-request-id")))
                for a in answers}) == 1
    await mailed_token(mail_server, "known@example.com", RESET_PATH, nth=2)
    await mail_rt.mail.drain()
    assert mail_server.messages_to("nobody@example.com") == []


async def test_reset_mails_are_limited_per_account_without_changing_the_answer(limited, mail_server):
    await register(limited, "wren")
    # Five mails an hour for one account (FLUXER_RATE_LIMIT_PASSWORD_RESET_ACCOUNT): beyond
    # them the answer is the same, and no mail goes out.
    answers = [await limited.post(f"{API}/auth/forgot", json={"login": "wren"}) for _ in range(7)]
    assert {(a.status_code, a.content) for a in answers} == {(204, b"")}
    await mailed_token(mail_server, "wren@example.com", RESET_PATH, nth=5)
    await limited.rt.mail.drain()
    assert len([m for m in mail_server.messages_to("wren@example.com") if RESET_PATH in text_of(m)]) == 5


async def test_reset_requests_are_limited_per_address(limited):
    # Ten an hour from one address (FLUXER_RATE_LIMIT_PASSWORD_RESET_IP), whatever they name.
    answers = [await limited.post(f"{API}/auth/forgot", json={"login": f"someone{n}"}) for n in range(11)]
    assert [a.status_code for a in answers] == [204] * 10 + [429]
    assert answers[-1].json()["code"] == "RATE_LIMITED"


async def test_without_smtp_the_mail_flows_are_unavailable(client):
    # Production settings without FLUXER_SMTP_URL: sign-up works, what needs mail says so.
    account = await register(client, "nomail")
    for response in (await client.post(f"{API}/auth/forgot", json={"login": "nomail"}),
                     await client.post(f"{API}/auth/forgot", json={"login": "nobody"}),
                     await client.post(f"{API}/auth/verify/resend", headers=account.headers)):
        assert response.status_code == 503 and response.json()["code"] == "MAIL_UNAVAILABLE", response.text


# --- password change ----------------------------------------------------------------------

async def test_a_new_password_ends_the_other_sessions_but_not_this_one(client):
    account = await register(client, "cedar")
    other_session = (await login(client, "cedar")).json()["token"]
    refused = await client.patch(f"{API}/users/@me", headers=account.headers,
                                 json={"new_password": NEW_PASSWORD, "password": "not the password"})
    assert refused.status_code == 403 and refused.json()["code"] == "INVALID_PASSWORD"
    assert (await client.get(f"{API}/users/@me", headers={"Authorization": other_session})).status_code == 200

    changed = await client.patch(f"{API}/users/@me", headers=account.headers,
                                 json={"new_password": NEW_PASSWORD, "password": PASSWORD})
    assert changed.status_code == 200, changed.text
    assert (await client.get(f"{API}/users/@me", headers=account.headers)).status_code == 200
    assert (await client.get(f"{API}/users/@me", headers={"Authorization": other_session})).status_code == 401
    assert (await login(client, "cedar")).status_code == 400
    assert (await login(client, "cedar", NEW_PASSWORD)).status_code == 200


# --- two-factor sign-in ---------------------------------------------------------------------

async def three_steps() -> tuple[float, float, float]:
    """Times in the previous, current and next TOTP step, with the current one far enough from
    its end that the server's clock stays in it while a test uses them (a code is valid one
    step either side of the server's)."""
    left = 30 - time.time() % 30
    if left < 12:
        await asyncio.sleep(left + 0.05)
    now = time.time()
    return now - 30, now, now + 30


async def enrol(client, account) -> tuple[pyotp.TOTP, list[str], tuple[float, float, float]]:
    """Two-factor sign-in turned on for ``account`` with a code of the previous step (the
    current and next ones are left for the test)."""
    setup = (await client.post(f"{API}/users/@me/mfa/totp/setup", headers=account.headers)).json()
    totp = pyotp.TOTP(setup["secret"])
    steps = await three_steps()
    enabled = await client.post(f"{API}/users/@me/mfa/totp/enable", headers=account.headers,
                                json={"secret": setup["secret"], "code": totp.at(steps[0]), "password": PASSWORD})
    assert enabled.status_code == 200, enabled.text
    return totp, enabled.json()["backup_codes"], steps


async def second_step(client, name: str, code: str):
    first = await login(client, name)
    assert first.status_code == 200 and "token" not in first.json(), first.text
    return await client.post(f"{API}/auth/mfa/totp", json={"ticket": first.json()["ticket"], "code": code})


async def test_two_factor_sign_in_from_enrolment_to_disabling(client):
    account = await register(client, "ivy")
    setup = await client.post(f"{API}/users/@me/mfa/totp/setup", headers=account.headers)
    assert setup.status_code == 200
    secret, uri = setup.json()["secret"], setup.json()["uri"]
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri and "ivy%40example.com" in uri
    assert (await me(client, account.token))["mfa_enabled"] is False  # setting up stores nothing
    totp = pyotp.TOTP(secret)
    previous, current, following = await three_steps()

    enable = {"secret": secret, "code": totp.at(previous), "password": PASSWORD}
    wrong_code = await client.post(f"{API}/users/@me/mfa/totp/enable", headers=account.headers,
                                   json={**enable, "code": f"{(int(totp.at(previous)) + 1) % 1000000:06d}"})
    assert wrong_code.status_code == 400 and wrong_code.json()["code"] == "INVALID_MFA_CODE"
    wrong_password = await client.post(f"{API}/users/@me/mfa/totp/enable", headers=account.headers,
                                       json={**enable, "password": "not the password"})
    assert wrong_password.status_code == 403 and wrong_password.json()["code"] == "INVALID_PASSWORD"
    assert (await me(client, account.token))["mfa_enabled"] is False
    enabled = await client.post(f"{API}/users/@me/mfa/totp/enable", headers=account.headers, json=enable)
    assert enabled.status_code == 200, enabled.text
    backup_codes = enabled.json()["backup_codes"]
    assert len(backup_codes) == len(set(backup_codes)) == 10
    assert (await me(client, account.token))["mfa_enabled"] is True

    first = await login(client, "ivy")
    assert first.status_code == 200 and "token" not in first.json()
    assert first.json() | {"ticket": "-"} == {"mfa": True, "ticket": "-", "totp": True, "backup": True,
                                             "user_id": account.id}
    signed_in = await client.post(f"{API}/auth/mfa/totp", json={"ticket": first.json()["ticket"],
                                                                 "code": totp.at(current)})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["id"] == account.id
    assert (await me(client, signed_in.json()["token"]))["mfa_enabled"] is True

    replayed = await second_step(client, "ivy", totp.at(current))
    assert replayed.status_code == 400 and replayed.json()["code"] == "INVALID_MFA_CODE"
    recovered = await second_step(client, "ivy", backup_codes[0].upper())  # as typed from paper
    assert recovered.status_code == 200 and "token" in recovered.json()
    used_up = await second_step(client, "ivy", backup_codes[0])
    assert used_up.status_code == 400 and used_up.json()["code"] == "INVALID_MFA_CODE"

    disable = f"{API}/users/@me/mfa/totp/disable"
    no_code = await client.post(disable, headers=account.headers, json={"password": PASSWORD, "code": "000000"})
    assert no_code.status_code == 400 and no_code.json()["code"] == "INVALID_MFA_CODE"
    bad_password = await client.post(disable, headers=account.headers,
                                     json={"password": "not the password", "code": totp.at(following)})
    assert bad_password.status_code == 403 and bad_password.json()["code"] == "INVALID_PASSWORD"
    assert (await me(client, account.token))["mfa_enabled"] is True
    disabled = await client.post(disable, headers=account.headers,
                                 json={"password": PASSWORD, "code": totp.at(following)})
    assert disabled.status_code == 204, disabled.text
    assert (await me(client, account.token))["mfa_enabled"] is False
    assert "token" in (await login(client, "ivy")).json()
    again = await client.post(disable, headers=account.headers, json={"password": PASSWORD, "code": totp.at(following)})
    assert again.status_code == 400 and again.json()["code"] == "MFA_NOT_ENABLED"


async def test_new_recovery_codes_replace_the_old_ones(client):
    account = await register(client, "holly")
    totp, old_codes, (_, current, _) = await enrol(client, account)
    wrong = await client.post(f"{API}/users/@me/mfa/codes", headers=account.headers,
                              json={"password": "not the password", "code": totp.at(current)})
    assert wrong.status_code == 403
    fresh = await client.post(f"{API}/users/@me/mfa/codes", headers=account.headers,
                              json={"password": PASSWORD, "code": totp.at(current)})
    assert fresh.status_code == 200, fresh.text
    new_codes = fresh.json()["backup_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    assert (await second_step(client, "holly", old_codes[0])).status_code == 400
    assert (await second_step(client, "holly", new_codes[0])).status_code == 200


async def test_a_sign_in_ticket_is_refused_when_forged_or_after_a_password_change(client):
    account = await register(client, "sloe")
    forged = await client.post(f"{API}/auth/mfa/totp", json={"ticket": "not-a-ticket", "code": "123456"})
    assert forged.status_code == 400 and forged.json()["code"] == "INVALID_MFA_TICKET"
    totp, _, (_, current, _) = await enrol(client, account)
    ticket = (await login(client, "sloe")).json()["ticket"]
    changed = await client.patch(f"{API}/users/@me", headers=account.headers,
                                 json={"new_password": NEW_PASSWORD, "password": PASSWORD})
    assert changed.status_code == 200
    stale = await client.post(f"{API}/auth/mfa/totp", json={"ticket": ticket, "code": totp.at(current)})
    assert stale.status_code == 400 and stale.json()["code"] == "INVALID_MFA_TICKET"


async def test_wrong_sign_in_codes_are_throttled_like_wrong_passwords(limited):
    account = await register(limited, "quill")
    totp, _, (_, current, _) = await enrol(limited, account)
    # FLUXER_RATE_LIMIT_LOGIN_FAILURES: ten failures per account and address, then even the
    # right code is refused, so guessing six digits is no faster than guessing the password.
    ticket = (await login(limited, "quill")).json()["ticket"]
    wrong = f"{(int(totp.at(current)) + 1) % 1000000:06d}"
    answers = [await limited.post(f"{API}/auth/mfa/totp", json={"ticket": ticket, "code": wrong}) for _ in range(10)]
    assert {a.json()["code"] for a in answers} == {"INVALID_MFA_CODE"}
    refused = await limited.post(f"{API}/auth/mfa/totp", json={"ticket": ticket, "code": totp.at(current)})
    assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED"
    assert (await login(limited, "quill")).status_code == 429  # the same buckets as the password's


async def test_a_bearer_token_cannot_change_how_its_user_signs_in(client):
    account = await register(client, "owner")
    application = await create_app(client, account)
    token = (await tokens_for(client, account, application, scope="identify email"))["access_token"]
    for path in ("/users/@me/mfa/totp/setup", "/users/@me/mfa/totp/enable", "/users/@me/mfa/totp/disable",
                 "/users/@me/mfa/codes", "/auth/verify/resend"):
        response = await client.post(API + path, headers=bearer(token),
                                     json={"secret": "A" * 32, "code": "123456", "password": PASSWORD})
        assert response.status_code == 403 and response.json()["code"] == "ACCESS_DENIED", path
    patched = await client.patch(f"{API}/users/@me", headers=bearer(token),
                                 json={"new_password": NEW_PASSWORD, "password": PASSWORD})
    assert patched.status_code == 403
    assert (await me(client, account.token))["mfa_enabled"] is False
    assert (await login(client, "owner")).status_code == 200


async def test_the_login_answer_is_documented_as_a_session_or_a_ticket(client):
    document = (await client.get(f"{API}/openapi.json")).json()
    answer = document["paths"][f"{API}/auth/login"]["post"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"oneOf": [{"$ref": "#/components/schemas/SessionResponse"},
                                          {"$ref": "#/components/schemas/MfaRequired"}]}
    required = document["components"]["schemas"]["MfaRequired"]["required"]
    assert set(required) == {"mfa", "ticket", "totp", "backup", "user_id"}


async def test_a_reset_link_is_no_second_factor(mail_client, mail_server):
    """A reset on a two-factor account signs in only as far as a login does: the answer is the
    ticket for the code, never a session, so whoever reads the mailbox still needs the code."""
    account = await register(mail_client, "hazel")
    totp, _codes, (_previous, current, _next) = await enrol(mail_client, account)
    assert (await mail_client.post(f"{API}/auth/forgot", json={"login": "hazel"})).status_code == 204
    token = await mailed_token(mail_server, "hazel@example.com", RESET_PATH)
    reset = await mail_client.post(f"{API}/auth/reset", json={"token": token, "password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.text
    assert "token" not in reset.json() and reset.json()["mfa"] is True
    finished = await mail_client.post(f"{API}/auth/mfa/totp", json={"ticket": reset.json()["ticket"],
                                                                     "code": totp.at(current)})
    assert finished.status_code == 200 and finished.json()["user"]["id"] == account.id


async def test_wrong_codes_of_one_account_from_many_addresses_meet_the_second_factor_s_ceiling(settings):
    """Whoever is at the code step knows the password: their guesses from many addresses
    together meet FLUXER_RATE_LIMIT_MFA_CODE_ACCOUNT_FAILURES, far below the password's
    account ceiling, and then even the right code waits; other accounts are untouched."""
    app = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_global": "100000/second",
                                                "rate_limit_mfa_code_account_failures": "3/hour"}))

    def from_address(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async with from_address("198.51.100.1") as first, from_address("198.51.100.2") as second, \
            from_address("198.51.100.3") as third:
        account = await register(first, "wren")
        totp, _, (_, current, _) = await enrol(first, account)
        wrong = f"{(int(totp.at(current)) + 1) % 1000000:06d}"
        for guesser in (first, second, third):
            ticket = (await login(guesser, "wren")).json()["ticket"]
            guess = await guesser.post(f"{API}/auth/mfa/totp", json={"ticket": ticket, "code": wrong})
            assert guess.json()["code"] == "INVALID_MFA_CODE"
        ticket = (await login(third, "wren")).json()["ticket"]  # the password still works
        refused = await third.post(f"{API}/auth/mfa/totp", json={"ticket": ticket, "code": totp.at(current)})
        assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED"
        other = await register(third, "finch")
        assert (await login(third, "finch")).status_code == 200
        assert other.id != account.id
    await app.state.runtime.db.close()
