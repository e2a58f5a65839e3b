"""Operations (SPEC §8, issue 5): health, readiness, metrics, JSON logs, and behaviour while
the database is unreachable, including recovery without partial grants."""

from __future__ import annotations

import json
import time
import io
import logging
import secrets
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from fluxer_oauth.app import build_app
from fluxer_oauth.core import credentials
from fluxer_oauth.store.tables import tokens
from tests.backends import POSTGRES_URL
from tests.conftest import bearer, create_app, exchange, get_code, make_settings, register, tokens_for
from tests.tcp_proxy import CuttableProxy


async def test_health_readiness_and_metrics(client, app):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] is True
    owner = await register(client)
    client_app = await create_app(client, owner)
    await tokens_for(client, owner, client_app)
    await client.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=client_app.basic)
    await client.get("/api/v1/users/@me", headers=owner.headers)
    text = (await client.get("/metrics")).text
    assert 'fluxer_http_requests_total{method="GET",route="/api/v1/users/@me",status="200"}' in text
    assert 'fluxer_tokens_issued_total{grant_type="client_credentials"}' in text
    assert 'fluxer_tokens_issued_total{grant_type="authorization_code"}' in text
    assert 'fluxer_http_request_duration_seconds_bucket{le="0.005",route="/api/v1/oauth2/token"}' in text


async def test_access_log_lines_are_json_with_request_id_and_no_query(client, access_lines):
    owner = await register(client)
    response = await client.get("/api/v1/users/@me?secret=shh", headers=owner.headers)
    request_id = response.headers["x-request-id"]
    lines = [line for line in access_lines.lines() if line["request_id"] == request_id]
    assert len(lines) == 1
    assert lines[0] | {"ts": 0, "ms": 0} == {
        "ts": 0, "level": "info", "logger": "fluxer.http", "msg": "request", "request_id": request_id,
        "method": "GET", "path": "/api/v1/users/@me", "status": 200, "ms": 0}
    assert lines[0]["ms"] > 0 and abs(lines[0]["ts"] - time.time()) < 60


def test_the_access_log_drops_and_counts_rather_than_block_when_its_writer_is_behind(monkeypatch):
    """A writer that cannot keep up (a full pipe, a slow disk) never holds requests: batches
    beyond the bounded queue are dropped and counted."""
    import threading

    from fluxer_oauth.ops import access_log, metrics

    stuck = threading.Event()

    class Blocked(io.BytesIO):
        def write(self, data):
            stuck.wait(10)
            return super().write(data)

    monkeypatch.setattr(access_log, "MAX_PENDING_BATCHES", 2)
    log = access_log.AccessLog(stream=Blocked())
    before = metrics.ACCESS_LOG_DROPPED._value.get()
    started = time.perf_counter()
    for index in range(10):  # one batch each (no event loop: handed over at once)
        log.record(f"id{index}", "GET", "/x", 200, 1.0)
    assert time.perf_counter() - started < 1.0
    stuck.set()
    log.flush()
    written = log._stream.getvalue().count(b"\n")
    dropped = metrics.ACCESS_LOG_DROPPED._value.get() - before
    assert written + dropped == 10 and dropped >= 7


@pytest.fixture
def dead_database_app():
    settings = make_settings("postgresql://postgres@127.0.0.1:1/nothing")
    return build_app(settings)


async def test_unreachable_database_gives_503_everywhere_but_healthz(dead_database_app):
    from fluxer_oauth.ops import metrics

    errors_before = metrics.DATABASE_ERRORS._value.get()
    transport = httpx.ASGITransport(app=dead_database_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/api/v1/users/@me", headers={"Authorization": "flx_" + "a" * 36})
        assert response.status_code == 503 and response.json()["code"] == "SERVICE_UNAVAILABLE"
        token = await http.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"}, auth=("1", "x"))
        assert token.status_code == 503
        page = await http.get("/oauth2/authorize?client_id=1&scope=identify&response_type=code")
        assert page.status_code == 503 and "temporarily unavailable" in page.text
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200
    # one count per request that met the outage, whichever layer answered it (the bearer
    # lookup is tried twice, by the fast path and the full handler); readiness is not one
    assert metrics.DATABASE_ERRORS._value.get() - errors_before == 3
    await dead_database_app.state.runtime.db.close()


@pytest.fixture
async def proxied_postgres():
    """A PostgreSQL database reached through a proxy the test can cut (on either backend)."""
    name = f"fluxer_outage_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f"CREATE DATABASE {name}")
    target = urlsplit(POSTGRES_URL)
    proxy = CuttableProxy(target.hostname, target.port or 5432)
    await proxy.start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}"
    from fluxer_oauth.store.database import Database
    from fluxer_oauth.store.migrate import migrate

    db = Database(url.replace("postgresql://", "postgresql+asyncpg://"))
    await migrate(db)
    await db.close()
    yield proxy, url
    if proxy.server is not None and proxy.server.is_serving():
        await proxy.cut()
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.close()


