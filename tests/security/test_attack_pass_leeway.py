"""Attack pass on the refresh reuse leeway (oauth/token.py ``_retried_within_leeway``,
docs/security.md "Refresh reuse leeway"): an attacker holding a rotated refresh token, with
or without the client's secret, tries to get a pair out of the leeway, to keep one past the
end of the grant, or to keep a line of the family alive beside the client's. Each test names
the behaviour it protects; times are moved in the database (or the clock of the token
endpoint frozen) rather than waited for."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import and_, func, select, update

from fluxer_oauth.core import credentials
from fluxer_oauth.oauth import token as token_endpoint
from fluxer_oauth.platform import admin
from fluxer_oauth.store.tables import REFRESH, audit_log, tokens, users
from tests.api.test_authorize import browser_login
from tests.api.test_device import approve, poll, started
from tests.api.test_public_clients import refresh as public_refresh
from tests.api.test_public_clients import sign_in as public_sign_in
from tests.api.test_refresh_leeway import rotated_long_ago
from tests.conftest import PASSWORD, bearer, create_app, exchange, get_code, register, tokens_for
from tests.security.test_trust_endings import trusted_app  # noqa: F401 (a fixture)

TOKEN = "/api/v1/oauth2/token"


async def refresh(client, app, token: str, *, auth=None, **extra):
    return await client.post(TOKEN, auth=auth or app.basic,
                             data={"grant_type": "refresh_token", "refresh_token": token, **extra})


async def works(client, access_token: str) -> bool:
    response = await client.get("/api/v1/users/@me", headers=bearer(access_token))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def refused(response, error: str = "invalid_grant") -> bool:
    return response.status_code == 400 and response.json()["error"] == error


def reuse_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("fluxer_refresh_reuse_total", {"outcome": outcome}) or 0.0


async def audited(rt, action: str) -> list:
    async with rt.db.read() as conn:
        return (await conn.execute(select(audit_log).where(audit_log.c.action == action))).all()


async def live_tokens(rt, user_id, application_id, kind: int | None = None) -> int:
    """Tokens of the user for the application that a lookup would still accept."""
    conditions = [tokens.c.user_id == int(user_id), tokens.c.application_id == int(application_id),
                  tokens.c.revoked_at.is_(None), tokens.c.expires_at > time.time()]
    if kind is not None:
        conditions.append(tokens.c.kind == kind)
    async with rt.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(tokens).where(and_(*conditions)))).scalar()


async def live_lines(rt, user_id, application_id) -> int:
    """Lines of the grant that may still be refreshed: the issues holding a live refresh token
    (retries within the leeway join the issue of the pair they retry, so one line is one issue)."""
    async with rt.db.read() as conn:
        return (await conn.execute(select(func.count(tokens.c.issue_id.distinct())).where(
            tokens.c.user_id == int(user_id), tokens.c.application_id == int(application_id),
            tokens.c.kind == REFRESH, tokens.c.revoked_at.is_(None)))).scalar()


async def all_tokens(rt) -> int:
    async with rt.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(tokens))).scalar()


async def set_token(rt, token: str, **values) -> None:
    async with rt.db.write() as conn:
        await conn.execute(update(tokens).where(tokens.c.token_hash == credentials.stored_token_key(token))
                           .values(**values))


@pytest.fixture
async def party(client):
    """An application and a user of it (not its owner, so that the owner's fate and the
    user's can differ)."""
    owner = await register(client)
    app = await create_app(client, owner)
    user = await register(client)
    return owner, app, user


@pytest.fixture
async def rotated(client, party):
    """A grant whose first refresh token was just rotated: (first pair, its successor)."""
    _owner, app, user = party
    first = await tokens_for(client, user, app, scope="identify guilds")
    second = await refresh(client, app, first["refresh_token"])
    assert second.status_code == 200, second.text
    return first, second.json()


# --- who may retry ------------------------------------------------------------------------------

async def test_another_clients_credentials_get_nothing_for_a_rotated_token_within_the_leeway(client, rt, party,
                                                                                               rotated):
    owner, app, user = party
    first, second = rotated
    other = await create_app(client, owner, name="Thief App")
    before = (reuse_count("leeway"), reuse_count("detected"))
    assert refused(await refresh(client, other, first["refresh_token"]))
    assert refused(await refresh(client, other, second["refresh_token"]))
    assert await live_tokens(rt, user.id, other.id) == 0
    # Not the owner's to end either: the grant lives and its own client may still retry.
    assert await works(client, second["access_token"])
    assert (reuse_count("leeway"), reuse_count("detected")) == before
    assert (await refresh(client, app, first["refresh_token"])).status_code == 200


async def test_a_rotated_token_without_the_clients_secret_gets_nothing(client, rt, party, rotated):
    _owner, app, user = party
    first, second = rotated
    wrong = await refresh(client, app, first["refresh_token"], auth=(app.id, "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    named = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                           "client_id": app.id})
    assert named.status_code == 401 and named.json()["error"] == "invalid_client"
    assert await live_tokens(rt, user.id, app.id) == 2  # the successor pair alone
    assert await works(client, second["access_token"])


async def test_a_public_clients_retry_within_the_leeway_is_reuse_and_ends_the_grant(client, rt):
    owner = await register(client)
    public = await create_app(client, owner, public_client=True)
    first = await public_sign_in(client, owner, public)
    second = (await public_refresh(client, public, first["refresh_token"])).json()
    leeway_before, detected_before = reuse_count("leeway"), reuse_count("detected")
    assert refused(await public_refresh(client, public, first["refresh_token"]))
    assert not await works(client, second["access_token"])
    assert await live_tokens(rt, owner.id, public.id) == 0
    assert (reuse_count("leeway"), reuse_count("detected")) == (leeway_before, detected_before + 1)
    assert await audited(rt, "refresh_token.reuse_within_leeway") == []


async def test_a_secret_reset_leaves_the_old_secret_no_retry(client, rt, party, rotated):
    owner, app, user = party
    first, second = rotated
    reset = await client.post(f"/api/v1/oauth2/applications/{app.id}/client-secret/reset",
                              json={"password": PASSWORD}, headers=owner.headers)
    assert reset.status_code == 200
    old = await refresh(client, app, first["refresh_token"])
    assert old.status_code == 401 and old.json()["error"] == "invalid_client"
    assert await live_tokens(rt, user.id, app.id) == 2
    # The user's grant is theirs, not the secret's: the client, holding the new secret, may retry.
    retried = await refresh(client, app, first["refresh_token"], auth=(app.id, reset.json()["client_secret"]))
    assert retried.status_code == 200, retried.text


# --- what a retry may get -----------------------------------------------------------------------

async def test_a_retry_cannot_widen_the_scope_and_a_refused_one_issues_nothing(client, rt, party):
    _owner, app, user = party
    first = await tokens_for(client, user, app, scope="identify")
    await refresh(client, app, first["refresh_token"])
    count = await all_tokens(rt)
    widened = await refresh(client, app, first["refresh_token"], scope="identify guilds")
    assert refused(widened, "invalid_scope")
    assert await all_tokens(rt) == count and await audited(rt, "refresh_token.reuse_within_leeway") == []
    # Nothing was spent or ended by the refusal: the plain retry still works.
    assert (await refresh(client, app, first["refresh_token"])).status_code == 200


async def test_a_retry_may_narrow_the_scope(client, rt, party, rotated):
    _owner, app, _user = party
    first, _second = rotated
    narrowed = await refresh(client, app, first["refresh_token"], scope="identify")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "identify"
    guilds = await client.get("/api/v1/users/@me/guilds", headers=bearer(narrowed.json()["access_token"]))
    assert guilds.status_code == 403


async def test_an_expired_rotated_token_is_reuse_even_within_the_leeway(client, rt, party, rotated):
    _owner, app, user = party
    first, second = rotated
    await set_token(rt, first["refresh_token"], expires_at=time.time() - 1)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert not await works(client, second["access_token"])
    assert await live_tokens(rt, user.id, app.id) == 0


async def test_client_credentials_tokens_have_no_refresh_to_retry(client, rt, party):
    _owner, app, user = party
    issued = await client.post(TOKEN, data={"grant_type": "client_credentials"}, auth=app.basic)
    assert issued.status_code == 200 and "refresh_token" not in issued.json()
    mine = await tokens_for(client, user, app)
    assert refused(await refresh(client, app, issued.json()["access_token"]))
    assert await works(client, mine["access_token"])  # a token that is no refresh token ends nothing


async def test_every_retry_gets_a_pair_but_the_token_rate_limit_bounds_them(client, rt, party, rotated):
    """Each retry within the leeway gets a pair of its own (rate limits off here): the
    leeway itself does not count them. What bounds a client retrying in a loop is the token
    endpoint's per-client rate limit (next test)."""
    _owner, app, user = party
    first, _second = rotated
    answers = [await refresh(client, app, first["refresh_token"]) for _ in range(12)]
    assert [answer.status_code for answer in answers] == [200] * 12
    assert await live_tokens(rt, user.id, app.id, REFRESH) == 13


@pytest.mark.settings(rate_limits="on", rate_limit_token="5/minute")
async def test_retries_within_the_leeway_count_against_the_token_rate_limit(client, party):
    _owner, app, user = party
    first = await tokens_for(client, user, app)  # the token request of the code: 1
    await refresh(client, app, first["refresh_token"])  # 2
    answers = [await refresh(client, app, first["refresh_token"]) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]


# --- a line of the family kept beside the client's ----------------------------------------------

async def test_a_thiefs_retry_pair_ends_when_the_client_moves_on(client, rt, party, rotated):
    """A thief holding a rotated token and the client's secret retries within the leeway
    and gets a pair of its own. Once the client refreshes its pair, the thief's ends with it,
    and the thief presenting it after the leeway is reuse, which ends the grant: the thief
    keeps no line of the family beside the client's."""
    _owner, app, user = party
    first, clients = rotated
    thiefs = (await refresh(client, app, first["refresh_token"])).json()
    moved_on = await refresh(client, app, clients["refresh_token"])
    assert moved_on.status_code == 200, moved_on.text
    assert not await works(client, thiefs["access_token"])
    assert await live_tokens(rt, user.id, app.id, REFRESH) == 1
    await rotated_long_ago(rt, thiefs["refresh_token"], rt.settings.refresh_reuse_leeway + 1)
    assert refused(await refresh(client, app, thiefs["refresh_token"]))
    assert not await works(client, moved_on.json()["access_token"])
    assert await live_tokens(rt, user.id, app.id) == 0


async def test_a_client_presenting_its_pair_after_a_thief_moved_on_ends_the_grant(client, rt, party, rotated):
    """The other way round: the thief refreshes its retry pair first. The client's pair ends
    with that refresh, and the client's next refresh (after the leeway) is reuse: the grant
    ends for both instead of the thief keeping it while the client is signed out."""
    _owner, app, user = party
    first, clients = rotated
    thiefs = (await refresh(client, app, first["refresh_token"])).json()
    thief_moved_on = (await refresh(client, app, thiefs["refresh_token"])).json()
    assert not await works(client, clients["access_token"])
    await rotated_long_ago(rt, clients["refresh_token"], rt.settings.refresh_reuse_leeway + 1)
    assert refused(await refresh(client, app, clients["refresh_token"]))
    assert not await works(client, thief_moved_on["access_token"])
    assert await live_tokens(rt, user.id, app.id) == 0


async def test_the_pair_whose_answer_was_lost_ends_when_the_client_moves_on(client, rt, party, rotated):
    """The honest case of the two above: the lost pair does not stay live for its lifetime
    once the client has gone on with the pair of its retry."""
    _owner, app, user = party
    first, lost = rotated
    retried = (await refresh(client, app, first["refresh_token"])).json()
    assert (await refresh(client, app, retried["refresh_token"])).status_code == 200
    assert not await works(client, lost["access_token"])
    assert await live_tokens(rt, user.id, app.id, REFRESH) == 1


async def test_a_leeway_pair_refreshed_then_the_original_again_ends_every_pair(client, rt, party, rotated):
    _owner, app, user = party
    first, second = rotated
    retries = [(await refresh(client, app, first["refresh_token"])).json() for _ in range(3)]
    moved_on = (await refresh(client, app, retries[1]["refresh_token"])).json()
    assert refused(await refresh(client, app, first["refresh_token"]))
    for pair in (second, *retries, moved_on):
        assert not await works(client, pair["access_token"])
    assert await live_tokens(rt, user.id, app.id) == 0


# --- no retry outlives an ending ------------------------------------------------------------------

ENDINGS = ["user_revokes", "client_revokes_successor", "client_revokes_rotated", "staff_revokes",
           "user_disabled", "application_disabled", "owner_disabled", "code_replayed"]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_no_retry_within_the_leeway_outlives_an_ending(client, rt, party, ending):
    owner, app, user = party
    code = await get_code(client, user, app, scope="identify")
    first = (await exchange(client, app, code)).json()
    second = (await refresh(client, app, first["refresh_token"])).json()
    staff = await register(client)
    await admin.set_staff(rt, None, int(staff.id), True)
    if ending == "user_revokes":
        assert (await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}",
                                    headers=user.headers)).status_code == 204
    elif ending in ("client_revokes_successor", "client_revokes_rotated"):
        which = second if ending == "client_revokes_successor" else first
        revoked = await client.post(f"{TOKEN}/revoke", data={"token": which["refresh_token"]}, auth=app.basic)
        assert revoked.status_code == 200
    elif ending == "staff_revokes":
        assert (await client.delete(f"/api/v1/admin/grants/{user.id}/{app.id}",
                                    headers=staff.headers)).status_code == 204
    elif ending == "user_disabled":
        await admin.set_user_disabled(rt, None, int(user.id), True)
    elif ending == "application_disabled":
        await admin.set_application_disabled(rt, None, int(app.id), True)
    elif ending == "owner_disabled":
        await admin.set_user_disabled(rt, None, int(owner.id), True)
    elif ending == "code_replayed":
        assert refused(await exchange(client, app, code))
    retried = await refresh(client, app, first["refresh_token"])
    assert retried.status_code in (400, 401), retried.text
    # Enabled again, still nothing: what ended stays ended (grants/endings.py).
    await admin.set_user_disabled(rt, None, int(user.id), False)
    await admin.set_user_disabled(rt, None, int(owner.id), False)
    await admin.set_application_disabled(rt, None, int(app.id), False)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert refused(await refresh(client, app, second["refresh_token"]))
    assert await live_tokens(rt, user.id, app.id) == 0
    assert await audited(rt, "refresh_token.reuse_within_leeway") == []


@pytest.mark.parametrize("ending", ["staff_removed", "untrusted"])
async def test_no_retry_of_an_admin_grant_outlives_its_admin_ending(client, rt, trusted_app, ending):  # noqa: F811
    app, staff = trusted_app
    first = await tokens_for(client, staff, app, scope="identify admin")
    await refresh(client, app, first["refresh_token"])
    if ending == "staff_removed":
        await admin.set_staff(rt, None, int(staff.id), False)
    else:
        await admin.set_application_trusted(rt, None, int(app.id), False)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert await live_tokens(rt, staff.id, app.id) == 0


async def test_a_retry_checks_the_holder_itself_not_only_the_endings(client, rt, trusted_app):  # noqa: F811
    """Were an ending ever missed, the retry would still refuse: a staff flag gone (or a
    user disabled) behind the endings' back is seen by the retry, which issues nothing and
    ends an admin grant no longer allowed."""
    app, staff = trusted_app
    first = await tokens_for(client, staff, app, scope="identify admin")
    await refresh(client, app, first["refresh_token"])
    async with rt.db.write() as conn:
        await conn.execute(update(users).where(users.c.id == int(staff.id)).values(staff=False))
    count = await all_tokens(rt)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert await all_tokens(rt) == count and await live_tokens(rt, staff.id, app.id) == 0
    assert await audited(rt, "refresh_token.reuse_within_leeway") == []


async def test_a_retry_for_a_user_disabled_behind_the_endings_back_issues_nothing(client, rt, party, rotated):
    _owner, app, user = party
    first, _second = rotated
    async with rt.db.write() as conn:
        await conn.execute(update(users).where(users.c.id == int(user.id)).values(disabled_at=time.time()))
    count = await all_tokens(rt)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert await all_tokens(rt) == count


# --- interleavings ----------------------------------------------------------------------------------

async def test_a_retry_racing_a_refresh_of_the_successor_never_lets_the_original_back(client, rt, party):
    """Whichever lands first, afterwards the rotated token is reuse (a successor was
    refreshed), and at most one line of the family lives."""
    _owner, app, user = party
    for _ in range(12):
        first = await tokens_for(client, user, app)
        second = (await refresh(client, app, first["refresh_token"])).json()
        retry, moved_on = await asyncio.gather(refresh(client, app, first["refresh_token"]),
                                               refresh(client, app, second["refresh_token"]))
        assert retry.status_code in (200, 400) and moved_on.status_code == 200, (retry.text, moved_on.text)
        assert await live_lines(rt, user.id, app.id) <= 1
        assert refused(await refresh(client, app, first["refresh_token"]))
        assert await live_tokens(rt, user.id, app.id) == 0


async def test_a_retry_racing_a_revocation_never_outlives_it(client, rt, party):
    _owner, app, user = party
    for _ in range(12):
        first = await tokens_for(client, user, app)
        await refresh(client, app, first["refresh_token"])
        retry, revoked = await asyncio.gather(
            refresh(client, app, first["refresh_token"]),
            client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers))
        assert retry.status_code in (200, 400) and revoked.status_code == 204, (retry.text, revoked.text)
        assert await live_tokens(rt, user.id, app.id) == 0
        if retry.status_code == 200:
            assert not await works(client, retry.json()["access_token"])


