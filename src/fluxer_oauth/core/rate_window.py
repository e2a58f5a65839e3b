"""Rate-limit arithmetic: the limit format of the settings and the sliding-window counter's
rule, as pure functions (no clock and no state of their own: callers pass both in). The
counters themselves, in process memory or in Redis, live with the limiter (web/ratelimit.py).

A sliding-window counter keeps two numbers per key: the requests counted in the current
fixed window and in the one before. The estimate of the last ``period`` seconds weighs the
previous window by the part of it still inside that span:

    estimate = previous * (1 - elapsed / period) + current

Constant work and memory per hit whatever the limit, unlike a log of timestamps.
``advance`` is the reference for that rule; the in-memory table and the Redis script are
written out for speed, and the tests hold both to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_FORMAT = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
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


class Counts(NamedTuple):
    """One key's counter: the index of its current window (floor(now / period)), and the
    requests counted in the window before it and in it."""

    window: int
    previous: int
    current: int


NO_COUNTS = Counts(-1, 0, 0)


class Step(NamedTuple):
    allowed: bool
    counts: Counts  # after the step (unchanged when refused or only asked)
    elapsed: float  # seconds into the current window


def advance(counts: Counts, amount: int, period: float, now: float, cost: int) -> Step:
    """One step of a counter at ``now``: ``cost`` requests counted when they fit under
    ``amount`` per ``period`` (cost 0 only asks whether one more would fit)."""
    if cost < 0:
        raise ValueError("the cost cannot be negative")
    window, previous, current = counts
    now_window = math.floor(now / period)
    if window != now_window:
        previous = current if window == now_window - 1 else 0
        current = 0
    elapsed = now - now_window * period
    allowed = previous * (1.0 - elapsed / period) + current + (cost or 1) <= amount
    if allowed:
        current += cost
    return Step(allowed, Counts(now_window, previous, current), elapsed)


class Outcome(NamedTuple):  # a tuple: made on every request, and a dataclass costs more to make
    allowed: bool
    remaining: int
    reset_after: float  # allowed: until the current window ends; refused: until one more fits


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
