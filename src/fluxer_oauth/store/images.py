"""Uploaded images: their rows (the stored PNG in the database by default) and, when
FLUXER_IMAGE_DIR is set, their files (``ImageDirectory``).

A row is named by the image's content hash; users.avatar, applications.icon and
guilds.icon refer to it. Saving an image that exists already only moves its
``uploaded_at``, which the janitor's deletion of unused images reads again under the row's
lock (``delete_unused``): an image being attached right now is never deleted."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sqlalchemy import and_, bindparam, delete, exists, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.tables import applications, guilds, images, users

AVATAR, ICON = "avatar", "icon"  # as core/images.py names them


async def save(conn: AsyncConnection, *, hash: str, width: int, height: int, size: int, data: bytes | None,
               at: float) -> None:
    """Insert the image, or, when it exists, move its ``uploaded_at`` to ``at`` (the bytes
    are the same: the hash is of them). ``data`` None: the bytes are a file of the directory."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(images).values(hash=hash, width=width, height=height, size=size, data=data, uploaded_at=at)
    statement = statement.on_conflict_do_update(
        index_elements=[images.c.hash],
        set_={"uploaded_at": statement.excluded.uploaded_at,
              # moved to the database (or back) with the storage setting: the newest says where
              "data": statement.excluded.data},
    )
    await conn.execute(statement)


def _named_by(kind: str):
    """Whether the owner ``p_owner`` names the image ``p_hash`` as its avatar or icon now."""
    owner, wanted = bindparam("p_owner"), bindparam("p_hash")
    if kind == AVATAR:
        return exists().where(users.c.id == owner, users.c.avatar == wanted)
    if kind == ICON:  # application and guild ids are snowflakes of one generator: never the same
        return or_(exists().where(applications.c.id == owner, applications.c.icon == wanted),
                   exists().where(guilds.c.id == owner, guilds.c.icon == wanted))
    raise ValueError(f"unknown image kind {kind!r}")


_CURRENT = {
    kind: select(images.c.hash, images.c.width, images.c.height, images.c.data.is_(None).label("in_directory"))
    .where(images.c.hash == bindparam("p_hash"), _named_by(kind))
    for kind in (AVATAR, ICON)
}


async def current(conn: AsyncConnection, kind: str, owner_id: int, image_hash: str):
    """The image (hash, width, height, in_directory) when it is the owner's avatar or icon
    now; None for any other hash (replaced, removed, never the owner's)."""
    return (await conn.execute(_CURRENT[kind], {"p_owner": owner_id, "p_hash": image_hash})).first()


async def data_of(conn: AsyncConnection, image_hash: str) -> bytes | None:
    return (await conn.execute(select(images.c.data).where(images.c.hash == image_hash))).scalar_one_or_none()


async def exists_row(conn: AsyncConnection, image_hash: str) -> bool:
    return (await conn.execute(select(images.c.hash).where(images.c.hash == image_hash))).first() is not None


def _unused():
    return and_(
        ~exists().where(users.c.avatar == images.c.hash),
        ~exists().where(applications.c.icon == images.c.hash),
        ~exists().where(guilds.c.icon == images.c.hash),
    )


async def delete_unused(conn: AsyncConnection, *, before: float, limit: int) -> list[tuple[str, bool]]:
    """Delete up to ``limit`` images nobody names whose last upload was before ``before``;
    their (hash, in_directory). The conditions are repeated in the DELETE: on PostgreSQL a
    row an upload has just touched (uploaded_at moved, row locked) is read again after the
    upload commits and kept. (Where each one is, is read by the SELECT: SQLite 3.40 answers
    ``data IS NULL`` wrongly in a DELETE's RETURNING.)"""
    doomed = select(images.c.hash, images.c.data.is_(None)).where(images.c.uploaded_at < before, _unused()).limit(limit)
    found = {row[0]: bool(row[1]) for row in (await conn.execute(doomed)).all()}
    if not found:
        return []
    statement = (
        delete(images)
        .where(images.c.hash.in_(list(found)), images.c.uploaded_at < before, _unused())
        .returning(images.c.hash)
    )
    return [(row[0], found[row[0]]) for row in (await conn.execute(statement)).all()]


class ImageDirectory:
    """Stored PNGs as files: ``{root}/{hash[:2]}/{hash}.png``, written whole (a temporary
    file renamed into place), so a reader on any node sees a whole file or none. The
    methods block: callers run them in a thread."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, image_hash: str) -> Path:
        return self.root / image_hash[:2] / f"{image_hash}.png"

    def read(self, image_hash: str) -> bytes | None:
        try:
            return self.path(image_hash).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, image_hash: str, data: bytes) -> None:
        """The file of ``image_hash``, unless it is there already (same hash, same bytes)."""
        path = self.path(image_hash)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def retire(self, image_hash: str) -> Path | None:
        """Move the file aside (deleting an image whose row is gone): its tombstone, or None
        when there was no file."""
        path = self.path(image_hash)
        tombstone = path.with_name(f".{path.name}.{secrets.token_hex(6)}.retired")
        try:
            os.replace(path, tombstone)
        except FileNotFoundError:
            return None
        return tombstone

    def restore(self, image_hash: str, tombstone: Path) -> None:
        """Put a retired file back (its image was uploaded again meanwhile)."""
        os.replace(tombstone, self.path(image_hash))

    @staticmethod
    def purge(tombstone: Path) -> None:
        tombstone.unlink(missing_ok=True)
