"""The edge: what happens to every request around its route, written once.

``Edge.serve`` takes one request from a server interface (an ``Exchange``) and gives back
one answer, ``(status, headers, body)``. Its steps, in order:

1. a request id;
2. the declared body size (413 above the limit: ``max_body``, or ``large_body`` on the
   routes declared to take one, those that upload an image, when a credential is sent);
3. the client's address and the global per-IP limit (429): counted before the route, or,
   when the route says so, side by side with a route that changes nothing, or together
   with the route's own per-client count once the body names the client;
4. the body, read under the size limit (413);
5. the route: a hot route (a function of the request, see ``HotRoute``) or the framework
   (Starlette: pages, the portal, the rest of the API), whose answer is collected whole;
6. errors: an ``ApiError`` as its JSON answer, the database out of reach as 503, anything
   else as a logged 500 that names the request id;
7. response headers: ``Cache-Control: no-store`` on API answers that set none, nosniff on
   every answer that has not set it, the request id, X-RateLimit-* of the route's bucket;
8. metrics and the access-log line.

The server interfaces only translate: web/rsgi.py (granian, what ``fluxer-oauth serve``
runs), web/asgi.py (ASGI: uvicorn and the tests' in-process client), and
``as_starlette`` (a hot route mounted in the router, for the OpenAPI document, 405s and
the equivalence tests).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import msgspec
from starlette.requests import ClientDisconnect, Request, cookie_parser
from starlette.responses import Response

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.ops import metrics
from fluxer_oauth.ops.access_log import access_log_for
from fluxer_oauth.platform.accounts import session_user
from fluxer_oauth.web import i18n, templating
from fluxer_oauth.web.caller import authenticate_header
from fluxer_oauth.web.client_ip import throttle_address
from fluxer_oauth.web.ratelimit import GLOBAL_PENDING, count_pending_global, exempt_from_global
from fluxer_oauth.store.errors import StoreUnavailable
from fluxer_oauth.web.responses import database_unavailable, error_answer, has_header

logger = logging.getLogger("fluxer.http")
_encode = msgspec.json.Encoder().encode

Headers = list[tuple[str, str]]
Answer = tuple[int, Headers, bytes]

API_PREFIXES = ("/api/v1", "/v1")  # where the JSON API lives (the route table mounts under both)
JSON = ("content-type", "application/json")
API_NO_STORE = ("cache-control", "no-store")
NOSNIFF = ("x-content-type-options", "nosniff")


class PayloadTooLarge(ApiError):
    def __init__(self) -> None:
        super().__init__(413, "PAYLOAD_TOO_LARGE", "the request body is too large")


# When a hot route's request counts against the global limit (step 3).
BEFORE = "before"            # before the route runs (every framework route too)
ALONGSIDE = "alongside"      # while the route runs: it changes nothing, and a refusal replaces its answer
WITH_CLIENT = "with_client"  # with the route's per-client count (one round trip for both on Redis)


class _RequestIds:
    """Request ids: a random per-process prefix and a counter (16 hex digits). They need to be
    unique, not secret, so no system call per request; a forked child draws its own prefix."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


new_request_id = _RequestIds().next


class Call:
    """One request as a hot route sees it. ``scope`` is what the rate-limit helpers read:
    the application, the request's state and the client's address."""

    __slots__ = ("method", "path", "headers", "body", "scope")

    def __init__(self, method: str, path: str, headers, body: bytes, scope: dict) -> None:
        self.method = method
        self.path = path
        self.headers = headers  # .get(lower-case name) -> str | None
        self.body = body
        self.scope = scope

    @property
    def app(self):
        return self.scope["app"]


@dataclass(frozen=True)
class HotRoute:
    """A route answered without the framework: ``handler(call) -> (status, headers, body)``,
    its headers complete but for what the edge adds. ``name`` labels its metrics."""

    name: str
    handler: Callable[[Call], Awaitable[Answer]]
    global_count: str = BEFORE
    reads_body: bool = True

    def __post_init__(self) -> None:
        if self.global_count == ALONGSIDE and self.reads_body:
            # Counted while the body is read, a 413 could answer before the count's 429.
            raise ValueError(f"{self.name}: a route counted alongside must not read a body")


class Exchange(Call):
    """What a server interface tells the edge about one request (method, path, headers:
    ``get`` and ``get_all`` by lower-case name, text values; the peer's address) and how it
    reads the body. The edge fills in ``body`` and ``scope`` and hands it to a hot route as
    its call."""

    __slots__ = ("peer",)

    async def read_body(self, limit: int) -> bytes | None:
        """The body, or None once it passes ``limit``."""
        raise NotImplementedError

    def asgi_scope(self) -> dict:
        """An ASGI HTTP scope for the framework (without state and app, which the edge sets)."""
        raise NotImplementedError


