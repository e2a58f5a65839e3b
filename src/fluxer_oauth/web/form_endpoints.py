"""The OAuth2 form endpoints (token, revocation, introspection) as raw ASGI apps.

They are mounted in the router like any route (so the OpenAPI document and 405s work),
and the fast path calls them directly, before the framework, because they are the busiest
POST routes. Each renders its own errors in the OAuth2 envelope."""

from __future__ import annotations

import msgspec

from fluxer_oauth.core.errors import ApiError, OAuthError
from fluxer_oauth.web.ratelimit import limit_by_client
from fluxer_oauth.web.responses import NO_STORE, form_params

_encode = msgspec.json.Encoder().encode
_BASE_HEADERS = [(b"content-type", b"application/json")]
_NO_STORE_HEADERS = [(name.lower().encode(), value.encode()) for name, value in NO_STORE.items()]


class FormEndpoint:
    """``handler(runtime, params, authorization) -> dict`` behind a POST form endpoint."""

    def __init__(self, bucket: str | None, handler) -> None:
        self.bucket = bucket
        self.handler = handler

    async def __call__(self, scope, receive, send) -> None:
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        body = await _read_body(receive)
        extra: dict = {}
        try:
            params = form_params(content_type or "", body)
            if self.bucket is not None:
                await limit_by_client(scope, self.bucket, params, authorization)
            result = await self.handler(scope["app"].runtime, params, authorization)
            status, payload, store = 200, result, True
        except OAuthError as exc:
            status, payload, store, extra = exc.status, exc.body(), True, exc.headers
        except ApiError as exc:  # rate limited, or the database is unreachable
            status, payload, store, extra = exc.status, exc.body(), False, exc.headers
        # The response is written by hand: a Response object costs more than the rest.
        content = _encode(payload)
        headers = _BASE_HEADERS + [(b"content-length", str(len(content)).encode())]
        if store:
            headers += _NO_STORE_HEADERS
        headers += [(name.lower().encode(), str(value).encode()) for name, value in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
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
