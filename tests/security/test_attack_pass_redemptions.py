"""Attack pass on the group-committed code and refresh redemptions (store/redemptions.py,
the fast path of oauth/token.py): the fast path may only commit what the full path would
commit for a request that succeeds, each code and refresh token is spent once, and every
ending still ends everything issued beside it. Each test names the behaviour it protects;
they run through the HTTP API unless the race needs the store's own timing."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import and_, func, select

from fluxer_oauth.core import credentials
from fluxer_oauth.platform import admin
from fluxer_oauth.store.records import Redemption
from fluxer_oauth.store.tables import authorization_codes, tokens
from tests.api.test_lifecycle import alive, refresh
from tests.backends import POSTGRES
from tests.conftest import create_app, exchange, get_code, pkce_pair, register, tokens_for
from tests.security.test_trust_endings import trusted_app  # noqa: F401 (a fixture)

CALLBACK = "https://client.example/callback"

# Several races here are held open by fixed waits for another transaction to get there.
pytestmark = pytest.mark.serial


def _failed(response, error: str = "invalid_grant") -> bool:
    return response.status_code == 400 and response.json()["error"] == error


async def _live_tokens(rt, user_id, application_id) -> int:
    """Tokens of the user for the application that a lookup would still accept."""
    async with rt.db.read() as conn:
        result = await conn.execute(select(func.count()).select_from(tokens).where(and_(
            tokens.c.user_id == int(user_id), tokens.c.application_id == int(application_id),
            tokens.c.revoked_at.is_(None), tokens.c.expires_at > time.time())))
    return result.scalar()


async def _code_spent(rt, code: str) -> bool | None:
    async with rt.db.read() as conn:
        row = (await conn.execute(select(authorization_codes.c.consumed_at).where(
            authorization_codes.c.code_hash == credentials.sha256(code)))).first()
    return None if row is None else row.consumed_at is not None


async def _introspected(client, app, token: str) -> bool:
    response = await client.post("/api/v1/oauth2/introspect", data={"token": token}, auth=app.basic)
    assert response.status_code == 200
    return response.json()["active"]


@pytest.fixture
async def party(client):
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    return owner, app, user


# --- exactly once -------------------------------------------------------------------------------

async def test_a_code_presented_in_parallel_is_redeemed_once_and_the_replay_ends_the_winner(client, party):
    _, app, user = party
    code = await get_code(client, user, app)
    answers = await asyncio.gather(*[exchange(client, app, code) for _ in range(8)])
    winners = [r for r in answers if r.status_code == 200]
    assert len(winners) == 1 and all(_failed(r) for r in answers if r.status_code != 200)
    # The others were replays: the family of the code, the winner's pair included, ended.
    assert not await alive(client, winners[0].json()["access_token"])
    assert _failed(await refresh(client, app, winners[0].json()["refresh_token"]))


@pytest.mark.settings(refresh_reuse_leeway=0)  # no leeway: every presentation after a rotation is reuse
async def test_a_refresh_token_presented_in_parallel_rotates_once_and_the_reuse_ends_the_grant(client, rt, party):
    _, app, user = party
    first = await tokens_for(client, user, app)
    answers = await asyncio.gather(*[refresh(client, app, first["refresh_token"]) for _ in range(8)])
    winners = [r for r in answers if r.status_code == 200]
    assert len(winners) == 1 and all(_failed(r) for r in answers if r.status_code != 200)
    assert not await alive(client, winners[0].json()["access_token"])
    assert await _live_tokens(rt, user.id, app.id) == 0


@pytest.mark.settings(refresh_reuse_leeway=0)  # no leeway: every presentation after a rotation is reuse
async def test_a_refresh_token_presented_in_parallel_across_grants_spends_each_once(client, rt):
    """Several grants' tokens, each presented twice in the same moment (one batch): one
    winner per token, and each loser's reuse ends only its own grant."""
    owner = await register(client)
    app = await create_app(client, owner)
    users = [await register(client) for _ in range(4)]
    issued = [await tokens_for(client, user, app) for user in users]
    calls = [refresh(client, app, body["refresh_token"]) for body in issued for _ in range(2)]
    answers = await asyncio.gather(*calls)
    for index, user in enumerate(users):
        pair = answers[2 * index:2 * index + 2]
        assert sorted(r.status_code for r in pair) == [200, 400]
        assert await _live_tokens(rt, user.id, app.id) == 0  # the reuse ended the grant


