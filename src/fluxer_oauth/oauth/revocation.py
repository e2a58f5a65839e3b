"""Token revocation (RFC 7009, SPEC §4.3): revoking any token ends the whole grant."""

from __future__ import annotations

from fluxer_oauth.core import credentials
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.oauth.client_auth import authenticate_token_request
from fluxer_oauth.grants.endings import end_grant
from fluxer_oauth.oauth.params import Params
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import oauth as oauth_store


async def revoke(rt: Runtime, params: Params, authorization: str | None) -> None:
    """Ends the grant behind ``token`` when it belongs to the calling client. Unknown or
    foreign tokens are ignored (RFC 7009 §2.2: the answer is 200 all the same), and so is
    the hint: the server looks the token up whatever its kind."""
    app, token = await authenticate_token_request(rt, params, authorization)
    at = now()
    async with rt.db.write() as conn:
        row = await oauth_store.get_token(conn, credentials.stored_token_key(token))
        if row is None or row.application_id != app.id:
            return
        await end_grant(rt, conn, user_id=row.user_id, application_id=app.id, by="application", actor_id=None, at=at)

