"""Rate limits (SPEC §7): a sliding-window counter per bucket and key (the rule is
core/rate_window.py), in process memory by default and in Redis when FLUXER_REDIS_URL is
set, so every worker and node shares the counters. ``RateLimits`` is the one limiter: the
same awaitable calls count in either storage. In memory a hit never waits. In Redis a hit
far below its limit does not wait either: it is decided on this process's view of the
counter (Redis's last answer plus the hits counted here since) and written behind, every
few milliseconds, in one script call that also refreshes the view; a hit near the limit,
or without a fresh view, takes the exact path: the hits of one event-loop turn go as one
call of one Lua script, which reads, rolls, checks and counts atomically on Redis's own
clock (the nodes' clocks may differ). ``RedisCounters`` says how far the two may differ.

When Redis cannot be reached the limits fail open (the request goes through) and a line
is logged at most once a minute: refusing all traffic because the limiter is down would
turn a Redis outage into a full outage.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import defaultdict
from contextlib import asynccontextmanager

from redis.asyncio import from_url as redis_from_url
from redis.exceptions import RedisError

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.rate_window import NO_COUNTS, Counts, Outcome, Rate, advance, outcome, parse_rate
from fluxer_oauth.ops import metrics
from fluxer_oauth.web.client_ip import throttle_address
from fluxer_oauth.settings import Settings

logger = logging.getLogger("fluxer.ratelimit")
# Not counted against the global limit: probes and scrapes must not be refused, nor count
# against the address they come from.
EXEMPT_FROM_GLOBAL = frozenset(("/healthz", "/readyz", "/metrics"))


def exempt_from_global(path: str) -> bool:
    """Whether a request to ``path`` is left out of the global per-IP limit."""
    return path in EXEMPT_FROM_GLOBAL


_FIXED_HEADERS: dict[tuple[str, int], tuple[tuple[str, str], tuple[str, str]]] = {}


def _fixed_headers(bucket: str, limit: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """The limit and bucket header pairs, which only the bucket and its rate decide (made
    once each instead of on every limited request)."""
    pairs = _FIXED_HEADERS.get((bucket, limit))
    if pairs is None:
        pairs = _FIXED_HEADERS[bucket, limit] = (("x-ratelimit-limit", str(limit)), ("x-ratelimit-bucket", bucket))
    return pairs


class LimitState:
    """Where a key stands in a bucket after a request, for the X-RateLimit-* headers."""

    __slots__ = ("bucket", "limit", "remaining", "reset_at")

    def __init__(self, bucket: str, limit: int, remaining: int, reset_at: float) -> None:
        self.bucket = bucket
        self.limit = limit
        self.remaining = remaining
        self.reset_at = reset_at

    def headers(self) -> dict[str, str]:
        """The headers as a dict, for a 429 built as an error (header names are case-blind)."""
        return dict(self.text_headers())

    def text_headers(self) -> list[tuple[str, str]]:
        """X-RateLimit-* as (name, value) text pairs (built directly: this runs on every
        limited request)."""
        reset_at = self.reset_at
        reset_after = reset_at - time.time()
        limit, bucket = _fixed_headers(self.bucket, self.limit)
        return [
            limit,
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(math.ceil(reset_at))),
            ("x-ratelimit-reset-after", "%.3f" % (reset_after if reset_after > 0.0 else 0.0)),
            bucket,
        ]


class RateLimited(ApiError):
    def __init__(self, state: LimitState, *, is_global: bool) -> None:
        retry_after = max(0.001, state.reset_at - time.time())
        super().__init__(
            429, "RATE_LIMITED", "you are being rate limited",
            {**state.headers(), "Retry-After": str(math.ceil(retry_after))},
            retry_after=round(retry_after, 3), **{"global": is_global},
        )


class StorageDown(Exception):
    """The counters cannot be reached; the caller fails open."""


# --- the counters in process memory ---------------------------------------------------------

class WindowTable:
    """The sliding-window counters of one bucket in process memory: key -> [window index,
    window start, previous count, current count, period]. ``step`` applies core's rule
    (rate_window.advance) as it is written; ``hit``, which every limited request goes
    through, is the same rule written out for speed, and the tests hold the two to the same
    answers. The counts are kept as floats (exact far beyond any limit) so that the
    estimate is float arithmetic throughout, which the interpreter does fastest; the window
    start is kept for the same reason.

    Keys whose counts have all decayed are dropped once a period (each by its own period:
    a bucket's keys may be counted at different rates, per-application overrides)."""

    __slots__ = ("_slots", "_next_sweep")

    def __init__(self) -> None:
        self._slots: dict[str, list] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._slots)

    def hit(self, key: str, amount: int, period: float, now: float, _floor=math.floor) -> float | None:
        """Count one request of ``key`` when it fits under ``amount`` per ``period``: the
        estimate of the span's requests with it counted. None when it does not fit (nothing
        counted)."""
        if now >= self._next_sweep:
            self._sweep(now, period)
        window = _floor(now / period)
        slot = self._slots.get(key)
        if slot is None or slot[0] != window:
            slot = self._roll(key, slot, window, period)
        estimate = slot[2] * (1.0 - (now - slot[1]) / period) + slot[3] + 1.0
        if estimate > amount:
            return None
        slot[3] += 1.0
        return estimate

    def step(self, key: str, amount: int, period: float, now: float, cost: int) -> tuple[bool, int, int, float]:
        """Count ``cost`` requests of ``key`` when they fit (0 only asks): whether they did,
        the previous and current counts after the step and the seconds elapsed in the window."""
        if now >= self._next_sweep:
            self._sweep(now, period)
        slot = self._slots.get(key)
        counts = Counts(slot[0], int(slot[2]), int(slot[3])) if slot is not None else NO_COUNTS
        allowed, (window, previous, current), elapsed = advance(counts, amount, period, now, cost)
        self._slots[key] = [window, window * period, float(previous), float(current), period]
        return allowed, previous, current, elapsed

    def _roll(self, key: str, slot: list | None, window: int, period: float) -> list:
        """The key's counts moved to ``window`` (made on first use)."""
        if slot is None:
            slot = self._slots[key] = [window, window * period, 0.0, 0.0, period]
        else:
            slot[2] = slot[3] if slot[0] == window - 1 else 0.0
            slot[3] = 0.0
            slot[0], slot[1], slot[4] = window, window * period, period
        return slot

    def _sweep(self, now: float, period: float) -> None:
        """Forgets the keys whose counts have all decayed: the window after theirs has ended."""
        slots = self._slots
        stale = [key for key, slot in slots.items() if (slot[0] + 2) * slot[4] <= now]
        for key in stale:
            del slots[key]
        self._next_sweep = now + period


