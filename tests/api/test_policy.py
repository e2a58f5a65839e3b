"""Declared policy is enforced policy: every operation of the route table, taken from its
declaration (not from a list kept here), answers as its ``auth``, ``scope`` and ``bucket``
say; and every place that lists scopes reads them from ``core.scopes.SCOPES``."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest

from fluxer_oauth.app import build_app
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.scopes import ALL_SCOPES, CLIENT_CREDENTIALS_SCOPES, SCOPE, SCOPES, ScopeError, check_scope_rules
from fluxer_oauth.platform import admin
from fluxer_oauth.web.api import CLIENT_AUTH, PER_CLIENT, router
from fluxer_oauth.web.caller import BEARER, BOT, SESSION
from tests.api.test_authorize import authorize_url, browser_login
from tests.conftest import bearer, create_app, register, tokens_for

KINDS = (SESSION, BEARER, BOT)
GUARDED = [op for op in router.operations if op.kinds]  # a session, a bearer token or a bot
CLIENTS = [op for op in router.operations if CLIENT_AUTH in op.auth]  # OAuth2 client authentication
BUCKETED = [op for op in router.operations if op.bucket is not None]
STAFF_ONLY = [op for op in GUARDED if op.scope is not None and SCOPE[op.scope].staff_only]


def name(op) -> str:
    return f"{op.method} {op.path}"


def url(op) -> str:
    # The policy runs before the handler reads the path, so any well-formed value will do.
    return "/api/v1" + re.sub(r"{(\w+)}", lambda m: "4242" if m.group(1).endswith("_id") else "x", op.path)


def without(scope: str) -> str:
    """Every scope a code grant can carry except ``scope`` (and what requires or implies it)."""
    kept = [s.name for s in SCOPES if s.name not in (scope, "bot") and scope not in (s.requires, s.implies)]
    return " ".join(kept)


REFUSED = {"UNAUTHORIZED", "MISSING_OAUTH_SCOPE"}
KIND_REFUSALS = {"this route needs a user session", *(f"a {kind} credential may not use this route" for kind in KINDS)}


class Credentials:
    """One credential of each kind, all passing every declared policy: a staff member's
    session, a bearer token with every scope a code grant carries, the application's bot."""

    def __init__(self, client, staff, user, app, full_token) -> None:
        self.client, self.staff, self.user, self.app, self.full_token = client, staff, user, app, full_token

    def headers(self, kind: str) -> dict:
        if kind == SESSION:
            return self.staff.headers
        if kind == BEARER:
            return bearer(self.full_token)
        return {"Authorization": f"Bot {self.app.body['bot']['token']}"}

    async def token_without(self, scope: str) -> str:
        return (await tokens_for(self.client, self.staff, self.app, scope=without(scope)))["access_token"]


async def make_credentials(client, rt) -> Credentials:
    staff = await register(client)
    user = await register(client)
    await admin.set_staff(rt, None, int(staff.id), True)
    app = await create_app(client, staff)
    await admin.set_application_trusted(rt, None, int(app.id), True)
    every = " ".join(s.name for s in SCOPES if s.name != "bot")
    full = (await tokens_for(client, staff, app, scope=every))["access_token"]
    return Credentials(client, staff, user, app, full)


@pytest.fixture
async def creds(client, rt) -> Credentials:
    return await make_credentials(client, rt)


def test_the_table_declares_what_these_tests_cover():
    assert GUARDED and CLIENTS and BUCKETED and STAFF_ONLY
    assert all(op.kinds or op.auth in ((), (CLIENT_AUTH,)) for op in router.operations)
    assert all(op.scope is None or op.scope in SCOPE for op in router.operations)


# --- authentication -----------------------------------------------------------------------

