"""The device authorization grant (RFC 8628) through the API and the /activate pages: the
code pair, polling (authorization_pending, slow_down, expired_token, access_denied), the
tokens once, confidential and public clients, OpenID Connect and refresh."""

from __future__ import annotations

import re
import time
from html import unescape
from urllib.parse import quote

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update

from fluxer_oauth.core import credentials
from fluxer_oauth.oauth import device
from fluxer_oauth.store.tables import device_codes, sessions
from tests.api.test_authorize import browser_login
from tests.conftest import bearer, create_app, csrf_of, register

DEVICE = "/api/v1/oauth2/device/authorize"
TOKEN = "/api/v1/oauth2/token"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SHOWN_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


# --- helpers (the security tests use them too) ---------------------------------------------------

def _client_auth(app) -> dict:
    """A public client names itself in the form; a confidential one authenticates by Basic."""
    return {"data": {"client_id": app.id}} if app.body.get("public_client") else {"auth": app.basic, "data": {}}


async def start(client, app, scope: str = "identify") -> httpx.Response:
    how = _client_auth(app)
    return await client.post(DEVICE, data={**how["data"], "scope": scope}, auth=how.get("auth"))


async def started(client, app, scope: str = "identify") -> dict:
    response = await start(client, app, scope)
    assert response.status_code == 200, response.text
    return response.json()


async def poll(client, app, device_code: str) -> httpx.Response:
    how = _client_auth(app)
    return await client.post(TOKEN, data={**how["data"], "grant_type": DEVICE_GRANT, "device_code": device_code},
                             auth=how.get("auth"))


async def activate(browser, typed: str, action: str) -> httpx.Response:
    """What the signed-in browser's /activate form posts (its CSRF token read from the page)."""
    page = await browser.get("/activate")
    return await browser.post("/activate", data={"csrf_token": csrf_of(page.text), "user_code": typed,
                                                 "action": action})


async def approve(browser, user_code: str) -> None:
    shown = await activate(browser, user_code, "continue")
    assert shown.status_code == 200 and 'id="device-code"' in shown.text, shown.text
    done = await activate(browser, user_code, "authorize")
    assert done.status_code == 200 and 'data-approved="true"' in done.text, done.text


async def set_code(rt, device_code: str, **values) -> None:
    async with rt.db.write() as conn:
        await conn.execute(update(device_codes).where(
            device_codes.c.device_code_hash == credentials.sha256(device_code)).values(**values))


async def code_row(rt, device_code: str):
    async with rt.db.read() as conn:
        return (await conn.execute(select(device_codes).where(
            device_codes.c.device_code_hash == credentials.sha256(device_code)))).first()


@pytest.fixture
async def setup(client):
    owner = await register(client, "devowner")
    app = await create_app(client, owner, name="Living Room TV")
    user = await register(client, "viewer")
    await browser_login(client, "viewer")  # this client is the viewer's browser
    return owner, app, user


# --- the device authorization response (RFC 8628 §3.2) ---------------------------------------

async def test_device_authorization_answers_a_code_pair(client, setup, rt):
    _owner, app, _user = setup
    response = await start(client, app, "identify email")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in",
                         "interval"}
    assert SHOWN_CODE.match(body["user_code"]) and len(body["device_code"]) >= 43
    assert body["verification_uri"] == "http://testserver/activate"
    assert body["verification_uri_complete"] == f"http://testserver/activate?user_code={body['user_code']}"
    assert body["expires_in"] == 600 and body["interval"] == 5
    row = await code_row(rt, body["device_code"])  # stored by its hash, the user code without hyphen
    assert row.user_code == body["user_code"].replace("-", "") and row.scopes == "identify email"
    assert row.expires_at - row.created_at == 600 and row.interval == 5


async def test_user_codes_differ_and_use_only_the_unambiguous_alphabet(client, setup):
    _owner, app, _user = setup
    codes = {(await started(client, app))["user_code"] for _ in range(5)}
    assert len(codes) == 5 and all(SHOWN_CODE.match(code) for code in codes)


