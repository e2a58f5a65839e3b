"""OpenID Connect signing keys: the stored rows, and a short-lived copy of the published
ones in each process (every id_token and every JWKS request reads them; a rotation reaches
each worker within ``key_cache_seconds``, which the publish delay exceeds)."""

from __future__ import annotations

import time

from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.records import SigningKey
from fluxer_oauth.store.tables import signing_keys

# Creating the first keys, or rotating, happens under one lock on PostgreSQL so that two
# workers starting together do not each make a key (on SQLite, writers go one at a time).
_KEYS_LOCK = text("SELECT pg_advisory_xact_lock(:p_key)")
_KEYS_LOCK_KEY = 0x6B657973  # "keys": apart from the ids (positive snowflakes, negated users)


class SigningKeyStore:
    def __init__(self, database, cache_seconds: float) -> None:
        self._db = database
        self._cache_seconds = cache_seconds
        self._cached: tuple[SigningKey, ...] | None = None
        self._read_at = 0.0

    async def published(self, now: float) -> tuple[SigningKey, ...]:
        """The keys still in the JWKS at ``now``, newest first (cached per process)."""
        keys = self._cached
        if keys is None or time.monotonic() - self._read_at > self._cache_seconds:
            async with self._db.read() as conn:
                keys = await list_published(conn, now)
            # (another request may forget() the copy meanwhile: this one answers from what it read)
            self._cached, self._read_at = keys, time.monotonic()
        return tuple(key for key in keys if key.published_until is None or key.published_until > now)

    def forget(self) -> None:
        """Read the keys again on next use (after this process created or rotated keys)."""
        self._cached = None


async def lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(_KEYS_LOCK, {"p_key": _KEYS_LOCK_KEY})


_NEWEST_FIRST = select(*(signing_keys.c[name] for name in SigningKey._fields)).order_by(
    signing_keys.c.signs_from.desc(), signing_keys.c.kid)


async def list_published(conn: AsyncConnection, now: float) -> tuple[SigningKey, ...]:
    return await _keys(conn, _NEWEST_FIRST.where(
        or_(signing_keys.c.published_until.is_(None), signing_keys.c.published_until > now)))


async def list_all(conn: AsyncConnection) -> tuple[SigningKey, ...]:
    return await _keys(conn, _NEWEST_FIRST)


async def _keys(conn: AsyncConnection, query) -> tuple[SigningKey, ...]:
    return tuple(SigningKey._make(row) for row in (await conn.execute(query)).all())


async def insert(conn: AsyncConnection, key: SigningKey) -> None:
    await conn.execute(signing_keys.insert().values(**key._asdict()))


async def retire_current(conn: AsyncConnection, alg: str, retires_at: float, published_until: float) -> int:
    """Every key of ``alg`` not yet retired stops signing at ``retires_at`` and leaves the
    JWKS at ``published_until``; how many it retired."""
    return (await conn.execute(
        update(signing_keys)
        .where(signing_keys.c.alg == alg, signing_keys.c.retires_at.is_(None))
        .values(retires_at=retires_at, published_until=published_until)
    )).rowcount
