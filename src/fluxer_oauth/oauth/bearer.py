"""Validating access tokens presented to the resource routes."""

from __future__ import annotations

from dataclasses import dataclass

from fluxer_oauth.core import credentials
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store.hot import ACCESS_TOKEN_FIELDS, USER_FIELDS, row_of

_USER_OFFSET = USER_OFFSET = len(ACCESS_TOKEN_FIELDS)
_scope_sets: dict[str, frozenset[str]] = {}  # few distinct scope strings exist: parse each once

MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class AccessGrant:
    user_id: int
    application_id: int
    scopes: frozenset[str]
    scope_text: str
    expires_at: float
    issued_at: float


def scope_set(scope_text: str) -> frozenset[str]:
    scopes = _scope_sets.get(scope_text)
    if scopes is None:
        scopes = _scope_sets[scope_text] = frozenset(scope_text.split())
    return scopes


async def access_token_row(rt: Runtime, token: str):
    """The raw row (ACCESS_TOKEN_FIELDS, then USER_FIELDS) of a live token of an enabled user
    and application, or None. One indexed query: the token, its user and its application."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return await rt.db.hot.fetchrow("access_token", credentials.stored_token_key(token), now())


async def lookup_access_token(rt: Runtime, token: str):
    """``(AccessGrant, user row)`` for a live token, or None."""
    row = await access_token_row(rt, token)
    if row is None:
        return None
    application_id, scope_text, expires_at, issued_at = row[:_USER_OFFSET]
    scopes = scope_set(scope_text)
    user = row_of(USER_FIELDS, row, _USER_OFFSET)
    return AccessGrant(user.id, application_id, scopes, scope_text, expires_at, issued_at), user
