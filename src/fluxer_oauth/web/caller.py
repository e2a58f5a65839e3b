"""Who is calling an API route: a user session, an OAuth2 bearer token, or a bot.

``Authorization: flx_...`` or ``Bearer flx_...`` is a session; ``Bearer <other>`` an
access token; ``Bot <token>`` a bot. Tokens in the query string are never read.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import access_denied, missing_scope, unauthorized
from fluxer_oauth.oauth.bearer import AccessGrant, lookup_access_token, lookup_bot
from fluxer_oauth.platform.accounts import session_user
from fluxer_oauth.runtime import Runtime

SESSION, BEARER, BOT = "session", "bearer", "bot"


@dataclass(frozen=True)
class Caller:
    kind: str
    user: object
    grant: AccessGrant | None = None  # for bearer tokens
    session_token: str | None = None

    def require_scope(self, scope: str) -> None:
        if self.kind == BEARER and scope not in self.grant.scopes:
            raise missing_scope(scope)

    def has_scope(self, scope: str) -> bool:
        return self.kind != BEARER or scope in self.grant.scopes


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def authenticate(request: Request, *, allow: tuple[str, ...] = (SESSION, BEARER, BOT)) -> Caller:
    return await authenticate_header(runtime(request), request.headers.get("authorization"), allow)


async def authenticate_header(rt: Runtime, authorization: str | None,
                              allow: tuple[str, ...] = (SESSION, BEARER, BOT)) -> Caller:
    """The caller an ``Authorization`` header value names (None: no header), if its kind is
    in ``allow``: 401 ``UNAUTHORIZED`` for a missing or bad credential, then 403
    ``ACCESS_DENIED`` for a good one of a kind the route does not take. Routes get this
    through their declaration (``web.api.Operation.admit``), which also checks the scope."""
    header = (authorization or "").strip()
    if not header:
        raise unauthorized()
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bot" and value:
        kind, caller = BOT, await _bot(rt, value)
    elif scheme.lower() == "bearer" and value and not credentials.looks_like_session_token(value):
        kind, caller = BEARER, await _bearer(rt, value)
    else:
        token = value if scheme.lower() == "bearer" else header
        kind, caller = SESSION, await _session(rt, token)
    if caller is None:
        raise unauthorized()
    if kind not in allow:
        raise access_denied(
            "this route needs a user session" if allow == (SESSION,) else f"a {kind} credential may not use this route"
        )
    return caller


async def _session(rt: Runtime, token: str) -> Caller | None:
    user = await session_user(rt, token)
    return Caller(SESSION, user, session_token=token) if user is not None else None


async def _bearer(rt: Runtime, token: str) -> Caller | None:
    found = await lookup_access_token(rt, token)
    if found is None:
        return None
    grant, user = found
    return Caller(BEARER, user, grant=grant)


async def _bot(rt: Runtime, token: str) -> Caller | None:
    user = await lookup_bot(rt, token)
    return Caller(BOT, user) if user is not None else None
