"""Deleting rows whose time is up: expired codes, tokens, sessions, device codes, mailed links
and retired signing keys (ops/janitor.py calls this in short batches)."""

from __future__ import annotations

from sqlalchemy import delete, select

from fluxer_oauth.store.tables import (
    authorization_codes, device_codes, mail_links, sessions, signing_keys, tokens,
)

# Each table with an expiry, by name: (the table, its primary key, its expiry column).
_EXPIRING = {
    table.name: (table, key, expires_at)
    for table, key, expires_at in (
        (authorization_codes, authorization_codes.c.code_hash, authorization_codes.c.expires_at),
        (tokens, tokens.c.token_hash, tokens.c.expires_at),
        (sessions, sessions.c.token_hash, sessions.c.expires_at),
        (device_codes, device_codes.c.device_code_hash, device_codes.c.expires_at),
        (mail_links, mail_links.c.token_hash, mail_links.c.expires_at),
        # A retired key once every id_token it signed has expired (never a current one: NULL).
        (signing_keys, signing_keys.c.kid, signing_keys.c.published_until),
    )
}
EXPIRING_TABLES = tuple(_EXPIRING)  # the order a sweep goes in


async def delete_expired(conn, table_name: str, *, before: float, limit: int) -> int:
    """Deletes up to ``limit`` rows of ``table_name`` that expired before ``before``; how
    many it deleted (fewer than ``limit``: none are left)."""
    table, key, expires_at = _EXPIRING[table_name]
    doomed = select(key).where(expires_at < before).limit(limit)
    return (await conn.execute(delete(table).where(key.in_(doomed)))).rowcount