async def test_parallel_retries_then_parallel_refreshes_of_their_pairs_leave_one_line(client, rt, party, rotated):
    """Every pair of a burst of retries is answered; a burst of refreshes of those pairs
    then leaves the family with one live line (no 500, whatever the order): the first
    refresh ends the other pairs, which, presented within the leeway of that, are retries
    joining its line. After the leeway, refreshing one pair of it ends the rest."""
    _owner, app, user = party
    first, second = rotated
    retries = await asyncio.gather(*(refresh(client, app, first["refresh_token"]) for _ in range(6)))
    assert [answer.status_code for answer in retries] == [200] * 6
    pairs = [second, *(answer.json() for answer in retries)]
    moved = await asyncio.gather(*(refresh(client, app, pair["refresh_token"]) for pair in pairs))
    assert all(answer.status_code in (200, 400) for answer in moved), [answer.text for answer in moved]
    assert await live_lines(rt, user.id, app.id) <= 1
    kept = next(answer.json() for answer in moved if answer.status_code == 200)
    assert (await refresh(client, app, kept["refresh_token"])).status_code == 200
    assert await live_tokens(rt, user.id, app.id, REFRESH) == 1


# --- families -----------------------------------------------------------------------------------

async def test_a_device_flow_family_gets_the_leeway_and_its_reuse_detection(client, rt):
    owner = await register(client)
    app = await create_app(client, owner, name="Living Room TV")
    viewer = await register(client, "viewer")
    await browser_login(client, "viewer")
    pair = await started(client, app)
    await approve(client, pair["user_code"])
    first = (await poll(client, app, pair["device_code"])).json()
    second = (await refresh(client, app, first["refresh_token"])).json()
    retried = await refresh(client, app, first["refresh_token"])
    assert retried.status_code == 200 and await works(client, second["access_token"])
    await rotated_long_ago(rt, first["refresh_token"], rt.settings.refresh_reuse_leeway + 1)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert await live_tokens(rt, viewer.id, app.id) == 0


