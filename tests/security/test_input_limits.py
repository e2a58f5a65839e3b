"""Bad input never causes a 500 (SPEC §1): oversized bodies, long parameters, control
characters, invalid UTF-8, deep or huge JSON all get a clear 4xx."""

from __future__ import annotations

import pytest

from tests.conftest import create_app, register

FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}


@pytest.fixture
async def app_client(client):
    owner = await register(client)
    return owner, await create_app(client, owner)


@pytest.mark.parametrize("path,headers", [
    ("/api/v1/oauth2/token", FORM), ("/api/v1/auth/register", JSON), ("/api/v1/oauth2/introspect", FORM),
])
async def test_oversized_body_is_413(client, path, headers):
    response = await client.post(path, content=b"a=" + b"x" * (200 * 1024), headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "PAYLOAD_TOO_LARGE"


async def test_oversized_chunked_body_is_413(client):
    async def chunks():
        for _ in range(100):
            yield b"x" * 4096

    response = await client.post("/api/v1/auth/login", content=chunks(), headers=JSON)
    assert response.status_code == 413


async def test_parameter_over_256_characters(client, app_client):
    _owner, app = app_client
    response = await client.post("/api/v1/oauth2/token", auth=app.basic,
                                 data={"grant_type": "client_credentials", "scope": "identify " * 40})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    page = await client.get(f"/oauth2/authorize?client_id={app.id}&scope=identify&response_type=code&state="
                            + "s" * 300)
    assert "error=invalid_request" in page.headers["location"]


@pytest.mark.parametrize("value", ["identify\x00", "iden\ttify", "identify\r\nX-Injected: 1", "\x7f"])
async def test_control_characters(client, app_client, value):
    _owner, app = app_client
    response = await client.post("/api/v1/oauth2/token", auth=app.basic,
                                 data={"grant_type": "client_credentials", "scope": value})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_control_characters_in_json_fields(client):
    response = await client.post("/api/v1/auth/register", json={
        "username": "ctrl", "email": "ctrl@example.com", "password": "pass\x00word1"})
    assert response.status_code == 400


async def test_invalid_utf8(client, app_client):
    _owner, app = app_client
    response = await client.post("/api/v1/oauth2/token", auth=app.basic, headers=FORM,
                                 content=b"grant_type=client_credentials&scope=\xff\xfe")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    response = await client.post("/api/v1/auth/login", headers=JSON, content=b'{"login": "\xff", "password": "x"}')
    assert response.status_code == 400
    response = await client.get("/oauth2/authorize?client_id=%FF%FE&scope=identify")
    assert response.status_code == 400


async def test_deep_json(client):
    response = await client.post("/api/v1/auth/login", headers=JSON, content=b"[" * 5000 + b"]" * 5000)
    assert response.status_code == 400
    nested = b'{"login": ' + b"[" * 3000 + b"]" * 3000 + b', "password": "x"}'
    assert (await client.post("/api/v1/auth/login", headers=JSON, content=nested)).status_code == 400


async def test_huge_json_strings(client):
    response = await client.post("/api/v1/auth/register", json={
        "username": "u" * 5000, "email": "e@example.com", "password": "p" * 5000})
    assert response.status_code == 400
    assert {e["path"] for e in response.json()["errors"]} == {"username", "password"}


async def test_wrong_json_types(client):
    for body in ([], "text", 5, None, {"login": ["a"], "password": {}}):
        response = await client.post("/api/v1/auth/login", json=body)
        assert response.status_code == 400 and response.json()["code"] == "INVALID_FORM_BODY"


async def test_malformed_ids_in_paths(client, app_client):
    owner, _app = app_client
    for path in ("/api/v1/guilds/abc", "/api/v1/guilds/99999999999999999999999", "/api/v1/guilds/-1",
                 "/api/v1/oauth2/applications/%00/public"):
        response = await client.get(path, headers=owner.headers)
        assert 400 <= response.status_code < 500, path