class Edge:
    def __init__(self, app, *, framework, hot_routes: dict[tuple[str, str], HotRoute], route_names: dict,
                 max_body: int, large_bodies: tuple = (), large_body: int | None = None,
                 session_cookie: str | None = None) -> None:
        self.app = app
        self.framework = framework  # an ASGI application: Starlette's router and handlers
        self.hot_routes = hot_routes
        self.route_names = route_names  # framework endpoint -> route template, for metrics
        self.max_body = max_body
        # (method, compiled path pattern) of the framework routes whose bodies may reach large_body
        self.large_bodies = tuple(large_bodies)
        self.large_body = max(large_body or max_body, max_body)
        # A page's form (the portal's icon upload) carries its credential as this cookie.
        self._session_cookie = session_cookie
        self.limits = app.limits
        self.resolver = app.resolver
        self.access_log = access_log_for(logger)  # off the request's path: ops/access_log.py
        self._behind_proxies = app.resolver.trusts_proxies  # else X-Forwarded-For is not even read

    async def serve(self, exchange: Exchange) -> Answer:
        """The answer to one request: the steps of the module's docstring, in that order."""
        start = time.perf_counter()
        request_id = new_request_id()  # 1
        state = {"request_id": request_id}
        path = exchange.path
        route = self.hot_routes.get((exchange.method, path))
        scope = exchange.scope = {"app": self.app, "state": state, "client": (exchange.peer, 0)}
        try:
            declared = _length(exchange.headers.get("content-length"))  # 2
            max_body = self.max_body
            if route is None and self.large_bodies and (declared is None or declared > max_body):
                max_body = await self._body_limit(exchange)  # (a credential is checked only when it matters)
            if declared is not None and declared > max_body:
                raise PayloadTooLarge()
            counting = None
            limits = self.limits
            if limits.enabled:  # 3
                ip = state["client_ip"] = throttle_address(self.resolver.resolve_forwarded(
                    exchange.peer, exchange.headers.get_all("x-forwarded-for")) if self._behind_proxies else exchange.peer)
                mode = route.global_count if route is not None else BEFORE
                if mode == BEFORE or (mode == ALONGSIDE and not limits.counted_in_redis):
                    if route is not None or not exempt_from_global(path):
                        await limits.hit("global", ip, with_state=False)
                elif mode == WITH_CLIENT:
                    state[GLOBAL_PENDING] = True  # counted with the client's bucket, once known
                else:  # alongside the route, which changes nothing: a refusal replaces its answer
                    counting = asyncio.ensure_future(limits.hit("global", ip, with_state=False))
            if route is None or route.reads_body:  # 4
                exchange.body = await _read_body(exchange, declared, max_body)
                if exchange.body is None:
                    await count_pending_global(scope)  # such a request counts like any other: its 429 first
                    raise PayloadTooLarge()
            else:
                exchange.body = b""
            if route is None:  # 5
                if templating.is_page_path(path):
                    i18n.use_locale(exchange.headers.get("accept-language"))
                status, headers, body = await self._framework(exchange, scope)
            elif counting is None:
                status, headers, body = await route.handler(exchange)  # the exchange is the route's call
            else:
                try:
                    status, headers, body = await route.handler(exchange)
                finally:
                    await counting  # always awaited; a refusal (429) replaces the route's answer
        except ApiError as exc:  # 6
            status, headers, body = error_answer(exc, (JSON,))
        except StoreUnavailable:
            status, headers, body = error_answer(database_unavailable(), (JSON,))
        except ClientDisconnect:  # gone before its body arrived: nobody reads the answer
            status, headers, body = 400, [], b""
        except Exception as exc:
            status, headers, body = _failure(exc, request_id, path)
        if status >= 400 and route is None and _is_json(headers) and templating.is_page_path(path):
            # A page route's error is a page: the one answer for every error a page can meet.
            status, headers, body = self._page_error(exchange, status, headers, request_id)
        if path.startswith(API_PREFIXES):  # 7
            if not has_header(headers, "cache-control"):
                headers.append(API_NO_STORE)
            headers.append(NOSNIFF)
        elif not has_header(headers, "x-content-type-options"):
            headers.append(NOSNIFF)
        headers.append(("x-request-id", request_id))
        limit_state = state.get("rate_limit")
        if limit_state is not None:
            headers += limit_state.text_headers()
        name = route.name if route is not None else self.route_names.get(scope.get("endpoint"), "unmatched")
        self.finish(name, exchange.method, path, status, start, request_id)  # 8
        return status, headers, body

    def _page_error(self, exchange: Exchange, status: int, headers: Headers, request_id: str) -> Answer:
        """A page route's error (the global limit's 429, a 413, an unexpected 500, the
        database's 503) as the error page, in the request's language; Retry-After and a 405's
        Allow kept."""
        i18n.use_locale(exchange.headers.get("accept-language"))
        settings = self.app.runtime.settings
        retry_after = next((value for name, value in headers if name == "retry-after"), None)
        status, page_headers, body = templating.error_answer(
            status, https=settings.https, public_url=settings.public_url, request_id=request_id,
            retry_after=retry_after)
        page_headers += [(name, value) for name, value in headers if name == "allow"]
        return status, page_headers, body

    async def _body_limit(self, exchange: Exchange) -> int:
        """``large_body`` on a route declared to take one, for a request whose credential
        authenticates someone (an Authorization header, or a page's session cookie), checked
        before any of the body is read: a request that proves nobody never makes the edge
        read more than ``max_body``."""
        method, path = exchange.method, exchange.path
        if method not in ("POST", "PATCH", "PUT"):
            return self.max_body
        if not any(method == large_method and pattern.fullmatch(path) for large_method, pattern in self.large_bodies):
            return self.max_body
        return self.large_body if await self._authenticates(exchange) else self.max_body

    async def _authenticates(self, exchange: Exchange) -> bool:
        rt = self.app.runtime
        authorization = exchange.headers.get("authorization")
        if authorization:
            try:
                await authenticate_header(rt, authorization)
            except ApiError:
                return False
            return True
        if self._session_cookie is None:
            return False
        token = cookie_parser(exchange.headers.get("cookie") or "").get(self._session_cookie)
        return bool(token) and await session_user(rt, token) is not None

    async def _framework(self, exchange: Exchange, scope: dict) -> Answer:
        """The framework's answer to a request whose body is read already, collected whole."""
        asgi_scope = exchange.asgi_scope()
        asgi_scope["app"] = self.app
        asgi_scope["state"] = scope["state"]
        collected = _Collected()
        try:
            await self.framework(asgi_scope, _receive_once(exchange.body), collected.send)
        finally:
            scope["endpoint"] = asgi_scope.get("endpoint")  # set by routing; names the route for metrics
        return collected.status, collected.headers, b"".join(collected.parts)

    def finish(self, route: str, method: str, path: str, status: int, start: float, request_id: str) -> None:
        """Metrics and the access-log line of one answered request."""
        elapsed = time.perf_counter() - start
        metrics.observe_request(route, method, status, elapsed)
        if status == 503 and path != "/readyz":
            # Every 503 but readiness is a request that found the database unreachable.
            metrics.DATABASE_ERRORS.inc()
        if logger.isEnabledFor(logging.INFO):
            self.access_log.record(request_id, method, path, status, round(elapsed * 1000, 3))


