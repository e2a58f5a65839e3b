"""Property-based tests of the parsers: whatever the input, they answer with a value or
their own error, never an unexpected exception, and what they accept round-trips."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import OAuthError
from fluxer_oauth.core.permissions import ALL_PERMISSIONS, defined_only, parse_permissions
from fluxer_oauth.core.redirect_uris import RedirectUriError, matches, validate_for_registration
from fluxer_oauth.core.scopes import SCOPE, ALL_SCOPES, ScopeError, format_scopes, parse_scopes
from fluxer_oauth.oauth.client_auth import parse_basic

KEY = b"k" * 40
text = st.text(max_size=300)


@given(text)
def test_scope_parser_never_crashes(raw):
    try:
        scopes = parse_scopes(raw)
    except ScopeError:
        return
    assert set(scopes) <= set(ALL_SCOPES) and len(scopes) == len(set(scopes))
    assert parse_scopes(format_scopes(scopes)) == scopes


@given(st.lists(st.sampled_from(ALL_SCOPES), min_size=1), st.sampled_from([" ", "+", "  "]))
def test_scope_order_is_canonical(names, separator):
    implied = {SCOPE[name].implies for name in names if SCOPE[name].implies}
    assert list(parse_scopes(separator.join(names))) == [s for s in ALL_SCOPES if s in names or s in implied]


@given(text)
def test_redirect_registration_never_crashes(uri):
    try:
        assert validate_for_registration(uri) == uri
    except RedirectUriError:
        return
    assert uri.startswith(("https://", "http://")) and "#" not in uri and len(uri) <= 256


@given(st.sampled_from(["https://a.example/cb", "http://127.0.0.1/cb", "http://[::1]:80/x?y=1"]), text)
def test_redirect_matching_is_exact_or_loopback_port(registered, requested):
    if matches(registered, requested):
        assert requested == registered or (
            requested.startswith("http://") and registered.startswith("http://")
            and "@" not in requested and "#" not in requested
        )


@given(text)
def test_permissions_parser(raw):
    value = parse_permissions(raw)
    if value is not None:  # only plain decimal text is accepted, and it means its number
        assert raw.strip().isascii() and raw.strip().isdigit() and value == int(raw.strip())
        assert 0 <= value < (1 << 64) and defined_only(value) & ~ALL_PERMISSIONS == 0


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_permissions_round_trip(value):
    assert parse_permissions(str(value)) == value


@given(st.binary(max_size=200))
def test_basic_header_parser_never_crashes(raw):
    header = "Basic " + base64.b64encode(raw).decode()
    try:
        result = parse_basic(header)
    except OAuthError as exc:
        assert exc.error == "invalid_client"
        return
    assert result is not None and len(result) == 2


@given(text)
def test_basic_header_garbage(raw):
    try:
        parse_basic(raw)
    except OAuthError as exc:
        assert exc.status == 401


@settings(max_examples=200)
@given(text)
def test_bot_token_verifier_never_crashes_on_garbage(raw):
    assert credentials.verify_bot_token(KEY, raw) is None


@given(st.integers(min_value=1, max_value=(1 << 63) - 1), st.integers(min_value=0, max_value=2**40))
def test_bot_tokens_round_trip(bot_id, created):
    token = credentials.new_bot_token(KEY, bot_id, created)
    assert credentials.verify_bot_token(KEY, token) == bot_id
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert credentials.verify_bot_token(KEY, tampered) is None


@given(st.text(alphabet="ab=&%+2Fé \x00", max_size=40))
def test_form_bodies_parse_as_the_standard_parser_does(raw):
    """The form parser skips unquoting for bodies with nothing to unescape; whatever the
    body, it gives what urllib's parser gives, or invalid_request where that one fails."""
    from urllib.parse import parse_qsl

    from fluxer_oauth.web.responses import form_params

    try:
        expected = parse_qsl(raw, keep_blank_values=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        expected = None
    try:
        params = form_params("application/x-www-form-urlencoded", raw.encode())
    except OAuthError as exc:
        assert expected is None and exc.error == "invalid_request"
        return
    assert expected is not None
    assert {name: params._multi[name] for name in params.names()} == {
        name: [value for key, value in expected if key == name] for name, _ in expected}
