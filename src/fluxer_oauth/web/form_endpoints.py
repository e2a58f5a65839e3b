"""The OAuth2 form endpoints (token, revocation, introspection) as raw ASGI apps.

They are mounted in the router like any route (so the OpenAPI document and 405s work),
and the fast path calls them directly, before the framework, because they are the busiest
POST routes. Each renders its own errors in the OAuth2 envelope."""

from __future__ import annotations

from fluxer_oauth.core.errors import ApiError, OAuthError
from fluxer_oauth.ops import metrics
from fluxer_oauth.web.ratelimit import limit_by_client
from fluxer_oauth.web.responses import NO_STORE, form_params, json_response

_STORE_HEADERS = NO_STORE


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
        try:
            params = form_params(content_type or "", body)
            if self.bucket is not None:
                await limit_by_client(scope, self.bucket, params, authorization)
            result = await self.handler(scope["app"].state.runtime, params, authorization)
            response = json_response(result, 200, _STORE_HEADERS)
        except OAuthError as exc:
            response = json_response(exc.body(), exc.status, {**_STORE_HEADERS, **exc.headers})
        except ApiError as exc:  # rate limited, or the database is unreachable
            if exc.status == 503:
                metrics.DATABASE_ERRORS.inc()
            response = json_response(exc.body(), exc.status, exc.headers)
        await response(scope, receive, send)


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