def _failure(exc: Exception, request_id: str, path: str) -> Answer:
    """The answer to an exception no route handled: a logged 500 that names the request."""
    logger.error("unhandled error", exc_info=exc, extra={"fields": {"request_id": request_id, "path": path}})
    return _json(500, {"code": "INTERNAL_ERROR", "message": "unexpected error", "request_id": request_id})


def _is_json(headers: Headers) -> bool:
    return any(name == "content-type" and value.startswith("application/json") for name, value in headers)


def _json(status: int, body: dict) -> Answer:
    return status, [JSON], _encode(body)


def _length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _read_body(exchange: Exchange, declared: int | None, limit: int) -> bytes | None:
    if declared is None and exchange.method in ("GET", "HEAD") and exchange.headers.get("transfer-encoding") is None:
        return b""  # no length and no chunks: a request without a body
    body = await exchange.read_body(limit)
    return body if body is not None and len(body) <= limit else None


def _receive_once(body: bytes):
    """An ASGI receive that gives the body in one message, then waits (the framework cancels
    what still listens once it has answered)."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.get_running_loop().create_future()  # never set: no disconnect to report

    return receive


class _Collected:
    """An ASGI send that keeps the response's status, headers (as text) and body parts."""

    __slots__ = ("status", "headers", "parts")

    def __init__(self) -> None:
        self.status = 500
        self.headers: Headers = []
        self.parts: list[bytes] = []

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(name.decode("latin-1").lower(), value.decode("latin-1"))
                            for name, value in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            self.parts.append(message.get("body", b""))


# --- a hot route mounted in the framework ---------------------------------------------------

class HeadersView:
    """Starlette's ``Headers`` behind the ``get``/``get_all`` of the edge's exchanges."""

    __slots__ = ("_headers",)

    def __init__(self, headers) -> None:
        self._headers = headers

    def get(self, name: str, default=None):
        return self._headers.get(name, default)

    def get_all(self, name: str) -> list[str]:
        return self._headers.getlist(name)


def hot(handler: Callable[[Call], Awaitable[Answer]], *, global_count: str = BEFORE, reads_body: bool = True):
    """``handler`` as a hot route, ready for the router (``as_starlette``): the edge finds it by
    its mark and names it by the route's path."""
    return as_starlette(HotRoute(handler.__name__, handler, global_count, reads_body))


def as_starlette(route: HotRoute):
    """A Starlette endpoint that answers with ``route``: the same function, entered through
    the framework (the router mounts it, so the OpenAPI document and 405s know the path)."""

    async def endpoint(request: Request) -> Response:
        scope = request.scope
        scope.setdefault("state", {})
        call = Call(request.method, request.url.path, HeadersView(request.headers),
                    await request.body() if route.reads_body else b"", scope)
        status, headers, body = await route.handler(call)
        response = Response(body, status_code=status)
        response.raw_headers = [pair for pair in response.raw_headers if pair[0] != b"content-type"]
        response.raw_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return response

    endpoint.__name__ = route.handler.__name__
    endpoint.hot_route = route
    return endpoint