# --- the row cache (SQLite) and introspection ------------------------------------------------------

async def test_a_rotated_access_token_is_refused_at_once_by_the_api_and_introspection(client, party):
    _, app, user = party
    first = await tokens_for(client, user, app)
    assert await alive(client, first["access_token"])  # now cached on SQLite
    assert await _introspected(client, app, first["access_token"])
    assert await _introspected(client, app, first["refresh_token"])
    rotated = await refresh(client, app, first["refresh_token"])
    assert rotated.status_code == 200
    assert not await alive(client, first["access_token"])
    assert not await _introspected(client, app, first["access_token"])
    assert not await _introspected(client, app, first["refresh_token"])
    assert await alive(client, rotated.json()["access_token"])


@pytest.mark.settings(refresh_reuse_leeway=0)  # no leeway: every presentation after a rotation is reuse
async def test_reuse_after_a_fast_rotation_ends_the_pair_it_issued_even_when_cached(client, rt, party):
    _, app, user = party
    first = await tokens_for(client, user, app)
    second = (await refresh(client, app, first["refresh_token"])).json()
    assert await alive(client, second["access_token"])  # cached
    assert await _introspected(client, app, second["refresh_token"])
    assert _failed(await refresh(client, app, first["refresh_token"]))  # reuse
    assert not await alive(client, second["access_token"])
    assert not await _introspected(client, app, second["access_token"])
    assert _failed(await refresh(client, app, second["refresh_token"]))
    assert await _live_tokens(rt, user.id, app.id) == 0


# --- code bindings ------------------------------------------------------------------------------

@pytest.mark.parametrize("verifier", [
    "a" * 42,  # one short of RFC 7636's minimum
    "a" * 129,
    "a" * 42 + "!",  # outside the unreserved set
    "b" * 64,  # well formed, not the one challenged
    None,
])
async def test_a_pkce_code_with_a_wrong_verifier_is_refused_and_spent(client, party, rt, verifier):
    _, app, user = party
    right, challenge = pkce_pair()
    code = await get_code(client, user, app, code_challenge=challenge, code_challenge_method="S256")
    answer = await exchange(client, app, code, code_verifier=verifier)
    assert answer.status_code == 400
    assert await _code_spent(rt, code)  # the full path spent it with the refusal
    assert _failed(await exchange(client, app, code, code_verifier=right))
    assert await _live_tokens(rt, user.id, app.id) == 0


async def test_a_verifier_for_a_code_issued_without_pkce_is_refused(client, rt, party):
    _, app, user = party
    code = await get_code(client, user, app)
    assert _failed(await exchange(client, app, code, code_verifier=pkce_pair()[0]))
    assert await _live_tokens(rt, user.id, app.id) == 0


async def test_a_public_client_redeems_only_with_its_verifier(client, rt):
    owner = await register(client)
    app = await create_app(client, owner, public_client=True)
    user = await register(client)
    verifier, challenge = pkce_pair()
    code = await get_code(client, user, app, code_challenge=challenge, code_challenge_method="S256")
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "client_id": app.id}
    assert _failed(await client.post("/api/v1/oauth2/token", data=data))  # no verifier: spent
    code = await get_code(client, user, app, code_challenge=challenge, code_challenge_method="S256")
    answer = await client.post("/api/v1/oauth2/token", data={**data, "code": code, "code_verifier": verifier})
    assert answer.status_code == 200 and await alive(client, answer.json()["access_token"])


@pytest.mark.parametrize("sent", [None, CALLBACK + "/", "https://CLIENT.example/callback", CALLBACK + "?x=1",
                                  "https://client.example/other"])
async def test_an_explicit_redirect_uri_must_be_sent_again_exactly(client, rt, sent):
    owner = await register(client)
    app = await create_app(client, owner, redirect_uris=[CALLBACK, "https://client.example/other"])
    user = await register(client)
    code = await get_code(client, user, app)  # names CALLBACK
    data = {"grant_type": "authorization_code", "code": code}
    if sent is not None:
        data["redirect_uri"] = sent
    assert _failed(await client.post("/api/v1/oauth2/token", data=data, auth=app.basic))
    assert await _code_spent(rt, code)
    assert await _live_tokens(rt, user.id, app.id) == 0


