"""Who is calling an API route: a user session, an OAuth2 bearer token, or a bot.

``Authorization: flx_...`` or ``Bearer flx_...`` is a session; ``Bearer <other>`` an
access token; ``Bot <token>`` a bot. Tokens in the query string are never read.
"""

from __future__ import annotations

from starlette.requests import Request

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import access_denied, unauthorized
from fluxer_oauth.oauth.bearer import AccessGrant, find_access_token, grant_of, lookup_bot, scope_set
from fluxer_oauth.platform.accounts import session_user
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store.records import AccessToken

SESSION, BEARER, BOT = "session", "bearer", "bot"
_NO_SCOPES: frozenset[str] = frozenset()


class Caller:
    """Who is calling: the kind of credential, the user (a bot's own user for a bot), and for
    a bearer token the stored token and its scopes (empty for other credentials, which no
    scope limits), for a session the session token."""

    __slots__ = ("kind", "user", "token", "scopes", "session_token")

    def __init__(self, kind: str, user, token: AccessToken | None = None, session_token: str | None = None) -> None:
        self.kind = kind
        self.user = user
        self.token = token
        self.scopes = scope_set(token.scopes) if token is not None else _NO_SCOPES
        self.session_token = session_token

    @property
    def grant(self) -> AccessGrant | None:
        """What a bearer token grants (None for other credentials)."""
        return grant_of(self.token) if self.token is not None else None


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


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
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value and not credentials.looks_like_session_token(value):
        found = await find_access_token(rt, value)
        caller = Caller(BEARER, found.user, found) if found is not None else None
    elif scheme == "bot" and value:
        user = await lookup_bot(rt, value)
        caller = Caller(BOT, user) if user is not None else None
    else:
        token = value if scheme == "bearer" else header
        user = await session_user(rt, token)
        caller = Caller(SESSION, user, session_token=token) if user is not None else None
    if caller is None:
        raise unauthorized()
    kind = caller.kind
    if kind not in allow:
        raise access_denied(
            "this route needs a user session" if allow == (SESSION,) else f"a {kind} credential may not use this route"
        )
    return caller

