"""Deleting expired codes, tokens and sessions in small batches, so tables stay bounded
and no single transaction holds the database for long.

Expired rows are useless to keep: a refresh token past its expiry can no longer be
replayed, so reuse detection loses nothing, and a code past its ten minutes can no
longer be redeemed.

Images (avatars, icons) nobody names any more are deleted by ``sweep_images`` once their
last upload is an hour old."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from fluxer_oauth.core.timefmt import now
from fluxer_oauth.ops.logging import log
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import images as image_store
from fluxer_oauth.store.expiry import EXPIRING_TABLES, delete_expired
from fluxer_oauth.store.images import ImageDirectory

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


# An image nobody names is kept this long after its last upload: an upload saves the image's
# row and names it in one transaction, and a row just saved again is never taken (store/images.py).
UNUSED_IMAGE_GRACE = 3600.0


async def sweep_images(rt: Runtime, *, at: float | None = None, batch_size: int = 500) -> int:
    """Delete the images nobody has named since an hour before ``at``, in batches; how many.
    A file (FLUXER_IMAGE_DIR) is moved aside after its row is gone, then deleted, or put back
    when an upload of the same bytes saved the row again meanwhile (that upload writes the
    file again after its commit if it finds none, so one of the two leaves it in place)."""
    cutoff = (now() if at is None else at) - UNUSED_IMAGE_GRACE
    directory = ImageDirectory(rt.settings.image_dir) if rt.settings.image_dir is not None else None
    deleted = 0
    while True:
        async with rt.db.write() as conn:
            gone = await image_store.delete_unused(conn, before=cutoff, limit=batch_size)
        deleted += len(gone)
        for image_hash, in_directory in gone:
            if not in_directory or directory is None:
                continue
            tombstone = await asyncio.to_thread(directory.retire, image_hash)
            if tombstone is None:
                continue
            async with rt.db.read() as conn:
                uploaded_again = await image_store.exists_row(conn, image_hash)
            if uploaded_again:
                await asyncio.to_thread(directory.restore, image_hash, tombstone)
            else:
                await asyncio.to_thread(ImageDirectory.purge, tombstone)
        if len(gone) < batch_size:
            return deleted
        await asyncio.sleep(0)


async def run_forever(rt: Runtime, interval: float) -> None:
    """The background janitor of a server process."""
    while True:
        await asyncio.sleep(interval)
        try:
            report = await sweep(rt)
            if report.total:
                log(logger, logging.INFO, "janitor swept", deleted=report.deleted,
                    slowest_batch_ms=round(report.slowest_batch * 1000, 2))
            images = await sweep_images(rt)
            if images:
                log(logger, logging.INFO, "janitor deleted unused images", deleted=images)
        except Exception:  # never let the janitor take the server down; try again next round
            logger.exception("janitor failed")
