"""granian's RSGI interface in front of the application (what ``fluxer-oauth serve`` runs).

The busiest requests, the OAuth2 form endpoints and ``GET /users/@me`` with a good token,
are answered here directly: RSGI hands over headers and body without ASGI's per-request
dictionaries, messages and wrappers, and writes the response in one call. Everything else
goes through a small ASGI adapter into the application that ASGI servers (and the tests'
in-process client) run, edge middleware and all.

Both ways keep the edge's promises: a request id and the X-RateLimit-* headers on every
response, 413 above the body limit, the global per-IP limit, a logged 500 that names the
request id, and one metrics count and access-log line per request."""

from __future__ import annotations

import asyncio
import time

import msgspec

from fluxer_oauth.web.fastpath import ME_PATHS, me_body
from fluxer_oauth.web.form_endpoints import FormEndpoint
from fluxer_oauth.web.middleware import TOO_LARGE, internal_error, log_unhandled, new_request_id, parse_length
from fluxer_oauth.web.ratelimit import (GLOBAL_COUNTED, GLOBAL_PENDING, NOT_NOW, RateLimited, count_pending_global,
                                        hit_global_now)
from fluxer_oauth.web.responses import API_NO_STORE, error_answer, has_header

_encode = msgspec.json.Encoder().encode
_JSON = ("content-type", "application/json")
# Everything answered here is an API answer: no-store unless the endpoint set its own
# Cache-Control (the token endpoints, with Pragma). The @me body comes with it.
_NO_STORE_ONLY = (API_NO_STORE,)


