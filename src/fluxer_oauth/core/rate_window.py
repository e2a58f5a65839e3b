"""Rate-limit arithmetic: the limit format of the settings, a sliding-window counter and
the in-memory table of them that a process keeps (no clock of its own: callers pass it in).

A sliding-window counter keeps two numbers per key: the requests counted in the current
fixed window and in the one before. The estimate of the last ``period`` seconds weighs the
previous window by the part of it still inside that span:

    estimate = previous * (1 - elapsed / period) + current

Constant work and memory per hit whatever the limit, unlike a log of timestamps. The Redis
storage runs the same step in a Lua script (web/ratelimit.py); the tests run both, and the
table both in Python and compiled.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_FORMAT = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    amount: int
    period: float  # seconds


def parse_rate(text: str) -> Rate:
    """``"10/10seconds"``, ``"50/second"``, ``"10 per 5 minutes"`` -> Rate. ValueError otherwise."""
    match = _FORMAT.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate: write it as <count>/[<n>]<second|minute|hour|day>, "
                         "e.g. 10/10seconds or 50/second")
    amount, multiple, unit = int(match[1]), int(match[2] or 1), match[3].lower()
    if amount < 1 or multiple < 1:
        raise ValueError(f"{text!r}: the count and the period must be at least 1")
    return Rate(amount, float(multiple * _UNITS[unit]))


class Outcome(NamedTuple):  # a tuple: made on every request, and a dataclass costs more to make
    allowed: bool
    remaining: int
    reset_after: float  # allowed: until the current window ends; refused: until one more fits


class PyWindowTable:
    """The sliding-window counters of one bucket in process memory: key -> [window index,
    previous count, current count, period]. The reference implementation; ``WindowTable`` is
    its compiled twin (_window.c) when built, and the tests hold the two to the same answers.

    Keys whose counts have all decayed are dropped once a period (each by its own period:
    a bucket's keys may be counted at different rates, per-application overrides)."""

    __slots__ = ("_slots", "_next_sweep")

    def __init__(self) -> None:
        self._slots: dict[str, list] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._slots)

    def hit(self, key: str, amount: int, period: float, now: float) -> tuple[int, float] | None:
        """Count one request of ``key`` when it fits under ``amount`` per ``period``: how many
        more fit, and when the window ends. None when it does not fit (nothing counted)."""
        slot = self._slot_at(key, period, now)
        elapsed = now - slot[0] * period
        weight = 1.0 - elapsed / period
        if slot[1] * weight + slot[2] + 1 > amount:
            return None
        slot[2] += 1
        remaining = math.floor(amount - (slot[1] * weight + slot[2]))
        return (remaining if remaining > 0 else 0), now + period - elapsed

    def step(self, key: str, amount: int, period: float, now: float, cost: int) -> tuple[bool, int, int, float]:
        """Count ``cost`` requests of ``key`` when they fit (0 only asks): whether they did,
        the previous and current counts after the step and the seconds elapsed in the window."""
        if cost < 0:
            raise ValueError("the cost cannot be negative")
        slot = self._slot_at(key, period, now)
        elapsed = now - slot[0] * period
        allowed = slot[1] * (1.0 - elapsed / period) + slot[2] + (cost or 1) <= amount
        if allowed:
            slot[2] += cost
        return allowed, slot[1], slot[2], elapsed

    def _slot_at(self, key: str, period: float, now: float) -> list:
        """The key's counts moved to the window of ``now`` (made on first use)."""
        if now >= self._next_sweep:
            stale = [other for other, (window, _, _, its_period) in self._slots.items()
                     if (window + 2) * its_period <= now]
            for old in stale:
                del self._slots[old]
            self._next_sweep = now + period
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = [-1, 0, 0, period]
        slot[3] = period
        window = math.floor(now / period)
        if slot[0] != window:
            slot[1] = slot[2] if slot[0] == window - 1 else 0
            slot[2] = 0
            slot[0] = window
        return slot


try:
    from fluxer_oauth.core._window import WindowTable
except ImportError:  # not built (no C compiler where it was installed): the same, slower
    WindowTable = PyWindowTable


def step(table, key: str, rate: Rate, now: float, cost: int) -> Outcome:
    """One step of ``key``'s counter in ``table`` with the answer for the headers."""
    allowed, previous, current, elapsed = table.step(key, rate.amount, rate.period, now, cost)
    return outcome(allowed, previous, current, rate, elapsed)


def outcome(allowed: bool, previous: int, current: int, rate: Rate, elapsed: float) -> Outcome:
    """The answer for the headers, from the counts after the step."""
    period, limit = rate.period, rate.amount
    if allowed:
        estimate = previous * (1.0 - elapsed / period) + current
        return Outcome(True, max(0, math.floor(limit - estimate)), period - elapsed)
    return Outcome(False, 0, wait_for_room(previous, current, limit, period, elapsed))


def wait_for_room(previous: int, current: int, limit: int, period: float, elapsed: float) -> float:
    """Seconds until one more request fits, from ``elapsed`` seconds into the window."""
    if current + 1 <= limit and previous > 0:
        # Still in this window, once the previous window's weight has decayed enough.
        decayed_at = period * (1.0 - (limit - 1 - current) / previous)
        if decayed_at < period:
            return max(0.0, decayed_at - elapsed)
    # In the next window, where this window's count decays in its turn.
    next_at = period * (1.0 - (limit - 1) / current) if current > limit - 1 else 0.0
    return period - elapsed + max(0.0, next_at)
