"""``fluxer-oauth serve`` speaks RSGI and answers the busiest requests itself, before the
ASGI application; ``--interface asgi`` serves the same application through ASGI. Both
processes here share one database, and each request is sent to both: same status, same
body (token values aside), same headers (date and request id values aside). Then what the
direct path must keep from the edge: body limits, the global limit behind a trusted proxy,
metrics."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.interop.conftest import register_with_app, start_server, stop_server

VARYING_HEADERS = {"date", "x-request-id", "x-ratelimit-reset", "x-ratelimit-reset-after"}
VARYING_FIELDS = {"access_token", "refresh_token", "exp", "iat"}


@pytest.fixture(scope="module")
def both(tmp_path_factory, backend):
    tmp_path = tmp_path_factory.mktemp("interfaces")
    database_url = backend.new_database(tmp_path)
    servers = {}
    try:
        for interface in ("rsgi", "asgi"):
            (tmp_path / interface).mkdir()
            servers[interface] = start_server(tmp_path / interface, database_url, interface=interface,
                                              FLUXER_PUBLIC_URL="http://fluxer.test")  # same documents
        yield {name: base for name, (_, base) in servers.items()}
    finally:
        for process, _ in servers.values():
            stop_server(process)
        backend.drop_database(database_url)


@pytest.fixture(scope="module")
def client(both):
    base = both["rsgi"]
    account, app = register_with_app(base, "Interfaces")
    token = requests.post(f"{base}/api/v1/oauth2/token", auth=(app["id"], app["client_secret"]), timeout=10,
                          data={"grant_type": "client_credentials", "scope": "identify"}).json()["access_token"]
    return {"auth": (app["id"], app["client_secret"]), "id": app["id"], "bot": app["bot"]["token"],
            "token": token, "session": account["token"]}


def _requests(client):
    auth = client["auth"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return [
        ("GET", "/healthz", {}),
        ("GET", "/.well-known/oauth-authorization-server", {}),
        ("POST", "/api/v1/oauth2/token", {"auth": auth, "data": {"grant_type": "client_credentials"}}),
        ("POST", "/v1/oauth2/token", {"auth": auth, "data": {"grant_type": "client_credentials", "scope": "bot"}}),
        ("POST", "/api/v1/oauth2/token", {"auth": (auth[0], "wrong"), "data": {"grant_type": "client_credentials"}}),
        ("POST", "/api/v1/oauth2/token", {"auth": auth, "json": {"grant_type": "client_credentials"}}),
        ("POST", "/api/v1/oauth2/token", {"auth": auth, "data": b"grant_type=%ff", "headers": form}),
        ("POST", "/api/v1/oauth2/introspect", {"auth": auth, "data": {"token": client["token"]}}),
        ("POST", "/api/v1/oauth2/introspect", {"auth": auth, "data": {"token": "not-a-token"}}),
        ("POST", "/api/v1/oauth2/token/revoke", {"auth": auth, "data": {"token": "not-a-token"}}),
        ("GET", "/api/v1/users/@me", {"headers": {"Authorization": f"Bearer {client['token']}"}}),
        ("GET", "/v1/users/@me", {"headers": {"Authorization": f"Bot {client['bot']}"}}),
        ("GET", "/api/v1/users/@me", {"headers": {"Authorization": "Bearer nope"}}),
        ("GET", "/api/v1/users/@me", {}),
        ("GET", "/api/v1/users/@me", {"headers": {"Authorization": client["session"]}}),
        ("GET", "/api/v1/users/@me/guilds", {"headers": {"Authorization": f"Bearer {client['token']}"}}),
        ("GET", f"/api/v1/oauth2/applications/{client['id']}", {"headers": {"Authorization": client["session"]}}),
        ("GET", "/oauth2/authorize?response_type=code&client_id=1&redirect_uri=https%3A%2F%2Fx.example", {}),
        ("GET", "/login?next=%2Fdevelopers%2Fapplications", {}),
        ("GET", "/static/style.css", {}),
        ("GET", "/nowhere", {}),
        ("DELETE", "/api/v1/oauth2/token", {}),
    ]


def _comparable(response):
    headers = {name.lower(): value for name, value in response.headers.items() if name.lower() not in VARYING_HEADERS}
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict):
            body = {key: ("<varies>" if key in VARYING_FIELDS else value) for key, value in body.items()}
    elif response.headers.get("content-type", "").startswith("text/html"):
        body = len(response.text) // 100  # the CSRF token differs; the page does not
        headers.pop("set-cookie", None)
        headers.pop("content-length", None)
    else:
        body = response.content
    return response.status_code, body, headers


def test_both_interfaces_give_the_same_answers(both, client):
    for method, path, options in _requests(client):
        answers = [_comparable(requests.request(method, both[name] + path, timeout=10, allow_redirects=False,
                                                **options)) for name in ("rsgi", "asgi")]
        assert answers[0] == answers[1], f"{method} {path}"
        assert answers[0][0] != 500, f"{method} {path}"


def test_every_answer_carries_a_request_id(both, client):
    for method, path, options in _requests(client):
        response = requests.request(method, both["rsgi"] + path, timeout=10, allow_redirects=False, **options)
        assert len(response.headers["x-request-id"]) == 16, f"{method} {path}"


def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _chunked_token_request(pieces: list[bytes], extra_headers: bytes = b"") -> bytes:
    """A raw POST to the token endpoint whose form body comes in chunks, its length undeclared."""
    return (b"POST /api/v1/oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra_headers
            + b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n")


OVERSIZED_PIECES = [b"a=" + b"x" * 30_000 + b"&"] * 3  # 90 KB, past the 64 KiB limit


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_bodies_over_the_limit_are_refused_declared_or_chunked(both, client, interface):
    base = both[interface]
    declared = requests.post(f"{base}/api/v1/oauth2/token", auth=client["auth"], timeout=10,
                             data={"grant_type": "client_credentials", "pad": "x" * 70_000})
    assert declared.status_code == 413 and declared.json()["code"] == "PAYLOAD_TOO_LARGE"
    answer = _raw(base, _chunked_token_request(OVERSIZED_PIECES))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"PAYLOAD_TOO_LARGE" in answer
    # a chunked body under the limit is read whole
    answer = _raw(base, _chunked_token_request([b"grant_type=client_credentials"]))
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]  # no client authentication: read and answered
    assert b"invalid_client" in answer


def test_the_global_limit_counts_the_direct_paths_per_forwarded_client(tmp_path, backend):
    database_url = backend.new_database(tmp_path)
    process, base = start_server(tmp_path, database_url, FLUXER_RATE_LIMITS="on", FLUXER_RATE_LIMIT_GLOBAL="4/minute",
                                 FLUXER_TRUSTED_PROXIES="127.0.0.1/32")
    try:
        def token_request(client_ip):
            return requests.post(f"{base}/api/v1/oauth2/introspect", timeout=10, data={"token": "x"},
                                 headers={"X-Forwarded-For": f"{client_ip}, 127.0.0.1"})

        first = [token_request("203.0.113.7") for _ in range(4)]
        assert [r.status_code for r in first] == [401] * 4  # counted, then answered by the endpoint
        refused = token_request("203.0.113.7")
        assert refused.status_code == 429
        assert refused.json()["global"] is True and refused.json()["retry_after"] > 0
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit"] == "4" and refused.headers["x-ratelimit-remaining"] == "0"
        me = requests.get(f"{base}/api/v1/users/@me", timeout=10, headers={"X-Forwarded-For": "203.0.113.7"})
        assert me.status_code == 429
        assert token_request("198.51.100.9").status_code == 401  # another client behind the proxy

        metrics = requests.get(f"{base}/metrics", timeout=10).text
        counted = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("fluxer_http_requests_total{")}
        key = next(k for k in counted if 'route="/api/v1/oauth2/introspect"' in k and 'status="429"' in k)
        assert counted[key] == 1
        key = next(k for k in counted if 'route="/api/v1/oauth2/introspect"' in k and 'status="401"' in k)
        assert counted[key] == 5
    finally:
        stop_server(process)
        backend.drop_database(database_url)


@pytest.mark.parametrize("counters", ["memory", "redis"])
def test_a_token_request_is_counted_globally_whatever_its_body(tmp_path, backend, counters):
    """The global count of a token request waits for the body (to go with the client's
    count), but every request is counted: one whose body outgrows the limit while read, or
    names no client, as well; over the global limit the 429 comes before the 413 or 400."""
    from tests.backends import REDIS_URL, drop_redis_prefix, new_redis_prefix

    database_url = backend.new_database(tmp_path)
    prefix = new_redis_prefix()
    # An empty URL keeps the counters in memory also where the suite runs with Redis.
    redis_url = REDIS_URL if counters == "redis" else ""
    process, base = start_server(tmp_path, database_url, FLUXER_RATE_LIMITS="on", FLUXER_RATE_LIMIT_GLOBAL="5/minute",
                                 FLUXER_TRUSTED_PROXIES="127.0.0.1/32", FLUXER_REDIS_URL=redis_url,
                                 FLUXER_REDIS_PREFIX=prefix)
    try:  # set up from the proxy's own address; the client below is 203.0.113.8
        _, app = register_with_app(base, "Counted")
        auth = (app["id"], app["client_secret"])
        oversized = _chunked_token_request(OVERSIZED_PIECES, b"X-Forwarded-For: 203.0.113.8\r\n")

        def token():
            return requests.post(f"{base}/api/v1/oauth2/token", auth=auth, timeout=10,
                                 data={"grant_type": "client_credentials"}, headers={"X-Forwarded-For": "203.0.113.8"})

        def malformed():
            return requests.post(f"{base}/api/v1/oauth2/token", data=b"x", timeout=10,
                                 headers={"X-Forwarded-For": "203.0.113.8", "Content-Type": "text/plain"})

        assert _raw(base, oversized).startswith(b"HTTP/1.1 413")  # global 1
        assert malformed().status_code == 400  # global 2
        assert token().status_code == 200  # global 3
        assert _raw(base, oversized).startswith(b"HTTP/1.1 413")  # global 4
        assert token().status_code == 200  # global 5: the last
        for late in (token(), malformed()):
            assert late.status_code == 429 and late.json()["global"] is True
        assert _raw(base, oversized).startswith(b"HTTP/1.1 429")
        import redis

        stored = redis.Redis.from_url(REDIS_URL)
        try:  # the counts were where the parameter says
            assert bool(stored.keys(f"{prefix}:rl:*")) == (counters == "redis")
        finally:
            stored.close()
    finally:
        stop_server(process)
        backend.drop_database(database_url)
        drop_redis_prefix(prefix)


@pytest.mark.serial  # counts Redis's script calls server-wide
def test_with_the_counters_in_redis_each_direct_request_takes_one_call(tmp_path, backend):
    """Counters in Redis: a token request counts the global and the client limit in one
    script call (the global first: refused there, the client's counter is not touched);
    ``GET /users/@me`` counts the global while the token is looked up, and once, also when
    the lookup fails and the request goes on to the application. What is refused, and in
    which order, is as with one call after the other."""
    import redis

    from tests.backends import REDIS_URL, drop_redis_prefix, new_redis_prefix

    database_url = backend.new_database(tmp_path)
    prefix = new_redis_prefix()
    process, base = start_server(tmp_path, database_url, FLUXER_RATE_LIMITS="on", FLUXER_RATE_LIMIT_GLOBAL="8/minute",
                                 FLUXER_RATE_LIMIT_TOKEN="3/minute", FLUXER_TRUSTED_PROXIES="127.0.0.1/32",
                                 FLUXER_REDIS_URL=REDIS_URL, FLUXER_REDIS_PREFIX=prefix)
    counters = redis.Redis.from_url(REDIS_URL)

    def script_calls() -> int:
        stats = counters.info("commandstats")
        return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))

    try:  # set up from the proxy's own address; the client below is 203.0.113.7
        _, app = register_with_app(base, "Counted")
        auth = (app["id"], app["client_secret"])
        grant = {"grant_type": "client_credentials", "scope": "identify"}
        bearer = requests.post(f"{base}/api/v1/oauth2/token", auth=auth, data=grant, timeout=10).json()["access_token"]
        hop = {"X-Forwarded-For": "203.0.113.7"}

        def counted(send):
            # Hits far below a limit are written behind within 5 ms (web/ratelimit.py): let an
            # earlier request's flush land before counting this request's own calls.
            time.sleep(0.05)
            before = script_calls()
            response = send()
            return response, script_calls() - before

        def token(**extra):
            return requests.post(f"{base}/api/v1/oauth2/token", auth=auth, data=grant, headers=hop, timeout=10, **extra)

        def me(value):
            return requests.get(f"{base}/api/v1/users/@me", headers={**hop, "Authorization": f"Bearer {value}"},
                                timeout=10)

        def revoke():
            return requests.post(f"{base}/api/v1/oauth2/token/revoke", auth=auth, data={"token": "x"}, headers=hop,
                                 timeout=10)

        first = token()  # global 1; the client's second token of three
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining"] == "1"
        second, calls = counted(token)  # global 2
        assert second.status_code == 200 and second.headers["x-ratelimit-remaining"] == "0" and calls == 1
        refused = token()  # global 3: the client's own limit refuses
        assert refused.status_code == 429 and refused.json()["global"] is False
        assert refused.headers["x-ratelimit-bucket"] == "token"
        malformed = requests.post(f"{base}/api/v1/oauth2/token", data=b"x", headers={**hop, "Content-Type": "text/plain"},
                                  timeout=10)
        assert malformed.status_code == 400  # global 4: counted though it never named a client
        missed, calls = counted(lambda: me("not-a-token"))  # global 5, once, then the application's 401
        assert missed.status_code == 401 and calls == 1
        found, calls = counted(lambda: me(bearer))  # global 6
        assert found.status_code == 200 and found.json()["id"] == app["bot"]["id"] and calls == 1
        assert requests.post(f"{base}/api/v1/oauth2/introspect", auth=auth, data={"token": bearer}, headers=hop,
                             timeout=10).json()["active"] is True  # global 7
        assert revoke().status_code == 200  # global 8: the last
        assert int(counters.hget(f"{prefix}:rl:revoke:client:{app['id']}", "c")) == 1
        over = revoke()
        assert over.status_code == 429 and over.json()["global"] is True
        assert int(counters.hget(f"{prefix}:rl:revoke:client:{app['id']}", "c")) == 1  # not counted
        assert me(bearer).status_code == 429
        late = requests.post(f"{base}/api/v1/oauth2/token", data=b"x", headers={**hop, "Content-Type": "text/plain"},
                             timeout=10)
        assert late.status_code == 429 and late.json()["global"] is True  # the global limit before the 400
        assert requests.get(f"{base}/api/v1/users/@me", headers={"Authorization": f"Bearer {bearer}"},
                            timeout=10).status_code == 200  # the proxy's own address has its own count
    finally:
        stop_server(process)
        counters.close()
        drop_redis_prefix(prefix)
        backend.drop_database(database_url)
