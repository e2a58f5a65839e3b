"""The device flow's threats (RFC 8628 §5): a device code redeemed once however many polls
race; user codes guessed at /activate; endings that must reach codes approved but not yet
redeemed; the admin scope, which a phishable flow never grants."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from sqlalchemy import delete, func, select

from fluxer_oauth.app import build_app
from fluxer_oauth.core import credentials
from fluxer_oauth.grants import endings
from fluxer_oauth.platform import admin
from fluxer_oauth.store import devices as device_store
from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store.tables import device_codes, grants
from tests.api.test_authorize import browser_login
from tests.backends import POSTGRES
from tests.api.test_device import activate, approve, code_row, poll, set_code, start, started
from tests.conftest import PASSWORD, bearer, create_app, register

INVALID = "That code is not valid"


@pytest.fixture
async def setup(client):
    owner = await register(client, "devsec_owner")
    app = await create_app(client, owner, name="Console")
    user = await register(client, "devsec_user")
    await browser_login(client, "devsec_user")
    return owner, app, user


# --- single use ---------------------------------------------------------------------------------

async def test_parallel_polls_of_an_approved_code_give_exactly_one_token_response(client, setup):
    _owner, app, _user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    answers = await asyncio.gather(*(poll(client, app, pair["device_code"]) for _ in range(8)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [400] * 7, [answer.text for answer in answers]
    assert {answer.json()["error"] for answer in answers if answer.status_code == 400} == {"invalid_grant"}


async def test_a_replayed_device_code_ends_the_tokens_it_issued(client, setup):
    _owner, app, _user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    first = (await poll(client, app, pair["device_code"])).json()
    refreshed = (await client.post("/api/v1/oauth2/token", auth=app.basic, data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})).json()
    replay = await poll(client, app, pair["device_code"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # the family ends, refreshed tokens included (as a replayed authorization code)
    assert (await client.get("/api/v1/users/@me", headers=bearer(refreshed["access_token"]))).status_code == 401
    again = await client.post("/api/v1/oauth2/token", auth=app.basic, data={
        "grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]})
    assert again.status_code == 400


async def test_two_users_deciding_one_code_at_once_give_one_decision(client, setup, app):
    _owner, application, _user = setup
    await register(client, "devsec_other")
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    async with other:
        await browser_login(other, "devsec_other")
        pair = await started(client, application)
        await activate(client, pair["user_code"], "continue")
        await activate(other, pair["user_code"], "continue")
        answers = await asyncio.gather(activate(client, pair["user_code"], "authorize"),
                                       activate(other, pair["user_code"], "authorize"))
    assert sorted(answer.status_code for answer in answers) == [200, 400]
    assert sum('data-approved="true"' in answer.text for answer in answers) == 1
    assert (await poll(client, application, pair["device_code"])).status_code == 200


# --- user codes: guessing -----------------------------------------------------------------------

@pytest.fixture
async def limited(settings):
    """The app with the user-code throttles small: 3 failures per (user, IP), 5 per IP and 6
    per user, a minute each; anything else out of the way."""
    application = build_app(settings.model_copy(update={
        "rate_limits": "on", "rate_limit_global": "100000/second", "rate_limit_device": "1000/second",
        "rate_limit_token": "1000/second", "rate_limit_login_failures": "1000/minute",
        "rate_limit_user_code_failures": "3/minute", "rate_limit_user_code_ip_failures": "5/minute",
        "rate_limit_user_code_account_failures": "6/minute"}))
    browsers = []

    async def browser(ip: str, username: str | None = None) -> httpx.AsyncClient:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=application, client=(ip, 40000)),
                                 base_url="http://testserver")
        browsers.append(http)
        if username is not None:
            await browser_login(http, username)
        return http

    browser.app = application
    yield browser
    for http in browsers:
        await http.aclose()
    await application.state.runtime.db.close()


async def test_wrong_codes_are_throttled_and_a_strangers_guesses_never_lock_out_another_user(limited):
    api = await limited("10.0.0.9")
    owner = await register(api, "throttle_owner")
    app = await create_app(api, owner)
    await register(api, "guesser")
    await register(api, "victim")
    pair = await started(api, app)
    guesser = await limited("10.0.0.1", "guesser")
    for _ in range(3):
        assert (await activate(guesser, "BCDF-GHJK", "continue")).status_code == 400
    throttled = await activate(guesser, "BCDF-GHJK", "continue")
    assert throttled.status_code == 429 and "Wait a few minutes" in throttled.text
    assert int(throttled.headers["retry-after"]) > 0 and throttled.headers["x-frame-options"] == "DENY"
    # once throttled, even a right code is refused: the throttle is no oracle
    assert (await activate(guesser, pair["user_code"], "continue")).status_code == 429
    # the code's owner, signed in elsewhere, is not affected
    victim = await limited("10.0.0.2", "victim")
    assert (await activate(victim, pair["user_code"], "continue")).status_code == 200
    await approve(victim, pair["user_code"])
    assert (await poll(api, app, pair["device_code"])).status_code == 200


async def test_the_per_user_ceiling_and_the_per_address_limit_hold(limited):
    api = await limited("10.0.1.9")
    for name in ("roamer", "neighbour"):
        await register(api, name)
    # one user from many addresses: 3 + 3 failures reach the per-user ceiling (6)
    for ip in ("10.0.1.1", "10.0.1.2"):
        roamer = await limited(ip, "roamer")
        for _ in range(3):
            assert (await activate(roamer, "BCDF-GHJK", "continue")).status_code == 400
    fresh_address = await limited("10.0.1.3", "roamer")
    assert (await activate(fresh_address, "BCDF-GHJK", "continue")).status_code == 429
    # one address for many users: the second user's guesses stop at the address's limit (5)
    neighbour = await limited("10.0.1.1", "neighbour")
    answers = [(await activate(neighbour, "BCDF-GHJK", "continue")).status_code for _ in range(3)]
    assert answers == [400, 400, 429]


async def test_the_page_says_the_same_for_every_code_that_is_not_pending(client, setup, rt):
    _owner, app, _user = setup
    unknown = await activate(client, "BCDF-GHJK", "continue")
    expired, denied, approved = [await started(client, app) for _ in range(3)]
    await set_code(rt, expired["device_code"], expires_at=time.time() - 1)
    await activate(client, denied["user_code"], "cancel")
    await approve(client, approved["user_code"])
    answers = [unknown] + [await activate(client, pair["user_code"], "continue")
                           for pair in (expired, denied, approved)]

    def shown(answer):
        return answer.status_code, re.search(r'<p class="error" role="alert">([^<]*)</p>', answer.text).group(1)
    assert {shown(answer) for answer in answers} == {(400, "That code is not valid. Check the code on your device "
                                                            "and try again.")}


# --- endings ------------------------------------------------------------------------------------

async def test_revoking_the_authorization_after_approval_makes_the_code_unredeemable(client, setup, rt):
    _owner, app, user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    revoked = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert revoked.status_code == 204
    ended = await poll(client, app, pair["device_code"])
    assert ended.status_code == 400 and ended.json()["error"] == "access_denied"
    assert (await code_row(rt, pair["device_code"])).consumed_at is None


async def test_an_approved_code_whose_grant_is_gone_is_not_redeemed(client, setup, rt):
    """Whatever removed the grant, the redemption itself checks it is still there."""
    _owner, app, user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    async with rt.db.write() as conn:
        await conn.execute(delete(grants).where(grants.c.user_id == int(user.id)))
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "access_denied"


async def test_disabling_the_application_ends_its_device_codes_for_good(client, setup, rt):
    _owner, app, _user = setup
    pending, approved = await started(client, app), await started(client, app)
    await approve(client, approved["user_code"])
    await admin.set_application_disabled(rt, None, int(app.id), True)
    refused = await poll(client, app, pending["device_code"])
    assert refused.json()["error"] == "unauthorized_client"
    assert INVALID in (await activate(client, pending["user_code"], "continue")).text
    await admin.set_application_disabled(rt, None, int(app.id), False)  # nothing ended comes back
    assert INVALID in (await activate(client, pending["user_code"], "continue")).text
    for pair in (pending, approved):
        assert (await poll(client, app, pair["device_code"])).json()["error"] == "access_denied"


async def test_disabling_the_user_ends_the_codes_they_approved(client, setup, rt):
    _owner, app, user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    await admin.set_user_disabled(rt, None, int(user.id), True)
    await admin.set_user_disabled(rt, None, int(user.id), False)
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "access_denied"


async def test_a_secret_reset_needs_the_new_secret_to_redeem(client, setup):
    owner, app, _user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset",
                              json={"password": PASSWORD}, headers=owner.headers)
    new_secret = reset.json()["client_secret"]
    assert (await poll(client, app, pair["device_code"])).status_code == 401  # the old secret
    redeemed = await client.post("/api/v1/oauth2/token", auth=(app.id, new_secret), data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": pair["device_code"]})
    assert redeemed.status_code == 200


# --- the admin scope ----------------------------------------------------------------------------

async def test_staff_only_scopes_are_never_granted_through_a_device(client, setup, rt):
    owner, app, _user = setup
    await admin.set_staff(rt, None, int(owner.id), True)
    await admin.set_application_trusted(rt, None, int(app.id), True)
    for scope in ("admin", "identify admin"):
        refused = await start(client, app, scope)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    # a code carrying it (however it got there) is not approved either, even by staff
    pair = await started(client, app)
    async with rt.db.write() as conn:
        await conn.execute(device_codes.update().where(
            device_codes.c.device_code_hash == credentials.sha256(pair["device_code"])).values(scopes="identify admin"))
    staff_browser = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with staff_browser:
        await browser_login(staff_browser, "devsec_owner")
        refused = await activate(staff_browser, pair["user_code"], "authorize")
    assert refused.status_code == 400 and "cannot be granted to a device" in refused.text
    async with rt.db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(grants))).scalar_one() == 0
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "authorization_pending"


# --- endings against approvals and redemptions under way (PostgreSQL) -----------------------------

only_postgres = pytest.mark.skipif(not POSTGRES, reason="SQLite writes one transaction at a time: no interleaving")


@only_postgres
async def test_a_poll_beside_an_ending_waits_for_it_and_gets_no_tokens(client, setup, rt):
    """The ending holds the application's lock, uncommitted; the redemption's statement takes
    the lock shared first, so it waits and then finds the code ended."""
    _owner, app, user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    async with rt.db.write() as conn:
        await endings.end_grant(rt, conn, user_id=int(user.id), application_id=int(app.id), by="test",
                                actor_id=None, at=time.time())
        polling = asyncio.ensure_future(poll(client, app, pair["device_code"]))
        await asyncio.sleep(0.3)
        assert not polling.done()
    assert (await polling).json()["error"] == "access_denied"


@only_postgres
@pytest.mark.serial  # fixed waits for the other transaction to get there
async def test_an_approval_beside_disabling_the_user_does_not_outlive_it(client, setup, rt, monkeypatch):
    """The approval is paused after recording its grant, uncommitted; the user is disabled
    meanwhile. The disabling waits for the approval (the user's lock), then ends the code."""
    _owner, app, user = setup
    pair = await started(client, app)
    attach = device_store.attach_grant

    async def pause_after_attaching(conn, device_code_hash, grant_id):
        await attach(conn, device_code_hash, grant_id)
        await asyncio.sleep(0.3)

    monkeypatch.setattr(device_store, "attach_grant", pause_after_attaching)
    approving = asyncio.ensure_future(approve(client, pair["user_code"]))
    await asyncio.sleep(0.1)
    await admin.set_user_disabled(rt, None, int(user.id), True)
    await approving
    await admin.set_user_disabled(rt, None, int(user.id), False)
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "access_denied"


@only_postgres
async def test_tokens_redeemed_beside_a_revocation_do_not_outlive_it(client, setup, rt, monkeypatch):
    """The redemption is paused after writing its tokens, uncommitted, holding the
    application's lock shared; the user revokes the application meanwhile. The revocation
    waits for the redemption to commit, then ends the tokens it wrote."""
    _owner, app, user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    insert = oauth_store.insert_tokens

    async def pause_after_inserting(conn, rows):
        await insert(conn, rows)
        await asyncio.sleep(0.3)

    monkeypatch.setattr(oauth_store, "insert_tokens", pause_after_inserting)
    polling = asyncio.ensure_future(poll(client, app, pair["device_code"]))
    await asyncio.sleep(0.1)
    revoked = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert revoked.status_code == 204
    granted = await polling
    assert granted.status_code == 200
    assert (await client.get("/api/v1/users/@me", headers=bearer(granted.json()["access_token"]))).status_code == 401


@only_postgres
@pytest.mark.serial  # fixed waits for the other transaction to get there
async def test_a_poll_that_straddles_the_approval_gets_the_tokens_not_access_denied(client, setup, monkeypatch):
    """The approval is paused after attaching its grant, uncommitted; a poll arrives and waits
    on the code's row. Its redeeming UPDATE, once the approval commits, still cannot see the
    new grant (its snapshot is older): the poll must redeem again, not answer access_denied
    (a device that hears access_denied gives up, though the person just approved)."""
    _owner, app, _user = setup
    pair = await started(client, app)
    attach = device_store.attach_grant

    async def pause_after_attaching(conn, *args, **kwargs):
        await attach(conn, *args, **kwargs)
        await asyncio.sleep(0.5)

    monkeypatch.setattr(device_store, "attach_grant", pause_after_attaching)
    approving = asyncio.ensure_future(approve(client, pair["user_code"]))
    await asyncio.sleep(0.2)
    polled = await poll(client, app, pair["device_code"])
    await approving
    assert polled.status_code == 200, polled.text
    assert polled.json()["access_token"]