class MemoryCounters:
    """Counters of this process: a table per bucket."""

    def __init__(self) -> None:
        self.tables: defaultdict[str, WindowTable] = defaultdict(WindowTable)

    async def step(self, bucket: str, key: str, rate: Rate, cost: int) -> Outcome:
        return self.step_at(bucket, key, rate, cost, time.time())

    def step_at(self, bucket: str, key: str, rate: Rate, cost: int, now: float) -> Outcome:
        allowed, previous, current, elapsed = self.tables[bucket].step(key, rate.amount, rate.period, now, cost)
        return outcome(allowed, previous, current, rate, elapsed)

    async def close(self) -> None:
        pass


# --- the counters in Redis ------------------------------------------------------------------

# Every rate-limit step one worker sends at once, as one Lua call on Redis's clock (read
# once for the batch). ARGV is a sequence of entries, each taking its keys from KEYS in order:
#   's', limit, period, cost                  one step of one counter (1 key);
#   'a', period, cost                         hits already admitted by a worker, written
#                                             behind: counted whatever the limit (1 key);
#   'p', limit1, period1, limit2, period2     one request against two counters (2 keys),
#                                             the first (the global one) before the second;
#                                             refused by the first, the second is untouched;
#   'q', ...                                  the same as 'p', and the first's step too.
# A step (and an 'a') answers {allowed, previous, current, seconds elapsed in the window as
# text} (Lua numbers become integers on the way out); a pair answers {which counter answered
# (1 or 2), that counter's step} ('q' adds the first's step when the second answered). Steps
# run in order, so several hits of one key in a batch count exactly as they would one call
# each. The batch's answer ends with Redis's clock, which the workers' views go by. Each
# counter is a hash: window index, previous and current count. The step is
# core/rate_window.advance; the tests hold the two to the same answers by running the
# script with their own clock in place of _CLOCK.
_CLOCK = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local a = 1
"""
_STEP_LOOP = """
local function step(key, limit, period, cost)
  local window = math.floor(now / period)
  local saved = redis.call('HMGET', key, 'w', 'p', 'c')
  local w, p, c = tonumber(saved[1]), tonumber(saved[2]) or 0, tonumber(saved[3]) or 0
  if w ~= window then
    if w == window - 1 then p = c else p = 0 end
    c = 0
  end
  local elapsed = now - window * period
  local allowed = p * (1 - elapsed / period) + c + math.max(cost, 1) <= limit
  if allowed and cost > 0 then
    c = c + cost
    redis.call('HSET', key, 'w', string.format('%d', window), 'p', p, 'c', c)
    redis.call('PEXPIRE', key, math.ceil(period * 2000))
  end
  return {allowed and 1 or 0, p, c, string.format('%.6f', elapsed)}
