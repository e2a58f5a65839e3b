"""FLUXER_REQUIRE_STAFF_MFA: where it is on, a staff member without two-factor sign-in can
neither use the admin API (with their session or an admin-scoped token they already hold)
nor approve the admin scope; turning two-factor on lets them, turning it off ends their
admin-scope grants. Where it is off (the default), two-factor changes nothing for staff.

``client`` is the app with the default settings; ``strict`` the same database served with
the setting on, as after an operator turns it on."""

from __future__ import annotations

import time

import httpx
import pyotp
import pytest

from fluxer_oauth.app import build_app
from fluxer_oauth.platform import admin, two_factor
from fluxer_oauth.store import users as user_store
from tests.api.test_authorize import authorize_url, browser_login
from tests.conftest import PASSWORD, bearer, consent, create_app, query_of, register, tokens_for

ADMIN_USERS = "/api/v1/admin/users"
MFA_REFUSAL = {"code": "ACCESS_DENIED", "message": "staff members must turn on two-factor sign-in to use the admin API"}


@pytest.fixture
async def strict(settings):
    app = build_app(settings.model_copy(update={"require_staff_mfa": True}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        http.rt = app.state.runtime
        yield http
    await app.state.runtime.db.close()


@pytest.fixture
async def staff_setup(client, rt):
    staff = await register(client, "staffer")
    await admin.set_staff(rt, None, int(staff.id), True)
    app = await create_app(client, staff)
    await admin.set_application_trusted(rt, None, int(app.id), True)
    return staff, app


async def user_row(rt, account):
    async with rt.db.read() as conn:
        return await user_store.get_user(conn, int(account.id))


async def turn_on_two_factor(rt, account) -> pyotp.TOTP:
    totp = pyotp.TOTP(two_factor.new_secret())
    await two_factor.enable(rt, await user_row(rt, account), secret=totp.secret, code=totp.now(), password=PASSWORD)
    return totp


def next_code(totp: pyotp.TOTP) -> str:
    """A code of the next time step: the current one was spent turning two-factor on."""
    return totp.at(time.time() + two_factor.STEP_SECONDS)


async def test_staff_without_two_factor_are_refused_the_admin_api_where_it_is_required(client, strict,
                                                                                     staff_setup):
    staff, app = staff_setup
    admin_token = bearer((await tokens_for(client, staff, app, scope="identify admin"))["access_token"])

    for credential in (staff.headers, admin_token):
        refused = await strict.get(ADMIN_USERS, headers=credential)
        assert (refused.status_code, refused.json()) == (403, MFA_REFUSAL)
        assert (await client.get(ADMIN_USERS, headers=credential)).status_code == 200  # the setting off: as ever
    denied = await consent(strict, staff, app, scope="identify admin")
    assert denied["error"] == "access_denied" and "two-factor" in denied["error_description"]
    assert "code" in await consent(strict, staff, app, scope="identify")  # only the admin scope needs it

    await turn_on_two_factor(strict.rt, staff)
    for credential in (staff.headers, admin_token):
        assert (await strict.get(ADMIN_USERS, headers=credential)).status_code == 200
    assert "code" in await consent(strict, staff, app, scope="identify admin")


async def test_the_consent_page_refuses_admin_to_staff_without_two_factor(strict, staff_setup):
    staff, app = staff_setup
    await browser_login(strict, "staffer")
    page = await strict.get(authorize_url(app.id, scope="identify admin"))
    assert page.status_code == 302 and page.headers["location"].startswith("https://client.example/callback?")
    assert query_of(page.headers["location"])["error"] == "access_denied"

    await turn_on_two_factor(strict.rt, staff)
    page = await strict.get(authorize_url(app.id, scope="identify admin"))
    assert page.status_code == 200 and 'data-scope="admin"' in page.text


@pytest.mark.parametrize("turned_off_by", ["the user", "an operator"])
async def test_turning_two_factor_off_ends_a_staff_members_admin_grants(strict, staff_setup, turned_off_by):
    staff, app = staff_setup
    other = await create_app(strict, staff, name="Not Admin")
    totp = await turn_on_two_factor(strict.rt, staff)
    admin_token = bearer((await tokens_for(strict, staff, app, scope="identify admin"))["access_token"])
    plain_token = bearer((await tokens_for(strict, staff, other, scope="identify"))["access_token"])
    assert (await strict.get(ADMIN_USERS, headers=admin_token)).status_code == 200

    user = await user_row(strict.rt, staff)
    if turned_off_by == "the user":
        await two_factor.disable(strict.rt, user, password=PASSWORD, code=next_code(totp))
    else:
        await two_factor.operator_reset(strict.rt, user)

    assert (await strict.get(ADMIN_USERS, headers=admin_token)).status_code == 401  # the grant ended
    assert (await strict.get("/api/v1/users/@me", headers=plain_token)).status_code == 200  # no admin: kept
    refused = await strict.get(ADMIN_USERS, headers=staff.headers)
    assert (refused.status_code, refused.json()) == (403, MFA_REFUSAL)


async def test_without_the_setting_two_factor_changes_nothing_for_staff(client, rt, staff_setup):
    staff, app = staff_setup
    admin_token = bearer((await tokens_for(client, staff, app, scope="identify admin"))["access_token"])
    totp = await turn_on_two_factor(rt, staff)
    await two_factor.disable(rt, await user_row(rt, staff), password=PASSWORD, code=next_code(totp))
    for credential in (staff.headers, admin_token):
        assert (await client.get(ADMIN_USERS, headers=credential)).status_code == 200
    assert "code" in await consent(client, staff, app, scope="identify admin")
