"""Rate limits (SPEC §7): a sliding-window counter per bucket and key (core/rate_window.py),
in process memory by default and in Redis when FLUXER_REDIS_URL is set, so every worker
and node shares the counters. With Redis a hit is one round trip: one Lua script reads,
rolls, checks and counts atomically on Redis's own clock (the nodes' clocks may differ).

When Redis cannot be reached the limits fail open (the request goes through) and a line
is logged at most once a minute: refusing all traffic because the limiter is down would
turn a Redis outage into a full outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from contextlib import asynccontextmanager

from redis.asyncio import from_url as redis_from_url
from redis.exceptions import RedisError

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.rate_window import Outcome, Rate, WindowTable, outcome, parse_rate, step
from fluxer_oauth.ops import metrics
from fluxer_oauth.settings import Settings

logger = logging.getLogger("fluxer.ratelimit")
ROUTE_BUCKETS = ("authorize", "token", "revoke")


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

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The same as ASGI header pairs."""
        return [(name.encode(), value.encode()) for name, value in self.text_headers()]


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


class MemoryCounters:
    """Counters of this process: a table per bucket (rate_window.WindowTable)."""

    def __init__(self) -> None:
        self.tables: defaultdict[str, WindowTable] = defaultdict(WindowTable)

    def step_now(self, bucket: str, key: str, rate: Rate, cost: int) -> Outcome:
        """One step, without a coroutine: memory needs no waiting. (An allowed request on the
        hot path is counted by the table's ``hit`` instead.)"""
        return step(self.tables[bucket], key, rate, time.time(), cost)

    async def close(self) -> None:
        pass