async def test_database_outage_gives_clean_503s_then_recovers_without_partial_grants(proxied_postgres):
    proxy, url = proxied_postgres
    app = build_app(make_settings(url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        owner = await register(http)
        client_app = await create_app(http, owner)
        live = await tokens_for(http, owner, client_app)
        code = await get_code(http, owner, client_app)

        await proxy.cut()
        during = [
            await http.get("/api/v1/users/@me", headers=bearer(live["access_token"])),
            await exchange(http, client_app, code),
            await http.post("/api/v1/oauth2/token", auth=client_app.basic,
                            data={"grant_type": "refresh_token", "refresh_token": live["refresh_token"]}),
        ]
        assert [r.status_code for r in during] == [503, 503, 503]
        assert all(r.json()["code"] == "SERVICE_UNAVAILABLE" for r in during)
        assert (await http.get("/readyz")).status_code == 503

        await proxy.restore()
        assert (await http.get("/api/v1/users/@me", headers=bearer(live["access_token"]))).status_code == 200
        # the code whose exchange failed mid-outage was not consumed: no partial grant
        redeemed = await exchange(http, client_app, code)
        assert redeemed.status_code == 200, redeemed.text
        refreshed = await http.post("/api/v1/oauth2/token", auth=client_app.basic,
                                    data={"grant_type": "refresh_token", "refresh_token": live["refresh_token"]})
        assert refreshed.status_code == 200
        async with app.state.runtime.db.read() as conn:
            count = (await conn.execute(select(func.count()).select_from(tokens))).scalar_one()
        assert count == 6  # three pairs: the first, the late redemption, the refresh
    await app.state.runtime.db.close()


async def test_a_refresh_whose_commit_acknowledgement_was_lost_can_be_retried(proxied_postgres):
    """The refresh commits, the connection drops before the client hears it (503): the
    client's retry with the same refresh token is within the reuse leeway, so the user stays
    signed in instead of the grant ending as reuse (docs/reliability.md)."""
    proxy, url = proxied_postgres
    app = build_app(make_settings(url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        owner = await register(http)
        client_app = await create_app(http, owner)
        live = await tokens_for(http, owner, client_app, scope="identify guilds")

        # The full path (a scope sent) writes in one transaction: its COMMIT's answer is lost.
        proxy.lose_answer_after(b"INSERT INTO tokens", b"COMMIT")
        refresh = {"grant_type": "refresh_token", "refresh_token": live["refresh_token"], "scope": "identify guilds"}
        lost = await http.post("/api/v1/oauth2/token", auth=client_app.basic, data=refresh)
        assert proxy.answers_lost == 1 and lost.status_code == 503, lost.text
        async with app.state.runtime.db.read() as conn:
            rotated = (await conn.execute(select(tokens.c.rotated).where(
                tokens.c.token_hash == credentials.stored_token_key(live["refresh_token"])))).scalar_one()
        assert rotated  # it did commit

        retried = await http.post("/api/v1/oauth2/token", auth=client_app.basic, data=refresh)
        assert retried.status_code == 200, retried.text
        assert (await http.get("/api/v1/users/@me", headers=bearer(retried.json()["access_token"]))).status_code == 200
        moved_on = await http.post("/api/v1/oauth2/token", auth=client_app.basic,
                                   data={"grant_type": "refresh_token", "refresh_token": retried.json()["refresh_token"]})
        assert moved_on.status_code == 200, moved_on.text
    await app.state.runtime.db.close()


async def test_a_database_that_takes_no_more_connections_is_a_503_not_a_500():
    """PostgreSQL out of connections (its max_connections, here a role allowed none) is the
    store unavailable for now: 503 SERVICE_UNAVAILABLE, as for an unreachable database."""
    role = f"fluxer_full_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    try:
        target = urlsplit(POSTGRES_URL)
        url = f"postgresql://{role}@{target.hostname}:{target.port or 5432}{target.path}"
        app = build_app(make_settings(url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            lookup = await http.get("/api/v1/users/@me", headers={"Authorization": "Bearer " + "x" * 51})
            write = await http.post("/api/v1/auth/register", json={
                "username": "late", "email": "late@example.com", "password": "correct horse battery"})
        assert [lookup.status_code, write.status_code] == [503, 503], (lookup.text, write.text)
        assert write.json()["code"] == "SERVICE_UNAVAILABLE"
        await app.state.runtime.db.close()
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
