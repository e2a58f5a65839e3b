"""Avatars and icons: uploads checked and re-encoded off the event loop (the rules are
core/images.py), stored in the database or under FLUXER_IMAGE_DIR (store/images.py),
served as variants, and deleted by the janitor once nobody uses them.

Attaching an image to its owner goes in three steps around the owner's own transaction
(``storing``): the file is written first when images live in a directory, the image's row is
saved in the transaction that names it (so the janitor, which deletes only rows nobody names
whose last upload is an hour old, never takes it), and after the commit the file is checked
again (the janitor may have retired the same bytes, an old image nobody used, meanwhile:
ops/janitor.py ``sweep_images``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fluxer_oauth.core.images import (
    AVATAR,
    ICON,
    Canonical,
    ImageError,
    Limits,
    canonicalize,
    image_url,
    parse_data_uri,
    render,
)
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.platform.validation import invalid_form_body
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import images as image_store
from fluxer_oauth.store.errors import StoreUnavailable
from fluxer_oauth.store.images import ImageDirectory

__all__ = ["AVATAR", "ICON", "image_url", "process", "storing", "find", "variant"]

logger = logging.getLogger("fluxer.images")

# Decoding, resizing and encoding hold a core each (Pillow releases the GIL): two at a time
# per process, whatever the number of requests, bounds both CPU and memory (an upload at the
# pixel limit decodes to 64 MiB of RGBA).
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fluxer-images")


async def _in_worker(function, *args):
    return await asyncio.get_running_loop().run_in_executor(_WORKERS, function, *args)


def limits(rt: Runtime) -> Limits:
    return Limits(max_bytes=rt.settings.image_max_bytes, max_pixels=rt.settings.image_max_pixels)


def _decoded(value: str, limits_: Limits) -> Canonical:
    return canonicalize(parse_data_uri(value, limits_.max_bytes), limits_)


async def process(rt: Runtime, field: str, value: str) -> Canonical:
    """An uploaded data URI, checked and re-encoded; 400 INVALID_FORM_BODY with ``field`` as
    the error's path (IMAGE_INVALID, IMAGE_TYPE_UNSUPPORTED, IMAGE_TOO_LARGE,
    IMAGE_DIMENSIONS_TOO_LARGE) otherwise."""
    if not isinstance(value, str):
        raise invalid_form_body([{"path": field, "code": "IMAGE_INVALID", "message": "must be a data URI or null"}])
    try:
        return await _in_worker(_decoded, value, limits(rt))
    except ImageError as exc:
        raise invalid_form_body([{"path": field, "code": exc.code, "message": exc.message}]) from None


def _directory(rt: Runtime) -> ImageDirectory | None:
    root = rt.settings.image_dir
    return ImageDirectory(root) if root is not None else None


async def _nothing(_conn) -> None:
    return None


@asynccontextmanager
async def storing(rt: Runtime, image: Canonical | None):
    """Around the owner's write transaction: yields ``record(conn)``, which saves the image's
    row in that transaction (call it where the owner's column is set). Nothing to do for
    None (no image sent, or its removal)."""
    if image is None:
        yield _nothing
        return
    directory = _directory(rt)
    if directory is not None:
        await asyncio.to_thread(directory.write, image.hash, image.data)

    async def record(conn) -> None:
        await image_store.save(conn, hash=image.hash, width=image.width, height=image.height, size=len(image.data),
                               data=None if directory is not None else image.data, at=now())

    try:
        yield record
    except BaseException:
        if directory is not None:  # refused or failed: no file that no row names is left behind
            with contextlib.suppress(StoreUnavailable):  # (the database down: the original error is the answer)
                await _remove_unless_recorded(rt, directory, image.hash)
        raise
    if directory is not None:  # retired by the janitor since the first write? (see the docstring)
        await asyncio.to_thread(directory.write, image.hash, image.data)


async def _remove_unless_recorded(rt: Runtime, directory, image_hash: str) -> None:
    """After a failed owner transaction. An upload of the same image that commits its row
    meanwhile writes the file again after its commit, so removing it here loses nothing."""
    async with rt.db.read() as conn:
        recorded = await image_store.exists_row(conn, image_hash)
    if not recorded:
        tombstone = await asyncio.to_thread(directory.retire, image_hash)
        if tombstone is not None:
            await asyncio.to_thread(directory.purge, tombstone)


@dataclass(frozen=True)
class Found:
    hash: str
    width: int
    height: int
    in_directory: bool


async def find(rt: Runtime, kind: str, owner_id: int, image_hash: str) -> Found | None:
    """The image when it is the owner's avatar (AVATAR) or icon (ICON) now, else None."""
    async with rt.db.read() as conn:
        row = await image_store.current(conn, kind, owner_id, image_hash)
    return Found(row.hash, row.width, row.height, bool(row.in_directory)) if row is not None else None


async def stored_bytes(rt: Runtime, found: Found) -> bytes | None:
    if found.in_directory:
        directory = _directory(rt)
        if directory is None:
            logger.error("image %s is a file but FLUXER_IMAGE_DIR is not set", found.hash)
            return None
        return await asyncio.to_thread(directory.read, found.hash)
    async with rt.db.read() as conn:
        return await image_store.data_of(conn, found.hash)


async def variant(rt: Runtime, found: Found, fmt: str, size: int | None) -> bytes | None:
    """The image in ``fmt`` (PNG, JPEG, WEBP, GIF), its longer side at most ``size``; None
    when its bytes are gone (deleted since it was found)."""
    stored = await stored_bytes(rt, found)
    if stored is None:
        return None
    return await _in_worker(render, stored, fmt, size)
