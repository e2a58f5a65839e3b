"""Rate limits (SPEC §7) on the `limits` library: a sliding-window counter per bucket and
key (constant work per hit, unlike a moving window whose cost grows with the limit), in
process memory by default and in Redis when FLUXER_REDIS_URL is set, so every worker and
node shares the counters.

When Redis cannot be reached the limits fail open (the request goes through) and a line
is logged at most once a minute: refusing all traffic because the limiter is down would
turn a Redis outage into a full outage.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.ops import metrics
from fluxer_oauth.settings import Settings

logger = logging.getLogger("fluxer.ratelimit")
ROUTE_BUCKETS = ("authorize", "token", "revoke")


@dataclass(frozen=True)
class LimitState:
    bucket: str
    limit: int
    remaining: int
    reset_at: float

    def headers(self) -> dict[str, str]:
        reset_after = max(0.0, self.reset_at - time.time())
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket,
        }


class RateLimited(ApiError):
    def __init__(self, state: LimitState, *, is_global: bool) -> None:
        retry_after = max(0.001, state.reset_at - time.time())
        super().__init__(
            429, "RATE_LIMITED", "you are being rate limited",
            {**state.headers(), "Retry-After": str(math.ceil(retry_after))},
            retry_after=round(retry_after, 3), **{"global": is_global},
        )


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits == "on"
        if settings.redis_url:
            url = settings.redis_url.replace("redis://", "async+redis://", 1)
            self.storage = RedisStorage(
                url, implementation="redispy", key_prefix=f"{settings.redis_prefix}:rl", wrap_exceptions=True,
                socket_timeout=0.5, socket_connect_timeout=0.5,
            )
        else:
            self.storage = MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.items = {
            "authorize": parse(settings.rate_limit_authorize),
            "token": parse(settings.rate_limit_token),
            "revoke": parse(settings.rate_limit_revoke),
            "global": parse(settings.rate_limit_global),
            "login": parse(settings.rate_limit_login_failures),
        }
        self.overrides = {client_id: parse(value) for client_id, value in settings.rate_limit_overrides.items()}
        self._last_warning = 0.0

    def _item(self, bucket: str, client_id: str | None):
        if client_id is not None and bucket in ("token", "revoke") and client_id in self.overrides:
            return self.overrides[client_id]
        return self.items[bucket]

    async def hit(self, bucket: str, key: str, *, client_id: str | None = None,
                  with_state: bool = True) -> LimitState | None:
        """Count a request; raises ``RateLimited`` over the limit. Returns the state for the
        X-RateLimit headers (None when limits are off, the storage is unreachable, or the
        caller needs no headers and the request is allowed)."""
        if not self.enabled:
            return None
        item = self._item(bucket, client_id)
        try:
            allowed = await self.limiter.hit(item, bucket, key)
            if allowed and not with_state:
                return None
            stats = await self.limiter.get_window_stats(item, bucket, key)
        except StorageError:
            self._storage_down()
            return None
        state = LimitState(bucket, item.amount, stats.remaining, stats.reset_time)
        if not allowed:
            metrics.RATE_LIMITED.labels(bucket).inc()
            raise RateLimited(state, is_global=bucket == "global")
        return state

    async def exhausted(self, bucket: str, key: str) -> bool:
        """Whether ``key`` has no requests left in ``bucket``, without counting one."""
        if not self.enabled:
            return False
        try:
            return not await self.limiter.test(self.items[bucket], bucket, key)
        except StorageError:
            self._storage_down()
            return False

    async def record(self, bucket: str, key: str) -> None:
        if not self.enabled:
            return
        try:
            await self.limiter.hit(self.items[bucket], bucket, key)
        except StorageError:
            self._storage_down()

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
        scope.setdefault("state", {})["client_ip"] = ip
        if self.limits.enabled and scope["path"] not in self.EXEMPT:
            try:
                await self.limits.hit("global", ip, with_state=False)
            except RateLimited as exc:
                from fluxer_oauth.web.responses import json_response

                return await json_response(exc.body(), exc.status, exc.headers)(scope, receive, send)
        return await self.app(scope, receive, send)


# --- helpers for handlers -------------------------------------------------------------------
# They work on the ASGI scope, so the raw-ASGI endpoints and Starlette handlers share them
# (a Starlette Request passes its .scope).

def client_ip(scope) -> str:
    client = scope.get("client")
    return scope.get("state", {}).get("client_ip") or (client[0] if client else "unknown")


def _limits(scope) -> RateLimits:
    return scope["app"].state.limits


async def limit(scope, bucket: str, key: str, *, client_id: str | None = None) -> None:
    """Count this request against ``bucket``; the response (whatever it is) carries the
    X-RateLimit-* headers, added by the edge middleware from the request state."""
    state = await _limits(scope).hit(bucket, key, client_id=client_id)
    if state is not None:
        scope.setdefault("state", {})["rate_limit"] = state


def presented_client_id(authorization: str | None, params) -> str | None:
    """The client_id a token or revoke request presents (Basic header first), unauthenticated."""
    from fluxer_oauth.core.errors import OAuthError
    from fluxer_oauth.oauth.client_auth import parse_basic

    try:
        basic = parse_basic(authorization)
    except OAuthError:
        basic = None
    if basic is not None:
        return basic[0][:32]
    try:
        value = params.get("client_id")
    except ValueError:
        return None
    return value[:32] if value else None


async def limit_by_client(scope, bucket: str, params, authorization: str | None) -> None:
    if not _limits(scope).enabled:
        return
    client_id = presented_client_id(authorization, params)
    key = f"client:{client_id}" if client_id else f"ip:{client_ip(scope)}"
    await limit(scope, bucket, key, client_id=client_id)


def _login_keys(scope, login_name: str) -> tuple[str, str]:
    """Failed logins count against the client IP and against the account tried."""
    return f"ip:{client_ip(scope)}", f"account:{login_name.strip().lower()[:254]}"


async def guard_login(scope, login_name: str) -> None:
    """Refuse a login attempt when the account or the IP has used up its failures."""
    limits = _limits(scope)
    for key in _login_keys(scope, login_name):
        if await limits.exhausted("login", key):
            item = limits.items["login"]
            reset_at = time.time() + item.get_expiry()
            metrics.RATE_LIMITED.labels("login").inc()
            raise RateLimited(LimitState("login", item.amount, 0, reset_at), is_global=False)


async def record_login_failure(scope, login_name: str) -> None:
    limits = _limits(scope)
    for key in _login_keys(scope, login_name):
        await limits.record("login", key)
