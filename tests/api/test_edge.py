"""One edge: every hot route answers the same through each server interface (RSGI, ASGI)
and through the framework's own route (the full handler), because each is one function
behind thin translators (web/edge.py). The RSGI entry is driven here in process with
granian's scope and protocol objects imitated; tests/interop/test_interfaces.py runs the
real granian server against the ASGI one."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import httpx
import pytest

from fluxer_oauth.web.rsgi import RsgiEntry
from tests.conftest import bearer, create_app, database_out_of_reach, exchange, get_code, register, tokens_for

EDGE_ONLY_HEADERS = {"x-request-id", "x-content-type-options", "content-length", "x-ratelimit-limit",
                     "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-reset-after", "x-ratelimit-bucket"}
VARYING_FIELDS = {"access_token", "refresh_token", "exp", "iat", "device_code", "user_code",
                  "verification_uri_complete"}
FORM = "application/x-www-form-urlencoded"


class _RsgiHeaders:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = [(name.lower(), value) for name, value in pairs]

    def get(self, name, default=None):
        return next((value for key, value in self._pairs if key == name), default)

    def get_all(self, name):
        return [value for key, value in self._pairs if key == name]

    def items(self):
        return list(self._pairs)


class _RsgiScope:
    proto = "http"
    http_version = "1.1"
    scheme = "http"
    client = "127.0.0.1:50000"
    server = "127.0.0.1:8080"

    def __init__(self, method: str, path: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.path, _, self.query_string = path.partition("?")
        self.headers = _RsgiHeaders(headers)


class _RsgiProto:
    """granian's protocol object as the entry uses it: the body, and one response."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.answer = None

    async def __call__(self) -> bytes:
        return self._body

    def __aiter__(self):
        async def chunks():
            if self._body:
                yield self._body
        return chunks()

    def response_bytes(self, status, headers, body) -> None:
        self.answer = (status, headers, body)


async def via_rsgi(app, method, path, headers, body) -> tuple[int, dict, bytes]:
    proto = _RsgiProto(body)
    pairs = list(headers.items()) + ([("content-length", str(len(body)))] if body else [])
    await RsgiEntry(app).__rsgi__(_RsgiScope(method, path, pairs), proto)
    status, answer_headers, content = proto.answer
    return status, {name.lower(): value for name, value in answer_headers}, content


async def via_asgi(app, method, path, headers, body) -> tuple[int, dict, bytes]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        response = await http.request(method, path, headers=headers, content=body or None)
    return response.status_code, {name.lower(): value for name, value in response.headers.items()}, response.content


async def via_handler(app, method, path, headers, body) -> tuple[int, dict, bytes]:
    """The framework alone, as the router would enter the route: no edge in front."""
    async def framework_only(scope, receive, send):
        await app.framework({**scope, "app": app, "state": {}}, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=framework_only),
                                 base_url="http://testserver") as http:
        response = await http.request(method, path, headers=headers, content=body or None)
    return response.status_code, {name.lower(): value for name, value in response.headers.items()}, response.content


INTERFACES = {"rsgi": via_rsgi, "asgi": via_asgi, "handler": via_handler}


def comparable(answer) -> tuple[int, dict, object]:
    status, headers, content = answer
    route_headers = {name: value for name, value in headers.items() if name not in EDGE_ONLY_HEADERS}
    body = json.loads(content) if content else None
    if isinstance(body, dict):
        body = {key: ("<varies>" if key in VARYING_FIELDS else value) for key, value in body.items()}
    return status, route_headers, body


@pytest.fixture
async def world(client, rt):
    owner = await register(client)
    app = await create_app(client, owner)
    user_tokens = await tokens_for(client, owner, app, scope="identify email")
    guild_only = await tokens_for(client, owner, app, scope="guilds")
    bot_token = app.body["bot"]["token"]
    return {"client": client, "owner": owner, "app": app, "identify_email": user_tokens["access_token"],
            "guilds_only": guild_only["access_token"], "bot": bot_token}


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _form(**fields) -> bytes:
    return urlencode(fields).encode()


async def _fresh_code(world) -> str:
    return await get_code(world["client"], world["owner"], world["app"], scope="identify")


async def _fresh_refresh(world) -> str:
    response = await exchange(world["client"], world["app"], await _fresh_code(world))
    return response.json()["refresh_token"]


