"""Input and headers an attacker controls: redirect URI ports, JSON nesting, the Host
header, invisible formatting characters in names, and caching of personal answers."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import bearer, create_app, register, tokens_for
from tests.interop.conftest import register_with_app, running_server

JSON = {"content-type": "application/json"}


@pytest.fixture
async def owner(client):
    return await register(client)


# --- 1. redirect URI ports ------------------------------------------------------------------

NON_ASCII_PORTS = ["²", "９０００", "١٢٣", "٨٠"]


@pytest.mark.parametrize("port", NON_ASCII_PORTS)
async def test_redirect_uri_port_must_be_ascii_digits(client, owner, port):
    registered = await create_app(client, owner, redirect_uris=["http://127.0.0.1/cb"])
    # Registration: a clear validation error.
    response = await client.post("/api/v1/oauth2/applications", headers=owner.headers,
                                 json={"name": "Ports", "redirect_uris": [f"http://127.0.0.1:{port}/cb"]})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["code"] == "REDIRECT_URI_INVALID"
    # Authorization: the loopback port may vary, but only as a port; anything else is an
    # unregistered redirect_uri (an error page, never a redirect to it).
    requested = f"http://127.0.0.1:{port}/cb"
    page = await client.get("/oauth2/authorize", params={
        "client_id": registered.id, "scope": "identify", "response_type": "code", "redirect_uri": requested})
    assert page.status_code == 400 and "location" not in page.headers
    consent = await client.post("/api/v1/oauth2/authorize/consent", headers=owner.headers, json={
        "client_id": registered.id, "scope": "identify", "response_type": "code", "redirect_uri": requested,
        "authorize": True})
    assert consent.status_code == 400 and consent.json()["error"] == "invalid_request"
    assert "redirect_uri" in consent.json()["error_description"]


@pytest.mark.parametrize("requested,ok", [
    ("http://127.0.0.1:8080/cb", True),
    ("http://127.0.0.1/cb", True),
    ("http://127.0.0.1:65535/cb", True),
    ("http://127.0.0.1:0/cb", False),
    ("http://127.0.0.1:65536/cb", False),
    ("http://127.0.0.1:/cb", False),
    ("http://127.0.0.1:+80/cb", False),
    ("http://127.0.0.1:0000080/cb", False),
    ("http://localhost:8080/cb", False),
    ("https://127.0.0.1:8080/cb", False),
    ("http://127.0.0.1:8080/cb/", False),
    ("http://127.0.0.1:8080/cb?x=1", False),
])
def test_redirect_uri_only_the_loopback_port_may_vary(requested, ok):
    from fluxer_oauth.core.redirect_uris import matches

    assert matches("http://127.0.0.1:3000/cb", requested) is ok


# --- 2. JSON nesting ------------------------------------------------------------------------

def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("path,fields", [
    ("/api/v1/auth/login", b'"login": "someone", "password": "x"'),
    ("/api/v1/oauth2/applications", b'"name": "Deep"'),
    ("/api/v1/guilds", b'"name": "Deep"'),
])
async def test_deeply_nested_json_is_a_400(client, owner, path, fields):
    for body in (_nested(1000),                                   # at the top
                 b"{" + fields + b', "extra": ' + _nested(1000) + b"}",  # in a field that is skipped
                 b"{" + fields + b', "extra": ' + _nested(32) + b"}"):   # one level past the bound
        response = await client.post(path, content=body, headers={**JSON, **owner.headers})
        assert response.status_code == 400, response.text[:200]
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        assert answer["code"] == "INVALID_FORM_BODY" and answer["errors"][0]["code"] == "JSON_TOO_DEEP"


async def test_json_nesting_within_the_bound_and_brackets_in_strings_are_fine(client, owner):
    # 32 levels (the object and 31 arrays) is allowed; brackets inside strings do not nest.
    body = b'{"name": "' + b"[{" * 50 + b'", "extra": ' + _nested(31) + b"}"
    response = await client.post("/api/v1/guilds", content=body, headers={**JSON, **owner.headers})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "[{" * 50


# --- 3. redirects never built from Host -------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/users/@me/"), ("GET", "/v1/oauth2/applications/"), ("POST", "/api/v1/oauth2/token/"),
    ("GET", "/developers/applications/"),
])
async def test_trailing_slash_never_redirects_to_the_host_header(client, owner, method, path):
    response = await client.request(method, path, headers={"host": "evil.example", **owner.headers})
    assert "location" not in response.headers
    assert response.status_code == 404
    if path.startswith(("/api/", "/v1/")):
        assert response.headers["content-type"] == "application/json" and response.json()["code"] == "NOT_FOUND"
    else:  # a page's 404 is the error page
        assert response.headers["content-type"].startswith("text/html") and "Page not found" in response.text


# --- 4. invisible formatting characters in names ----------------------------------------------

FORMAT_CHARACTERS = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u200b", "\u200d", "\ufeff",
                     "\u00ad", "\U000e0041",
                     "\u2028", "\u2029", "\u3164", "\u115f", "\u2800"]  # separators, blank letters


@pytest.mark.parametrize("char", FORMAT_CHARACTERS)
async def test_names_reject_unicode_format_characters(client, owner, char):
    name = f"Safe{char}Name"
    response = await client.post("/api/v1/oauth2/applications", headers=owner.headers, json={"name": name})
    assert response.status_code == 400
    assert {e["path"]: e["code"] for e in response.json()["errors"]} == {"name": "FORMAT_CHARACTERS"}
    response = await client.post("/api/v1/oauth2/applications", headers=owner.headers,
                                 json={"name": "Fine", "description": f"about{char}"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "description"

    response = await client.post("/api/v1/guilds", headers=owner.headers, json={"name": name})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "FORMAT_CHARACTERS"
    guild = await client.post("/api/v1/guilds", headers=owner.headers, json={"name": "Plain guild"})
    assert guild.status_code == 201
    response = await client.post(f"/api/v1/guilds/{guild.json()['id']}/roles", headers=owner.headers,
                                 json={"name": name})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "FORMAT_CHARACTERS"
    response = await client.post("/api/v1/users/@me/connections", headers=owner.headers,
                                 json={"type": "github", "name": name})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "FORMAT_CHARACTERS"


async def test_names_keep_other_unicode(client, owner):
    name = "Café 東京 עברית 🎉"  # letters of any script and emoji are not format characters
    response = await client.post("/api/v1/guilds", headers=owner.headers, json={"name": name})
    assert response.status_code == 201 and response.json()["name"] == name


# --- 5. Cache-Control on the API --------------------------------------------------------------

async def test_api_answers_are_not_stored(client, owner):
    app = await create_app(client, owner)
    tokens = await tokens_for(client, owner, app, scope="identify email")
    me = await client.get("/api/v1/users/@me", headers=bearer(tokens["access_token"]))  # the fast path
    assert me.status_code == 200 and me.json()["email"]
    assert me.headers.get_list("cache-control") == ["no-store"]
    for response in (
        await client.get("/v1/users/@me", headers=owner.headers),  # a session: the full handler
        await client.get("/api/v1/users/@me"),  # 401
        await client.get("/api/v1/oauth2/applications", headers=owner.headers),
        await client.post("/api/v1/auth/login", json={"login": "nobody", "password": "x"}),
        await client.get("/api/v1/nowhere"),
    ):
        assert response.headers.get_list("cache-control") == ["no-store"], response.request.url
    # The token endpoint keeps its own (RFC 6749 §5.1), once.
    token = await client.post("/api/v1/oauth2/token", auth=app.basic,
                              data={"grant_type": "client_credentials", "scope": "identify"})
    assert token.headers.get_list("cache-control") == ["no-store"] and token.headers["pragma"] == "no-cache"
    # Public documents say how long they may be kept, which the edge leaves as they are.
    assert (await client.get("/.well-known/oauth-authorization-server")).headers.get_list("cache-control") == [
        "public, max-age=3600"]
    assert (await client.get("/api/v1/oauth2/keys")).headers.get_list("cache-control") == ["public, max-age=300"]


def test_api_answers_are_not_stored_over_rsgi(tmp_path, backend):
    with running_server(tmp_path, backend, interface="rsgi") as base:
        _account, app = register_with_app(base, "NoStore")
        auth = (app["id"], app["client_secret"])
        token = requests.post(f"{base}/api/v1/oauth2/token", auth=auth, timeout=10,
                              data={"grant_type": "client_credentials", "scope": "identify"})
        assert token.status_code == 200 and token.headers["cache-control"] == "no-store"
        me = requests.get(f"{base}/api/v1/users/@me", timeout=10,
                          headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        assert me.status_code == 200 and me.json()["id"] == app["bot"]["id"]  # answered by the RSGI entry
        assert me.headers["cache-control"] == "no-store"
        for response in (
            requests.get(f"{base}/api/v1/users/@me", timeout=10, headers={"Authorization": "Bearer nope"}),
            requests.post(f"{base}/api/v1/oauth2/introspect", auth=auth, data={"token": "x"}, timeout=10),
        ):
            assert response.headers["cache-control"] == "no-store"
