"""A user's authorized applications: what they granted, when, and revoking it."""

from __future__ import annotations

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.timefmt import iso, now
from fluxer_oauth.grants.endings import end_grant
from fluxer_oauth.platform.applications import application_json
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import oauth as oauth_store


async def list_authorizations(rt: Runtime, user_id: int) -> list[dict]:
    async with rt.db.read() as conn:
        grants = await oauth_store.list_user_grants(conn, user_id)
        apps = await app_store.get_applications(conn, [grant.application_id for grant in grants])
    return [
        {
            "application": application_json(apps[grant.application_id], owner=None, bot_user=None, private=False),
            "scopes": grant.scopes.split(),
            "first_authorized_at": iso(grant.created_at),
            "last_used_at": iso(grant.last_used_at),
        }
        for grant in grants
    ]


async def revoke_authorization(rt: Runtime, user_id: int, application_id: int) -> None:
    async with rt.db.write() as conn:
        ended = await end_grant(rt, conn, user_id=user_id, application_id=application_id, by="user",
                                actor_id=user_id, at=now())
    if not ended:  # raised after the commit: an error never rolls an ending back
        raise ApiError(404, "UNKNOWN_AUTHORIZATION", "you have not authorized this application")
