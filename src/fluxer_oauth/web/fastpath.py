"""The hottest route, answered without the framework: ``GET /users/@me`` with a valid
bearer or bot token. Anything else (a session, a missing scope, a bad token, another
route) goes on to the Starlette application, which gives the full answer; so this layer
only ever produces the one response the regular handler would also produce."""

from __future__ import annotations

import msgspec

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.oauth.bearer import USER_OFFSET, access_token_row, scope_set
from fluxer_oauth.platform.accounts import user_json
from fluxer_oauth.store.hot import USER_FIELDS, row_of
from fluxer_oauth.web.caller import bot_row
from fluxer_oauth.web.responses import API_NO_STORE_RAW

ME_PATHS = frozenset({"/api/v1/users/@me", "/v1/users/@me"})
_encode = msgspec.json.Encoder().encode
# The user's data, and its email with that scope: never cached (as every API answer).
_HEADERS = [(b"content-type", b"application/json"), API_NO_STORE_RAW]
_MAX_CACHED = 10_000
# Encoded user objects keyed by the user's columns, so a hit is exact.
_bodies: dict[tuple, bytes] = {}


def _user_body(user_values: tuple, with_email: bool) -> bytes:
    key = (with_email, user_values)
    body = _bodies.get(key)
    if body is None:
        if len(_bodies) >= _MAX_CACHED:
            _bodies.clear()
        body = _bodies[key] = _encode(user_json(row_of(USER_FIELDS, user_values), with_email=with_email))
    return body


class FastPathMiddleware:
    def __init__(self, app, *, runtime, form_endpoints: dict) -> None:
        self.app = app
        self.rt = runtime
        self.form_endpoints = form_endpoints  # path -> raw ASGI endpoint, for POSTs

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.form_endpoints.get(scope["path"])
            if endpoint is not None:
                scope["endpoint"] = endpoint  # names the route for metrics, as routing would
                await endpoint(scope, receive, send)
                return
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in ME_PATHS:
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            body = await me_body(self.rt, authorization)
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": _HEADERS + [(b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def me_body(rt, authorization: str | None) -> bytes | None:
    """The encoded user for ``GET /users/@me`` when ``authorization`` is a valid bearer token
    with the identify scope or a valid bot token; None for anything else (the regular
    handler then gives the full answer, errors included)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    scheme = scheme.lower()
    token = token.strip()
    try:
        if scheme == "bearer" and not token.startswith("flx_"):
            row = await access_token_row(rt, token)
            if row is None:
                return None
            scopes = scope_set(row[1])
            if "identify" not in scopes:
                return None
            return _user_body(tuple(row[USER_OFFSET:]), "email" in scopes)
        if scheme == "bot":
            row = await bot_row(rt, token)
            return _user_body(tuple(row[1:]), False) if row is not None else None
    except ApiError:  # e.g. the database is down: the regular handler renders the error
        return None
    return None
