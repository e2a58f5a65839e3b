"""Deleting expired codes, tokens and sessions in small batches, so tables stay bounded
and no single transaction holds the database for long.

Expired rows are useless to keep: a refresh token past its expiry can no longer be
replayed, so reuse detection loses nothing, and a code past its ten minutes can no
longer be redeemed."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from fluxer_oauth.core.timefmt import now
from fluxer_oauth.ops.logging import log
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store.expiry import EXPIRING_TABLES, delete_expired

logger = logging.getLogger("fluxer.janitor")


@dataclass
class SweepReport:
    deleted: dict[str, int] = field(default_factory=dict)
    batch_seconds: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    @property
    def slowest_batch(self) -> float:
        return max(self.batch_seconds, default=0.0)


async def sweep(rt: Runtime, *, batch_size: int = 2000, at: float | None = None, on_batch=None) -> SweepReport:
    """Delete every row that expired before ``at``, one short transaction per batch."""
    cutoff = now() if at is None else at
    report = SweepReport()
    for table in EXPIRING_TABLES:
        report.deleted[table] = 0
        while True:
            started = time.perf_counter()
            async with rt.db.write() as conn:
                count = await delete_expired(conn, table, before=cutoff, limit=batch_size)
            elapsed = time.perf_counter() - started
            report.deleted[table] += count
            report.batch_seconds.append(elapsed)
            if on_batch is not None:
                on_batch(table, count, elapsed)
            if count < batch_size:
                break
            await asyncio.sleep(0)  # let requests in between batches
    return report


async def run_forever(rt: Runtime, interval: float) -> None:
    """The background janitor of a server process."""
    while True:
        await asyncio.sleep(interval)
        try:
            report = await sweep(rt)
            if report.total:
                log(logger, logging.INFO, "janitor swept", deleted=report.deleted,
                    slowest_batch_ms=round(report.slowest_batch * 1000, 2))
        except Exception:  # never let the janitor take the server down; try again next round
            logger.exception("janitor failed")