end
local answers, k = {}, 1
while a <= #ARGV do
  local kind = ARGV[a]
  if kind == 's' then
    answers[#answers + 1] = step(KEYS[k], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
    k, a = k + 1, a + 4
  elseif kind == 'a' then
    answers[#answers + 1] = step(KEYS[k], math.huge, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]))
    k, a = k + 1, a + 3
  else
    local first = step(KEYS[k], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), 1)
    if first[1] == 0 then
      answers[#answers + 1] = {1, first}
    elseif kind == 'p' then
      answers[#answers + 1] = {2, step(KEYS[k + 1], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), 1)}
    else
      answers[#answers + 1] = {2, step(KEYS[k + 1], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), 1), first}
    end
    k, a = k + 2, a + 5
  end
end
"""
_STEPS = _STEP_LOOP + "return answers\n"
_BATCH_SCRIPT = _CLOCK + _STEP_LOOP + "answers[#answers + 1] = string.format('%.6f', now)\nreturn answers\n"

# Write-behind (see RedisCounters): a hit is decided on this process's view while the view
# puts it at no more than this share of the limit; above, it takes the exact path.
LOCAL_SHARE = 0.5
# Hits admitted on a view are written to Redis (and the views refreshed) this often.
FLUSH_INTERVAL = 0.005
# A view older than this (seconds since Redis last answered for the key) is not trusted:
# the next hit takes the exact path, which refreshes it. Views are dropped a second after.
MAX_VIEW_AGE = 0.1
_SWEEP_EVERY = 1.0


class _View:
    """What this process knows of one counter in Redis: Redis's counts at its last answer
    (window index on Redis's clock, previous and current count), when that answer came
    (local clock), and this process's hits since: admitted but not yet sent, and sent but
    not yet answered."""

    __slots__ = ("window", "previous", "current", "period", "refreshed", "batch", "unflushed", "sending")

    def __init__(self, period: float) -> None:
        self.period = period
        self.window, self.previous, self.current, self.refreshed, self.batch = -1, 0, 0, 0.0, -1
        self.unflushed = self.sending = 0


# What a batch entry's answer refreshes (besides the caller's future, if any).
_NO_VIEW, _VIEW, _PAIR_VIEWS, _ADDED = 0, 1, 2, 3


class RedisCounters:
    """Counters in Redis, shared by every worker and node.

    Exact path: the hits of one turn of the event loop go to Redis as one script call: one
    command to write, run and read for all of them, instead of a round trip each (the way
    group commit shares a commit).

    Write-behind: ``hit_local`` decides a hit on this process's view of the counter when the
    view is fresh (Redis answered for the key within MAX_VIEW_AGE) and puts the request at no
    more than LOCAL_SHARE of the limit, counting Redis's last counts and every hit of this
    process since at full weight. Such a hit waits for nothing; the hits admitted so are
    added in Redis every FLUSH_INTERVAL by one script call whose answers refresh the views.
    Anything else takes the exact path, carrying this process's unsent hits of the key ahead
    of it in the same call, so within one process the counts are exact, as before.

    The bound: the exact path cannot see the hits other processes admitted on their views
    and have not written yet. A process admits on its view only while the view puts the key
    at no more than LOCAL_SHARE of the limit, and writes what it admitted within
    FLUSH_INTERVAL, the answer bringing its view up to date. So once the true count passes
    LOCAL_SHARE of the limit, each other process admits on its stale view at most the hits
    it gets in one flush interval and a round trip, and never more than LOCAL_SHARE of the
    limit: the limit is passed by at most that sum. Processes that each see a key less
    than once per flush interval pass it by at most one request each; every process
    bursting on a stale view at once, by (processes - 1) x LOCAL_SHARE x limit at worst.
    A view older than MAX_VIEW_AGE decides nothing.

    Clock: the views' windows are on Redis's clock, read from each batch's answer and kept
    as an offset to this process's clock (wrong by at most half a round trip as the event
    loop sees it): a local decision near a window's edge may weigh the previous window as
    Redis would a few milliseconds earlier or later, and the headers' reset time may be off
    by as much. The exact path reads Redis's clock itself, as before.
    """

    def __init__(self, url: str, prefix: str, on_error=None) -> None:
        self._client = redis_from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._batch_script = self._client.register_script(_BATCH_SCRIPT)
        self._prefix = f"{prefix}:rl:"
        self._pending_keys: list[str] = []
        self._pending_args: list = []
        self._waiters: list[asyncio.Future | None] = []
        self._refreshes: list[tuple] = []
        self._views: dict[str, _View] = {}
        self._dirty: dict[str, _View] = {}  # views with hits admitted and not yet sent
        self._flush_scheduled = False
        self._flushed: list[asyncio.Future] = []
        self._sending: set[asyncio.Task] = set()
        self._closed = False
        self.batches = 0  # script calls sent so far
        self._next_sweep = 0.0
        self._on_error = on_error
        self.offset = 0.0  # Redis's clock minus this process's, as of the last answer

    def key(self, bucket: str, key: str) -> str:
        return f"{self._prefix}{bucket}:{key}"

    def hit_local(self, counter: str, amount: int, period: float, now: float, _floor=math.floor) -> float | None:
        """Count a hit on this process's view of ``counter`` (a ``key``), written behind: the
        estimate with it counted, or None when the view cannot decide (nothing counted; take
        the exact path)."""
        view = self._views.get(counter)
        if view is None or view.period != period or now - view.refreshed > MAX_VIEW_AGE:
            return None
        now = now + self.offset
        window = _floor(now / period)
        behind = window - view.window
        if behind == 0:
            previous, current = view.previous, view.current
        elif behind == 1:
            previous, current = view.current, 0
        elif behind > 1:
            previous = current = 0
        else:  # the offset moved back over a window's edge
            return None
        # This process's own hits since count at full weight, wherever Redis will put them.
        estimate = (previous * (1.0 - (now - window * period) / period) + current
                    + view.unflushed + view.sending + 1.0)
        if estimate > amount * LOCAL_SHARE:
            return None
        view.unflushed += 1
        if view.unflushed == 1:
            self._dirty[counter] = view
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._flush)
        return estimate

    def unhit_local(self, counter: str) -> None:
        """Takes back the last ``hit_local`` of ``counter`` (made in the same turn)."""
        self._views[counter].unflushed -= 1

    async def step(self, bucket: str, key: str, rate: Rate, cost: int, *, view: bool = False) -> Outcome:
        """One exact step; ``view``: the answer makes or refreshes this process's view."""
        counter = f"{self._prefix}{bucket}:{key}"
        self._send_unflushed(counter)
        refresh = (_VIEW, counter, rate.period) if view else (_NO_VIEW,)
        answer = await self._queue((counter,), ("s", rate.amount, rate.period, cost), refresh)
        return _outcome(answer, rate)

    async def step_pair(self, first: tuple[str, str, Rate], second: tuple[str, str, Rate], *,
                        views: bool = False) -> tuple[int, Outcome]:
        """One request (cost 1) against two (bucket, key, rate) counters in one call: which of
        them answered (0: the first refused, and the second was not counted; 1: the first
        allowed it, and this is the second's step) and that step."""
        (first_bucket, first_key, first_rate), (second_bucket, second_key, second_rate) = first, second
        counters = (f"{self._prefix}{first_bucket}:{first_key}", f"{self._prefix}{second_bucket}:{second_key}")
        self._send_unflushed(counters[0])
        self._send_unflushed(counters[1])
        refresh = (_PAIR_VIEWS, counters, (first_rate.period, second_rate.period)) if views else (_NO_VIEW,)
        which, answer, *_first = await self._queue(
            counters, ("q", first_rate.amount, first_rate.period, second_rate.amount, second_rate.period), refresh)
        which = int(which) - 1
        return which, _outcome(answer, second_rate if which else first_rate)

    async def flush(self) -> None:
        """Writes the hits admitted on views now, and waits until Redis has answered every
        batch sent or about to be (at shutdown; tests)."""
        self._flush()
        if self._waiters:
            done = asyncio.get_running_loop().create_future()
            self._flushed.append(done)  # set once the next batch is answered (or failed)
            await done
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _send_unflushed(self, counter: str) -> None:
        view = self._dirty.pop(counter, None)
        if view is not None and view.unflushed:
            self._queue_added(counter, view)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed:
            return
        dirty, self._dirty = self._dirty, {}
        for counter, view in dirty.items():
            if view.unflushed:
                self._queue_added(counter, view)

    def _queue_added(self, counter: str, view: _View) -> None:
        count, view.unflushed = view.unflushed, 0
        view.sending += count
        self._queue((counter,), ("a", view.period, count), (_ADDED, counter, view, count), wait=False)

    def _queue(self, keys: tuple, args: tuple, refresh: tuple, wait: bool = True) -> asyncio.Future | None:
        """Add an entry to the next batch (sent once this turn's other requests have added
        theirs); the future gets the entry's answer (none for hits written behind)."""
        loop = asyncio.get_running_loop()
        if not self._waiters:
            loop.call_soon(self._start_sending)
        done = loop.create_future() if wait else None
        self._pending_keys += keys
        self._pending_args += args
        self._waiters.append(done)
        self._refreshes.append(refresh)
        return done

    def _start_sending(self) -> None:
        task = asyncio.get_running_loop().create_task(self._send_pending())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_pending(self) -> None:
        keys, args, waiters, refreshes = self._pending_keys, self._pending_args, self._waiters, self._refreshes
        self._pending_keys, self._pending_args, self._waiters, self._refreshes = [], [], [], []
        flushed, self._flushed = self._flushed, []
        self.batches += 1
        batch = self.batches
        sent = time.time()
        try:
            answers = await self._batch_script(keys=keys, args=args)
            if len(answers) != len(waiters) + 1:
                raise RedisError(f"{len(answers)} answers to {len(waiters)} rate-limit steps")
            received = time.time()
            now = float(answers.pop())
            self.offset = now - (sent + received) / 2
        except Exception as exc:  # every waiter learns of it: none may wait for ever
            failure = StorageDown(str(exc)) if isinstance(exc, (RedisError, OSError)) else exc
            lost = False
            for refresh in refreshes:
                if refresh[0] == _ADDED:
                    refresh[2].sending -= refresh[3]  # gone with Redis: the limits fail open
                    lost = True
            if lost and self._on_error is not None:
                self._on_error()
            for done in waiters:
                if done is not None and not done.done():
                    done.set_exception(failure)
            self._wake(flushed)
            return
        for done, refresh, answer in zip(waiters, refreshes, answers):
            kind = refresh[0]
            if kind == _ADDED:
                refresh[2].sending -= refresh[3]
                self._refresh(refresh[1], refresh[2].period, answer, now, received, batch)
            elif kind == _VIEW:
                self._refresh(refresh[1], refresh[2], answer, now, received, batch)
            elif kind == _PAIR_VIEWS:
                (first, second), (first_period, second_period) = refresh[1], refresh[2]
                if len(answer) == 3:
                    self._refresh(first, first_period, answer[2], now, received, batch)
                    self._refresh(second, second_period, answer[1], now, received, batch)
                else:
                    self._refresh(first, first_period, answer[1], now, received, batch)
            if done is not None and not done.done():
                done.set_result(answer)
        self._wake(flushed)
        if received >= self._next_sweep:
            self._sweep(received)

    @staticmethod
    def _wake(flushed: list) -> None:
        for done in flushed:
            if not done.done():
                done.set_result(None)

    def _refresh(self, counter: str, period: float, answer, now: float, received: float, batch: int) -> None:
        """The view of ``counter`` set to Redis's counts in ``answer`` (a step's), unless a
        later batch's answer already set it."""
        view = self._views.get(counter)
        if view is None or view.period != period:
            view = self._views[counter] = _View(period)
        elif view.batch > batch:
            return
        _, previous, current, elapsed = answer
        view.window = round((now - float(elapsed)) / period)
        view.previous, view.current, view.refreshed, view.batch = int(previous), int(current), received, batch

    def _sweep(self, now: float) -> None:
        """Forgets the views too old to decide anything, with no hits of this process on their way."""
        views, stale = self._views, now - MAX_VIEW_AGE - _SWEEP_EVERY
        for counter in [c for c, v in views.items() if v.refreshed < stale and not (v.unflushed or v.sending)]:
            del views[counter]
        self._next_sweep = now + _SWEEP_EVERY

    async def close(self) -> None:
        await self.flush()  # the hits admitted on views are written before the process goes
        self._closed = True
        await self._client.aclose()


def _outcome(answer, rate: Rate) -> Outcome:
    allowed, previous, current, elapsed = answer
    return outcome(bool(allowed), int(previous), int(current), rate, float(elapsed))


class RateLimits:
    """The limiter: ``hit`` counts a request in a bucket (raising ``RateLimited`` over its
    limit), in memory or in Redis alike."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits == "on"
        self._last_warning = 0.0
        self.counters = (RedisCounters(settings.redis_url, settings.redis_prefix, on_error=self._storage_down)
                         if settings.redis_url else MemoryCounters())
        self.counted_in_redis = isinstance(self.counters, RedisCounters)
        # In memory, a hit is counted here directly (no await): this is on every request.
        self._tables = None if self.counted_in_redis else self.counters.tables
        self.rates = {
            "authorize": parse_rate(settings.rate_limit_authorize),
            "token": parse_rate(settings.rate_limit_token),
            "revoke": parse_rate(settings.rate_limit_revoke),
            "global": parse_rate(settings.rate_limit_global),
            "client_auth": parse_rate(settings.rate_limit_client_auth_failures),
            "password": parse_rate(settings.rate_limit_login_failures),
            "password_ip": parse_rate(settings.rate_limit_password_ip_failures),
            "password_account": parse_rate(settings.rate_limit_password_account_failures),
            "mfa_code_account": parse_rate(settings.rate_limit_mfa_code_account_failures),
            "register": parse_rate(settings.rate_limit_registrations),
            "device": parse_rate(settings.rate_limit_device),
            "user_code": parse_rate(settings.rate_limit_user_code_failures),
            "user_code_ip": parse_rate(settings.rate_limit_user_code_ip_failures),
            "user_code_account": parse_rate(settings.rate_limit_user_code_account_failures),
            "password_reset_ip": parse_rate(settings.rate_limit_password_reset_ip),
            "password_reset_account": parse_rate(settings.rate_limit_password_reset_account),
            "verification_resend": parse_rate(settings.rate_limit_verification_resend),
        }
        self.overrides = {client_id: parse_rate(value) for client_id, value in settings.rate_limit_overrides.items()}


    def _rate(self, bucket: str, client_id: str | None) -> Rate:
        """The bucket's rate, or the application's own where it has one (token and revoke)."""
        if client_id is not None and bucket in ("token", "revoke") and client_id in self.overrides:
            return self.overrides[client_id]
        return self.rates[bucket]

    async def hit(self, bucket: str, key: str, *, client_id: str | None = None,
                  with_state: bool = True) -> LimitState | None:
        """Count a request; raises ``RateLimited`` over the limit. Returns the state for the
        X-RateLimit headers (None when limits are off, the storage is unreachable, or the
        caller needs no headers). ``client_id`` picks the application's own rate, if any."""
        if not self.enabled:
            return None
        rate = self._rate(bucket, client_id) if self.overrides else self.rates[bucket]
        tables = self._tables
        if tables is None:
            counters = self.counters
            now = time.time()
            estimate = counters.hit_local(counters.key(bucket, key), rate.amount, rate.period, now)
            if estimate is not None:  # far below the limit: decided here, written behind
                return _counted(bucket, rate, estimate, now + counters.offset, counters.offset) if with_state else None
            try:
                result = await counters.step(bucket, key, rate, 1, view=True)
            except StorageDown:
                self._storage_down()
                return None
            return self._settle(bucket, rate, result, with_state)
        now = time.time()
        estimate = tables[bucket].hit(key, rate.amount, rate.period, now)
        if estimate is None:
            self._refuse(bucket, key, rate, now)
        return _counted(bucket, rate, estimate, now) if with_state else None

    async def hit_global_and(self, ip: str, bucket: str, key: str, *,
                             client_id: str | None = None) -> LimitState | None:
        """``hit("global", ip)`` then ``hit(bucket, key)``, as one call to Redis or with one
        clock reading in memory: refused globally, the bucket is not counted, as when the two
        are made one after the other. The bucket's state, for the headers."""
        if not self.enabled:
            return None
        rates = self.rates
        rate = self._rate(bucket, client_id) if self.overrides else rates[bucket]
        global_rate = rates["global"]
        tables = self._tables
        if tables is None:
            counters = self.counters
            now = time.time()
            global_counter = counters.key("global", ip)
            if counters.hit_local(global_counter, global_rate.amount, global_rate.period, now) is not None:
                estimate = counters.hit_local(counters.key(bucket, key), rate.amount, rate.period, now)
                if estimate is not None:
                    return _counted(bucket, rate, estimate, now + counters.offset, counters.offset)
                counters.unhit_local(global_counter)  # both go the exact way, in one call
            try:
                which, result = await counters.step_pair(("global", ip, global_rate), (bucket, key, rate), views=True)
            except StorageDown:
                self._storage_down()
                return None
            if which == 0:
                return self._settle("global", global_rate, result, False)
            return self._settle(bucket, rate, result, True)
        now = time.time()
        if tables["global"].hit(ip, global_rate.amount, global_rate.period, now) is None:
            self._refuse("global", ip, global_rate, now)
        estimate = tables[bucket].hit(key, rate.amount, rate.period, now)
        if estimate is None:
            self._refuse(bucket, key, rate, now)
        return _counted(bucket, rate, estimate, now)

    async def check(self, bucket: str, key: str) -> None:
        """Raises ``RateLimited`` when ``key`` has no request left in ``bucket``; counts nothing."""
        if self.enabled:
            await self._step(bucket, key, self.rates[bucket], 0)

    async def record(self, bucket: str, key: str) -> None:
        """Count one (a failed login) without refusing anything now."""
        if not self.enabled:
            return
        try:
            await self._step(bucket, key, self.rates[bucket], 1)
        except RateLimited:
            pass

    async def close(self) -> None:
        await self.counters.close()

    async def _step(self, bucket: str, key: str, rate: Rate, cost: int, with_state: bool = True) -> LimitState | None:
        """One step in either storage: the state after it (None when the storage is down, or
        when allowed and ``with_state`` is false); raises ``RateLimited`` when refused."""
        try:
            result = await self.counters.step(bucket, key, rate, cost)
        except StorageDown:
            self._storage_down()
            return None
        return self._settle(bucket, rate, result, with_state)

    def _refuse(self, bucket: str, key: str, rate: Rate, now: float) -> None:
        """Raises ``RateLimited`` for a hit the memory table refused (which counted nothing):
        asking the counter at the same instant gives the numbers for the 429."""
        self._settle(bucket, rate, self.counters.step_at(bucket, key, rate, 0, now), False)

    def _settle(self, bucket: str, rate: Rate, result: Outcome, with_state: bool) -> LimitState | None:
        if result.allowed and not with_state:
            return None
        state = LimitState(bucket, rate.amount, result.remaining, time.time() + result.reset_after)
        if not result.allowed:
            metrics.RATE_LIMITED.labels(bucket).inc()
            raise RateLimited(state, is_global=bucket == "global")
        return state

    def _storage_down(self) -> None:
        metrics.REDIS_ERRORS.inc()
        if time.monotonic() - self._last_warning > 60:
            self._last_warning = time.monotonic()
            logger.warning("rate-limit storage unreachable; limits fail open until it is back")


def _counted(bucket: str, rate: Rate, estimate: float, now: float, offset: float = 0.0) -> LimitState:
    """The state after a request the memory table (or a Redis view) counted (``estimate``
    includes it; it never exceeds the limit, so the remainder's integer part is its floor);
    the window ends at the next multiple of the period on the counter's clock, ``offset``
    ahead of this process's."""
    period = rate.period
    return LimitState(bucket, rate.amount, int(rate.amount - estimate), now - now % period + period - offset)


# --- helpers for handlers -------------------------------------------------------------------
# They work on an ASGI-like scope ({"app": ..., "state": ..., "client": (ip, port)}), so every
# interface and handler shares them (a Starlette Request passes its .scope).

# Set in a request's state by the edge: the global count of this form request is made
# together with the endpoint's own limit once the body says which client it is (one round
# trip for both with Redis, one clock reading in memory).
GLOBAL_PENDING = "global_pending"


def client_ip(scope) -> str:
    """The address per-address throttles count (client_ip.throttle_address: an IPv6 /64)."""
    counted = scope.get("state", {}).get("client_ip")
    if counted:
        return counted
    client = scope.get("client")
    return throttle_address(client[0]) if client else "unknown"


def _limits(scope) -> RateLimits:
    return scope["app"].limits


async def limit(scope, bucket: str, key: str, *, client_id: str | None = None) -> None:
    """Count this request against ``bucket``; the response (whatever it is) carries the
    X-RateLimit-* headers, added by the edge from the request state. Once per request: a
    refusal raises before the state is set, and its 429 carries the headers."""
    _keep_state(scope, await _limits(scope).hit(bucket, key, client_id=client_id))


def _keep_state(scope, state: LimitState | None) -> None:
    if state is not None:
        scope.setdefault("state", {})["rate_limit"] = state


async def admit_client(scope, bucket: str, application_id: int, *, public: bool = False) -> None:
    """Count a request whose client has authenticated against that client's own bucket, keyed
    by its canonical id (one application, one bucket, however the request spelled it), with
    the global count if it was left pending. A public client proves nothing (anyone may
    send its client_id), so its requests count per (client, address): a stranger naming it
    spends only their own allowance. Raises ``RateLimited``."""
    limits = _limits(scope)
    if limits.enabled:
        client_id = str(application_id)
        key = f"client:{client_id}|ip:{client_ip(scope)}" if public else f"client:{client_id}"
        _keep_state(scope, await _count(scope, limits, bucket, key, client_id))


async def count_failed_client_auth(scope) -> None:
    """A request whose client authentication failed counts against its address alone: naming
    someone else's client_id never spends that client's allowance. Raises ``RateLimited``
    once the address has used up its failures."""
    limits = _limits(scope)
    if limits.enabled:
        _keep_state(scope, await _count(scope, limits, "client_auth", f"ip:{client_ip(scope)}", None))


def _count(scope, limits: RateLimits, bucket: str, key: str, client_id: str | None):
    """The hit of a request in ``bucket``, with its pending global count if any (awaitable)."""
    state = scope.setdefault("state", {})
    if state.pop(GLOBAL_PENDING, False):
        return limits.hit_global_and(state["client_ip"], bucket, key, client_id=client_id)
    return limits.hit(bucket, key, client_id=client_id)


async def count_pending_global(scope) -> None:
    """The global count left pending, alone: the request stops before its endpoint's limit."""
    state = scope.get("state", {})
    if state.pop(GLOBAL_PENDING, False):
        await _limits(scope).hit("global", state["client_ip"], with_state=False)


class FailureThrottle:
    """Failed checks of something a person types (a password; a device's user code), counted
    per (account, IP), per IP, and per account under a ceiling that no single IP can reach
    (its own per-(account, IP) limit is lower), so a stranger's guesses never lock the owner
    out. ``buckets`` names the three buckets in that order. ``account`` is what the caller
    proved or what the check is made against: a user's id (the signed-in user at /activate,
    the account a password is checked against), or the name typed when no account has it
    (username and email of one account are one key).

    Checks of one IP, and of one account, go one at a time in this process: checked, verified
    and counted before the next is checked, so a burst of parallel guesses cannot all pass
    the check before the first failure is counted (across processes, at most one each)."""

    def __init__(self, scope, buckets: tuple[str, str, str], code_account: str | None = None) -> None:
        self.limits = _limits(scope)
        self.ip = client_ip(scope)
        self.buckets = buckets
        self.code_account = code_account  # the per-account bucket of second-factor codes

    def _keys(self, account: str, code: bool) -> tuple[tuple[str, str], ...]:
        per_account_and_ip, per_ip, per_account = self.buckets
        if code and self.code_account is not None:
            per_account = self.code_account
        return ((per_account_and_ip, f"{account}|{self.ip}"), (per_ip, self.ip), (per_account, account))

    @asynccontextmanager
    async def attempt(self, account: str, *, code: bool = False):
        """Around one check: raises ``RateLimited`` when any of the three buckets has no
        failure left; yields the coroutine function that counts a failure. ``code``: a
        second-factor code, counted per account in ``code_account`` instead."""
        kind = self.buckets[0]
        async with _one_at_a_time(f"{kind}|ip:{self.ip}"), _one_at_a_time(f"{kind}|account:{account}"):
            for bucket, key in self._keys(account, code):
                await self.limits.check(bucket, key)
            yield lambda: self._failed(account, code)

    async def _failed(self, account: str, code: bool) -> None:
        for bucket, key in self._keys(account, code):
            await self.limits.record(bucket, key)


# Logins and the password confirmations of sensitive actions, and two-factor codes (which
# count with the passwords per (account, IP) and per IP, and per account on their own).
PasswordThrottle = functools.partial(FailureThrottle, buckets=("password", "password_ip", "password_account"),
                                     code_account="mfa_code_account")
# User codes typed at /activate (the device flow), keyed by the signed-in user.
UserCodeThrottle = functools.partial(FailureThrottle, buckets=("user_code", "user_code_ip", "user_code_account"))


_IN_FLIGHT: dict[str, list] = {}  # key -> [lock, how many hold or wait for it]


@asynccontextmanager
async def _one_at_a_time(key: str):
    entry = _IN_FLIGHT.get(key)
    if entry is None:
        entry = _IN_FLIGHT[key] = [asyncio.Lock(), 0]
    entry[1] += 1
    try:
        async with entry[0]:
            yield
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _IN_FLIGHT[key]


async def limit_registration(scope) -> None:
    """Every registration attempt counts against its client IP (each costs an argon2 hash)."""
    await _limits(scope).hit("register", f"ip:{client_ip(scope)}", with_state=False)


async def limit_password_reset(scope) -> None:
    """Every password-reset request counts against its client IP, whatever it names."""
    await _limits(scope).hit("password_reset_ip", f"ip:{client_ip(scope)}", with_state=False)


def password_reset_account_counter(scope):
    """The per-account count of reset mails, for platform.mail_links.request_password_reset:
    awaited with the account found, it raises ``RateLimited`` once the account has had its
    mails (the request's answer does not change: the platform swallows it)."""
    async def count(user_id: int) -> None:
        await _limits(scope).hit("password_reset_account", f"user:{user_id}", with_state=False)
    return count


async def limit_verification_resend(scope, user_id: int) -> None:
    """Verification mails a signed-in user asks for again, per user."""
    await _limits(scope).hit("verification_resend", f"user:{user_id}", with_state=False)