@pytest.mark.parametrize("op", GUARDED, ids=name)
async def test_no_credential_is_401(client, op):
    response = await client.request(op.method, url(op))
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    bad = await client.request(op.method, url(op), headers=bearer("not-a-token"))
    assert bad.status_code == 401 and bad.json()["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("op", CLIENTS, ids=name)
async def test_client_routes_without_a_client_are_401_invalid_client(client, op, creds):
    # The form endpoints authenticate their client themselves (oauth/client_auth.py): no
    # client, or a credential of another kind, is the OAuth2 envelope's invalid_client.
    form = {"grant_type": "client_credentials", "token": "x"}
    for headers in ({}, creds.headers(SESSION), creds.headers(BEARER)):
        response = await client.request(op.method, url(op), data=form, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize(("op", "kind"), [(op, kind) for op in GUARDED for kind in KINDS if kind not in op.kinds],
                         ids=lambda value: name(value) if hasattr(value, "path") else value)
async def test_undeclared_credential_kind_is_403(client, creds, op, kind):
    response = await client.request(op.method, url(op), headers=creds.headers(kind))
    assert response.status_code == 403, response.text
    expected = "this route needs a user session" if op.kinds == (SESSION,) else f"a {kind} credential may not use this route"
    assert response.json() == {"code": "ACCESS_DENIED", "message": expected}


@pytest.mark.parametrize(("op", "kind"), [(op, kind) for op in GUARDED for kind in op.kinds],
                         ids=lambda value: name(value) if hasattr(value, "path") else value)
async def test_declared_credential_kind_passes_the_policy(client, creds, app, rt, op, kind):
    request_scope = {"app": app, "state": {}, "client": ("127.0.0.1", 1)}  # what a counted bucket needs
    caller = await op.admit(rt, creds.headers(kind)["Authorization"], request_scope)
    assert caller.kind == kind
    response = await client.request(op.method, url(op), headers=creds.headers(kind))
    assert response.status_code not in (401, 500), response.text
    if response.status_code == 403:  # the handler's own refusal (e.g. a guild's permissions), not the policy's
        body = response.json()
        assert body["code"] not in REFUSED and body["message"] not in KIND_REFUSALS, body


# --- scopes -------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [op for op in GUARDED if BEARER in op.kinds and op.scope], ids=name)
async def test_bearer_token_without_the_declared_scope_is_403(client, creds, op):
    token = await creds.token_without(op.scope)
    response = await client.request(op.method, url(op), headers=bearer(token))
    assert response.status_code == 403
    assert response.json() == {"code": "MISSING_OAUTH_SCOPE", "message": f"this token lacks the {op.scope} scope",
                               "required_scope": op.scope}
    assert response.headers["www-authenticate"] == f'Bearer error="insufficient_scope", scope="{op.scope}"'


@pytest.mark.parametrize("op", STAFF_ONLY, ids=name)
async def test_staff_only_scope_routes_refuse_other_users(client, creds, op):
    response = await client.request(op.method, url(op), headers=creds.user.headers)
    assert response.status_code == 403
    assert response.json() == {"code": "ACCESS_DENIED", "message": f"only staff members may use the {op.scope} API"}


async def test_the_order_is_401_then_kind_then_scope(client, creds, rt):
    me = router.operation("GET", "/users/@me/connections")
    assert me.kinds == (SESSION, BEARER) and me.scope == "connections"
    outcomes = []
    for header in (None, "Bearer nope", creds.headers(BOT)["Authorization"],
                   f"Bearer {await creds.token_without('connections')}"):
        with pytest.raises(ApiError) as refused:
            await me.admit(rt, header)
        outcomes.append((refused.value.status, refused.value.code))
    assert outcomes == [(401, "UNAUTHORIZED"), (401, "UNAUTHORIZED"), (403, "ACCESS_DENIED"), (403, "MISSING_OAUTH_SCOPE")]


# --- rate-limit buckets -------------------------------------------------------------------

@pytest.fixture
async def limited_client(settings):
    app = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_global": "100000/second"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        http.rt = app.state.runtime
        yield http
    await app.state.runtime.db.close()


async def test_declared_buckets_are_counted_and_no_others(limited_client):
    creds = await make_credentials(limited_client, limited_client.rt)
    for op in sorted(router.operations, key=lambda op: op.path == "/auth/logout"):  # it ends the session: last
        if op.bucket is not None and op.bucket.per == PER_CLIENT:  # counted once the client authenticates
            response = await limited_client.request(op.method, url(op), auth=creds.app.basic,
                                                    data={"grant_type": "client_credentials", "token": "x"})
        elif op.kinds:
            kind = SESSION if SESSION in op.kinds else op.kinds[0]
            response = await limited_client.request(op.method, url(op), headers=creds.headers(kind))
        else:
            response = await limited_client.request(op.method, url(op))
        assert response.status_code not in (401, 429, 500), (name(op), response.text)
        assert response.headers.get("x-ratelimit-bucket") == (op.bucket.name if op.bucket else None), name(op)


async def test_a_per_user_bucket_is_keyed_by_the_user(limited_client):
    consent = router.operation("POST", "/oauth2/authorize/consent")
    assert consent.bucket.per == "user"
    first, second = await register(limited_client), await register(limited_client)
    answers = [await limited_client.post(url(consent), json={}, headers=first.headers) for _ in range(11)]
    assert [a.status_code for a in answers][-1] == 429 and answers[0].headers["x-ratelimit-bucket"] == "authorize"
    assert (await limited_client.post(url(consent), json={}, headers=second.headers)).status_code == 400


# --- one scope declaration ----------------------------------------------------------------

async def test_every_scope_list_reads_the_one_declaration(client, creds):
    names = [scope.name for scope in SCOPES]
    assert list(ALL_SCOPES) == names
    assert CLIENT_CREDENTIALS_SCOPES == {scope.name for scope in SCOPES if scope.client_credentials}
    meta = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert meta["scopes_supported"] == names
    document = (await client.get("/api/v1/openapi.json")).json()
    flow = document["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"]
    assert list(flow["scopes"]) == names
    assert all(flow["scopes"][scope.name].startswith(scope.description) for scope in SCOPES)
    # Each operation's security names its declared scope.
    for op in router.operations:
        security = document["paths"]["/api/v1" + op.path][op.method.lower()].get("security", [])
        assert [scope for item in security for scopes in item.values() for scope in scopes] == (
            [op.scope] if op.scope and BEARER in op.kinds else []), name(op)

    # The consent page and the portal's URL generator: the declared descriptions, in order.
    await browser_login(client, creds.staff.user["username"])
    page = await client.get(authorize_url(creds.app.id, scope=" ".join(n for n in names if n != "bot"), prompt="consent"))
    listed = [(s, unescape(text)) for s, text in re.findall(r'<li data-scope="([\w.]+)">([^<]*)</li>', page.text)]
    assert listed == [(scope.name, scope.description) for scope in SCOPES if scope.name != "bot"]
    generator = await client.get(f"/developers/applications/{creds.app.id}/oauth2")
    offered = re.findall(r'name="scope" value="([\w.]+)"[^>]*> <code>[\w.]+</code> — ([^<]*)</label>', generator.text)
    assert [(s, unescape(text).strip()) for s, text in offered] == [(scope.name, scope.description) for scope in SCOPES]


def test_the_scope_rules_read_the_declaration():
    for scope in SCOPES:
        if scope.requires is not None:
            with pytest.raises(ScopeError, match=f"the {scope.name} scope requires {scope.requires} in the same request"):
                check_scope_rules((scope.name,))
            check_scope_rules(tuple(n for n in ALL_SCOPES if n in (scope.name, scope.requires)))


def test_a_declaration_the_table_could_not_enforce_is_refused():
    """Mounted open while the document says otherwise would be worse than no route."""
    from fluxer_oauth.web.api import CLIENT_AUTH, SESSION_AUTH, ApiRouter, per_client

    async def handler(request):
        return None

    table = ApiRouter()
    with pytest.raises(ValueError, match="bearer"):  # a scope no credential of the route is checked for
        table.route("GET", "/x", summary="x", auth=(SESSION_AUTH,), scope="identify")(handler)
    with pytest.raises(ValueError, match="form endpoints"):  # a client credential outside the form endpoints
        table.route("POST", "/y", summary="y", auth=(CLIENT_AUTH,))(handler)
    with pytest.raises(ValueError, match="per-client"):
        table.route("GET", "/z", summary="z", bucket=per_client("token"))(handler)
    assert table.routes == []
