"""What every request handler needs: settings, the database, the ID generator, the
password hasher and the mail outbox, built once per server process."""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
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


WORKER_SLOTS = 64  # snowflake worker ids a node may use: FLUXER_WORKER_ID .. +63


def claim_worker_id(base: int) -> tuple[int, int]:
    """A snowflake worker id no other live process on this machine holds, as (id, fd).

    Every process that generates IDs (each server worker, each CLI command) takes an
    exclusive lock on a slot file; the lock dies with the process. Two processes with the
    same worker id would mint the same IDs in the same millisecond, so this is not
    optional. Nodes of a cluster get distinct bases (FLUXER_WORKER_ID 0, 64, 128, ...)."""
    directory = os.path.join(tempfile.gettempdir(), "fluxer-worker-ids")
    os.makedirs(directory, exist_ok=True)
    for worker_id in range(base, min(base + WORKER_SLOTS, 1024)):
        fd = os.open(os.path.join(directory, f"{worker_id}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return worker_id, fd
    raise RuntimeError(f"no free snowflake worker id in {base}..{base + WORKER_SLOTS - 1}")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    ids: SnowflakeGenerator
    passwords: Passwords = field(repr=False)
    # The mail outbox (mail/outbox.py), with what the mails say: the app and the CLI install
    # it (web/mails.py, ``install``). It stands above the runtime, so it is not built here.
    mail: object = field(repr=False, default=None)

    @classmethod
    def create(cls, settings: Settings, *, exclusive_worker_id: bool = False) -> "Runtime":
        """``exclusive_worker_id``: claim a worker id of this node's range (servers and CLI
        commands do); the test suite's in-process runtimes use the configured one."""
        settings.secret  # fail early on a missing secret key
        worker_id = settings.worker_id
        if exclusive_worker_id:
            worker_id, _lock_fd = claim_worker_id(settings.worker_id)  # held until the process exits
        return cls(
            settings=settings,
            db=Database(settings.sqlalchemy_url, sqlite_synchronous=settings.sqlite_synchronous,
                        pool_size=settings.database_pool_size, key_cache_seconds=settings.key_cache_seconds),
            ids=SnowflakeGenerator(worker_id),
            passwords=Passwords(settings),
        )

    @property
    def secret(self) -> bytes:
        return self.settings.secret
