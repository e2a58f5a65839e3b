"""``fluxer-oauth keys list`` and ``keys rotate`` against a real migrated database, run as an
operator runs them (a process of their own): what each key's status becomes, that no key
material is ever printed, and that a rotation after a change of the server secret signs at once."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess

import pytest

from fluxer_oauth.oauth import keys
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import keys as key_store
from tests.conftest import SECRET_KEY, make_settings
from tests.interop.conftest import BIN

OTHER_SECRET = "another-secret-key-" + "y" * 40


def fluxer(database_url: str, *args: str, secret: str = SECRET_KEY) -> str:
    env = {**os.environ, "FLUXER_DATABASE_URL": database_url, "FLUXER_SECRET_KEY": secret,
           "FLUXER_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def listed(database_url: str) -> dict[str, str]:
    """kid -> status, as ``keys list --json`` says."""
    return {row["kid"]: row["status"] for row in json.loads(fluxer(database_url, "keys", "list", "--json"))}


def rotated(database_url: str, *args: str, secret: str = SECRET_KEY) -> tuple[set[str], set[str]]:
    """The kids a ``keys rotate --json`` made and the ones it replaced."""
    body = json.loads(fluxer(database_url, "keys", "rotate", "--json", *args, secret=secret))
    assert sorted(row["alg"] for row in body["new"]) == ["ES256", "RS256"]
    return {row["kid"] for row in body["new"]}, {row["kid"] for row in body["replaced"]}


def stored_keys(database_url: str):
    async def read():
        rt = Runtime.create(make_settings(database_url))
        try:
            async with rt.db.read() as conn:
                return await key_store.list_all(conn)
        finally:
            await rt.db.close()

    return asyncio.run(read())


def assert_no_key_material(output: str, database_url: str) -> None:
    assert "PRIVATE" not in output and "BEGIN" not in output and '"d"' not in output
    for key in stored_keys(database_url):
        sealed = key.private_key
        for shown in (sealed.hex(), base64.b64encode(sealed).decode(), base64.urlsafe_b64encode(sealed).decode(),
                      repr(sealed)):
            assert shown[8:40] not in output


@pytest.mark.parametrize("delay, new_status", [("600", "next"), ("0", "current")])
def test_rotate_then_list_shows_the_new_keys_and_the_old_ones_retiring(database_url, delay, new_status):
    first, replaced = rotated(database_url)  # a new server: nothing can sign yet, so these sign at once
    assert replaced == set() and set(listed(database_url).values()) == {"current"}

    new, replaced = rotated(database_url, "--publish-delay", delay)
    assert replaced == first and not new & first
    statuses = listed(database_url)
    assert {statuses[kid] for kid in new} == {new_status}
    assert {statuses[kid] for kid in first} == {"retiring"}

    table = fluxer(database_url, "keys", "list")
    assert all(kid in table for kid in new | first) and new_status in table and "retiring" in table
    printed = fluxer(database_url, "keys", "rotate", "--publish-delay", delay)
    assert "signs at once" in printed if delay == "0" else "signs from" in printed
    assert "leaves the JWKS at" in printed
    for output in (table, printed, fluxer(database_url, "keys", "list", "--json")):
        assert_no_key_material(output, database_url)


def test_after_a_secret_change_a_rotation_signs_at_once(database_url):
    """The old keys no longer decrypt, so waiting out the publish delay would only keep
    id_tokens failing: the new keys sign at once, whatever the delay."""
    old, _ = rotated(database_url)

    async def sign(secret: str):
        rt = Runtime.create(make_settings(database_url, secret_key=secret))
        try:
            return await keys.signing_key(rt, "RS256")
        finally:
            await rt.db.close()

    with pytest.raises(keys.KeyUnreadable):
        asyncio.run(sign(OTHER_SECRET))
    new, replaced = rotated(database_url, "--publish-delay", "3600", secret=OTHER_SECRET)
    assert replaced == old
    statuses = listed(database_url)
    assert {statuses[kid] for kid in new} == {"current"} and {statuses[kid] for kid in old} == {"retiring"}
    assert asyncio.run(sign(OTHER_SECRET)).kid in new
