"""Validating access tokens presented to the resource routes."""

from __future__ import annotations

from dataclasses import dataclass

from fluxer_oauth.core import credentials
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import oauth as oauth_store

MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class AccessGrant:
    user_id: int
    application_id: int
    scopes: frozenset[str]
    scope_text: str
    expires_at: float
    issued_at: float


async def lookup_access_token(rt: Runtime, token: str) -> AccessGrant | None:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    async with rt.db.read() as conn:
        row = await oauth_store.live_access_token(conn, credentials.sha256(token), now())
    if row is None:
        return None
    return AccessGrant(
        user_id=row.user_id,
        application_id=row.application_id,
        scopes=frozenset(row.scopes.split()),
        scope_text=row.scopes,
        expires_at=row.expires_at,
        issued_at=row.created_at,
    )