@pytest.mark.parametrize("sent, redeems", [(None, True), (CALLBACK, True), (CALLBACK + "/", False)])
async def test_an_implied_redirect_uri_may_be_left_out_or_sent_exactly(client, rt, party, sent, redeems):
    _, app, user = party
    code = await get_code(client, user, app, redirect_uri=None)
    answer = await exchange(client, app, code, redirect_uri=sent)
    assert answer.status_code == (200 if redeems else 400), answer.text
    assert await _live_tokens(rt, user.id, app.id) == (2 if redeems else 0)


async def test_another_clients_code_is_refused_and_left_for_its_client(client, rt, party):
    owner, app, user = party
    thief = await create_app(client, owner)
    code = await get_code(client, user, app)
    assert _failed(await exchange(client, thief, code))
    assert await _code_spent(rt, code) is False  # not a replay of the rightful client's code
    assert (await exchange(client, app, code)).status_code == 200
    assert await _live_tokens(rt, user.id, thief.id) == 0


async def test_another_clients_refresh_token_is_refused_and_left_live(client, rt, party):
    owner, app, user = party
    thief = await create_app(client, owner)
    body = await tokens_for(client, user, app)
    assert _failed(await refresh(client, thief, body["refresh_token"]))
    assert await alive(client, body["access_token"])
    assert (await refresh(client, app, body["refresh_token"])).status_code == 200


async def test_an_access_token_is_not_a_refresh_token(client, party):
    _, app, user = party
    body = await tokens_for(client, user, app)
    assert _failed(await refresh(client, app, body["access_token"]))
    assert await alive(client, body["access_token"])


# --- what still takes the full path ---------------------------------------------------------------

async def test_an_openid_code_still_gets_its_id_token(client, party):
    _, app, user = party
    code = await get_code(client, user, app, scope="openid", nonce="n-0S6")
    body = (await exchange(client, app, code)).json()
    assert body["scope"] == "identify openid" and "id_token" in body
    refreshed = (await refresh(client, app, body["refresh_token"])).json()
    assert refreshed["scope"] == "identify openid" and "id_token" not in refreshed