# Every rate-limit step one worker makes in one turn of its event loop, as one Lua call on
# Redis's clock (read once for the batch). ARGV is a sequence of entries, each taking its
# keys from KEYS in order:
#   's', limit, period, cost                  one step of one counter (1 key);
#   'p', limit1, period1, limit2, period2     one request against two counters (2 keys),
#                                             the first (the global one) before the second;
#                                             refused by the first, the second is untouched.
# A step answers {allowed, previous, current, seconds elapsed in the window as text} (Lua
# numbers become integers on the way out); a pair answers {which counter answered (1 or 2),
# that counter's step}. Steps run in order, so several hits of one key in a batch count
# exactly as they would one call each. Each counter is a hash: window index, previous and
# current count.
_BATCH_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
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
local answers, k, a = {}, 1, 1
while a <= #ARGV do
  if ARGV[a] == 's' then
    answers[#answers + 1] = step(KEYS[k], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
    k, a = k + 1, a + 4
  else
    local first = step(KEYS[k], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), 1)
    if first[1] == 0 then
      answers[#answers + 1] = {1, first}
    else
      answers[#answers + 1] = {2, step(KEYS[k + 1], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), 1)}
    end
    k, a = k + 2, a + 5
  end
end
return answers
"""


class RedisCounters:
    """Counters in Redis, shared by every worker and node.

    The hits of one turn of the event loop go to Redis as one script call: one command to
    write, run and read for all of them, instead of a round trip each (the way group
    commit shares a commit)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._client = redis_from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._batch_script = self._client.register_script(_BATCH_SCRIPT)
        self._prefix = f"{prefix}:rl:"
        self._pending_keys: list[str] = []
        self._pending_args: list = []
        self._waiters: list[asyncio.Future] = []

    async def step(self, bucket: str, key: str, rate: Rate, cost: int) -> Outcome:
        answer = await self._queue((f"{self._prefix}{bucket}:{key}",), ("s", rate.amount, rate.period, cost))
        return _outcome(answer, rate)

    async def step_pair(self, first: tuple[str, str, Rate], second: tuple[str, str, Rate]) -> tuple[int, Outcome]:
        """One request (cost 1) against two (bucket, key, rate) counters in one call: which of
        them answered (0: the first refused, and the second was not counted; 1: the first
        allowed it, and this is the second's step) and that step."""
        (first_bucket, first_key, first_rate), (second_bucket, second_key, second_rate) = first, second
        which, answer = await self._queue(
            (f"{self._prefix}{first_bucket}:{first_key}", f"{self._prefix}{second_bucket}:{second_key}"),
            ("p", first_rate.amount, first_rate.period, second_rate.amount, second_rate.period))
        which = int(which) - 1
        return which, _outcome(answer, second_rate if which else first_rate)

    def _queue(self, keys: tuple, args: tuple) -> asyncio.Future:
        """Add an entry to this turn's batch (sent once the turn's other requests have added
        theirs); the future gets the entry's answer."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._waiters:
            loop.call_soon(lambda: loop.create_task(self._send_pending()))
        self._pending_keys += keys
        self._pending_args += args
        self._waiters.append(done)
        return done

    async def _send_pending(self) -> None:
        keys, args, waiters = self._pending_keys, self._pending_args, self._waiters
        self._pending_keys, self._pending_args, self._waiters = [], [], []
        try:
            answers = await self._batch_script(keys=keys, args=args)
            if len(answers) != len(waiters):
                raise RedisError(f"{len(answers)} answers to {len(waiters)} rate-limit steps")
        except Exception as exc:  # every waiter learns of it: none may wait for ever
            failure = StorageDown(str(exc)) if isinstance(exc, (RedisError, OSError)) else exc
            for done in waiters:
                if not done.done():
                    done.set_exception(failure)
            return
        for done, answer in zip(waiters, answers):
            if not done.done():
                done.set_result(answer)

    async def close(self) -> None:
        await self._client.aclose()


def _outcome(answer, rate: Rate) -> Outcome:
    allowed, previous, current, elapsed = answer
    return outcome(bool(allowed), int(previous), int(current), rate, float(elapsed))


NOT_NOW = object()  # RateLimits.hit_now: the counters are remote, await hit() instead


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits == "on"
        self.counters = (RedisCounters(settings.redis_url, settings.redis_prefix) if settings.redis_url
                         else MemoryCounters())
        self._memory = self.counters if isinstance(self.counters, MemoryCounters) else None
        self.counted_in_redis = self._memory is None
        self.rates = {
            "authorize": parse_rate(settings.rate_limit_authorize),
            "token": parse_rate(settings.rate_limit_token),
            "revoke": parse_rate(settings.rate_limit_revoke),
            "global": parse_rate(settings.rate_limit_global),
            "client_auth": parse_rate(settings.rate_limit_client_auth_failures),
            "password": parse_rate(settings.rate_limit_login_failures),
            "password_ip": parse_rate(settings.rate_limit_password_ip_failures),
            "password_account": parse_rate(settings.rate_limit_password_account_failures),
            "register": parse_rate(settings.rate_limit_registrations),
        }
        self.overrides = {client_id: parse_rate(value) for client_id, value in settings.rate_limit_overrides.items()}
        self._last_warning = 0.0

    def _rate(self, bucket: str, client_id: str | None) -> Rate:
        if client_id is not None and bucket in ("token", "revoke") and client_id in self.overrides:
            return self.overrides[client_id]
        return self.rates[bucket]

    async def _step(self, bucket: str, key: str, rate: Rate, cost: int, with_state: bool = True) -> LimitState | None:
        """The state after the step; raises ``RateLimited`` when refused. None when the
        storage is down, or when the request is allowed and ``with_state`` is false.
        (In memory the step is synchronous; only Redis counters are awaited.)"""
        if self._memory is not None:
            return self._settle(bucket, rate, self._memory.step_now(bucket, key, rate, cost), with_state)
        try:
            result = await self.counters.step(bucket, key, rate, cost)
        except StorageDown:
            self._storage_down()
            return None
        return self._settle(bucket, rate, result, with_state)

    def _settle(self, bucket: str, rate: Rate, result: Outcome, with_state: bool) -> LimitState | None:
        if result.allowed and not with_state:
            return None
        state = LimitState(bucket, rate.amount, result.remaining, time.time() + result.reset_after)
        if not result.allowed:
            metrics.RATE_LIMITED.labels(bucket).inc()
            raise RateLimited(state, is_global=bucket == "global")
        return state

    def hit_now(self, bucket: str, key: str, *, client_id: str | None = None, with_state: bool = True):
        """``hit`` without a coroutine when the counters are in memory (they are counted on
        every request); ``NOT_NOW`` when they are in Redis and ``hit`` must be awaited."""
        if not self.enabled:
            return None
        memory = self._memory
        if memory is None:
            return NOT_NOW
        return self._count_now(memory, bucket, key, self._rate(bucket, client_id), time.time(), with_state)

    def hit_global_and_now(self, ip: str, bucket: str, key: str, *, client_id: str | None = None):
        """``hit_global_and`` without a coroutine when the counters are in memory (one clock
        reading for both counts); ``NOT_NOW`` when they are in Redis."""
        memory = self._memory
        if memory is None:
            return NOT_NOW
        now = time.time()
        self._count_now(memory, "global", ip, self.rates["global"], now, False)
        return self._count_now(memory, bucket, key, self._rate(bucket, client_id), now, True)

    def _count_now(self, memory: MemoryCounters, bucket: str, key: str, rate: Rate, now: float,
                   with_state: bool) -> LimitState | None:
        table = memory.tables[bucket]
        counted = table.hit(key, rate.amount, rate.period, now)
        if counted is not None:
            return LimitState(bucket, rate.amount, *counted) if with_state else None
        # Refused (which changed no count): asking gives the numbers for the 429.
        return self._settle(bucket, rate, step(table, key, rate, now, 0), with_state)

    async def hit(self, bucket: str, key: str, *, client_id: str | None = None,
                  with_state: bool = True) -> LimitState | None:
        """Count a request; raises ``RateLimited`` over the limit. Returns the state for the
        X-RateLimit headers (None when limits are off, the storage is unreachable, or the
        caller needs no headers)."""
        if not self.enabled:
            return None
        return await self._step(bucket, key, self._rate(bucket, client_id), 1, with_state)

    async def hit_global_and(self, ip: str, bucket: str, key: str, *, client_id: str | None = None) -> LimitState | None:
        """``hit("global", ip)`` then ``hit(bucket, key)`` in one call to Redis (only for
        counters there): refused globally, the bucket is not counted, as when the two are
        made one after the other. The bucket's state, for the headers."""
        rate, global_rate = self._rate(bucket, client_id), self.rates["global"]
        try:
            which, result = await self.counters.step_pair(("global", ip, global_rate), (bucket, key, rate))
        except StorageDown:
            self._storage_down()
            return None
        if which == 0:
            return self._settle("global", global_rate, result, False)
        return self._settle(bucket, rate, result, True)

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

    def _storage_down(self) -> None:
        metrics.REDIS_ERRORS.inc()
        if time.monotonic() - self._last_warning > 60:
            self._last_warning = time.monotonic()
            logger.warning("rate-limit storage unreachable; limits fail open until it is back")


class GlobalLimitMiddleware:  # noqa: D101 (pure ASGI, see module docstring)
    """50 requests per second per client IP across every route (health checks excepted)."""

    EXEMPT = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app, *, limits: RateLimits, resolver) -> None:
        self.app = app
        self.limits = limits
        self.resolver = resolver

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ip = self.resolver.resolve(scope)
        state = scope.setdefault("state", {})
        state["client_ip"] = ip
        try:
            if not state.get(GLOBAL_COUNTED):  # the RSGI entry counted it already
                await hit_global(self.limits, scope["path"], ip)
        except RateLimited as exc:
            from fluxer_oauth.web.responses import json_response

            return await json_response(exc.body(), exc.status, exc.headers)(scope, receive, send)
        return await self.app(scope, receive, send)


async def hit_global(limits: RateLimits, path: str, ip: str) -> None:
    """Count a request against the client IP's global bucket; raises RateLimited."""
    if hit_global_now(limits, path, ip) is NOT_NOW:
        await limits.hit("global", ip, with_state=False)


def hit_global_now(limits: RateLimits, path: str, ip: str):
    """``hit_global`` without a coroutine; ``NOT_NOW`` when it must be awaited (Redis)."""
    if limits.enabled and path not in GlobalLimitMiddleware.EXEMPT:
        return limits.hit_now("global", ip, with_state=False)
    return None


# --- helpers for handlers -------------------------------------------------------------------
# They work on the ASGI scope, so the raw-ASGI endpoints and Starlette handlers share them
# (a Starlette Request passes its .scope).

def client_ip(scope) -> str:
    client = scope.get("client")
    return scope.get("state", {}).get("client_ip") or (client[0] if client else "unknown")


def _limits(scope) -> RateLimits:
    return scope["app"].limits


async def limit(scope, bucket: str, key: str, *, client_id: str | None = None) -> None:
    """Count this request against ``bucket``; the response (whatever it is) carries the
    X-RateLimit-* headers, added by the edge middleware from the request state. Once per
    request: a refusal raises before the state is set, and its 429 carries the headers."""
    if limit_now(scope, bucket, key, client_id=client_id) is NOT_NOW:
        _keep_state(scope, await _limits(scope).hit(bucket, key, client_id=client_id))


def limit_now(scope, bucket: str, key: str, *, client_id: str | None = None):
    """``limit`` without a coroutine when the counters are in memory; ``NOT_NOW`` when they
    are in Redis and ``limit`` must be awaited."""
    state = _limits(scope).hit_now(bucket, key, client_id=client_id)
    if state is not NOT_NOW:
        _keep_state(scope, state)
    return state


def _keep_state(scope, state: LimitState | None) -> None:
    if state is not None:
        scope.setdefault("state", {})["rate_limit"] = state


def admit_client(scope, bucket: str, application_id: int):
    """Count a request whose client has authenticated against that client's own bucket, keyed
    by its canonical id (one application, one bucket, however the request spelled it), with
    the global count left pending. Raises ``RateLimited``; returns an awaitable to await when
    the counters are in Redis, None when the count is done."""
    limits = _limits(scope)
    if not limits.enabled:
        return None
    client_id = str(application_id)
    return _count_request(scope, limits, bucket, f"client:{client_id}", client_id)


def count_failed_client_auth(scope):
    """A request whose client authentication failed counts against its address alone: naming
    someone else's client_id never spends that client's allowance. Raises ``RateLimited``
    once the address has used up its failures; an awaitable with Redis, as above."""
    limits = _limits(scope)
    if not limits.enabled:
        return None
    return _count_request(scope, limits, "client_auth", f"ip:{client_ip(scope)}", None)


def _count_request(scope, limits: RateLimits, bucket: str, key: str, client_id: str | None):
    state = scope.setdefault("state", {})
    global_pending = state.pop(GLOBAL_PENDING, False)
    if limits.counted_in_redis:
        return _count_request_in_redis(state, limits, bucket, key, client_id, global_pending)
    if global_pending:
        limit_state = limits.hit_global_and_now(state["client_ip"], bucket, key, client_id=client_id)
    else:
        limit_state = limits.hit_now(bucket, key, client_id=client_id)
    if limit_state is not None:
        state["rate_limit"] = limit_state
    return None


async def _count_request_in_redis(state: dict, limits: RateLimits, bucket: str, key: str, client_id: str | None,
                                  global_pending: bool) -> None:
    if global_pending:
        limit_state = await limits.hit_global_and(state["client_ip"], bucket, key, client_id=client_id)
    else:
        limit_state = await limits.hit(bucket, key, client_id=client_id)
    if limit_state is not None:
        state["rate_limit"] = limit_state


# Set in a request's state by the RSGI entry: the global count of this form request is made
# together with the endpoint's own limit once the body says which client it is (one round
# trip for both with Redis, one clock reading in memory).
GLOBAL_PENDING = "global_pending"
# Set in an ASGI scope's state by the RSGI entry when it has counted the request globally
# already (GET /users/@me, while looking up the token), so the middleware does not again.
GLOBAL_COUNTED = "global_counted"


async def count_pending_global(scope) -> None:
    """The global count left pending, alone: the request stops before its endpoint's limit."""
    state = scope.get("state", {})
    if state.pop(GLOBAL_PENDING, False):
        await _limits(scope).hit("global", state["client_ip"], with_state=False)


class PasswordThrottle:
    """Failed password checks (login, and the confirmations of sensitive actions), counted per
    (account, IP), per IP, and per account under a ceiling that no single IP can reach (its
    own per-(account, IP) limit is lower), so a stranger's guesses never lock the owner out.
    ``account`` is what the password is checked against: a user's id, or the name typed when
    no account has it (username and email of one account are one key).

    Checks of one IP, and of one account, go one at a time in this process: checked, verified
    and counted before the next is checked, so a burst of parallel guesses cannot all pass
    the check before the first failure is counted (across processes, at most one each)."""

    def __init__(self, scope) -> None:
        self.limits = _limits(scope)
        self.ip = client_ip(scope)

    def _keys(self, account: str) -> tuple[tuple[str, str], ...]:
        return (("password", f"{account}|{self.ip}"), ("password_ip", self.ip), ("password_account", account))

    @asynccontextmanager
    async def attempt(self, account: str):
        """Around one password check: raises ``RateLimited`` when any of the three buckets has
        no failure left; yields the coroutine function that counts a failure."""
        async with _one_at_a_time(f"ip:{self.ip}"), _one_at_a_time(f"account:{account}"):
            for bucket, key in self._keys(account):
                await self.limits.check(bucket, key)
            yield lambda: self._failed(account)

    async def _failed(self, account: str) -> None:
        for bucket, key in self._keys(account):
            await self.limits.record(bucket, key)


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
