"""Two server processes sharing the database and Redis (SPEC §7, §8): rate-limit counters
and revocations hold across processes."""

from __future__ import annotations

import pytest
import requests

from tests.backends import REDIS_URL, drop_redis_prefix, new_redis_prefix
from tests.interop.conftest import register_with_app, running_server, start_server, stop_server

pytestmark = pytest.mark.serial  # eleven requests must fit in one ten-second window


def test_two_processes_share_rate_limits_and_revocation(tmp_path, backend):
    database_url = backend.new_database(tmp_path)
    prefix = new_redis_prefix()
    shared = {"FLUXER_REDIS_URL": REDIS_URL, "FLUXER_REDIS_PREFIX": prefix, "FLUXER_RATE_LIMITS": "on"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, first_url = start_server(tmp_path / "a", database_url, **shared)
    second, second_url = start_server(tmp_path / "b", database_url, **shared)
    try:
        _, app = register_with_app(first_url, "Cluster", app_base=second_url)
        auth = (app["id"], app["client_secret"])

        # eleven token requests within ten seconds, alternating processes: the eleventh is refused
        statuses, tokens = [], []
        for n in range(11):
            base = (first_url, second_url)[n % 2]
            response = requests.post(f"{base}/api/v1/oauth2/token", auth=auth, timeout=10,
                                     data={"grant_type": "client_credentials"})
            statuses.append(response.status_code)
            if response.status_code == 200:
                tokens.append(response.json()["access_token"])
        assert statuses == [200] * 10 + [429]

        # a token revoked through one process is refused by the other on the next request
        token = tokens[0]
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{second_url}/api/v1/users/@me", headers=headers, timeout=10).status_code == 200
        revoked = requests.post(f"{first_url}/api/v1/oauth2/revoke", auth=auth, data={"token": token}, timeout=10)
        assert revoked.status_code == 200  # the revoke bucket is separate from the token bucket
        assert requests.get(f"{second_url}/api/v1/users/@me", headers=headers, timeout=10).status_code == 401
    finally:
        stop_server(first)
        stop_server(second)
        backend.drop_database(database_url)
        drop_redis_prefix(prefix)


def test_serve_with_two_workers_answers_and_aggregates_metrics(tmp_path, backend):
    with running_server(tmp_path, backend, workers=2) as base:
        statuses = {requests.get(f"{base}/api/v1/users/@me", timeout=10).status_code for _ in range(20)}
        assert statuses == {401}
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        line = next(l for l in metrics.splitlines()
                    if l.startswith('fluxer_http_requests_total{') and 'route="/api/v1/users/@me"' in l)
        assert float(line.rsplit(" ", 1)[1]) == 20.0  # both workers' counts, added up