async def test_a_narrowed_refresh_is_issued_narrowed_and_a_widened_one_spends_nothing(client, party):
    _, app, user = party
    body = await tokens_for(client, user, app, scope="identify guilds")
    widened = await client.post("/api/v1/oauth2/token", auth=app.basic, data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"], "scope": "identify email"})
    assert _failed(widened, "invalid_scope")
    narrowed = await client.post("/api/v1/oauth2/token", auth=app.basic, data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"], "scope": "identify"})
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "identify"
    again = await refresh(client, app, narrowed.json()["refresh_token"])  # the fast path keeps it narrow
    assert again.status_code == 200 and again.json()["scope"] == "identify"


@pytest.mark.parametrize("ending", ["staff removed", "application untrusted"])
async def test_a_narrowed_token_of_an_admin_grant_ends_with_the_admin_rule(client, rt, trusted_app, ending):
    """Narrowed to identify, the token no longer carries admin and so takes the fast path;
    the admin rule ends the whole grant all the same, the pairs rotated since included."""
    app, staff = trusted_app
    body = await tokens_for(client, staff, app, scope="identify admin")
    narrowed = (await client.post("/api/v1/oauth2/token", auth=app.basic, data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"], "scope": "identify"})).json()
    rotated = (await refresh(client, app, narrowed["refresh_token"])).json()
    assert rotated["scope"] == "identify" and await alive(client, rotated["access_token"])
    if ending == "staff removed":
        await admin.set_staff(rt, None, int(staff.id), False)
    else:
        await admin.set_application_trusted(rt, None, int(app.id), False)
    assert not await alive(client, rotated["access_token"])
    assert _failed(await refresh(client, app, rotated["refresh_token"]))
    assert await _live_tokens(rt, staff.id, app.id) == 0


async def test_an_admin_token_is_refused_on_refresh_once_the_holder_is_no_longer_staff(client, rt, trusted_app):
    """The staff flag removed without its ending (as a restore could leave it): the refresh
    still re-checks the rule rather than rotating an admin token on the fast path."""
    from fluxer_oauth.store import users as user_store
    app, staff = trusted_app
    body = await tokens_for(client, staff, app, scope="identify admin")
    async with rt.db.write() as conn:
        await user_store.set_user_fields(conn, int(staff.id), staff=False)
    assert _failed(await refresh(client, app, body["refresh_token"]))
    assert await _live_tokens(rt, staff.id, app.id) == 0


# --- endings racing the fast path -----------------------------------------------------------------

async def _deauthorize(client, rt, owner, app, user):
    response = await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert response.status_code == 204


async def _disable_application(client, rt, owner, app, user):
    await admin.set_application_disabled(rt, None, int(app.id), True)
    await admin.set_application_disabled(rt, None, int(app.id), False)  # re-enabled: nothing comes back


async def _disable_user(client, rt, owner, app, user):
    await admin.set_user_disabled(rt, None, int(user.id), True)
    await admin.set_user_disabled(rt, None, int(user.id), False)


async def _disable_owner(client, rt, owner, app, user):
    await admin.set_user_disabled(rt, None, int(owner.id), True)
    await admin.set_user_disabled(rt, None, int(owner.id), False)


@pytest.mark.parametrize("ending", [_deauthorize, _disable_application, _disable_user, _disable_owner],
                         ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("place", [0, 3, 6])
async def test_an_ending_amid_a_burst_of_redemptions_leaves_nothing_live(client, rt, party, ending, place):
    """Refreshes and code exchanges of one grant sent together with an ending: whatever each
    request was answered, after the ending nothing of the grant is live."""
    owner, app, user = party
    pairs = [await tokens_for(client, user, app) for _ in range(4)]
    codes = [await get_code(client, user, app) for _ in range(4)]
    calls = [refresh(client, app, body["refresh_token"]) for body in pairs]
    calls += [exchange(client, app, code) for code in codes]
    calls.insert(place, ending(client, rt, owner, app, user))
    answers = await asyncio.gather(*calls)
    answers = [a for a in answers if a is not None]
    assert all(a.status_code in (200, 400, 401) for a in answers), [a.text for a in answers]
    assert await _live_tokens(rt, user.id, app.id) == 0
    for answer in answers:
        if answer.status_code == 200:
            assert not await alive(client, answer.json()["access_token"])
            assert (await refresh(client, app, answer.json()["refresh_token"])).status_code in (400, 401)


# --- PostgreSQL: batches of several workers, lock order ---------------------------------------------

def _redemption(rt, key: bytes, application_id: int, **binding) -> Redemption:
    at = time.time()
    return Redemption(key, application_id, at, credentials.stored_token_key(credentials.new_stored_token()),
                      credentials.stored_token_key(credentials.new_stored_token()), rt.ids.next(),
                      at + 3600, at + 86400, **binding)


@pytest.mark.skipif(not POSTGRES, reason="several workers' batches meet on PostgreSQL's row locks")
async def test_two_workers_rotating_the_same_tokens_in_opposite_order_spend_each_once(client, rt, settings):
    """Two workers' batches present the same refresh tokens in opposite orders, both in
    flight at once (a row held elsewhere stops each half-way): each request is still
    answered (no error), and each token is spent by exactly one of them."""
    import asyncpg

    from fluxer_oauth.store.database import Database

    owner = await register(client)
    app = await create_app(client, owner)
    users = [await register(client) for _ in range(6)]
    other = Database(settings.sqlalchemy_url)
    try:
        for _ in range(4):
            keys = [credentials.stored_token_key((await tokens_for(client, user, app))["refresh_token"])
                    for user in users]
            blocker = await asyncpg.connect(rt.db.hot._dsn)
            try:
                async with blocker.transaction():
                    await blocker.execute("SELECT 1 FROM tokens WHERE token_hash = $1 FOR UPDATE", keys[3])
                    first = [rt.db.tokens.rotate_refresh(_redemption(rt, key, int(app.id))) for key in keys]
                    second = [other.tokens.rotate_refresh(_redemption(rt, key, int(app.id)))
                              for key in reversed(keys)]
                    both = asyncio.ensure_future(asyncio.gather(asyncio.gather(*first), asyncio.gather(*second)))
                    await asyncio.sleep(0.3)
            finally:
                await blocker.close()
            answers = await asyncio.wait_for(both, 15)
            mine, theirs = answers[0], list(reversed(answers[1]))
            for a, b in zip(mine, theirs):
                assert (a is None) != (b is None), (mine, theirs)
    finally:
        await other.close()


async def _batch_beside_ending(rt, held_row: tuple, writes: list, start_ending) -> tuple[list, list]:
    """Sends ``writes`` as one batch while another connection holds ``held_row`` (SQL and its
    argument) locked, so the batch stops there part way; starts the ending meanwhile, then
    lets go. The ending's outcome ([None]: it went through) and the batch's answers."""
    import asyncpg

    blocker = await asyncpg.connect(rt.db.hot._dsn)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(*held_row)
        batch = asyncio.ensure_future(asyncio.gather(*writes, return_exceptions=True))
        await asyncio.sleep(0.3)
        ending = asyncio.ensure_future(start_ending())
        await asyncio.sleep(0.3)
        await transaction.rollback()
        outcome = await asyncio.wait_for(asyncio.gather(ending, return_exceptions=True), 15)
        answers = await asyncio.wait_for(batch, 15)
    finally:
        await blocker.close()
    return outcome, answers


@pytest.mark.skipif(not POSTGRES, reason="the issuance locks are PostgreSQL's")
async def test_a_user_ending_does_not_deadlock_with_a_batch_of_both_redemption_kinds(client, rt):
    owner = await register(client)
    first_app = await create_app(client, owner)
    second_app = await create_app(client, owner)
    assert int(first_app.id) < int(second_app.id)
    user = await register(client)
    pair = await tokens_for(client, user, first_app)
    code = await get_code(client, user, second_app)
    code_hash = credentials.sha256(code)
    # Holds the code's row, so that the batch's first statement (the code, second_app's lock
    # taken) waits there: the ending can then take first_app's lock before the batch asks.
    outcome, answers = await _batch_beside_ending(
        rt, ("SELECT 1 FROM authorization_codes WHERE code_hash = $1 FOR UPDATE", code_hash),
        [rt.db.tokens.redeem_code(_redemption(rt, code_hash, int(second_app.id), redirect_uri=CALLBACK)),
         rt.db.tokens.rotate_refresh(_redemption(
             rt, credentials.stored_token_key(pair["refresh_token"]), int(first_app.id)))],
        lambda: admin.set_user_disabled(rt, None, int(user.id), True))
    assert outcome == [None], outcome  # the ending went through
    assert not any(isinstance(answer, Exception) for answer in answers), answers
    assert await _live_tokens(rt, user.id, first_app.id) == 0
    assert await _live_tokens(rt, user.id, second_app.id) == 0


@pytest.mark.skipif(not POSTGRES, reason="the issuance locks are PostgreSQL's")
async def test_disabling_an_application_does_not_deadlock_with_a_batch_of_a_client_token_and_a_code(client, rt):
    from fluxer_oauth.oauth.client_auth import presented_secret_hash
    from fluxer_oauth.store.records import ClientToken

    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    code_hash = credentials.sha256(await get_code(client, user, app))
    # Holds the owner's row, so that the checked insert (first in the batch) waits there with
    # the application's row already held: the ending can then take the issuance lock first.
    at = time.time()
    outcome, answers = await _batch_beside_ending(
        rt, ("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", int(owner.id)),
        [rt.db.tokens.issue_client_token(ClientToken(
            credentials.stored_token_key(credentials.new_stored_token()), int(app.id),
            presented_secret_hash(rt, app.secret), rt.ids.next(), "identify", at, at + 60)),
         rt.db.tokens.redeem_code(_redemption(rt, code_hash, int(app.id), redirect_uri=CALLBACK))],
        lambda: admin.set_application_disabled(rt, None, int(app.id), True))
    assert outcome == [None], outcome  # the ending went through
    assert not any(isinstance(answer, Exception) for answer in answers), answers
    assert await _live_tokens(rt, user.id, app.id) == 0


# --- expiry seen at the request's clock ------------------------------------------------------------

@pytest.mark.xfail(strict=True, reason=(
    "BUG (shared with the full path): a redemption compares expires_at with the time its request "
    "read the clock, an ending ends only tokens not yet expired at its own, later, time; a refresh "
    "token expiring between the two is skipped by the ending and then rotated into a new live pair."))
async def test_a_refresh_token_expiring_between_request_and_ending_is_not_rotated_after_the_ending(client, rt, party):
    from sqlalchemy import update

    _, app, user = party
    body = await tokens_for(client, user, app)
    key = credentials.stored_token_key(body["refresh_token"])
    read_clock = time.time()  # the refresh request reads its clock, then waits for its batch
    async with rt.db.write() as conn:  # (the token is close to its end)
        await conn.execute(update(tokens).where(tokens.c.token_hash == key).values(expires_at=read_clock + 0.2))
    await asyncio.sleep(0.3)
    await _deauthorize(client, rt, None, app, user)  # the ending, while the request waits
    late = _redemption(rt, key, int(app.id))._replace(now=read_clock)
    assert await rt.db.tokens.rotate_refresh(late) is None
    assert await _live_tokens(rt, user.id, app.id) == 0
