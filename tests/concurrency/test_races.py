"""Races against a real server with two worker processes (true parallelism, SQLite or
PostgreSQL): single-use codes, refresh rotation and consent approvals under 50 parallel
requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import PASSWORD
from tests.interop.conftest import running_server

PARALLEL = 50
# This module's two servers live side by side, two workers each, beside the other tests' on
# one PostgreSQL (100 connections): each worker keeps few, and the bursts wait for them.
SMALL_POOLS = {"FLUXER_DATABASE_POOL_SIZE": "5"}
CB = "https://race.example/cb"


@pytest.fixture(scope="module")
def race_server(tmp_path_factory, backend):
    # No refresh reuse leeway: a rotated token presented again is reuse at once, as before it.
    with running_server(tmp_path_factory.mktemp("race"), backend, workers=2, FLUXER_REFRESH_REUSE_LEEWAY="0",
                        **SMALL_POOLS) as base:
        yield base


@pytest.fixture(scope="module")
def party(race_server):
    base = race_server
    owner = requests.post(f"{base}/api/v1/auth/register", timeout=10, json={
        "username": "racer", "email": "racer@example.com", "password": PASSWORD}).json()
    app = requests.post(f"{base}/api/v1/oauth2/applications", headers={"Authorization": owner["token"]}, timeout=10,
                        json={"name": "Racer", "redirect_uris": [CB]}).json()
    return base, owner, app


def new_code(base, owner, app) -> str:
    response = requests.post(f"{base}/api/v1/oauth2/authorize/consent", headers={"Authorization": owner["token"]},
                             timeout=10, json={"client_id": app["id"], "scope": "identify", "authorize": True,
                                               "response_type": "code", "redirect_uri": CB})
    return parse_qs(urlsplit(response.json()["redirect_to"]).query)["code"][0]


def burst(function, count: int = PARALLEL) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: function(), range(count)))


def test_parallel_redemptions_of_one_code_issue_exactly_one_token(party):
    base, owner, app = party
    code = new_code(base, owner, app)
    results = burst(lambda: requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]),
                                          timeout=30, data={"grant_type": "authorization_code", "code": code,
                                                            "redirect_uri": CB}))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 1 and statuses.count(400) == PARALLEL - 1, statuses
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code == 400)


def test_parallel_refreshes_issue_one_pair_and_reuse_revokes_the_grant(party):
    base, owner, app = party
    code = new_code(base, owner, app)
    pair = requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                         data={"grant_type": "authorization_code", "code": code, "redirect_uri": CB}).json()
    results = burst(lambda: requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]),
                                          timeout=30, data={"grant_type": "refresh_token",
                                                            "refresh_token": pair["refresh_token"]}))
    winners = [r.json() for r in results if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in results]
    # Every loser presented an already-rotated refresh token: reuse detection ended the grant.
    me = requests.get(f"{base}/api/v1/users/@me", headers={"Authorization": f"Bearer {winners[0]['access_token']}"},
                      timeout=10)
    assert me.status_code == 401
    again = requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                          data={"grant_type": "refresh_token", "refresh_token": winners[0]["refresh_token"]})
    assert again.status_code == 400


@pytest.fixture(scope="module")
def leeway_party(tmp_path_factory, backend):
    """A server with the default refresh reuse leeway, and an owner with an application."""
    with running_server(tmp_path_factory.mktemp("leeway"), backend, workers=2, **SMALL_POOLS) as base:
        owner = requests.post(f"{base}/api/v1/auth/register", timeout=10, json={
            "username": "retrier", "email": "retrier@example.com", "password": PASSWORD}).json()
        app = requests.post(f"{base}/api/v1/oauth2/applications", headers={"Authorization": owner["token"]},
                            timeout=10, json={"name": "Retrier", "redirect_uris": [CB]}).json()
        yield base, owner, app


def test_parallel_refreshes_within_the_leeway_each_get_a_live_pair(leeway_party):
    """One rotation, and every other presentation a retry within the leeway: each answered
    with a pair that works, none refused, no 5xx, the grant alive; then a refresh of one
    pair makes the original token reuse, which ends them all."""
    base, owner, app = leeway_party
    auth = (app["id"], app["client_secret"])
    code = new_code(base, owner, app)
    pair = requests.post(f"{base}/api/v1/oauth2/token", auth=auth, timeout=10,
                         data={"grant_type": "authorization_code", "code": code, "redirect_uri": CB}).json()
    results = burst(lambda: requests.post(f"{base}/api/v1/oauth2/token", auth=auth, timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}))
    assert [r.status_code for r in results] == [200] * PARALLEL, [r.text for r in results if r.status_code != 200]
    pairs = [r.json() for r in results]
    assert len({p["refresh_token"] for p in pairs}) == PARALLEL
    for issued in pairs:
        me = requests.get(f"{base}/api/v1/users/@me", headers={"Authorization": f"Bearer {issued['access_token']}"},
                          timeout=10)
        assert me.status_code == 200
    moved_on = requests.post(f"{base}/api/v1/oauth2/token", auth=auth, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": pairs[0]["refresh_token"]})
    assert moved_on.status_code == 200
    reuse = requests.post(f"{base}/api/v1/oauth2/token", auth=auth, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": pair["refresh_token"]})
    assert reuse.status_code == 400
    me = requests.get(f"{base}/api/v1/users/@me", headers={"Authorization": f"Bearer {moved_on.json()['access_token']}"},
                      timeout=10)
    assert me.status_code == 401


def test_parallel_consent_approvals_make_one_grant(party):
    base, _owner, app = party
    user = requests.post(f"{base}/api/v1/auth/register", timeout=10, json={
        "username": "approver", "email": "approver@example.com", "password": PASSWORD}).json()
    results = burst(lambda: requests.post(
        f"{base}/api/v1/oauth2/authorize/consent", headers={"Authorization": user["token"]}, timeout=30,
        json={"client_id": app["id"], "scope": "identify email", "authorize": True, "response_type": "code",
              "redirect_uri": CB}), count=20)
    assert [r.status_code for r in results] == [200] * 20
    grants = requests.get(f"{base}/api/v1/oauth2/@me/authorizations", headers={"Authorization": user["token"]},
                          timeout=10).json()
    assert len(grants) == 1 and grants[0]["scopes"] == ["identify", "email"]


# --- issuance against an ending: whichever commits first, nothing issued outlives the ending ---

ROUNDS = 12


def _issue_while_revoking(base, owner, app, prepare) -> None:
    """A code redemption or a refresh (``prepare()`` makes the code or the refresh token and
    returns the request to send) and the user's revocation of the grant, side by side,
    ROUNDS times: the revocation always succeeds and always ends what the issuance gave,
    whichever of the two commits first."""
    for _ in range(ROUNDS):
        issue = prepare()
        with ThreadPoolExecutor(max_workers=2) as pool:
            issued = pool.submit(issue)
            revoked = pool.submit(lambda: requests.delete(
                f"{base}/api/v1/oauth2/@me/authorizations/{app['id']}", headers={"Authorization": owner["token"]},
                timeout=30))
            issued, revoked = issued.result(), revoked.result()
        assert revoked.status_code == 204, revoked.text  # never a 500 that rolls the ending back
        assert issued.status_code in (200, 400), issued.text
        if issued.status_code == 200:
            body = issued.json()
            me = requests.get(f"{base}/api/v1/users/@me", headers={"Authorization": f"Bearer {body['access_token']}"},
                              timeout=10)
            assert me.status_code == 401, "a token issued across a revocation outlived it"
            again = requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                                  data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
            assert again.status_code == 400
        listed = requests.get(f"{base}/api/v1/oauth2/@me/authorizations", headers={"Authorization": owner["token"]},
                              timeout=10).json()
        assert [grant for grant in listed if grant["application"]["id"] == app["id"]] == []


def test_a_code_redemption_racing_a_revocation_never_outlives_it(party):
    base, owner, app = party

    def prepare():
        data = {"grant_type": "authorization_code", "code": new_code(base, owner, app), "redirect_uri": CB}
        return lambda: requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]),
                                     timeout=30, data=data)

    _issue_while_revoking(base, owner, app, prepare)


def test_a_refresh_racing_a_revocation_never_outlives_it(party):
    base, owner, app = party

    def prepare():
        pair = requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                             data={"grant_type": "authorization_code", "code": new_code(base, owner, app),
                                   "redirect_uri": CB}).json()
        data = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
        return lambda: requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]),
                                     timeout=30, data=data)

    _issue_while_revoking(base, owner, app, prepare)
