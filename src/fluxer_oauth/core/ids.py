"""Snowflake IDs (SPEC §1): 42 bits of milliseconds since the Fluxer epoch,
10 bits of worker id, 12 bits of per-millisecond sequence."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

FLUXER_EPOCH_MS = 1420070400000  # 2015-01-01T00:00:00Z


class SnowflakeGenerator:
    def __init__(self, worker_id: int = 0) -> None:
        if not 0 <= worker_id < 1024:
            raise ValueError("worker id must be in 0..1023")
        self._worker = worker_id
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next(self) -> int:
        with self._lock:
            now = int(time.time() * 1000) - FLUXER_EPOCH_MS
            if now < self._last_ms:  # the clock stepped back: keep counting from the last instant
                now = self._last_ms
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & 0xFFF
                if self._sequence == 0:  # 4096 IDs in one millisecond: borrow the next one
                    now += 1
            else:
                self._sequence = 0
            self._last_ms = now
            return (now << 22) | (self._worker << 12) | self._sequence


def snowflake_time(snowflake: int) -> datetime:
    ms = (snowflake >> 22) + FLUXER_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def parse_snowflake(text: str | int) -> int | None:
    """A snowflake from its canonical decimal form, or None when it is not one. Only one
    spelling is an id (no sign, space or leading zero), so nothing keyed by an id (a rate
    limit, a cache) can be told apart by spelling it differently."""
    if isinstance(text, int):
        value = text
    else:
        if not text.isascii() or not text.isdigit() or len(text) > 20 or text[0] == "0":
            return None
        value = int(text)
    return value if 0 < value < (1 << 63) else None
