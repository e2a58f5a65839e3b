"""Every throttle keys on what the caller proved (SPEC §7): a request that did not prove who
it is spends nothing but its own address's allowance. With FLUXER_TEST_BACKEND=postgres the
counters are in Redis."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fluxer_oauth.app import build_app
from tests.conftest import PASSWORD, create_app, register


@pytest.fixture
async def limited_app(settings):
    app = build_app(settings.model_copy(update={"rate_limits": "on"}))
    yield app
    await app.state.runtime.db.close()


def client_at(app, ip: str) -> httpx.AsyncClient:
    """A client whose requests come from ``ip``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://testserver")


async def cc(http, client_id: str, secret: str) -> httpx.Response:
    return await http.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


async def test_failed_client_auth_naming_another_client_never_locks_it_out(limited_app):
    async with client_at(limited_app, "10.0.0.1") as owner_http, client_at(limited_app, "10.0.0.66") as attacker:
        owner = await register(owner_http)
        app = await create_app(owner_http, owner)
        answers = [(await cc(attacker, app.id, "wrong")).status_code for _ in range(15)]
        assert answers == [401] * 10 + [429] * 5  # the attacker's address ran out of failures
        assert [(await cc(owner_http, app.id, app.secret)).status_code for _ in range(10)] == [200] * 10


async def test_revocation_failures_count_against_the_address_not_the_client(limited_app):
    async with client_at(limited_app, "10.0.0.1") as owner_http, client_at(limited_app, "10.0.0.66") as attacker:
        owner = await register(owner_http)
        app = await create_app(owner_http, owner)
        for _ in range(12):
            await attacker.post("/api/v1/oauth2/revoke", data={"token": "x"}, auth=(app.id, "wrong"))
        revoked = await owner_http.post("/api/v1/oauth2/revoke", data={"token": "x"}, auth=app.basic)
        assert revoked.status_code == 200 and revoked.headers["x-ratelimit-remaining"] == "9"


async def test_client_id_has_one_spelling_and_one_bucket(limited_app):
    async with client_at(limited_app, "10.0.0.1") as http:
        owner = await register(http)
        app = await create_app(http, owner)
        for spelling in ("0" + app.id, " " + app.id, app.id + " ", "+" + app.id):
            other = await cc(http, spelling, app.secret)
            assert other.status_code == 401 and other.headers["x-ratelimit-bucket"] == "client_auth"
        answers = [(await cc(http, app.id, app.secret)) for _ in range(11)]
        assert [a.status_code for a in answers] == [200] * 10 + [429]
        assert {a.headers["x-ratelimit-bucket"] for a in answers} == {"token"}


async def login(http, name: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"login": name, "password": password})


async def test_wrong_passwords_from_one_address_never_lock_the_owner_out(limited_app):
    async with client_at(limited_app, "10.0.0.1") as owner_http, client_at(limited_app, "10.0.0.66") as attacker:
        await register(owner_http, "target")
        answers = [(await login(attacker, "target", "wrong password")).status_code for _ in range(15)]
        assert answers == [400] * 10 + [429] * 5
        assert (await login(owner_http, "target", PASSWORD)).status_code == 200


async def test_parallel_guesses_cannot_all_pass_the_check_before_one_is_counted(limited_app):
    async with client_at(limited_app, "10.0.0.66") as http:
        await register(http, "target")
        answers = await asyncio.gather(*[login(http, "target", "wrong password") for _ in range(30)])
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [400] * 10 + [429] * 20


async def test_username_and_email_count_as_one_account(limited_app):
    async with client_at(limited_app, "10.0.0.66") as http:
        await register(http, "target")
        names = ["target", "TARGET", "target@example.com", " Target@Example.com "]
        answers = [(await login(http, names[n % 4], "wrong password")).status_code for n in range(11)]
        assert answers == [400] * 10 + [429]


async def test_failures_from_one_address_are_limited_across_accounts(limited_app):
    async with client_at(limited_app, "10.0.0.66") as http:
        answers = [(await login(http, f"nobody{n}", "wrong password")).status_code for n in range(31)]
        assert answers == [400] * 30 + [429]


async def test_registration_is_limited_per_address(limited_app):
    async with client_at(limited_app, "10.0.0.66") as http, client_at(limited_app, "10.0.0.1") as other:
        answers = [(await http.post("/api/v1/auth/register", json={
            "username": f"spam{n}", "email": f"spam{n}@example.com", "password": PASSWORD})).status_code
            for n in range(11)]
        assert answers == [201] * 10 + [429]
        await register(other)  # another address registers as usual


async def test_password_confirmations_are_throttled(limited_app):
    async with client_at(limited_app, "10.0.0.66") as http:
        owner = await register(http)
        app = await create_app(http, owner)
        path = f"/api/v1/oauth2/applications/{app.id}/client-secret/reset"
        answers = [(await http.post(path, json={"password": "guess"}, headers=owner.headers)).status_code
                   for _ in range(11)]
        assert answers == [403] * 10 + [429]
        # Even the right password waits now: the guesser learns nothing more.
        assert (await http.post(path, json={"password": PASSWORD}, headers=owner.headers)).status_code == 429


async def test_failed_introspection_authentication_counts_against_the_address(limited_app):
    async with client_at(limited_app, "10.0.0.66") as http:
        answers = [(await http.post("/api/v1/oauth2/introspect", data={"token": "x"}, auth=("1234", "wrong")))
                   for _ in range(11)]
        assert [a.status_code for a in answers] == [401] * 10 + [429]
        assert answers[0].headers["x-ratelimit-bucket"] == "client_auth"
