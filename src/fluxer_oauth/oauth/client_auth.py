"""Client authentication at the token, revocation and introspection endpoints
(RFC 6749 §2.3.1): HTTP Basic or form fields, both only when they agree."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import OAuthError, invalid_client
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.oauth.params import ParamError, Params
from fluxer_oauth.runtime import Runtime


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from a Basic header, or None when there is none.
    Raises ``invalid_client`` for a malformed one."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise invalid_client("malformed Basic authorization header")
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise invalid_client("malformed Basic authorization header")
    # The two halves are form-urlencoded before being joined (RFC 6749 §2.3.1).
    if "%" in decoded or "+" in decoded:
        return unquote_plus(client_id), unquote_plus(secret)
    return client_id, secret


def presented_basic(params: Params, authorization: str | None) -> tuple[str, str] | None:
    """``parse_basic`` of the request's header, parsed once per request."""
    if params.basic is None:
        params.basic = (parse_basic(authorization),)
    return params.basic[0]


def presented_client(params: Params, authorization: str | None) -> tuple[int | None, str | None]:
    """The application id (None when it cannot be one) and secret the request presents, from
    the Basic header or the form, both only when they agree; errors as the endpoint gives them.
    The secret is None when only a client_id is presented (a public client's ``none``)."""
    basic = presented_basic(params, authorization)
    try:
        form_id = params.get("client_id")
        form_secret = params.get("client_secret")
    except ParamError as exc:
        raise OAuthError("invalid_request", str(exc)) from exc
    if basic is not None and (form_id is not None or form_secret is not None):
        if (form_id is not None and form_id != basic[0]) or (
            form_secret is not None and not credentials.constant_time_equal(form_secret, basic[1])
        ):
            raise OAuthError("invalid_request", "client credentials in the header and the body differ")
    client_id, secret = basic if basic is not None else (form_id, form_secret)
    if not client_id:
        raise invalid_client("client authentication is required")
    return (parse_snowflake(client_id) if len(client_id) <= 20 else None), secret or None


def presented_secret_hash(rt: Runtime, secret: str) -> bytes:
    return credentials.client_secret_hash(rt.secret, secret[:256])


async def authenticate_client(rt: Runtime, params: Params, authorization: str | None, *,
                              allow_public: bool = True):
    """The authenticated application row; ``invalid_client`` (401) otherwise.

    A confidential client proves itself with its secret. A public client has none to prove
    (``none``, RFC 6749 §2.1): it names itself with client_id alone, and a secret presented
    for it is refused, so a client can never be both. ``allow_public=False`` for endpoints
    that only confidential clients may use (introspection)."""
    application_id, secret = presented_client(params, authorization)
    app = await rt.db.clients.application(application_id) if application_id is not None else None
    if secret is None:
        if app is None or not app.public_client:
            raise invalid_client("client authentication is required")
        if not allow_public:
            raise invalid_client("a public client cannot use this endpoint")
    else:
        # Hash even for an unknown client, so both paths cost the same.
        presented = presented_secret_hash(rt, secret)
        if app is None or app.public_client or not credentials.constant_time_equal(presented, app.secret_hash):
            raise invalid_client()
    if app.disabled_at is not None:
        raise OAuthError("unauthorized_client", "this application has been disabled")
    if params.on_client_authenticated is not None:
        pending = params.on_client_authenticated(app.id, app.public_client)
        if pending is not None:
            await pending
    return app


async def authenticate_token_request(rt: Runtime, params: Params, authorization: str | None, *,
                                     allow_public: bool = True):
    """Revocation and introspection: the authenticated client and the ``token`` it presents.
    ``token_type_hint`` is read (to refuse a repeated or malformed one) and then ignored: the
    server finds the token whatever its kind."""
    app = await authenticate_client(rt, params, authorization, allow_public=allow_public)
    try:
        token = params.get("token", required=True, max_length=512)
        params.get("token_type_hint")
    except ParamError as exc:
        raise OAuthError("invalid_request", str(exc)) from exc
    return app, token
