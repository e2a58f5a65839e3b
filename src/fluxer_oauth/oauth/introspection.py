"""Token introspection (RFC 7662, SPEC §4.3): only the caller's own live tokens are active."""

from __future__ import annotations

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import OAuthError
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.oauth.client_auth import authenticate_client
from fluxer_oauth.oauth.params import ParamError, Params
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store.tables import ACCESS

INACTIVE = {"active": False}


async def introspect(rt: Runtime, params: Params, authorization: str | None) -> dict:
    app = await authenticate_client(rt, params, authorization)
    try:
        token = params.get("token", required=True, max_length=512)
        params.get("token_type_hint")
    except ParamError as exc:
        raise OAuthError("invalid_request", str(exc)) from exc
    row = await rt.db.hot.fetchrow("live_token", credentials.sha256(token), now())
    if row is None:
        return INACTIVE
    application_id, user_id, scopes, kind, expires_at, created_at = row
    if application_id != app.id:
        return INACTIVE
    return {
        "active": True,
        "client_id": str(application_id),
        "sub": str(user_id),
        "scope": scopes,
        "token_type": "Bearer" if kind == ACCESS else "refresh_token",
        "exp": int(expires_at),
        "iat": int(created_at),
        "iss": rt.settings.issuer,
    }
