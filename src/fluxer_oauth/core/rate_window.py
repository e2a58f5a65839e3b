"""Rate-limit arithmetic: the limit format of the settings and one step of a sliding-window
counter, with no storage and no clock of its own (the callers pass both in).

A sliding-window counter keeps two numbers per key: the requests counted in the current
fixed window and in the one before. The estimate of the last ``period`` seconds weighs the
previous window by the part of it still inside that span:

    estimate = previous * (1 - elapsed / period) + current

Constant work and memory per hit whatever the limit, unlike a log of timestamps. The Redis
storage runs the same step in a Lua script (web/ratelimit.py); the tests run both.
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


def step(state: list, rate: Rate, now: float, cost: int) -> Outcome:
    """Advance ``state`` ([window index, previous count, current count], changed in place)
    to ``now``, then count ``cost`` requests (0 only asks) when they fit under the limit."""
    allowed = count(state, rate, now, cost)
    return outcome(allowed, state[1], state[2], rate, now - state[0] * rate.period)


def count(state: list, rate: Rate, now: float, cost: int) -> bool:
    """``step`` without the answer for the headers: whether the requests fitted (and were
    counted). A refusal changes no count, so a step after it gives the same answer."""
    period = rate.period
    window = now // period
    if state[0] != window:
        state[1] = state[2] if state[0] == window - 1 else 0
        state[2] = 0
        state[0] = window
    allowed = state[1] * (1.0 - (now - window * period) / period) + state[2] + (cost or 1) <= rate.amount
    if allowed and cost:
        state[2] += cost
    return allowed


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