async def test_a_retry_in_one_family_only_looks_at_its_own_family(client, rt, party):
    """Two codes of one grant make two families: refreshing the other family is no
    successor of this one's rotation, so the retry is still a retry; reuse in either ends both."""
    _owner, app, user = party
    one = await tokens_for(client, user, app)
    other = await tokens_for(client, user, app)
    await refresh(client, app, one["refresh_token"])
    other_moved_on = (await refresh(client, app, other["refresh_token"])).json()
    assert (await refresh(client, app, one["refresh_token"])).status_code == 200
    await rotated_long_ago(rt, one["refresh_token"], rt.settings.refresh_reuse_leeway + 1)
    assert refused(await refresh(client, app, one["refresh_token"]))
    assert not await works(client, other_moved_on["access_token"])


# --- accounting -------------------------------------------------------------------------------------

async def test_each_retry_and_each_detection_is_counted_and_audited_once(client, rt, party, rotated):
    _owner, app, user = party
    first, _second = rotated
    leeway_before, detected_before = reuse_count("leeway"), reuse_count("detected")
    await refresh(client, app, first["refresh_token"])
    await refresh(client, app, first["refresh_token"])
    assert reuse_count("leeway") == leeway_before + 2 and reuse_count("detected") == detected_before
    retries = await audited(rt, "refresh_token.reuse_within_leeway")
    assert len(retries) == 2
    assert all(row.target_user_id == int(user.id) and row.application_id == int(app.id) for row in retries)
    await rotated_long_ago(rt, first["refresh_token"], rt.settings.refresh_reuse_leeway + 1)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert reuse_count("leeway") == leeway_before + 2 and reuse_count("detected") == detected_before + 1
    assert len(await audited(rt, "refresh_token.reuse_detected")) == 1
    assert len(await audited(rt, "refresh_token.reuse_within_leeway")) == 2


