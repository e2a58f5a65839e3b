"""Rate limits (SPEC §7): buckets, keys, headers, 429 bodies, overrides, trusted proxies,
failed logins, and failing open when Redis is gone. With FLUXER_TEST_BACKEND=postgres the
same tests run on Redis storage."""

from __future__ import annotations

import httpx
import pytest

from fluxer_oauth.app import build_app
from tests.conftest import PASSWORD, create_app, make_settings, register


@pytest.fixture
def limited_settings(settings):
    return settings.model_copy(update={"rate_limits": "on"})


@pytest.fixture
async def limited_client(limited_settings):
    app = build_app(limited_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        yield http
    await app.state.runtime.db.close()


async def cc(client, app, **kwargs):
    return await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=app.basic, **kwargs)


async def test_token_endpoint_allows_ten_per_ten_seconds_then_429(limited_client):
    owner = await register(limited_client)
    app = await create_app(limited_client, owner)
    other = await create_app(limited_client, owner, name="other")
    answers = [await cc(limited_client, app) for _ in range(11)]
    assert [a.status_code for a in answers] == [200] * 10 + [429]
    first, last = answers[0], answers[-1]
    assert first.headers["x-ratelimit-limit"] == "10" and first.headers["x-ratelimit-remaining"] == "9"
    assert first.headers["x-ratelimit-bucket"] == "token"
    assert float(first.headers["x-ratelimit-reset-after"]) <= 10 and int(first.headers["x-ratelimit-reset"]) > 0
    body = last.json()
    assert body["code"] == "RATE_LIMITED" and body["global"] is False and 0 < body["retry_after"] <= 11
    assert 1 <= int(last.headers["retry-after"]) <= 11 and last.headers["x-ratelimit-remaining"] == "0"
    assert (await cc(limited_client, other)).status_code == 200  # keyed by client_id


async def test_errors_on_limited_routes_carry_the_headers(limited_client):
    response = await limited_client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                         auth=("123", "wrong"))
    # A client that did not authenticate counts against its address's failures, not a client.
    assert response.status_code == 401 and response.headers["x-ratelimit-bucket"] == "client_auth"


async def test_revoke_is_limited_per_client(limited_client):
    owner = await register(limited_client)
    app = await create_app(limited_client, owner)
    codes = [(await limited_client.post("/api/v1/oauth2/revoke", data={"token": "x"}, auth=app.basic)).status_code
             for _ in range(11)]
    assert codes == [200] * 10 + [429]


async def test_authorize_is_limited_per_ip_when_logged_out(limited_client):
    codes = [(await limited_client.get("/oauth2/authorize?client_id=1")).status_code for _ in range(11)]
    assert codes == [400] * 10 + [429]


async def test_per_application_override(settings):
    owner_settings = settings.model_copy(update={"rate_limits": "on"})
    app = build_app(owner_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        owner = await register(http)
        client_app = await create_app(http, owner)
    await app.state.runtime.db.close()
    overridden = build_app(owner_settings.model_copy(update={"rate_limit_overrides": {client_app.id: "15/10seconds"}}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=overridden), base_url="http://testserver") as http:
        codes = [(await cc(http, client_app)).status_code for _ in range(16)]
    await overridden.state.runtime.db.close()
    assert codes == [200] * 15 + [429]


async def test_global_limit_per_ip_and_trusted_proxies(settings):
    tight = settings.model_copy(update={"rate_limits": "on", "rate_limit_global": "5/10seconds",
                                        "trusted_proxies": "127.0.0.1, 10.0.0.0/8"})
    app = build_app(tight)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        codes = [(await http.get("/api/v1/nothing", headers={"X-Forwarded-For": "203.0.113.7"})).status_code
                 for _ in range(6)]
        assert codes == [404] * 5 + [429]
        limited = await http.get("/api/v1/nothing", headers={"X-Forwarded-For": "203.0.113.7"})
        assert limited.json()["global"] is True
        # another client behind the same trusted proxies has its own bucket
        other = await http.get("/api/v1/nothing", headers={"X-Forwarded-For": "198.51.100.1, 10.1.2.3"})
        assert other.status_code == 404
        assert (await http.get("/healthz", headers={"X-Forwarded-For": "203.0.113.7"})).status_code == 200
    untrusted = httpx.ASGITransport(app=app, client=("192.0.2.50", 5000))
    async with httpx.AsyncClient(transport=untrusted, base_url="http://testserver") as http:
        # a peer that is not a trusted proxy cannot pick its bucket with the header
        codes = [(await http.get("/api/v1/nothing", headers={"X-Forwarded-For": f"198.51.100.{n}"})).status_code
                 for n in range(6)]
        assert codes == [404] * 5 + [429]
    await app.state.runtime.db.close()


async def test_failed_logins_are_limited_per_account(settings):
    tight = settings.model_copy(update={"rate_limits": "on", "rate_limit_login_failures": "3/minute"})
    app = build_app(tight)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        await register(http, "target")
        for _ in range(3):
            wrong = await http.post("/api/v1/auth/login", json={"login": "target", "password": "wrong password"})
            assert wrong.status_code == 400
        right = await http.post("/api/v1/auth/login", json={"login": "target", "password": PASSWORD})
        assert right.status_code == 429 and right.json()["code"] == "RATE_LIMITED"
    await app.state.runtime.db.close()


async def test_rate_limits_off_disables_them(client):
    owner = await register(client)
    app = await create_app(client, owner)
    codes = [(await cc(client, app)).status_code for _ in range(15)]
    assert codes == [200] * 15
    assert "x-ratelimit-limit" not in (await cc(client, app)).headers


async def test_unreachable_redis_fails_open(database_url):
    settings = make_settings(database_url, rate_limits="on", redis_url="redis://127.0.0.1:1/0")
    app = build_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        owner = await register(http)
        client_app = await create_app(http, owner)
        codes = [(await cc(http, client_app)).status_code for _ in range(12)]
        assert codes == [200] * 12
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"database": True, "redis": False}
    await app.state.runtime.db.close()
