"""Accounts (SPEC §4.5): register, login, logout, sessions stored hashed."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from fluxer_oauth.store.tables import sessions, users
from tests.conftest import PASSWORD, register


async def test_register_returns_session_and_user(client):
    response = await client.post("/api/v1/auth/register",
                                 json={"username": "Nova_1", "email": "nova@example.com", "password": PASSWORD})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["token"].startswith("flx_") and len(body["token"]) == 40
    user = body["user"]
    assert user["username"] == "Nova_1" and user["email"] == "nova@example.com"
    assert len(user["discriminator"]) == 4 and user["discriminator"].isdigit()
    assert user["id"].isdigit() and user["flags"] == user["public_flags"] == 0


async def test_register_validation_errors_are_invalid_form_body(client):
    response = await client.post("/api/v1/auth/register",
                                 json={"username": "x", "email": "nope", "password": "short"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_FORM_BODY"
    assert {error["path"] for error in body["errors"]} == {"username", "email", "password"}


async def test_wrong_types_and_bad_json_are_400(client):
    response = await client.post("/api/v1/auth/register", json={"username": 5, "email": "a@b.c", "password": PASSWORD})
    assert response.status_code == 400 and response.json()["errors"][0]["path"] == "username"
    response = await client.post("/api/v1/auth/register", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_FORM_BODY"
    response = await client.post("/api/v1/auth/register", content=b"\xff\xfe",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400


async def test_duplicate_username_or_email_refused_case_insensitively(client):
    await register(client, "taken")
    response = await client.post("/api/v1/auth/register",
                                 json={"username": "TAKEN", "email": "other@example.com", "password": PASSWORD})
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "USERNAME_ALREADY_TAKEN"
    response = await client.post("/api/v1/auth/register",
                                 json={"username": "fresh", "email": "Taken@Example.com", "password": PASSWORD})
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "EMAIL_ALREADY_TAKEN"


async def test_login_by_username_or_email_and_logout(client):
    await register(client, "lena")
    for login in ("lena", "LENA@example.com"):
        response = await client.post("/api/v1/auth/login", json={"login": login, "password": PASSWORD})
        assert response.status_code == 200, response.text
    token = response.json()["token"]
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": token})).status_code == 200
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    assert (await client.post("/api/v1/auth/logout", headers={"Authorization": token})).status_code == 204
    assert (await client.get("/api/v1/users/@me", headers={"Authorization": token})).status_code == 401


async def test_wrong_password_and_unknown_account_give_the_same_error(client):
    await register(client, "mira")
    wrong = await client.post("/api/v1/auth/login", json={"login": "mira", "password": "not the password"})
    unknown = await client.post("/api/v1/auth/login", json={"login": "nobody", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json()


async def test_a_login_with_control_characters_is_an_unknown_account(client):
    # Found by the OpenAPI fuzzer: PostgreSQL refuses NUL in text, which made this a 500.
    await register(client, "nul")
    for login in ("nul\u0000", "n\u0000ul", "nul\u0007"):
        response = await client.post("/api/v1/auth/login", json={"login": login, "password": PASSWORD})
        assert response.status_code == 400 and response.json()["code"] == "INVALID_LOGIN"


async def test_passwords_are_argon2id_and_sessions_hashed(client, rt):
    account = await register(client, "hashy")
    async with rt.db.read() as conn:
        stored = (await conn.execute(select(users.c.password_hash).where(users.c.username == "hashy"))).scalar_one()
        session_hashes = (await conn.execute(select(sessions.c.token_hash))).scalars().all()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert hashlib.sha256(account.token.encode()).digest() in session_hashes
    assert all(account.token.encode() not in value for value in session_hashes)