# --- the boundary -----------------------------------------------------------------------------------

async def rotation_at(rt, refresh_token: str, at: float) -> None:
    """Sets a rotated token's rotation, and the issue of everything since, to ``at``."""
    key = credentials.stored_token_key(refresh_token)
    async with rt.db.write() as conn:
        row = (await conn.execute(select(tokens).where(tokens.c.token_hash == key))).first()
        await conn.execute(update(tokens).where(tokens.c.family_id == row.family_id,
                                                tokens.c.created_at >= row.revoked_at).values(created_at=at))
        await conn.execute(update(tokens).where(tokens.c.token_hash == key).values(revoked_at=at))


@pytest.mark.parametrize(("after", "retried"), [(0.0, True), (10.0, True), (10.001, False)])
async def test_the_leeway_ends_exactly_at_its_boundary(client, rt, party, rotated, monkeypatch, after, retried):
    _owner, app, user = party
    first, _second = rotated
    rotation = float(int(time.time()) + 1)  # a whole second (exact sums), after the token's own issue
    await rotation_at(rt, first["refresh_token"], rotation)
    assert rt.settings.refresh_reuse_leeway == 10.0
    monkeypatch.setattr(token_endpoint, "now", lambda: rotation + after)
    answer = await refresh(client, app, first["refresh_token"])
    assert answer.status_code == (200 if retried else 400), answer.text
    assert (await live_tokens(rt, user.id, app.id) > 0) is retried


