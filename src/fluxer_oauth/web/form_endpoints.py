"""The OAuth2 form endpoints (token, revocation, introspection) as raw endpoints.

They are mounted in the router like any route (so the OpenAPI document and 405s work),
and both server interfaces call them before the framework, because they are the busiest
POST routes: the ASGI fast path through ``__call__``, the RSGI entry through ``respond``.
Each renders its own errors in the OAuth2 envelope."""

from __future__ import annotations

import msgspec

from fluxer_oauth.core.errors import ApiError, OAuthError
from fluxer_oauth.web.ratelimit import GLOBAL_PENDING, admit_client, count_failed_client_auth, count_pending_global
from fluxer_oauth.web.responses import NO_STORE, error_answer, form_params

_encode = msgspec.json.Encoder().encode
NO_STORE_HEADERS = [(name.lower(), value) for name, value in NO_STORE.items()]


class FormEndpoint:
    """``handler(runtime, params, authorization) -> dict`` behind a POST form endpoint."""

    def __init__(self, bucket: str | None, handler) -> None:
        self.bucket = bucket
        self.handler = handler

    async def respond(self, scope, content_type: str | None, authorization: str | None, body: bytes):
        """(status, JSON body, headers besides content-type and -length) for one request;
        ``scope`` needs only ``app`` and ``state`` (for the rate limits)."""
        try:
            try:
                params = form_params(content_type or "", body)
            except OAuthError:
                await count_pending_global(scope)  # counted all the same, and its 429 comes first
                raise
            result = await self._limited(scope, params, authorization)
            return 200, _encode(result), NO_STORE_HEADERS
        except OAuthError as exc:
            return error_answer(exc, NO_STORE_HEADERS)
        except ApiError as exc:  # rate limited, or the database is unreachable
            return error_answer(exc)

    async def _limited(self, scope, params, authorization: str | None):
        """The handler under the endpoint's per-client limit (if it has one), counted once the
        client has authenticated; a failed authentication counts against the address instead
        (on every form endpoint); a request that stops before either still makes its global
        count."""
        bucket = self.bucket
        if bucket is not None and scope["app"].limits.enabled:
            params.on_client_authenticated = lambda application_id: admit_client(scope, bucket, application_id)
        try:
            return await self.handler(scope["app"].runtime, params, authorization)
        except OAuthError as exc:
            if exc.error == "invalid_client":
                pending = count_failed_client_auth(scope)  # over its failures: the 429 replaces the 401
                if pending is not None:
                    await pending
            raise
        finally:
            if GLOBAL_PENDING in scope.get("state", ()):
                await count_pending_global(scope)

    async def __call__(self, scope, receive, send) -> None:
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        status, content, headers = await self.respond(scope, content_type, authorization, await _read_body(receive))
        # The response is written by hand: a Response object costs more than the rest.
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        raw += [(name.encode(), value.encode()) for name, value in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