def _cases(world):
    """(hot route path, method, path, headers, body maker) — the body maker runs once per
    interface, so single-use credentials (codes, refresh tokens) are fresh each time."""
    app = world["app"]
    basic = _basic(app.id, app.secret)
    form = {"Content-Type": FORM, "Authorization": basic}
    wrong = {"Content-Type": FORM, "Authorization": _basic(app.id, "wrong")}

    async def fixed(body=b""):
        return body

    def body(value=b""):
        return lambda: fixed(value)

    async def code_body():
        return _form(grant_type="authorization_code", code=await _fresh_code(world),
                     redirect_uri="https://client.example/callback")

    async def refresh_body():
        return _form(grant_type="refresh_token", refresh_token=await _fresh_refresh(world))

    token, revoke, introspect, me = ("/api/v1/oauth2/token", "/api/v1/oauth2/token/revoke",
                                     "/api/v1/oauth2/introspect", "/api/v1/users/@me")
    device = "/api/v1/oauth2/device/authorize"
    return [
        (token, "POST", token, form, body(_form(grant_type="client_credentials", scope="identify"))),
        (token, "POST", "/v1/oauth2/token", form, body(_form(grant_type="client_credentials"))),
        (token, "POST", token, form, code_body),
        (token, "POST", token, form, refresh_body),
        (token, "POST", token, wrong, body(_form(grant_type="client_credentials"))),
        (token, "POST", token, form, body(_form(grant_type="password", username="a", password="b"))),
        (token, "POST", token, form, body(b"grant_type=%ff")),
        (token, "POST", token, {"Authorization": basic, "Content-Type": "application/json"},
         body(b'{"grant_type": "client_credentials"}')),
        (token, "POST", token, {"Content-Type": FORM}, body(_form(grant_type="client_credentials"))),
        (device, "POST", device, form, body(_form(scope="identify"))),
        (device, "POST", "/v1/oauth2/device/authorize", form, body(_form(scope="bot"))),
        (device, "POST", device, wrong, body(_form(scope="identify"))),
        (revoke, "POST", revoke, form, body(_form(token="not-a-token"))),
        (revoke, "POST", revoke, wrong, body(_form(token="not-a-token"))),
        (introspect, "POST", introspect, form, body(_form(token=world["identify_email"]))),
        (introspect, "POST", introspect, form, body(_form(token="not-a-token"))),
        (introspect, "POST", "/v1/oauth2/introspect", wrong, body(_form(token="x"))),
        (me, "GET", me, bearer(world["identify_email"]), body()),
        (me, "GET", "/v1/users/@me", bearer(world["identify_email"]), body()),
        (me, "GET", me, bearer(world["guilds_only"]), body()),
        (me, "GET", me, {"Authorization": f"Bot {world['bot']}"}, body()),
        (me, "GET", me, {"Authorization": world["owner"].token}, body()),
        (me, "GET", me, {"Authorization": f"Bearer {world['owner'].token}"}, body()),
        (me, "GET", me, bearer("not-a-token"), body()),
        (me, "GET", me, {"Authorization": "Bot x.y.z"}, body()),
        (me, "GET", me, {}, body()),
    ]


async def test_every_hot_route_answers_alike_through_each_interface_and_its_handler(app, world):
    cases = _cases(world)
    hot = {route.name for route in app.edge.hot_routes.values()}
    assert hot == {case[0] for case in cases}, "every hot route needs cases here"
    for _, method, path, headers, make_body in cases:
        answers = {}
        for name, send in INTERFACES.items():
            answers[name] = await send(app, method, path, headers, await make_body())
        edge = {name: comparable(answer) for name, answer in answers.items() if name != "handler"}
        assert edge["rsgi"] == edge["asgi"], (method, path, headers)
        status, route_headers, body = comparable(answers["handler"])
        assert (status, body) == edge["asgi"][0::2], (method, path, headers)
        # What the route itself set is the same; the edge only adds (no-store, ids, limits).
        assert route_headers.items() <= edge["asgi"][1].items(), (method, path, headers)


async def test_edge_adds_its_headers_to_every_hot_answer(app, world):
    for _, method, path, headers, make_body in _cases(world):
        for send in (via_rsgi, via_asgi):
            status, answer_headers, _ = await send(app, method, path, headers, await make_body())
            assert answer_headers["cache-control"] == "no-store", (path, status)
            assert answer_headers["x-content-type-options"] == "nosniff"
            assert len(answer_headers["x-request-id"]) == 16
            assert answer_headers["content-type"] == "application/json"


async def test_users_me_full_handler_answers_the_user_with_email_only_under_its_scope(app, world):
    """The framework's /users/@me (no fast path in front) gives the same user as the edge."""
    with_email = await via_handler(app, "GET", "/api/v1/users/@me", bearer(world["identify_email"]), b"")
    assert with_email[0] == 200
    user = json.loads(with_email[2])
    assert user["id"] == world["owner"].id and user["email"] == world["owner"].user["email"]
    bot = json.loads((await via_handler(app, "GET", "/api/v1/users/@me",
                                                      {"Authorization": f"Bot {world['bot']}"}, b""))[2])
    assert bot["bot"] is True and "email" not in bot
    missing = await via_handler(app, "GET", "/api/v1/users/@me", bearer(world["guilds_only"]), b"")
    assert missing[0] == 403 and b"MISSING_OAUTH_SCOPE" in missing[2]


async def test_answers_without_a_body_carry_no_content_length_through_asgi(app, world):
    """A 204 (and a 304) may not carry Content-Length (RFC 9110 §8.6)."""
    owner, application = world["owner"], world["app"]
    status, headers, _ = await via_asgi(app, "DELETE", f"/api/v1/oauth2/@me/authorizations/{application.id}",
                                        owner.headers, b"")
    assert status == 204 and "content-length" not in headers


async def test_an_unexpected_error_is_a_json_500_that_names_the_request_and_its_route(app, world, monkeypatch):
    from fluxer_oauth.ops import metrics

    async def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("fluxer_oauth.platform.guilds.user_guilds", broken)
    counted = metrics.REQUESTS.labels("/api/v1/users/@me/guilds", "GET", "500")
    before = counted._value.get()
    for send in (via_rsgi, via_asgi):
        status, headers, content = await send(app, "GET", "/api/v1/users/@me/guilds", world["owner"].headers, b"")
        assert status == 500
        assert json.loads(content) == {"code": "INTERNAL_ERROR", "message": "unexpected error",
                                       "request_id": headers["x-request-id"]}
    assert counted._value.get() == before + 2  # named by its route, not "unmatched"


async def test_the_database_out_of_reach_is_a_503_page_on_pages_and_json_on_the_api(app, client, monkeypatch):
    database_out_of_reach(app, monkeypatch)
    client.cookies.set("fluxer_session", "flx_" + "a" * 36)  # a page that must look the session up
    page = await client.get("/settings/authorized-apps")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "Temporarily unavailable" in page.text
    api = await client.get("/api/v1/users/@me", headers={"Authorization": "flx_" + "a" * 36})
    assert api.status_code == 503 and api.json()["code"] == "SERVICE_UNAVAILABLE"
