"""Pure rules: scopes, redirect URIs, permissions, snowflakes and credentials."""

from __future__ import annotations

import hashlib
import time

import pytest

from fluxer_oauth.core import credentials
from fluxer_oauth.core.ids import FLUXER_EPOCH_MS, SnowflakeGenerator, parse_snowflake, snowflake_time
from fluxer_oauth.core.permissions import (
    ALL_PERMISSIONS,
    PERMISSIONS,
    compute_permissions,
    defined_only,
    parse_permissions,
)
from fluxer_oauth.core.redirect_uris import RedirectUriError, matches, validate_for_registration
from fluxer_oauth.core.scopes import ScopeError, check_scope_rules, parse_scopes

pytestmark = pytest.mark.backend_independent  # pure code: no store


class TestScopes:
    def test_space_and_plus_separate_duplicates_collapse_and_order_is_canonical(self):
        assert parse_scopes("guilds identify+email identify") == ("identify", "email", "guilds")

    def test_unknown_scope_is_refused(self):
        with pytest.raises(ScopeError, match="unknown scope"):
            parse_scopes("identify messages.read")

    def test_empty_scope_is_refused(self):
        with pytest.raises(ScopeError):
            parse_scopes("  + ")

    def test_email_requires_identify(self):
        with pytest.raises(ScopeError):
            check_scope_rules(parse_scopes("email"))
        check_scope_rules(parse_scopes("email identify"))


class TestRedirectUris:
    @pytest.mark.parametrize("uri", [
        "https://app.example/cb", "https://app.example/cb?x=1", "http://localhost:3000/cb",
        "http://127.0.0.1/cb", "http://[::1]:8080/cb",
    ])
    def test_allowed_registrations(self, uri):
        assert validate_for_registration(uri) == uri

    @pytest.mark.parametrize("uri", [
        "http://app.example/cb", "https://app.example/cb#frag", "https://good@evil.example/cb",
        "javascript:alert(1)", "ftp://x.example/", "https://app.example/c b", "", "https://" + "a" * 300,
        "custom:/cb", "https:///cb",
    ])
    def test_refused_registrations(self, uri):
        with pytest.raises(RedirectUriError):
            validate_for_registration(uri)

    @pytest.mark.parametrize("requested", [
        "https://app.example/cb/", "https://APP.example/cb", "https://app.example/%63b", "https://app.example/cb/x",
        "https://app.example/cb?x=1", "https://app.example/cb#f", "https://app.example:444/cb",
        "https://good@app.example/cb", "http://app.example/cb",
    ])
    def test_matching_is_exact(self, requested):
        assert matches("https://app.example/cb", "https://app.example/cb")
        assert not matches("https://app.example/cb", requested)

    def test_loopback_ip_port_may_differ(self):
        assert matches("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb")
        assert matches("http://[::1]:80/cb", "http://[::1]:9999/cb")
        assert not matches("http://127.0.0.1/cb", "http://127.0.0.1:51234/other")
        assert not matches("http://localhost/cb", "http://localhost:51234/cb")  # names are not IP literals
        assert not matches("http://127.0.0.1/cb", "http://user@127.0.0.1:5/cb")


class TestPermissions:
    def test_owner_and_administrator_have_everything(self):
        assert compute_permissions(is_owner=True, role_permissions=[]) == ALL_PERMISSIONS
        assert compute_permissions(is_owner=False, role_permissions=[PERMISSIONS["ADMINISTRATOR"]]) == ALL_PERMISSIONS

    def test_roles_are_ored(self):
        value = compute_permissions(is_owner=False, role_permissions=[1 << 10, 1 << 11])
        assert value == (1 << 10) | (1 << 11)

    def test_undefined_bits_are_dropped(self):
        assert defined_only((1 << 19) | (1 << 10)) == 1 << 10

    @pytest.mark.parametrize("text,value", [("0", 0), ("8", 8), (" 2048 ", 2048), ("-1", None), ("1e3", None),
                                            ("", None), ("99999999999999999999999", None)])
    def test_parse(self, text, value):
        assert parse_permissions(text) == value


class TestSnowflakes:
    def test_ids_are_unique_increasing_and_carry_time(self):
        generator = SnowflakeGenerator(worker_id=5)
        ids = [generator.next() for _ in range(10000)]
        assert len(set(ids)) == len(ids) and ids == sorted(ids)
        assert (ids[0] >> 12) & 0x3FF == 5
        assert abs(snowflake_time(ids[0]).timestamp() - time.time()) < 5
        assert (ids[0] >> 22) + FLUXER_EPOCH_MS > FLUXER_EPOCH_MS

    def test_parse(self):
        assert parse_snowflake("123") == 123
        assert parse_snowflake("0") is None
        assert parse_snowflake("-5") is None
        assert parse_snowflake("١٢٣") is None  # non-ASCII digits
        assert parse_snowflake("9" * 25) is None