class RsgiEntry:
    def __init__(self, app) -> None:
        self.app = app
        self.edge = app.edge
        self.max_body = app.edge.max_body
        self.limits = app.limits
        self.resolver = app.resolver
        self._behind_proxies = app.resolver.trusts_proxies
        self.form_endpoints: dict[str, FormEndpoint] = app.form_endpoints
        self._lifespan = None

    # granian calls these two in the worker, around serving, with its event loop.
    def __rsgi_init__(self, loop) -> None:
        self._lifespan = self.app.router.lifespan_context(self.app)
        loop.run_until_complete(self._lifespan.__aenter__())

    def __rsgi_del__(self, loop) -> None:
        if self._lifespan is not None:
            loop.run_until_complete(self._lifespan.__aexit__(None, None, None))

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":  # granian runs with websockets off; nothing else comes
            return
        method = scope.method
        if method == "POST":
            endpoint = self.form_endpoints.get(scope.path)
            if endpoint is not None:
                return await self._direct(scope, proto, endpoint, None)
        elif method == "GET" and scope.path in ME_PATHS:
            # The lookup has no side effect; only a hit is answered here, anything else
            # (no token, a bad one, a missing scope, the database down) takes the full path.
            # With the counters in Redis, the global count goes at the same time as the lookup
            # instead of after it: two round trips side by side.
            counting = self._count_global_meanwhile(scope)
            body = await me_body(self.app.runtime, scope.headers.get("authorization"))
            if counting is not None:
                if not await _refused(counting) and body is None:  # the count is always awaited
                    return await self._through_asgi(scope, proto, global_counted=True)
                return await self._direct(scope, proto, None, body, counting)
            if body is not None:
                return await self._direct(scope, proto, None, body)  # metrics name the route by path
        await self._through_asgi(scope, proto)

    def _count_global_meanwhile(self, scope):
        """A task counting the request against the global limit, when that takes a round trip."""
        if not (self.limits.enabled and self.limits.counted_in_redis):
            return None
        ip = self._client_ip(scope, _host(scope.client))
        return asyncio.ensure_future(self.limits.hit("global", ip, with_state=False))

    def _client_ip(self, scope, peer: str) -> str:
        if not self._behind_proxies:  # the header is not even read
            return peer
        return self.resolver.resolve_forwarded(peer, scope.headers.get_all("x-forwarded-for"))

    # --- answered here -------------------------------------------------------------------------

    async def _direct(self, scope, proto, endpoint, ready_body: bytes | None, counting=None) -> None:
        start = time.perf_counter()
        request_id = new_request_id()
        state = {"request_id": request_id}
        try:
            status, content, headers = await self._respond(scope, proto, endpoint, ready_body, state, counting)
        except Exception:
            log_unhandled(request_id, scope.path)
            status, content, headers = 500, _encode(internal_error(request_id)), []
        if has_header(headers, "cache-control"):
            headers = [_JSON, *headers, ("x-request-id", request_id)]
        else:  # errors made here or by a rate limit
            headers = [_JSON, API_NO_STORE, *headers, ("x-request-id", request_id)]
        limit_state = state.get("rate_limit")
        if limit_state is not None:
            headers += limit_state.text_headers()
        proto.response_bytes(status, headers, content)
        self.edge.finish(endpoint, scope.method, scope.path, status, start, request_id)

    async def _respond(self, scope, proto, endpoint, ready_body, state, counting):
        """(status, body, headers) in the order of the ASGI layers: declared size, global
        limit, then the endpoint (which reads the body under the same size limit). An
        endpoint with a limit of its own makes the global count with it once the body names
        the client (GLOBAL_PENDING: one round trip for both with Redis); ``counting`` is a
        global count under way."""
        headers = scope.headers
        declared = parse_length(headers.get("content-length"))
        if declared is not None and declared > self.max_body:
            return 413, _encode(TOO_LARGE), []
        peer = _host(scope.client)
        if self.limits.enabled:  # the client's address matters to the rate limits only
            ip = state["client_ip"] = self._client_ip(scope, peer)
            try:
                if counting is not None:
                    await counting
                elif endpoint is not None and endpoint.bucket is not None:
                    state[GLOBAL_PENDING] = True
                elif hit_global_now(self.limits, scope.path, ip) is NOT_NOW:
                    await self.limits.hit("global", ip, with_state=False)
            except RateLimited as exc:
                return error_answer(exc)
        if ready_body is not None:
            return 200, ready_body, _NO_STORE_ONLY
        body = await proto() if declared is not None else await self._read_limited(proto)
        if body is None or len(body) > self.max_body:
            return await self._too_large(state)
        return await endpoint.respond({"app": self.app, "state": state, "client": (peer, 0)},
                                      headers.get("content-type"), headers.get("authorization"), body)

    async def _too_large(self, state):
        """A 413 for a body that outgrew the limit while read; a global count left pending is
        made first (such a request counts like any other, and its 429 comes first)."""
        try:
            await count_pending_global({"app": self.app, "state": state})
        except RateLimited as exc:
            return error_answer(exc)
        return 413, _encode(TOO_LARGE), []

    async def _read_limited(self, proto) -> bytes | None:
        """A body of undeclared length, or None once it passes the limit."""
        chunks, size = [], 0
        async for chunk in proto:
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    # --- everything else: the ASGI application -------------------------------------------------

    async def _through_asgi(self, scope, proto, global_counted: bool = False) -> None:
        asgi_scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": scope.path,
            "query_string": scope.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in scope.headers.items()],
            "client": (_host(scope.client), _port(scope.client)),
            "server": (_host(scope.server), _port(scope.server)),
            "state": {GLOBAL_COUNTED: True} if global_counted else {},
        }
        body = proto.__aiter__()
        body_done = False

        async def receive():
            nonlocal body_done
            if body_done:
                await proto.client_disconnect()
                return {"type": "http.disconnect"}
            try:
                return {"type": "http.request", "body": await body.__anext__(), "more_body": True}
            except StopAsyncIteration:
                body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}

        response = _AsgiResponse(proto)
        await self.app(asgi_scope, receive, response.send)
        response.finish()


class _AsgiResponse:
    """ASGI response messages written to an RSGI protocol: one call for a whole body,
    a stream when the application sends it in parts."""

    def __init__(self, proto) -> None:
        self.proto = proto
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.stream = None
        self.done = False

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(name.decode("latin-1"), value.decode("latin-1"))
                            for name, value in message.get("headers", ())]
        elif message["type"] == "http.response.body" and not self.done:
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self.stream is None and not more:
                self.proto.response_bytes(self.status, self.headers, body)
                self.done = True
                return
            if self.stream is None:
                self.stream = self.proto.response_stream(self.status, self.headers)
            if body:
                await self.stream.send_bytes(body)
            self.done = not more

    def finish(self) -> None:
        if self.stream is None and not self.done:  # the edge always answers; this is a guard
            self.proto.response_empty(self.status or 500, self.headers)


async def _refused(counting) -> bool:
    """Whether a global count under way refused the request (or failed: the caller then
    answers through ``_direct``, which reports it)."""
    try:
        await counting
    except Exception:
        return True
    return False




def _host(address: str) -> str:
    """The host of granian's "host:port" (IPv6 in brackets); "unknown" when there is none."""
    host = address.rpartition(":")[0] if address else ""
    return host.strip("[]") or "unknown"


def _port(address: str) -> int:
    port = address.rpartition(":")[2] if address else ""
    return int(port) if port.isdigit() else 0
