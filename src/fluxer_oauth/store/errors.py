"""What the store raises besides the driver's errors in a statement: storage-level facts,
which the layers above turn into their own answers (web/responses.py maps
``StoreUnavailable`` to a 503)."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own exceptions."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, restarting, or the connection died)."""

    def __init__(self, message: str = "the database is unreachable") -> None:
        super().__init__(message)


class AlreadyExists(StoreError):
    """An insert collided with a unique key: a row with that key exists already."""
