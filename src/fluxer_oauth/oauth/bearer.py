"""Validating the tokens presented to the resource routes: access tokens (``Bearer``) and
bot tokens (``Bot``)."""

from __future__ import annotations

from typing import Awaitable, NamedTuple

from fluxer_oauth.core import credentials
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store.records import AccessToken, User

_scope_sets: dict[str, frozenset[str]] = {}  # few distinct scope strings exist: parse each once


class AccessGrant(NamedTuple):
    """What a live access token grants: to whom, for which application, which scopes."""

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


def find_access_token(rt: Runtime, token: str) -> Awaitable[AccessToken | None]:
    """The stored access token (with its user) for a live token of an enabled user and
    application, or None. One indexed query: the token, its user and its application.
    (The store's awaitable itself, on the path of every bearer request.)"""
    if not token or len(token) > credentials.MAX_PRESENTED_TOKEN_LENGTH:
        return _nothing()
    return rt.db.tokens.find_access(credentials.stored_token_key(token), now())


async def _nothing() -> None:
    return None


def grant_of(found: AccessToken) -> AccessGrant:
    """The grant of a found access token."""
    return AccessGrant(found.user.id, found.application_id, scope_set(found.scopes), found.scopes,
                       found.expires_at, found.created_at)


_verified_bot_tokens: dict[str, int] = {}  # signature checks are pure: remember the good ones


async def lookup_bot(rt: Runtime, token: str) -> User | None:
    """The bot's user for a valid bot token, else None: the signature first (a forged token
    is refused before any database access), then the stored hash, compared in constant time
    (a reset token keeps its good signature, but the stored hash has moved on)."""
    bot_id = _verified_bot_tokens.get(token)
    if bot_id is None:
        bot_id = credentials.verify_bot_token(rt.secret, token)
        if bot_id is None:
            return None
        if len(_verified_bot_tokens) > 10_000:
            _verified_bot_tokens.clear()
        _verified_bot_tokens[token] = bot_id
    login = await rt.db.clients.bot(bot_id)
    if login is None or login.token_hash is None:
        return None
    if not credentials.constant_time_equal(credentials.sha256(token), login.token_hash):
        return None
    return login.user
