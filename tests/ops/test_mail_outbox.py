"""Mail delivery against a real SMTP server on loopback (tests/mail_server.py): a mail arrives
whole (text and HTML, the configured sender, a subject); a server that refuses for a moment
still gets it; a server that is down never fails the request that caused the mail, and the
failure is logged without the message and counted; dev mode without SMTP writes the mail to
the log, production without SMTP refuses the flows that need mail; and no link's token reaches
a log line on the way."""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager

import httpx
import pytest
from prometheus_client import REGISTRY

from fluxer_oauth.app import build_app
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.mail import outbox
from fluxer_oauth.mail.outbox import Mail
from fluxer_oauth.ops.logging import JsonFormatter
from fluxer_oauth.platform import mail_links
from fluxer_oauth.store import users as user_store
from tests.conftest import PASSWORD, AccessLines, query_of, register
from tests.mail_server import free_port, html_of, link_in, text_of

NEW_PASSWORD = "a fresh passphrase for alice 42"
TEST_SIDE = frozenset({"httpx", "mail.log"})


def mail_count(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("fluxer_mail_total", {"kind": kind, "outcome": outcome}) or 0.0


@asynccontextmanager
async def app_client(settings, **overrides):
    """A client of the app built with ``overrides``, and its runtime."""
    app = build_app(settings.model_copy(update=overrides))
    rt = app.state.runtime
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            yield http, rt
    finally:
        await rt.mail.close(timeout=1)
        await rt.db.close()


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(outbox, "RETRY_DELAYS", (0.05,))


async def user_named(rt, login: str):
    async with rt.db.read() as conn:
        return await user_store.find_by_login(conn, login)


# --- delivery ---------------------------------------------------------------------------------------

async def test_a_mail_arrives_with_text_and_html_from_the_configured_sender(mail_client, mail_server):
    await register(mail_client, "alice")  # sign-up mails the verification link
    [message] = await mail_server.wait_for("alice@example.com")
    assert message["From"] == mail_server.settings()["mail_from"]
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Verify your email address for Fluxer"
    assert message.get_content_type() == "multipart/alternative"
    link = link_in(message, "/verify-email")
    assert link.startswith("http://testserver/verify-email?token=")
    assert "alice" in text_of(message)
    assert link in html_of(message) and "<html" in html_of(message).lower()


async def test_a_server_that_refuses_the_first_attempt_still_gets_the_mail(mail_app, mail_client, mail_server,
                                                                            quick_retries):
    retried, sent = mail_count("verify_email", "retried"), mail_count("verify_email", "sent")
    mail_server.refuse_next = 1  # 451: try again later
    await register(mail_client, "alice")
    [message] = await mail_server.wait_for("alice@example.com")
    assert link_in(message, "/verify-email")
    assert await mail_app.state.runtime.mail.drain()
    assert mail_count("verify_email", "retried") == retried + 1
    assert mail_count("verify_email", "sent") == sent + 1


async def test_close_delivers_what_is_queued_retries_included(mail_app, mail_server, quick_retries):
    rt = mail_app.state.runtime
    mail_server.refuse_next = 1
    for n in range(3):
        rt.mail.send(Mail("password_changed", f"user{n}@example.com", {"username": f"user{n}"}))
    assert rt.mail.pending == 3
    await rt.mail.close()
    assert rt.mail.pending == 0
    assert sorted(to for to, _ in mail_server.received) == [["user0@example.com"], ["user1@example.com"],
                                                            ["user2@example.com"]]


async def test_a_server_that_is_down_fails_no_request_and_the_failure_is_logged_and_counted(
        settings, caplog, quick_retries):
    caplog.set_level(logging.INFO, logger="fluxer.mail")
    failed, retried = mail_count("password_reset", "failed"), mail_count("password_reset", "retried")
    async with app_client(settings, smtp_url=f"smtp://127.0.0.1:{free_port()}",
                          mail_attempts=3) as (client, rt):
        await register(client, "alice")
        forgot = await client.post("/api/v1/auth/forgot", json={"login": "alice"})
        assert forgot.status_code == 204
        assert await rt.mail.drain(timeout=10)
    assert mail_count("password_reset", "retried") == retried + 2
    assert mail_count("password_reset", "failed") == failed + 1  # once, after the last attempt

    records = [r for r in caplog.records if r.name == "fluxer.mail"]
    given_up = [r for r in records if r.getMessage() == "mail not delivered"
                and getattr(r, "fields", {}).get("kind") == "password_reset"]
    assert len(given_up) == 1 and given_up[0].levelno == logging.ERROR and given_up[0].fields["attempts"] == 3
    logged = "\n".join(JsonFormatter().format(r) for r in records)
    for secret in ("token=", "/reset-password", "Someone asked", "alice@example.com"):
        assert secret not in logged, secret


# --- without SMTP -------------------------------------------------------------------------------------

async def test_dev_mode_without_smtp_writes_the_mail_and_its_working_link_to_the_log(settings, caplog):
    caplog.set_level(logging.INFO, logger="fluxer.mail")
    logged = mail_count("password_reset", "logged")
    async with app_client(settings, dev=True, smtp_url=None) as (client, rt):
        assert settings.secret_key and rt.settings.secret == settings.secret_key.encode()  # not the dev file
        await register(client, "alice")
        assert (await client.post("/api/v1/auth/forgot", json={"login": "alice"})).status_code == 204
        await rt.mail.drain()  # the link is written after the answer
        [record] = [r for r in caplog.records
                    if r.name == "fluxer.mail" and getattr(r, "fields", {}).get("kind") == "password_reset"]
        assert record.fields["to"] == "alice@example.com" and record.fields["subject"] == "Reset your Fluxer password"
        link = next(word for word in record.fields["body"].split() if "/reset-password?token=" in word)
        reset = await client.post("/api/v1/auth/reset", json={"token": query_of(link)["token"],
                                                               "password": NEW_PASSWORD})
        assert reset.is_success, reset.text
    assert mail_count("password_reset", "logged") == logged + 1


async def test_production_without_smtp_refuses_the_flows_that_need_mail(rt, client):
    assert not rt.settings.mail_configured and not rt.settings.dev
    await register(client, "alice")  # signing up needs no mail: it just sends none
    alice = await user_named(rt, "alice")
    for flow in (mail_links.request_password_reset(rt, "alice"), mail_links.resend_verification(rt, alice)):
        with pytest.raises(ApiError) as refused:
            await flow
        assert (refused.value.status, refused.value.code) == (503, "MAIL_UNAVAILABLE")
        assert "FLUXER_SMTP_URL" in refused.value.message
    assert not await mail_links.send_verification(rt, alice)  # nothing written, nothing sent


# --- no token in the logs ---------------------------------------------------------------------------

async def test_no_mailed_token_reaches_a_log_line(mail_app, mail_client, mail_server, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="fluxer")
    access = AccessLines(mail_app)

    alice = await register(mail_client, "alice")
    [verification] = await mail_server.wait_for("alice@example.com")
    verify_token = query_of(link_in(verification, "/verify-email"))["token"]
    verified = await mail_client.post("/api/v1/auth/verify", json={"token": verify_token})
    assert verified.status_code == 200 and verified.json()["verified"] is True

    assert (await mail_client.post("/api/v1/auth/forgot", json={"login": "alice@example.com"})).status_code == 204
    reset_mail = (await mail_server.wait_for("alice@example.com", count=2))[1]
    reset_link = link_in(reset_mail, "/reset-password")
    reset_token = query_of(reset_link)["token"]
    page = await mail_client.get(reset_link.removeprefix("http://testserver"))
    assert page.status_code == 200
    reset = await mail_client.post("/api/v1/auth/reset", json={"token": reset_token, "password": NEW_PASSWORD})
    assert reset.is_success, reset.text
    assert (await mail_client.get("/api/v1/users/@me", headers=alice.headers)).status_code == 401
    await mail_server.wait_for("alice@example.com", count=3)  # the notice that the password changed
    assert await mail_app.state.runtime.mail.drain()

    # Every logger but the test's own ends: its HTTP client (the browser) and its SMTP server
    # (the relay), which log the URLs and messages they handle.
    lines = [JsonFormatter().format(record) for record in caplog.records if record.name not in TEST_SIDE]
    lines += [json.dumps(line) for line in access.lines()]
    assert any("/api/v1/auth/reset" in line for line in lines)  # the requests were logged
    for token in (verify_token, reset_token):
        assert not [line for line in lines if token in line]
    assert PASSWORD not in "\n".join(lines) and NEW_PASSWORD not in "\n".join(lines)
