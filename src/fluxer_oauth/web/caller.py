"""Who is calling an API route: a user session, an OAuth2 bearer token, or a bot.

``Authorization: flx_...`` or ``Bearer flx_...`` is a session; ``Bearer <other>`` an
access token; ``Bot <token>`` a bot. Tokens in the query string are never read.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import access_denied, missing_scope, unauthorized
from fluxer_oauth.oauth.bearer import AccessGrant, lookup_access_token
from fluxer_oauth.platform.accounts import session_user
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store.hot import USER_FIELDS, row_of

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
    rt = runtime(request)
    header = request.headers.get("authorization", "").strip()
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


_verified_bot_tokens: dict[str, int] = {}  # signature checks are pure: remember the good ones


async def bot_row(rt: Runtime, token: str):
    """The bot's row (token hash, then USER_FIELDS) for a valid bot token, else None."""
    bot_id = _verified_bot_tokens.get(token)
    if bot_id is None:
        bot_id = credentials.verify_bot_token(rt.secret, token)
        if bot_id is None:  # forged or malformed: refused before any database access
            return None
        if len(_verified_bot_tokens) > 10_000:
            _verified_bot_tokens.clear()
        _verified_bot_tokens[token] = bot_id
    row = await rt.db.hot.fetchrow("bot", bot_id)
    if row is None or row[0] is None:
        return None
    if not credentials.constant_time_equal(credentials.sha256(token), row[0]):
        return None  # a reset token: the signature is fine, the stored hash moved on
    return row


async def _bot(rt: Runtime, token: str) -> Caller | None:
    row = await bot_row(rt, token)
    return Caller(BOT, row_of(USER_FIELDS, row, 1)) if row is not None else None
