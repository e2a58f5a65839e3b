"""What every request handler needs: settings, the database, the ID generator and the
password hasher, built once per server process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fluxer_oauth.core.ids import SnowflakeGenerator
from fluxer_oauth.settings import Settings
from fluxer_oauth.store.database import Database


class Passwords:
    """argon2id, run in worker threads with bounded concurrency so a burst of logins
    cannot starve the event loop or exhaust memory."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._slots = asyncio.Semaphore(settings.password_hash_concurrency)
        # Verified when an account is unknown, so that timing does not reveal which exist.
        self._decoy = self._hasher.hash("decoy password for unknown accounts")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored_hash or self._decoy, password) and bool(stored_hash)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False


@dataclass
class Runtime:
    settings: Settings
    db: Database
    ids: SnowflakeGenerator
    passwords: Passwords = field(repr=False)

    @classmethod
    def create(cls, settings: Settings) -> "Runtime":
        settings.secret  # fail early on a missing secret key
        return cls(
            settings=settings,
            db=Database(settings.sqlalchemy_url, sqlite_synchronous=settings.sqlite_synchronous),
            ids=SnowflakeGenerator(settings.worker_id),
            passwords=Passwords(settings),
        )

    @property
    def secret(self) -> bytes:
        return self.settings.secret