class TestCredentials:
    KEY = b"k" * 32

    def test_opaque_tokens_have_256_bits(self):
        token = credentials.new_opaque_token()
        assert len(credentials.b64url_decode(token)) == 32

    def test_stored_token_keys_grow_with_issue_time(self):
        # The tokens index relies on it: a later token's key sorts after every earlier one's.
        keys = []
        for _ in range(3):
            token = credentials.new_stored_token()
            assert len(token) == credentials.STORED_TOKEN_LENGTH and len(credentials.b64url_decode(token)) == 38
            keys.append(credentials.stored_token_key(token))
            time.sleep(0.002)
        assert keys == sorted(keys) and len(set(keys)) == 3

    def test_stored_token_key_of_anything_else_is_the_plain_hash(self):
        legacy = credentials.new_opaque_token()
        assert credentials.stored_token_key(legacy) == hashlib.sha256(legacy.encode()).digest()
        for odd in ("é" * 51, "!" * 51, "=" * 51):  # the right length, not base64url: no crash, no match
            assert hashlib.sha256(odd.encode()).digest() in credentials.stored_token_key(odd)

    def test_session_token_format(self):
        token = credentials.new_session_token()
        assert token.startswith("flx_") and len(token) == 40 and token[4:].isalnum()
        assert credentials.looks_like_session_token(token)

    def test_client_secret_alphabet_and_keyed_hash(self):
        secret = credentials.new_client_secret()
        assert len(secret) >= 43 and all(ch.isalnum() or ch in "-_" for ch in secret)
        assert credentials.client_secret_hash(self.KEY, secret) != credentials.client_secret_hash(b"o" * 32, secret)

    def test_bot_token_carries_id_and_verifies(self):
        token = credentials.new_bot_token(self.KEY, 1234567890123, 1_700_000_000)
        first = credentials.b64url_decode(token.split(".")[0]).decode()
        assert first == "1234567890123"
        assert credentials.verify_bot_token(self.KEY, token) == 1234567890123
        assert credentials.verify_bot_token(b"z" * 32, token) is None

    def test_forged_bot_token_is_refused(self):
        token = credentials.new_bot_token(self.KEY, 42, 1_700_000_000)
        id_part, time_part, tail = token.split(".")
        forged_id = credentials.b64url(b"43")
        assert credentials.verify_bot_token(self.KEY, f"{forged_id}.{time_part}.{tail}") is None
        assert credentials.verify_bot_token(self.KEY, "a.b") is None
        assert credentials.verify_bot_token(self.KEY, "!!.??.**") is None

    def test_pkce_s256(self):
        verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        assert credentials.s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 App. B
        assert credentials.pkce_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        assert not credentials.pkce_matches(verifier[:-1] + "l", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        assert not credentials.valid_code_verifier("short")

    def test_csrf(self):
        seed = credentials.new_csrf_seed()
        token = credentials.csrf_token(self.KEY, seed)
        assert credentials.csrf_valid(self.KEY, seed, token)
        assert not credentials.csrf_valid(self.KEY, seed + "x", token)
        assert not credentials.csrf_valid(self.KEY, None, token)


def test_worker_ids_are_exclusive_per_process():
    import subprocess
    import sys

    from fluxer_oauth.runtime import claim_worker_id

    first, fd = claim_worker_id(900)
    # another process cannot take the same slot while this one holds it
    code = "from fluxer_oauth.runtime import claim_worker_id; print(claim_worker_id(900)[0])"
    other = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert first != other and 900 <= other < 964
    import os

    os.close(fd)


def test_request_ids_are_unique_and_a_forked_child_draws_its_own_prefix():
    import os

    from fluxer_oauth.web.edge import new_request_id

    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its first id and leaves at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read, 64).decode()
    os.close(read), os.close(write)
    assert child_id[:8] != next(iter(ids))[:8]


def test_keyed_hash_is_hmac_sha256_of_purpose_and_value():
    import hashlib
    import hmac

    key = b"k" * 32
    for value in ("abc", "abd", ""):
        expected = hmac.new(key, b"client-secret\x00" + value.encode(), hashlib.sha256).digest()
        assert credentials.keyed_hash(key, "client-secret", value) == expected


def test_per_address_throttles_count_an_ipv6_network_not_each_address():
    from fluxer_oauth.web.client_ip import throttle_address

    assert throttle_address("203.0.113.7") == "203.0.113.7"
    assert throttle_address("2001:db8:1:2::1") == throttle_address("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert throttle_address("2001:db8:1:3::1") != throttle_address("2001:db8:1:2::1")
    assert throttle_address("::ffff:203.0.113.7") == "203.0.113.7"
    assert throttle_address("not-an-address") == "not-an-address"
