"""A new password must be hard to guess (zxcvbn, FLUXER_PASSWORD_MIN_SCORE) wherever one is
chosen over the API: sign-up, reset and change. The refusal names the field and says why."""

from __future__ import annotations

from fluxer_oauth.platform.mail_links import RESET_PATH
from tests.api.test_account_security_api import API, NEW_PASSWORD, login, mailed_token
from tests.conftest import PASSWORD, register


def too_weak(response, path: str) -> str:
    """The reason given for refusing the password at ``path``."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "INVALID_FORM_BODY"
    [error] = [error for error in body["errors"] if error["path"] == path]
    assert error["code"] == "PASSWORD_TOO_WEAK"
    assert isinstance(error["reason"], str) and error["reason"] and error["reason"] in error["message"]
    return error["reason"]


async def test_sign_up_refuses_a_guessable_password_and_says_why(client):
    response = await client.post(f"{API}/auth/register",
                                 json={"username": "pine", "email": "pine@example.com", "password": "12345678"})
    assert "common password" in too_weak(response, "password")
    # The account's own name is a guess an attacker makes first.
    named = await client.post(f"{API}/auth/register",
                              json={"username": "marigold_x", "email": "m@example.com", "password": "marigold_x2024"})
    too_weak(named, "password")
    assert (await login(client, "pine")).json()["code"] == "INVALID_LOGIN"  # no account was made


async def test_too_short_is_a_length_error_not_a_strength_one(client):
    response = await client.post(f"{API}/auth/register",
                                 json={"username": "pine", "email": "pine@example.com", "password": "x7#q"})
    [error] = response.json()["errors"]
    assert error["path"] == "password" and error["code"] == "BASE_TYPE_BAD_LENGTH"


async def test_a_password_change_refuses_a_guessable_one_and_keeps_the_old(client):
    account = await register(client, "birch")
    response = await client.patch(f"{API}/users/@me", headers=account.headers,
                                  json={"new_password": "password1", "password": PASSWORD})
    too_weak(response, "new_password")
    assert (await login(client, "birch")).status_code == 200


async def test_a_reset_refuses_a_guessable_password_and_the_link_still_works(mail_client, mail_server):
    await register(mail_client, "alder")
    assert (await mail_client.post(f"{API}/auth/forgot", json={"login": "alder"})).status_code == 204
    token = await mailed_token(mail_server, "alder@example.com", RESET_PATH)
    weak = await mail_client.post(f"{API}/auth/reset", json={"token": token, "password": "qwertyuiop"})
    too_weak(weak, "password")
    assert (await login(mail_client, "alder")).status_code == 200  # nothing changed
    strong = await mail_client.post(f"{API}/auth/reset", json={"token": token, "password": NEW_PASSWORD})
    assert strong.status_code == 200 and strong.json()["token"]
    assert (await login(mail_client, "alder", NEW_PASSWORD)).status_code == 200
