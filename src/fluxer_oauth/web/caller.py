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
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import users as user_store

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
    grant = await lookup_access_token(rt, token)
    if grant is None:
        return None
    async with rt.db.read() as conn:
        user = await user_store.get_user(conn, grant.user_id)
    return Caller(BEARER, user, grant=grant) if user is not None else None


async def _bot(rt: Runtime, token: str) -> Caller | None:
    bot_id = credentials.verify_bot_token(rt.secret, token)
    if bot_id is None:  # forged or malformed: refused before any database access
        return None
    async with rt.db.read() as conn:
        app = await app_store.get_application(conn, bot_id)
        if (
            app is None
            or app.bot_token_hash is None
            or app.disabled_at is not None
            or not credentials.constant_time_equal(credentials.sha256(token), app.bot_token_hash)
        ):
            return None
        user = await user_store.get_user(conn, bot_id)
    return Caller(BOT, user) if user is not None and user.disabled_at is None else None
