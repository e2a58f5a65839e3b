"""The refresh reuse leeway (FLUXER_REFRESH_REUSE_LEEWAY, 10 s by default): a confidential
client that lost the answer to a refresh and presents the rotated token again gets a new
pair of the same family, and the grant lives; outside the leeway, once a later token of the
family was refreshed, for another client or for a public client, it is reuse as ever."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from fluxer_oauth.core import credentials
from fluxer_oauth.store.tables import audit_log, tokens
from tests.api.test_public_clients import refresh as public_refresh
from tests.api.test_public_clients import sign_in as public_sign_in
from tests.conftest import bearer, create_app, register, tokens_for


async def refresh(client, app, token: str):
    return await client.post("/api/v1/oauth2/token", auth=app.basic,
                             data={"grant_type": "refresh_token", "refresh_token": token})


async def works(client, access_token: str) -> bool:
    return (await client.get("/api/v1/users/@me", headers=bearer(access_token))).status_code == 200


def reuse_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("fluxer_refresh_reuse_total", {"outcome": outcome}) or 0.0


async def audit_actions(rt) -> list[str]:
    async with rt.db.read() as conn:
        return list((await conn.execute(select(audit_log.c.action))).scalars())


async def rotated_long_ago(rt, refresh_token: str, seconds: float) -> None:
    """Moves a rotated token's rotation ``seconds`` into the past (and its successors' issue
    with it, as they were issued in the same instant), instead of waiting."""
    key = credentials.stored_token_key(refresh_token)
    async with rt.db.write() as conn:
        row = (await conn.execute(select(tokens).where(tokens.c.token_hash == key))).first()
        await conn.execute(update(tokens).where(tokens.c.family_id == row.family_id,
                                                tokens.c.created_at >= row.revoked_at)
                           .values(created_at=tokens.c.created_at - seconds))
        await conn.execute(update(tokens).where(tokens.c.family_id == row.family_id,
                                                tokens.c.revoked_at.is_not(None))
                           .values(revoked_at=tokens.c.revoked_at - seconds))


@pytest.fixture
async def party(client):
    owner = await register(client)
    return owner, await create_app(client, owner)


async def test_a_retry_within_the_leeway_gets_a_new_pair_and_the_grant_lives(client, rt, party):
    owner, app = party
    first = await tokens_for(client, owner, app, scope="identify guilds")
    lost = (await refresh(client, app, first["refresh_token"])).json()  # the answer the client never saw
    leeway_before = reuse_count("leeway")
    retried = await refresh(client, app, first["refresh_token"])
    assert retried.status_code == 200, retried.text
    again = retried.json()
    assert again["scope"] == "identify guilds" and again["refresh_token"] not in (lost["refresh_token"],
                                                                                  first["refresh_token"])
    # Both pairs issued since the rotation stay valid; the first one stays spent.
    assert await works(client, lost["access_token"]) and await works(client, again["access_token"])
    assert not await works(client, first["access_token"])
    assert (await refresh(client, app, again["refresh_token"])).status_code == 200
    assert reuse_count("leeway") == leeway_before + 1
    assert "refresh_token.reuse_within_leeway" in await audit_actions(rt)
    assert "refresh_token.reuse_detected" not in await audit_actions(rt)


async def test_a_retry_after_the_leeway_is_reuse_and_ends_the_grant(client, rt, party):
    owner, app = party
    first = await tokens_for(client, owner, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    await rotated_long_ago(rt, first["refresh_token"], rt.settings.refresh_reuse_leeway + 1)
    detected_before = reuse_count("detected")
    reuse = await refresh(client, app, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert not await works(client, second["access_token"])
    assert (await refresh(client, app, second["refresh_token"])).status_code == 400
    assert reuse_count("detected") == detected_before + 1
    assert "refresh_token.reuse_detected" in await audit_actions(rt)


async def test_a_retry_once_a_successor_was_refreshed_is_reuse_and_ends_the_grant(client, party):
    owner, app = party
    first = await tokens_for(client, owner, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    third = (await refresh(client, app, second["refresh_token"])).json()  # the client moved on
    reuse = await refresh(client, app, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert not await works(client, third["access_token"])


async def test_a_retry_of_a_leeway_pair_s_sibling_after_it_was_refreshed_is_reuse(client, party):
    """Pairs issued within the leeway all live, until any one of them is refreshed: then the
    token rotated before them is reuse, whichever pair moved on."""
    owner, app = party
    first = await tokens_for(client, owner, app)
    (await refresh(client, app, first["refresh_token"])).json()
    retried = (await refresh(client, app, first["refresh_token"])).json()
    moved_on = (await refresh(client, app, retried["refresh_token"])).json()
    assert (await refresh(client, app, first["refresh_token"])).status_code == 400
    assert not await works(client, moved_on["access_token"])


async def test_another_client_presenting_a_rotated_token_is_refused_and_the_grant_lives(client, party):
    owner, app = party
    other = await create_app(client, owner, name="Other App")
    first = await tokens_for(client, owner, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    stolen = await refresh(client, other, first["refresh_token"])
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    assert await works(client, second["access_token"])


async def test_a_public_client_gets_no_leeway(client, party):
    owner, _app = party
    public = await create_app(client, owner, public_client=True)
    first = await public_sign_in(client, owner, public)
    second = (await public_refresh(client, public, first["refresh_token"])).json()
    retried = await public_refresh(client, public, first["refresh_token"])
    assert retried.status_code == 400 and retried.json()["error"] == "invalid_grant"
    assert not await works(client, second["access_token"])


async def test_no_retry_survives_the_end_of_the_grant(client, party):
    owner, app = party
    first = await tokens_for(client, owner, app)
    await refresh(client, app, first["refresh_token"])
    revoked = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=owner.headers)
    assert revoked.status_code == 204
    assert (await refresh(client, app, first["refresh_token"])).status_code == 400


@pytest.mark.settings(refresh_reuse_leeway=0)
async def test_with_the_leeway_at_zero_a_retry_is_reuse_as_before(client, party):
    owner, app = party
    first = await tokens_for(client, owner, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    reuse = await refresh(client, app, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert not await works(client, second["access_token"])


async def test_parallel_presentations_within_the_leeway_are_each_answered_with_a_live_pair(client, party):
    owner, app = party
    first = await tokens_for(client, owner, app)
    answers = await asyncio.gather(*(refresh(client, app, first["refresh_token"]) for _ in range(8)))
    assert [answer.status_code for answer in answers] == [200] * 8, [a.text for a in answers]
    for answer in answers:
        assert await works(client, answer.json()["access_token"])