# --- the leeway at 0 is strict detection ------------------------------------------------------------

STRICT = pytest.mark.settings(refresh_reuse_leeway=0)


@STRICT
@pytest.mark.parametrize("scope", [None, "identify", "identify guilds"])
async def test_with_no_leeway_any_retry_is_reuse(client, rt, party, rotated, scope):
    _owner, app, user = party
    first, second = rotated
    before = (reuse_count("leeway"), reuse_count("detected"))
    extra = {"scope": scope} if scope else {}
    assert refused(await refresh(client, app, first["refresh_token"], **extra))
    assert not await works(client, second["access_token"])
    assert await live_tokens(rt, user.id, app.id) == 0
    assert (reuse_count("leeway"), reuse_count("detected")) == (before[0], before[1] + 1)
    assert await audited(rt, "refresh_token.reuse_within_leeway") == []


@STRICT
async def test_with_no_leeway_parallel_presentations_have_one_winner(client, rt, party):
    _owner, app, user = party
    first = await tokens_for(client, user, app)
    answers = await asyncio.gather(*(refresh(client, app, first["refresh_token"]) for _ in range(6)))
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 5
    assert await live_tokens(rt, user.id, app.id) == 0  # the losers were reuse: the grant ended


@STRICT
async def test_with_no_leeway_another_client_is_refused_and_the_grant_lives(client, rt, party, rotated):
    owner, app, _user = party
    first, second = rotated
    other = await create_app(client, owner, name="Thief App")
    assert refused(await refresh(client, other, first["refresh_token"]))
    assert await works(client, second["access_token"])


@STRICT
async def test_with_no_leeway_an_expired_or_revoked_grant_is_refused_alike(client, rt, party, rotated):
    _owner, app, user = party
    first, second = rotated
    await client.delete(f"/api/v1/oauth2/@me/authorizations/{app.id}", headers=user.headers)
    assert refused(await refresh(client, app, first["refresh_token"]))
    assert refused(await refresh(client, app, second["refresh_token"]))
