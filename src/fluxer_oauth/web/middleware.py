"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request).

``EdgeMiddleware`` is the outermost layer: it gives every request an id, refuses
oversized bodies with 413, turns unexpected exceptions into a 500 that names the request
id (and logs it), and writes one access-log line without the query string.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time

import msgspec

from fluxer_oauth.ops import metrics
from fluxer_oauth.ops.logging import log
from fluxer_oauth.web.api import PREFIXES as API_PREFIXES
from fluxer_oauth.web.fastpath import ME_PATHS
from fluxer_oauth.web.responses import API_NO_STORE_RAW, has_header

logger = logging.getLogger("fluxer.http")
_encode = msgspec.json.encode


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


class BodyTooLarge(Exception):
    pass


TOO_LARGE = {"code": "PAYLOAD_TOO_LARGE", "message": "the request body is too large"}


def internal_error(request_id: str) -> dict:
    return {"code": "INTERNAL_ERROR", "message": "unexpected error", "request_id": request_id}


def log_unhandled(request_id: str, path: str) -> None:
    logger.exception("unhandled error", extra={"fields": {"request_id": request_id, "path": path}})


class EdgeMiddleware:
    def __init__(self, app, *, max_body_bytes: int, route_names: dict | None = None) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.route_names = route_names or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_holder = [0]
        started = False
        api = scope["path"].startswith(API_PREFIXES)

        async def send_wrapper(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                if api and not has_header(headers, b"cache-control"):
                    headers.append(API_NO_STORE_RAW)
                headers.append((b"x-request-id", request_id.encode()))
                limit_state = state.get("rate_limit")
                if limit_state is not None:
                    headers += limit_state.raw_headers()
                message["headers"] = headers
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _send_json(send_wrapper, 413, TOO_LARGE)
        else:
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise BodyTooLarge()
                return message

            try:
                await self.app(scope, limited_receive, send_wrapper)
            except BodyTooLarge:
                if not started:
                    await _send_json(send_wrapper, 413, TOO_LARGE)
            except Exception:
                log_unhandled(request_id, scope["path"])
                if not started:
                    await _send_json(send_wrapper, 500, internal_error(request_id))
        self.finish(scope.get("endpoint"), scope["method"], scope["path"], status_holder[0], start, request_id)

    def finish(self, endpoint, method: str, path: str, status: int, start: float, request_id: str) -> None:
        """Metrics and the access-log line of one answered request (both server interfaces)."""
        elapsed = time.perf_counter() - start
        route = self.route_names.get(endpoint, "unmatched")
        if path in ME_PATHS and route == "unmatched":
            route = "/api/v1/users/@me"  # answered by the fast path, before routing
        metrics.observe_request(route, method, status, elapsed)
        if status == 503 and path != "/readyz":
            # Every 503 but readiness is a request that found the database unreachable;
            # counted here once, whichever layer answered (JSON API, form endpoint, page).
            metrics.DATABASE_ERRORS.inc()
        if logger.isEnabledFor(logging.INFO):
            log(
                logger, logging.INFO, "request",
                request_id=request_id, method=method, path=path, status=status, ms=round(elapsed * 1000, 3),
            )




def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return parse_length(value)
    return None


def parse_length(value: bytes | str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _send_json(send, status: int, body: dict) -> None:
    payload = _encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
