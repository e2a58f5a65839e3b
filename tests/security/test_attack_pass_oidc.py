"""Attack pass on OpenID Connect, public clients and the device grant: each test names the
behaviour it protects and failed when it was written."""

from __future__ import annotations

import time

import pytest

from fluxer_oauth.oauth.authorize import login_marker
from tests.api.test_authorize import authorize_url, browser_login
from tests.api.test_device import DEVICE_GRANT, TOKEN, approve, started
from tests.api.test_openid import _age_session, _sign_in_again
from tests.conftest import create_app, query_of, register

CB = "https://client.example/callback"


@pytest.fixture
async def setup(client):
    owner = await register(client, "attack_owner")
    return owner, await create_app(client, owner)


# --- prompt=login / max_age: the login_after marker ---------------------------------------------

async def test_a_login_after_marker_from_another_users_sign_in_does_not_skip_prompt_login(client, setup):
    """A marker the server handed to one browser (in the Location of its prompt=login
    redirect) is copied into another browser's request: the other user never signed in
    again for it, so prompt=login must still send them to the login page."""
    _owner, app = setup
    await register(client, "marker_donor")
    await register(client, "marker_victim")
    await browser_login(client, "marker_donor")
    first = await client.get(authorize_url(app.id, scope="openid", prompt="login"))
    back = await _sign_in_again(client, first.headers["location"], "marker_donor")
    marker = query_of(back)["login_after"]

    client.cookies.clear()  # another browser, where the victim is signed in
    await browser_login(client, "marker_victim")
    response = await client.get(authorize_url(app.id, scope="openid", prompt="login", login_after=marker))
    assert response.status_code == 302 and response.headers["location"].startswith("/login?again=1&"), (
        response.status_code, response.headers.get("location"))


async def test_a_stale_login_after_marker_does_not_satisfy_max_age(client, setup, rt):
    """A marker the server signed an hour ago (anyone can collect one from any prompt=login
    redirect and keep it) must not let a session older than max_age through."""
    _owner, app = setup
    await register(client, "stale_session")
    await browser_login(client, "stale_session")
    await _age_session(rt, 600)
    stale = login_marker(rt.secret, client.cookies["fluxer_session"], app.id, time.time() - 3600)
    response = await client.get(authorize_url(app.id, scope="openid", max_age="60", login_after=stale))
    assert response.status_code == 302 and response.headers["location"].startswith("/login?again=1&"), (
        response.status_code, response.headers.get("location"))


# --- max_age parsing ----------------------------------------------------------------------------

@pytest.mark.parametrize("max_age", ["²", "١٢٣", "６０"])
async def test_max_age_with_non_ascii_digits_is_invalid_request(client, setup, max_age):
    """max_age is ASCII digits: '²' passed str.isdigit() and crashed int() (a 500), and other
    scripts' digits were read as numbers."""
    owner, app = setup
    await browser_login(client, "attack_owner")
    response = await client.get(authorize_url(app.id, scope="openid", max_age=max_age))
    assert response.status_code == 302, response.status_code
    location = response.headers["location"]
    assert location.startswith(CB) and query_of(location)["error"] == "invalid_request", location


# --- public clients and the device grant --------------------------------------------------------

async def test_a_device_code_issued_to_a_confidential_client_needs_a_secret_after_it_turns_public(client, setup):
    """A device code requested and approved while the client was confidential was protected by
    its secret; once the client is public, client_id alone must not redeem it (as a code issued
    without PKCE before the switch is refused)."""
    owner, app = setup
    await register(client, "tv_viewer")
    await browser_login(client, "tv_viewer")
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    switched = await client.patch(f"/api/v1/oauth2/applications/{app.id}", headers=owner.headers,
                                  json={"public_client": True})
    assert switched.status_code == 200 and switched.json()["public_client"] is True
    response = await client.post(TOKEN, data={"grant_type": DEVICE_GRANT, "device_code": pair["device_code"],
                                              "client_id": app.id})
    assert response.status_code == 400 and response.json()["error"] in ("access_denied", "invalid_grant"), (
        response.status_code, response.text)
