"""Token introspection (RFC 7662, SPEC §4.3): only the caller's own live tokens are active."""

from __future__ import annotations

from fluxer_oauth.core import credentials
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.oauth.client_auth import authenticate_token_request
from fluxer_oauth.oauth.params import Params
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store.tables import ACCESS

INACTIVE = {"active": False}


async def introspect(rt: Runtime, params: Params, authorization: str | None) -> dict:
    # Only confidential clients introspect: a public client proves nothing, and anyone holding
    # its client_id could otherwise probe which tokens are live.
    app, token = await authenticate_token_request(rt, params, authorization, allow_public=False)
    found = await rt.db.tokens.find_live(credentials.stored_token_key(token), now())
    if found is None or found.application_id != app.id:
        return INACTIVE
    return {
        "active": True,
        "client_id": str(found.application_id),
        "sub": str(found.user_id),
        "scope": found.scopes,
        "token_type": "Bearer" if found.kind == ACCESS else "refresh_token",
        "exp": int(found.expires_at),
        "iat": int(found.created_at),
        "iss": rt.settings.issuer,
    }