async def test_a_user_code_collision_is_retried_with_another(client, setup, rt, monkeypatch):
    _owner, app, _user = setup
    taken = (await started(client, app))["user_code"].replace("-", "")
    fresh = iter([taken, taken, "BCDFGHJK"])
    monkeypatch.setattr(device, "new_user_code", lambda: next(fresh))
    assert (await started(client, app))["user_code"] == "BCDF-GHJK"


@pytest.mark.parametrize(("scope", "error"), [
    ("bot", "invalid_scope"), ("admin", "invalid_scope"), ("identify bot", "invalid_scope"),
    ("email", "invalid_scope"), ("identify unknown", "invalid_scope"), ("", "invalid_request"),
])
async def test_invalid_scopes_are_refused(client, setup, scope, error):
    _owner, app, _user = setup
    response = await start(client, app, scope)
    assert response.status_code == 400 and response.json()["error"] == error, response.text


async def test_client_authentication_is_required(client, setup):
    _owner, app, _user = setup
    assert (await client.post(DEVICE, data={"scope": "identify"})).status_code == 401
    wrong = await client.post(DEVICE, data={"scope": "identify"}, auth=(app.id, "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    # a confidential client naming itself without its secret is not authenticated
    assert (await client.post(DEVICE, data={"scope": "identify", "client_id": app.id})).status_code == 401


# --- the whole flow -----------------------------------------------------------------------------

async def test_pending_then_approved_gives_tokens_once(client, setup, rt):
    _owner, app, user = setup
    pair = await started(client, app, "identify guilds")
    pending = await poll(client, app, pair["device_code"])
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    assert pending.headers["cache-control"] == "no-store"

    # verification_uri_complete: the form comes prefilled, and nothing is decided by opening it
    form = await client.get(pair["verification_uri_complete"].removeprefix("http://testserver"))
    assert form.status_code == 200 and f'value="{pair["user_code"]}"' in form.text
    assert form.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in form.headers[
        "content-security-policy"]
    consent = await activate(client, pair["user_code"], "continue")
    assert consent.status_code == 200
    assert "Living Room TV" in consent.text and "viewer" in consent.text
    assert re.search(r'id="device-code">' + pair["user_code"], consent.text)
    listed = [(scope, unescape(text)) for scope, text in re.findall(r'<li data-scope="(\w+)">([^<]*)</li>',
                                                                    consent.text)]
    assert [scope for scope, _ in listed] == ["identify", "guilds"]
    assert (await poll(client, app, pair["device_code"])).json()["error"] in ("authorization_pending", "slow_down")

    done = await activate(client, pair["user_code"], "authorize")
    assert done.status_code == 200 and "return to your device" in done.text
    granted = await poll(client, app, pair["device_code"])
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "identify guilds" and body["expires_in"] == 604800
    assert body["refresh_token"] and "id_token" not in body
    me = await client.get("/api/v1/users/@me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == user.id
    row = await code_row(rt, pair["device_code"])
    assert row.user_id == int(user.id) and row.consumed_at is not None and row.grant_id is not None

    # the user's authorized apps list it, like a code grant
    listed = (await client.get("/api/v1/oauth2/@me/authorizations", headers=user.headers)).json()
    assert [entry["application"]["id"] for entry in listed] == [app.id]
    # the code is spent: the form no longer finds it, and a second redemption is refused
    assert (await activate(client, pair["user_code"], "continue")).status_code == 400
    again = await poll(client, app, pair["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_denied_answers_access_denied(client, setup):
    _owner, app, _user = setup
    pair = await started(client, app)
    await activate(client, pair["user_code"], "continue")
    done = await activate(client, pair["user_code"], "cancel")
    assert done.status_code == 200 and 'data-approved="false"' in done.text and "return to your device" in done.text
    denied = await poll(client, app, pair["device_code"])
    assert denied.status_code == 400 and denied.json()["error"] == "access_denied"
    # decided once: neither approved later, nor shown again
    assert (await activate(client, pair["user_code"], "authorize")).status_code == 400
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "access_denied"


async def test_an_expired_code_answers_expired_token_and_cannot_be_entered(client, setup, rt):
    _owner, app, _user = setup
    pair = await started(client, app)
    await set_code(rt, pair["device_code"], expires_at=time.time() - 1)
    expired = await poll(client, app, pair["device_code"])
    assert expired.status_code == 400 and expired.json()["error"] == "expired_token"
    refused = await activate(client, pair["user_code"], "continue")
    assert refused.status_code == 400 and "not valid" in refused.text


async def test_an_approved_code_that_expired_before_the_poll_is_expired_token(client, setup, rt):
    _owner, app, _user = setup
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    await set_code(rt, pair["device_code"], expires_at=time.time() - 1)
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "expired_token"


async def test_polling_too_fast_is_slow_down_and_the_interval_grows(client, setup, rt):
    _owner, app, _user = setup
    pair = await started(client, app)
    first = await poll(client, app, pair["device_code"])
    assert first.json()["error"] == "authorization_pending" and "interval" not in first.json()
    second = await poll(client, app, pair["device_code"])
    assert second.status_code == 400 and second.json()["error"] == "slow_down" and second.json()["interval"] == 10
    third = await poll(client, app, pair["device_code"])
    assert third.json() == {"error": "slow_down", "error_description": "poll at most every 15 seconds",
                            "interval": 15}
    # waiting the (new) interval is honoured: pending again, the interval kept
    await set_code(rt, pair["device_code"], last_polled_at=time.time() - 15.5)
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "authorization_pending"
    assert (await code_row(rt, pair["device_code"])).interval == 15
    # an approved code is redeemed however soon the poll comes
    await approve(client, pair["user_code"])
    assert (await poll(client, app, pair["device_code"])).status_code == 200


async def test_a_public_client_uses_its_client_id_alone(client, setup):
    owner, _app, user = setup
    public = await create_app(client, owner, name="Phone", public_client=True, bot=False)
    pair = await started(client, public, "identify")
    with_secret = await client.post(DEVICE, data={"scope": "identify"}, auth=(public.id, "anything"))
    assert with_secret.status_code == 401  # a public client has no secret to present
    assert (await poll(client, public, pair["device_code"])).json()["error"] == "authorization_pending"
    await approve(client, pair["user_code"])
    granted = await poll(client, public, pair["device_code"])
    assert granted.status_code == 200, granted.text
    me = await client.get("/api/v1/users/@me", headers=bearer(granted.json()["access_token"]))
    assert me.json()["id"] == user.id


async def test_openid_adds_an_id_token_with_auth_time_and_no_nonce(client, setup, rt):
    _owner, app, user = setup
    pair = await started(client, app, "openid email")
    await approve(client, pair["user_code"])
    granted = await poll(client, app, pair["device_code"])
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["scope"] == "identify email openid"
    keys = KeySet.import_key_set((await client.get("/api/v1/oauth2/keys")).json())
    claims = jwt.decode(body["id_token"], keys, algorithms=["RS256", "ES256"]).claims
    assert claims["iss"] == "http://testserver" and claims["aud"] == app.id and claims["sub"] == user.id
    assert claims["email"] == "viewer@example.com" and "nonce" not in claims
    async with rt.db.read() as conn:  # auth_time: when the approving user signed in (the browser's session)
        signed_in = (await conn.execute(select(sessions.c.created_at).where(
            sessions.c.token_hash == credentials.sha256(client.cookies["fluxer_session"])))).scalar_one()
    assert claims["auth_time"] == int(signed_in)


async def test_refresh_after_the_device_grant_works(client, setup):
    _owner, app, _user = setup
    pair = await started(client, app, "identify")
    await approve(client, pair["user_code"])
    first = (await poll(client, app, pair["device_code"])).json()
    refreshed = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                                  auth=app.basic)
    assert refreshed.status_code == 200, refreshed.text
    assert (await client.get("/api/v1/users/@me", headers=bearer(refreshed.json()["access_token"]))).status_code == 200
    assert (await client.get("/api/v1/users/@me", headers=bearer(first["access_token"]))).status_code == 401


async def test_another_clients_device_code_is_invalid_grant_and_left_alone(client, setup, rt):
    owner, app, _user = setup
    other = await create_app(client, owner, name="Other")
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    stolen = await poll(client, other, pair["device_code"])
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert (await code_row(rt, pair["device_code"])).last_polled_at is None  # nothing recorded on it
    assert (await poll(client, app, pair["device_code"])).status_code == 200
    unknown = await poll(client, app, "not-a-device-code")
    assert unknown.json()["error"] == "invalid_grant"


async def test_a_second_approval_widens_the_remembered_consent(client, setup):
    _owner, app, user = setup
    for scope in ("identify", "guilds"):
        pair = await started(client, app, scope)
        await approve(client, pair["user_code"])
        assert (await poll(client, app, pair["device_code"])).status_code == 200
    listed = (await client.get("/api/v1/oauth2/@me/authorizations", headers=user.headers)).json()
    assert listed[0]["scopes"] == ["identify", "guilds"]


# --- the /activate pages ------------------------------------------------------------------------

@pytest.mark.parametrize("typed", ["{code}", "{plain}", "{lower}", " {lower_spaced} ", "{plain_hyphens}"])
async def test_entry_ignores_case_hyphens_and_spaces(client, setup, typed):
    _owner, app, _user = setup
    shown = (await started(client, app))["user_code"]
    plain = shown.replace("-", "")
    entered = typed.format(code=shown, plain=plain, lower=shown.lower(), lower_spaced=" ".join(plain.lower()),
                           plain_hyphens="-".join(plain))
    consent = await activate(client, entered, "continue")
    assert consent.status_code == 200 and re.search(r'id="device-code">' + shown, consent.text), consent.text


async def test_signed_out_visitors_log_in_and_come_back_with_their_code(client, setup):
    _owner, app, _user = setup
    pair = await started(client, app)
    stranger = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with stranger:
        first = await stranger.get(f"/activate?user_code={pair['user_code']}")
        assert first.status_code == 302
        assert first.headers["location"] == "/login?next=" + quote(f"/activate?user_code={pair['user_code']}",
                                                                   safe="")
        login_page = await stranger.get(first.headers["location"])
        next_url = unescape(re.search(r'name="next" value="([^"]+)"', login_page.text).group(1))
        logged_in = await stranger.post("/login", data={"csrf_token": csrf_of(login_page.text), "login": "devowner",
                                                        "password": "correct horse battery", "next": next_url})
        assert logged_in.headers["location"] == f"/activate?user_code={pair['user_code']}"
        form = await stranger.get(logged_in.headers["location"])
        assert f'value="{pair["user_code"]}"' in form.text and "devowner" in form.text


async def test_wrong_and_malformed_codes_answer_alike(client, setup):
    _owner, app, _user = setup
    await started(client, app)
    for typed in ("BCDF-GHJK", "AAAA-AAAA", "short", "", "x" * 40):
        refused = await activate(client, typed, "continue")
        assert refused.status_code == 400 and "That code is not valid" in refused.text, typed


async def test_the_form_needs_its_csrf_token_and_this_site(client, setup):
    _owner, app, _user = setup
    pair = await started(client, app)
    forged = await client.post("/activate", data={"csrf_token": "forged", "user_code": pair["user_code"],
                                                  "action": "authorize"})
    assert forged.status_code == 403
    page = await client.get("/activate")
    cross_site = await client.post("/activate", headers={"Origin": "https://evil.example"}, data={
        "csrf_token": csrf_of(page.text), "user_code": pair["user_code"], "action": "authorize"})
    assert cross_site.status_code == 403
    assert (await poll(client, app, pair["device_code"])).json()["error"] == "authorization_pending"
